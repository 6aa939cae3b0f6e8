"""Postprocess kinds: the registry the runtime picks its decoding from.

A manifest's ``postprocess.kind`` names one entry here. A kind is a
:class:`PostprocessKind`: the dataclass of its manifest section (every field
required), the task it answers, the output roles it reads, a consistency check
of a manifest, and ``decode`` (raw ncnn outputs + preprocessing geometry ->
results). The maths stay in small pure functions (the kind's own, ``runtime/boxes.py``,
``runtime/letterbox.py``);
a kind only wires them to the manifest. Built in: ``gfl`` (NanoDet),
``softmax_topk`` (classifiers), ``rpn_psroi`` (two-stage detectors, two graphs) and
``argmax_mask`` (semantic segmentation), ``ssd_refine`` (RefineDet) and ``topk`` (OneNet). A new family registers its own kind with
:func:`register_kind` from its own module, editing nothing here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from litedet.registry import Registry

if TYPE_CHECKING:
    from litedet.runtime.manifest import Manifest

__all__ = ["BundleError", "rng", "stride_planes", "GraphFiles", "KindGraph", "KindSpec", "PostprocessKind", "register_kind", "unregister_kind", "postprocess_kind", "kind_names"]


class BundleError(ValueError):
    """A bundle's parts disagree: its graph's outputs and its manifest, or two of its files
    (``ManifestError`` is one)."""


def rng(lo: float, hi: float) -> dict:
    """Field metadata: the documented range [lo, hi] of a number (or of each number of a list),
    checked when a manifest is read (``runtime/manifest.py``)."""
    return {"range": (lo, hi)}


def stride_planes(outputs: dict, o: Any, stride: int, in_w: int, in_h: int) -> np.ndarray:
    """Output ``o`` (an OutputSpec) as finite float32 planes [channels, ceil(in_h / stride),
    ceil(in_w / stride)] (a batch of one dropped); BundleError naming the blob otherwise."""
    x = np.asarray(outputs[o.blob], dtype=np.float32)
    want = (o.channels, -(-in_h // stride), -(-in_w // stride))
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    if x.shape != want:
        raise BundleError(f"output {o.blob!r} has shape {tuple(x.shape)}; a {in_w}x{in_h} input at stride "
                          f"{stride} needs {want}")
    if not np.isfinite(x).all():
        raise BundleError(f"output {o.blob!r} holds a value that is not finite (NaN or inf): the graph is broken")
    return x


@dataclass
class KindSpec:
    """Base of every kind's manifest section; ``kind`` is its registry name."""

    kind: str


@dataclass(kw_only=True)
class GraphFiles:
    """The files of one ncnn graph in a bundle (paths relative to it, their sha256, and the fp32
    reference weights): the one record of a graph's files, written by ``convert`` (its
    ``GraphIO.files``) and read from the manifest (a kind's ``KindGraph``)."""

    param: str
    bin: str
    param_sha256: str
    bin_sha256: str
    fp32_bin: str  # the fp32 reference weights of the same graph ('' when the bin itself is fp32)


@dataclass(kw_only=True)
class KindGraph(GraphFiles, ABC):
    """A further graph of a bundle as its kind's manifest section holds it (a two-stage detector's
    head): its files and the blob names its graph has (a subclass's fields)."""

    @abstractmethod
    def blobs(self) -> tuple[str, list[str]]:
        """(input blob, output blobs in the graph's order)."""


@dataclass(frozen=True)
class PostprocessKind:
    name: str
    task: str  # what the results are: detection, classification, ...
    spec: type  # a KindSpec subclass: the manifest's postprocess section
    roles: tuple[str, ...]  # output roles this kind reads
    validate: Callable[["Manifest"], None]  # raise ValueError naming the field when inconsistent
    decode: Callable[..., list]  # (manifest, outputs, geometry, **options) -> results (dataclasses with to_dict)
    describe: Callable[[Any], str] = str  # one result as a line of text (litedet CLI output)
    # further graphs of the bundle by name (spec -> {name: KindGraph}); the runner loads them
    graphs: Callable[[Any], dict[str, KindGraph]] | None = None
    # (manifest, stage-1 outputs, in_w, in_h, run_graph(name, input), reference=None) -> the
    # tensors of the later stages, added to the outputs before decode (run_graph runs one of
    # ``graphs``); with ``reference`` (another side's completed outputs) the later stages run
    # on that side's intermediate inputs (the same RoIs), so the two can be compared tensor by tensor
    complete: Callable[..., dict] | None = None
    # (manifest, run_graph) -> None: runs the further graphs on a dummy input when a bundle is
    # opened and raises ValueError where their outputs disagree with the manifest
    probe: Callable[..., None] | None = None
    # (manifest, graph name) -> the [C, H, W] input a further graph takes at most (how its cost is
    # counted: a two-stage head on rpn_post_nms_top_n RoIs), and (manifest, graph name, completed
    # outputs) -> the input it was given in that run (benchmarks run each graph on its own)
    graph_shape: Callable[..., tuple[int, int, int]] | None = None
    graph_input: Callable[..., Any] | None = None
    # (manifest, asset names) -> this kind's values of the device config NAME.cfg (its keys are
    # LITEDET_<KIND>_KEYS in litedet_config_keys.h); None: the device does not run this kind
    device_values: Callable[..., dict] | None = None
    # the C++ header with this kind's LITEDET_<KIND>_KEYS table when it is not the shared
    # litedet_config_keys.h (a kind that lives outside the repository's C++ core)
    device_keys: Any = None


_KINDS: Registry[PostprocessKind] = Registry("postprocess kind")


def register_kind(kind: PostprocessKind) -> PostprocessKind:
    if not (isinstance(kind.spec, type) and issubclass(kind.spec, KindSpec)):
        raise TypeError(f"postprocess kind {kind.name!r}: spec must be a KindSpec dataclass")
    return _KINDS.add(kind.name, kind)


unregister_kind = _KINDS.remove
postprocess_kind = _KINDS.get
kind_names = _KINDS.names


from . import argmax_mask, gfl, rpn_psroi, softmax_topk, ssd_refine, topk  # noqa: E402,F401  (the built-in kinds register themselves)
