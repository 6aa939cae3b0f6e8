"""The typed interface between the convert pipeline and a model family, and its registry."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from litedet.runtime.kinds import KindSpec
from litedet.runtime.manifest import InputSpec, OutputSpec, ResizeSpec

from ..verify.checks import ResultCheck

if TYPE_CHECKING:
    from litedet.models.registry import ModelInfo

__all__ = ["DeploySpec", "GraphIO", "FamilyAdapter", "register_adapter", "unregister_adapter", "adapter_for",
           "check_for_kind", "calibration_batch"]

Shape = tuple[int, int, int, int]


@dataclass
class GraphIO:
    """What pnnx made: the input blob, the output blobs in deploy order, and
    whether the graph follows the input size (converted with two shapes)."""

    input_name: str
    output_names: list[str]
    dynamic: bool


@dataclass
class DeploySpec:
    """The family's part of the manifest; the pipeline adds files, hashes and provenance."""

    task: str
    input: InputSpec
    resize: ResizeSpec
    outputs: list[OutputSpec]
    postprocess: KindSpec
    class_names: list[str]


class FamilyAdapter(ABC):
    family: ClassVar[str]  # the ``family`` of its builders in the model registry
    kind: ClassVar[str]  # the postprocess kind its bundles use (runtime/kinds/)
    check: ClassVar[ResultCheck]  # how parity compares two results of that kind

    @abstractmethod
    def seed(self, model: Any, info: "ModelInfo", seed: int, input_size: int) -> None:
        """Untrained but well-behaved weights for a checkpoint-less conversion."""

    def load(self, model: Any, checkpoint: str | Path, trust: bool = False):
        """Load a checkpoint (a LoadReport); the default reads every format models/checkpoint.py knows.
        ``trust`` unpickles the whole file (runs its code): only for sources the user trusts."""
        from litedet.models import load_checkpoint

        return load_checkpoint(model, checkpoint, trust=trust)

    def class_names(self, model: Any, info: "ModelInfo", given: list[str] | None) -> list[str]:
        n = model.num_classes
        names = list(given) if given else [f"class_{i}" for i in range(n)]
        if len(names) != n:
            raise ValueError(f"{len(names)} class names given; {info.name} has {n} classes")
        return names

    def trace_shapes(self, info: "ModelInfo", input_size: int) -> tuple[Shape, Shape]:
        """The two input shapes pnnx converts with. BOTH sides of the second differ
        from the first, else pnnx keeps the unchanged side as a constant (a
        landscape-only second shape bakes the width into a Reshape)."""
        big = max(info.strides) if info.strides else 32
        return (1, 3, input_size, input_size), (1, 3, max(big, input_size - 2 * big), max(big, input_size - big))

    def output_names(self, model: Any, info: "ModelInfo") -> list[str]:
        """Names of the deploy outputs (the ONNX route uses them)."""
        return [role if not stride else f"{role}_stride_{stride}" for role, stride in info.outputs]

    @abstractmethod
    def deploy_spec(self, model: Any, info: "ModelInfo", input_size: int, graph: GraphIO,
                    class_names: list[str]) -> DeploySpec:
        """The manifest's input, resize, outputs and postprocess sections."""

    def check_graph(self, runner: Any, deploy: DeploySpec, input_size: int) -> None:
        """Extra checks of the converted graph (raise ValueError); none by default."""


_ADAPTERS: dict[str, FamilyAdapter] = {}


def register_adapter(adapter: FamilyAdapter) -> FamilyAdapter:
    if adapter.family in _ADAPTERS:
        raise ValueError(f"family {adapter.family!r} already has an adapter")
    _ADAPTERS[adapter.family] = adapter
    return adapter


def unregister_adapter(family: str) -> None:
    _ADAPTERS.pop(family, None)


def adapter_for(family: str) -> FamilyAdapter:
    try:
        return _ADAPTERS[family]
    except KeyError:
        raise KeyError(f"no convert adapter for model family {family!r}; known families: "
                       f"{', '.join(sorted(_ADAPTERS))}") from None


def check_for_kind(kind: str) -> ResultCheck:
    """The parity check of bundles with this postprocess kind."""
    for a in _ADAPTERS.values():
        if a.kind == kind:
            return a.check
    raise KeyError(f"no family adapter writes postprocess kind {kind!r}, so parity cannot compare its results")


def calibration_batch(mean, std, size: int, rgb: bool = False):
    """The reference card, a flipped copy and two crops, normalised, as a batch
    (for BatchNorm statistics of seeded weights)."""
    import cv2
    import torch

    from ..bundle import reference_image

    img = reference_image()
    if rgb:
        img = img[:, :, ::-1]
    views = [img, img[:, ::-1], img[40:300, 60:400], img[::-1, 100:]]
    mean, std = np.array(mean, np.float32), np.array(std, np.float32)
    arr = [(cv2.resize(np.ascontiguousarray(v), (size, size)).astype(np.float32) - mean) / std for v in views]
    return torch.from_numpy(np.stack(arr).transpose(0, 3, 1, 2).copy())
