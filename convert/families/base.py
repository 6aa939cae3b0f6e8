"""The typed interface between the convert pipeline and a model family, and its registry."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from litedet.registry import Registry
from litedet.runtime.kinds import GraphFiles, KindSpec
from litedet.runtime.manifest import InputSpec, OutputSpec, ResizeSpec

from ..verify.checks import ResultCheck

if TYPE_CHECKING:
    from litedet.models.registry import ModelInfo

__all__ = ["DeploySpec", "ExtraGraph", "GraphIO", "Prepared", "FamilyAdapter", "adapter_for_config", "register_adapter", "unregister_adapter", "adapter_for",
           "check_for_kind", "calibration_batch", "agreed_class_count", "checkpoint_class_count"]

Shape = tuple[int, int, int, int]


@dataclass
class ExtraGraph:
    """A further graph of a family's bundle (a two-stage detector's head), converted beside the main one.

    ``module`` has ``forward_deploy``, traced at ``shapes`` (two sizes, so the graph follows its
    input, e.g. any number of RoIs in one extract). The kind's ``complete`` runs it; its results
    are the completed outputs' ``output_names``, which convert verifies against torch."""

    name: str
    module: Any
    shapes: tuple[tuple[int, ...], tuple[int, ...]]
    output_names: list[str]


@dataclass
class GraphIO:
    """What pnnx made of a graph: the input blob, the output blobs in deploy order, whether the
    graph follows the input size (converted with two shapes); ``files``: a further graph's files
    in the bundle (the manifest's record, ``GraphFiles``); ``extra``: the further graphs by name."""

    input_name: str
    output_names: list[str]
    dynamic: bool
    extra: dict[str, "GraphIO"] = field(default_factory=dict)
    files: GraphFiles | None = None


@dataclass
class DeploySpec:
    """The family's part of the manifest; the pipeline adds files, hashes and provenance."""

    task: str
    input: InputSpec
    resize: ResizeSpec
    outputs: list[OutputSpec]
    postprocess: KindSpec
    class_names: list[str]


@dataclass
class Prepared:
    """What a family derives from the user's checkpoint and config before the model is built."""

    model_kwargs: dict = field(default_factory=dict)  # builder overrides (e.g. the checkpoint's class count)
    input_size: int | None = None  # a default input size (e.g. the config's)
    options: dict = field(default_factory=dict)  # deploy options for deploy_spec (preprocessing, decoding)
    notes: list[str] = field(default_factory=list)  # what was inferred, for the provenance


class FamilyAdapter(ABC):
    family: ClassVar[str]  # the ``family`` of its builders in the model registry
    kind: ClassVar[str]  # the postprocess kind its bundles use (runtime/kinds/)
    check: ClassVar[ResultCheck]  # how parity compares two results of that kind

    @abstractmethod
    def seed(self, model: Any, info: "ModelInfo", seed: int, input_size: int) -> None:
        """Untrained but well-behaved weights for a checkpoint-less conversion."""

    deploy_options: ClassVar[dict[str, tuple[str, ...]]] = {}  # option -> allowed values (first: default)
    # the input side must be a multiple of this (detectors: their largest stride; classifiers end in
    # global pooling and take any side their layers accept, e.g. SqueezeNet's 227)
    input_multiple: ClassVar[int] = 32
    # True: every export of the family uses the same preprocessing (NanoDet: BGR, upstream's mean/norm),
    # so weights imported from a graph need no --pixel-order/--mean/--norm (convert/preprocessing.py)
    preprocess_convention: ClassVar[bool] = False

    def config_arch(self, config: str | Path) -> str | None:
        """The architecture a config file of this family describes; None when the family reads no configs."""
        return None

    def prepare(self, info: "ModelInfo", checkpoint: str | Path | None, config: str | Path | None,
                class_names: list[str] | None, trust: bool, options: dict) -> Prepared:
        """Builder overrides, a default input size and deploy options from checkpoint and config."""
        if config is not None:
            raise ValueError(f"{info.name} ({info.family}) reads no config files; drop --config")
        return Prepared(options=self.check_options(options))

    def check_options(self, options: dict) -> dict:
        """Known deploy options with allowed values, defaults filled in."""
        unknown = sorted(set(options) - set(self.deploy_options))
        if unknown:
            raise ValueError(f"unknown deploy option(s) {unknown} for family {self.family!r}; it has "
                             f"{sorted(self.deploy_options) or 'none'}")
        out = {}
        for key, allowed in self.deploy_options.items():
            value = options.get(key) or allowed[0]
            if value not in allowed:
                raise ValueError(f"--{key.replace('_', '-')} {value!r}: expected one of {', '.join(allowed)}")
            out[key] = value
        return out

    def load(self, model: Any, info: "ModelInfo", checkpoint: str | Path, trust: bool = False):
        """Load a checkpoint (a LoadReport); the default reads every format models/checkpoint.py knows.
        ``trust`` unpickles the whole file (runs its code): only for sources the user trusts."""
        from litedet.models import load_checkpoint

        if Path(checkpoint).suffix.lower() == ".onnx":  # an exported graph: its weights, zipped conv by conv
            from litedet.hashing import sha256_file
            from litedet.models import LoadReport

            from ..onnx_import import import_onnx_weights

            details = import_onnx_weights(model, checkpoint)
            return LoadReport(str(checkpoint), "onnx", sha256_file(checkpoint), details=details)
        return load_checkpoint(model, checkpoint, trust=trust, arch=info.name)

    def default_class_names(self, n: int) -> list[str]:
        """The names of an n-class model when none are given (a family names its data set's classes)."""
        return [f"class_{i}" for i in range(n)]

    def class_names(self, model: Any, info: "ModelInfo", given: list[str] | None) -> list[str]:
        n = model.num_classes
        names = list(given) if given else self.default_class_names(n)
        if len(names) != n:
            raise ValueError(f"{len(names)} class names given; {info.name} has {n} classes")
        return names

    def count_classes(self, prepared: Prepared, counts: dict[str, int], class_names: list[str] | None) -> int | None:
        """The class count every source states (``counts``: the checkpoint's, see checkpoint_class_count;
        --class-names is added here) into the builder's arguments, with a note when the classes get
        placeholder names; None when no source states one."""
        if class_names is not None:
            counts = {**counts, "--class-names": len(class_names)}
        n = agreed_class_count(counts)
        if n is not None:
            prepared.model_kwargs["num_classes"] = n
            if class_names is None and self.default_class_names(n)[:1] == ["class_0"]:
                prepared.notes.append(f"{n} classes inferred from the checkpoint; named class_0..class_{n - 1} "
                                      "(pass --class-names for their names)")
        return n

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
                    class_names: list[str], options: dict) -> DeploySpec:
        """The manifest's input, resize, outputs and postprocess sections."""

    def extra_graphs(self, model: Any, info: "ModelInfo", input_size: int) -> list[ExtraGraph]:
        """Graphs the bundle holds beside the main one (none by default)."""
        return []

    def check_graph(self, runner: Any, deploy: DeploySpec, input_size: int) -> None:
        """Extra checks of the converted graph (raise ValueError); none by default."""


_ADAPTERS: Registry[FamilyAdapter] = Registry("model family")


def register_adapter(adapter: FamilyAdapter) -> FamilyAdapter:
    return _ADAPTERS.add(adapter.family, adapter)


unregister_adapter = _ADAPTERS.remove
adapter_for = _ADAPTERS.get


def adapter_for_config(config: str | Path) -> tuple[FamilyAdapter, str]:
    """The family that reads this config file, and the architecture it describes."""
    for a in _ADAPTERS:
        arch = a.config_arch(config)
        if arch is not None:
            return a, arch
    raise ValueError(f"no model family reads the config {config}")


def check_for_kind(kind: str) -> ResultCheck:
    """The parity check of bundles with this postprocess kind."""
    for a in _ADAPTERS:
        if a.kind == kind:
            return a.check
    raise KeyError(f"no family adapter writes postprocess kind {kind!r}, so parity cannot compare its results")


def agreed_class_count(counts: dict[str, int]) -> int | None:
    """The one class count every source states (config, checkpoint, --class-names), or None when
    none does; sources that disagree are a ValueError naming each one and its count."""
    if len(set(counts.values())) > 1:
        raise ValueError("class counts disagree: " + ", ".join(f"{k} has {v}" for k, v in counts.items()))
    return next(iter(counts.values()), None)


def checkpoint_class_count(checkpoint, key: str, trust: bool, ndim: int, extra_rows: int = 0,
                           rows_per_class: int = 1) -> dict[str, int]:
    """{"the checkpoint's KEY (FILE)": rows / rows_per_class - extra_rows} when a state-dict checkpoint
    holds ``key`` with ``ndim`` dimensions (a classifier's weight; rows_per_class: its anchors per cell),
    else {} (graphs, or a key check to come names what is wrong); for agreed_class_count."""
    if checkpoint is None or Path(checkpoint).suffix.lower() in (".param", ".onnx"):
        return {}
    from litedet.models.checkpoint import read_state_dict

    sd, *_ = read_state_dict(checkpoint, trust=trust)
    w = sd.get(key)
    if w is None or w.ndim != ndim or w.shape[0] % rows_per_class or w.shape[0] // rows_per_class <= extra_rows:
        return {}
    return {f"the checkpoint's {key} ({Path(checkpoint).name})": int(w.shape[0]) // rows_per_class - extra_rows}


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
