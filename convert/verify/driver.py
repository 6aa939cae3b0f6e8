"""The one driver of the parity runs (torch <-> ncnn in ``torch_parity``, x86 <-> ARM in
``arm/parity``): the bundle's sides opened the same way, the same images in the same order,
and every comparison of one image judged by the bundle's kind check, tensor by tensor and
result by result, with the same limits machinery. Each run only says which sides it has."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from litedet.runtime.bundle import MAIN_GRAPH, Bundle, open_bundle_dir
from litedet.runtime.manifest import Manifest
from litedet.runtime.runner import BundleRunner

from .compare import Limits, output_stats, tensor_failures
from .report import ImageParity

__all__ = ["default_images", "reference_file", "Sides", "Comparison", "open_sides", "images_to_compare", "judge", "before_nms"]


def default_images():
    from litedet.photos import default_images as photos

    return photos()


def reference_file(bundle: "Path | Bundle", m: Manifest, key: str) -> Path:
    """A ``reference/`` file of the bundle, confined to it and checked against its sha256 (Bundle.reference)."""
    return open_bundle_dir(bundle, verify=False).reference(key)


@dataclass
class Sides:
    """A bundle opened for parity: its manifest, its kind's check and the fp32 reference runner
    (the fp32 reference bin with fp16 off, the ncnn side every other side is held to)."""

    b: Bundle
    check: Any
    r32: BundleRunner
    fp32_bin: Path

    @property
    def bundle(self) -> Path:
        return self.b.path

    @property
    def manifest(self) -> Manifest:
        return self.b.manifest


def open_sides(bundle: "str | Path | Bundle", threads: int = 1) -> Sides:
    from ..families import check_for_kind

    b = open_bundle_dir(bundle)
    check = check_for_kind(b.manifest.postprocess.kind)
    fp32_bin = b.graph_files(fp32=True)[MAIN_GRAPH].bin
    r32 = BundleRunner.from_bundle(b, threads=threads, fp16=False, bin_override=fp32_bin)
    return Sides(b, check, r32, fp32_bin)


def images_to_compare(s: Sides, images: list[tuple[str, np.ndarray]] | None,
                      include_reference: bool = True) -> list[tuple[str, np.ndarray]]:
    """The bundle's reference card (when it has one) then ``images`` (default: scikit-image's photos)."""
    import cv2

    todo: list[tuple[str, np.ndarray]] = []
    if include_reference and s.manifest.reference.get("image"):
        todo.append(("reference", cv2.imread(str(s.b.reference("image")), cv2.IMREAD_UNCHANGED)))
    todo += list(images if images is not None else default_images())
    if not todo:
        raise ValueError(f"nothing to compare: {s.bundle} has no reference image and no images were given "
                         "(install litedet[photos] for the default photos)")
    if len({n for n, _ in todo}) != len(todo):
        raise ValueError(f"image names must be unique; got {[n for n, _ in todo]}")
    return todo


def before_nms(runner: BundleRunner, geometry) -> Callable[[dict], list]:
    """outputs -> the kind's detections before NMS (the same decode with NMS at IoU 1 and no cap):
    what lets the matcher tell an NMS order flip from a moved box."""
    import dataclasses

    m = runner.manifest
    loose = dataclasses.replace(m, postprocess=dataclasses.replace(m.postprocess, nms_threshold=1.0,
                                                                   max_detections=10 ** 7))
    return lambda outputs: runner.kind.decode(loose, outputs, geometry)


@dataclass
class Comparison:
    """One side against a reference on one image: their tensors, their results and the runner that
    decodes the tested side (``same``: its later stages on the reference's intermediate inputs)."""

    key: str
    ref: dict
    got: dict
    ref_results: list
    got_results: list
    runner: BundleRunner
    same: dict | None = None
    judged: bool = True  # False: a control, reported but never failing
    fp16: bool = True
    extra: dict = field(default_factory=dict)


def judge(s: Sides, ip: ImageParity, c: Comparison, lim: Limits, geometry) -> list[str]:
    """Compare one side with its reference (tensors, then results by the kind's check) into ``ip``;
    the failures (none for a control)."""
    m, check = s.manifest, s.check
    stats = output_stats(m, c.ref, c.got, c.same)
    ip.tensors[c.key] = stats
    extra = dict(c.extra)
    if c.same is not None:  # only for multi-stage kinds: a single-graph family's check need not know it
        extra["same"] = (c.same, c.runner.postprocess(c.same, geometry))
    if getattr(check, "uses_candidates", False):
        extra["candidates"] = before_nms(c.runner, geometry)
    ip.results[c.key], why = check.compare(m, ip.image, c.key, c.ref, c.got, c.ref_results, c.got_results, stats, lim,
                                           **extra)
    if not c.judged:
        return []
    bad = tensor_failures(ip.image, c.key, stats, lim) if check.judge_tensors(c.fp16) else []
    return bad + ([why] if why else [])
