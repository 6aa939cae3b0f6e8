"""`litedet quantize`: an fp16/fp32 bundle -> an int8 bundle that ncnn's int8 inference runs.

Calibration runs the bundle's fp32 reference graph in ncnn on the user's images (preprocessed by
the runtime, as the manifest states) and reads each quantisable layer's input: its largest
magnitude (min-max, ACIQ) and, for KL, a histogram (``quantize.py`` has the maths and formats).
The plan says which layers go int8: all of them, all but ``--keep-fp``, or (``--target-agreement``)
all but the fewest most sensitive ones that bring agreement with the fp32 graph on the calibration
images up to the target. The new bundle keeps the fp32 graph (param and bin) as its reference, so
``parity`` and ``eval`` compare int8 against it, and its manifest records the method, the
calibration set (size, sha256), the table and the layers on each side.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from litedet.hashing import sha256_file
from litedet.runtime.bundle import MAIN_GRAPH, Bundle, open_bundle_dir
from litedet.runtime.manifest import Int8Spec, Manifest

from . import quantize as q

__all__ = ["QuantizeError", "QuantizeResult", "quantize_bundle", "calibration_images", "calibration_sha256",
           "summary", "TABLE_NAME", "FP32_PARAM"]

TABLE_NAME = "model.int8.table"
FP32_PARAM = "reference/model.fp32.ncnn.param"
FP32_BIN = "reference/model.fp32.ncnn.bin"
AGREEMENT_IMAGES = 100  # the automatic plan scores candidates on at most this many calibration images
SENSITIVITY_IMAGES = 8  # ... and ranks the layers on this many
GT_SCORE = 0.3  # detectors: the fp32 graph's boxes with this score or more are the truth (as litedet eval)


class QuantizeError(ValueError):
    """Bad input to litedet quantize (one line: what is wrong, what would be right)."""


@dataclass
class QuantizeResult:
    bundle: Path
    manifest: Manifest
    trace: list[tuple[int, float]] = field(default_factory=list)  # automatic plan: (layers kept fp, agreement)
    sensitivity: dict[str, float] = field(default_factory=dict)  # layer -> output error when only it is int8


def calibration_images(folder: str | Path, limit: int | None = None) -> list:
    """The calibration photos (sorted by name), each readable, or QuantizeError naming the problem."""
    from litedet.runtime.runner import ImageError, load_image

    from .verify.evaluate import EvalError, list_images

    try:
        images = list_images(folder, limit)
    except EvalError as e:
        raise QuantizeError(str(e).replace("--images", "--calib")) from None
    for im in images:
        try:
            load_image(im.path)
        except ImageError as e:
            raise QuantizeError(f"--calib: {e}; remove it or point --calib at readable photos") from None
    return images


def calibration_sha256(images: list) -> str:
    """One sha256 of the calibration set: its images' names and contents, sorted by name."""
    h = hashlib.sha256()
    for im in sorted(images, key=lambda i: i.name):
        h.update(f"{im.name}\0{sha256_file(im.path)}\n".encode())
    return h.hexdigest()


@dataclass
class _Graphs:
    """The bundle's main graph: its fp32 reference and shipped files, and both sides' weights."""

    b: Bundle
    param32: Path
    bin32: Path
    param: Path
    bin: Path
    fp32: dict[str, q.LayerWeights]
    shipped: dict[str, q.LayerWeights]


def _open(bundle) -> _Graphs:
    b = open_bundle_dir(bundle)
    m = b.manifest
    if m.int8 is not None or m.weight_storage == "int8":
        raise QuantizeError(f"{b.path} is already int8 (quantised by {m.int8.method if m.int8 else '?'}); quantize "
                            "the fp16 or fp32 bundle it came from")
    g32, g = b.graph_files(fp32=True)[MAIN_GRAPH], b.graph_files()[MAIN_GRAPH]
    try:
        _, fp32 = q.read_weights(g32.param, g32.bin)
        _, shipped = q.read_weights(g.param, g.bin)
    except ValueError as e:
        raise QuantizeError(f"{b.path}: {e}") from None
    return _Graphs(b, g32.param, g32.bin, g.param, g.bin, fp32, shipped)


def _stats(gr: _Graphs, images: list, method: str, threads: int, progress: bool) -> dict[str, q.ActStats]:
    """Each quantisable layer's input statistics on the calibration images (two passes for KL:
    the largest magnitude first, then the histogram over it, as ncnn2table does)."""
    from tqdm import tqdm

    from litedet.runtime.runner import BundleRunner, load_image, make_net

    r32 = BundleRunner.from_bundle(gr.b, threads=threads, fp16=False, bin_override=gr.bin32)
    net = make_net(gr.param32, gr.bin32, threads, fp16=False)
    names = list(gr.fp32)
    blobs = [gr.fp32[n].layer.inputs[0] for n in names]
    stats = {n: q.ActStats() for n in names}
    passes = ("absmax", "histogram") if method == "kl" else ("absmax",)
    for what in passes:
        for im in tqdm(images, desc=f"calibration ({what})", unit="image", disable=not progress, leave=False):
            chw, _ = r32.preprocess_array(load_image(im.path))
            for n, x in zip(names, _extract(net, r32.manifest.input.blob, chw, blobs)):
                stats[n].add_absmax(x) if what == "absmax" else stats[n].add_hist(x)
    return stats


def _extract(net, input_blob: str, chw: np.ndarray, blobs: list[str]) -> list[np.ndarray]:
    import ncnn

    from litedet.runtime.runner import extract_copy

    x = np.ascontiguousarray(chw, np.float32)
    with net.create_extractor() as ex:
        ex.input(input_blob, ncnn.Mat(x).clone())  # clone: an in-place first layer would write into x
        return [extract_copy(ex, b, "calibration") for b in blobs]


def _check_keep_fp(gr: _Graphs, keep_fp: list[str]) -> None:
    unknown = [n for n in keep_fp if n not in gr.fp32]
    if unknown:
        names = list(gr.fp32)
        raise QuantizeError(f"--keep-fp {unknown[0]!r} is not a quantisable layer of {gr.param.name} (its "
                            f"{len(names)} Convolution/ConvolutionDepthWise/InnerProduct layers are e.g. "
                            f"{', '.join(names[:4])})")


def quantize_bundle(bundle: "str | Path | Bundle", calib: str | Path, out: str | Path, *, method: str = "kl",
                    keep_fp: list[str] | None = None, target_agreement: float | None = None,
                    limit: int | None = None, force: bool = False, threads: int = 1,
                    progress: bool = True, arm_costs: Callable | None = None) -> QuantizeResult:
    """Calibrate, plan and write the int8 bundle (atomically: nothing at ``out`` until it loads).
    ``arm_costs(bundle_dir) -> [{name, insns}]`` (benchmarks/arm/icount.layer_costs at fp16 under
    qemu, handed in by the CLI): the layers whose int8 form costs ARM at least what their fp16
    form does stay in floating point too."""
    from .bundle import atomic_bundle_dir, check_destination

    if method not in q.METHODS:
        raise QuantizeError(f"--method {method!r}: expected one of {', '.join(q.METHODS)}")
    if target_agreement is not None and not 0.0 < target_agreement <= 1.0:
        raise QuantizeError(f"--target-agreement {target_agreement}: expected a number in (0, 1], e.g. 0.95")
    keep_fp = list(dict.fromkeys(keep_fp or []))
    gr = _open(bundle)
    _check_keep_fp(gr, keep_fp)
    check_destination(out, force)  # before the work: a refusal costs nothing
    images = calibration_images(calib, limit)
    stats = _stats(gr, images, method, threads, progress)
    scales = {n: q.activation_scale(s, method) for n, s in stats.items()}
    result = QuantizeResult(Path(out), gr.b.manifest)
    fp_layers, plan = keep_fp, ("keep-fp" if keep_fp else "all")
    ev = _Agreement(gr, images[:AGREEMENT_IMAGES], threads)
    try:
        if target_agreement is not None:
            fp_layers = _auto_plan(gr, ev, scales, method, keep_fp, target_agreement, result, progress)
            plan = "target-agreement"
        int8 = {n: s for n, s in scales.items() if n not in fp_layers}
        spec = Int8Spec(method=method, calib_images=len(images), calib_sha256=calibration_sha256(images),
                        table=TABLE_NAME, table_sha256="", int8_layers=list(int8), fp_layers=list(fp_layers),
                        plan=plan, target_agreement=float(target_agreement or 0.0), agreement=0.0,
                        agreement_metric=ev.metric, arm_fp_layers=[])
        if arm_costs is not None and int8:
            slower = _arm_slower(gr, ev.tmp, int8, method, spec, arm_costs)
            int8 = {n: s for n, s in int8.items() if n not in slower}
            spec = dataclasses.replace(spec, int8_layers=list(int8), arm_fp_layers=slower)
        if not int8:
            raise QuantizeError("--keep-fp names every quantisable layer; nothing would be int8" if arm_costs is None
                                else "no layer is cheaper on ARM in int8 than in fp16; the fp16 bundle is the faster one")
        spec = dataclasses.replace(spec, agreement=round(ev.score(_candidate(gr, int8, method, ev.tmp)), 6))
        with atomic_bundle_dir(Path(out), force) as tmp:
            result.manifest = _write(gr, tmp, int8, method, spec)
    finally:
        ev.close()
    return result


def _arm_slower(gr: _Graphs, scratch: Path, int8: dict[str, float], method: str, spec: Int8Spec,
                arm_costs: Callable) -> list[str]:
    """The planned int8 layers whose ARM cost (guest instructions, fp16 on) is not below the same
    layer's in the source bundle."""
    d = scratch / "arm-candidate"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir()
    _write(gr, d, int8, method, spec)
    before = {r["name"]: r["insns"] for r in arm_costs(gr.b.path)}
    after = {r["name"]: r["insns"] for r in arm_costs(d)}
    return [n for n in int8 if after.get(n, 0) >= before.get(n, 0)]


class _Agreement:
    """Scores a candidate int8 graph against the fp32 graph on the calibration images: agreement mAP
    (the fp32 graph's boxes with score >= 0.3 as the truth, decoded as litedet eval decodes) for
    detectors, top-1 agreement for classifiers."""

    def __init__(self, gr: _Graphs, images: list, threads: int) -> None:
        from litedet.runtime.runner import BundleRunner, load_image

        from .verify.evaluate import eval_manifest

        self.gr, self.threads = gr, threads
        self.tmp = Path(tempfile.mkdtemp(prefix="litedet-quantize-"))
        self.m, _ = eval_manifest(gr.b.manifest)
        self.r32 = BundleRunner.from_bundle(gr.b, threads=threads, fp16=False, bin_override=gr.bin32)
        self.inputs, self.sizes = [], {}
        for im in images:
            a = load_image(im.path)
            self.inputs.append((im.name, *self.r32.preprocess_array(a)))
            self.sizes[im.name] = [int(a.shape[1]), int(a.shape[0])]
        self.ref = self._results(self.r32)
        self.metric = {"detection": "agreement mAP", "segmentation": "agreement mIoU"}.get(self.m.task, "top-1 agreement")
        if self.m.task == "detection":
            from .verify.metrics import coco_gt_from_results

            self.gt = coco_gt_from_results(self.ref, self.sizes, self.m.class_names, GT_SCORE)

    def _results(self, runner) -> dict[str, list]:
        return {n: self.r32.kind.decode(self.m, runner.run_array(chw), g) for n, chw, g in self.inputs}

    def score(self, files: tuple[Path, Path]) -> float:
        from litedet.runtime.runner import BundleRunner, make_net

        net = make_net(files[0], files[1], self.threads, fp16=False)
        res = self._results(BundleRunner(self.gr.b.manifest, net, self.gr.b.path, self.r32.graphs))
        if self.m.task == "detection":
            from .verify.metrics import coco_map

            return float(coco_map(self.gt, res).get("AP", 0.0))
        if self.m.task == "segmentation":
            from .verify.metrics import mask_metrics

            return max(0.0, float(mask_metrics(res, None, self.ref, self.m.class_names)["agreement_mIoU"]))
        top1 = [r[0].label == res[n][0].label for n, r in self.ref.items() if r and res[n]]
        return float(np.mean(top1)) if top1 else 0.0

    def outputs(self, files: tuple[Path, Path], n: int) -> list[np.ndarray]:
        """The graph's raw outputs on the first ``n`` images, concatenated per image."""
        from litedet.runtime.runner import make_net

        net = make_net(files[0], files[1], self.threads, fp16=False)
        blobs = [o.blob for o in self.m.outputs]
        return [np.concatenate([x.ravel() for x in _extract(net, self.m.input.blob, chw, blobs)])
                for _, chw, _ in self.inputs[:n]]

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def _candidate(gr: _Graphs, int8: dict[str, float], method: str, tmp: Path) -> tuple[Path, Path]:
    """An int8 param/bin with exactly the layers of ``int8`` quantised (into ``tmp``)."""
    p, b = tmp / "candidate.param", tmp / "candidate.bin"
    q.write_int8(gr.param, gr.bin, gr.fp32, gr.shipped, int8, method, p, b)
    return p, b


def _cosine_loss(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return float(np.mean([1.0 - float(x @ y) / max(float(np.linalg.norm(x) * np.linalg.norm(y)), 1e-30)
                          for x, y in zip(a, b)]))


def _auto_plan(gr: _Graphs, ev: _Agreement, scales: dict[str, float], method: str, keep_fp: list[str],
               target: float, result: QuantizeResult, progress: bool) -> list[str]:
    """The fewest most sensitive layers to keep in floating point for agreement >= ``target``.
    Sensitivity: the mean output cosine loss on a few images when only that layer is int8. Kept
    counts are tried doubling (0, 1, 2, 4, ...) until the target is met, then bisected: few
    candidates, each scored on the calibration images."""
    from tqdm import tqdm

    ref = ev.outputs((gr.param32, gr.bin32), SENSITIVITY_IMAGES)
    free = [n for n in scales if n not in keep_fp]
    sens = {}
    for n in tqdm(free, desc="sensitivity", unit="layer", disable=not progress, leave=False):
        sens[n] = _cosine_loss(ref, ev.outputs(_candidate(gr, {n: scales[n]}, method, ev.tmp), SENSITIVITY_IMAGES))
    order = sorted(free, key=lambda n: -sens[n])
    result.sensitivity = {n: round(sens[n], 8) for n in order}
    scored: dict[int, float] = {}

    def agreement(k: int) -> float:
        if k not in scored:
            kept = set(keep_fp) | set(order[:k])
            scored[k] = ev.score(_candidate(gr, {n: s for n, s in scales.items() if n not in kept}, method, ev.tmp))
            result.trace.append((len(kept), scored[k]))
        return scored[k]

    lo, hi = -1, 0  # agreement(lo) < target (lo = -1: none tried), agreement(hi) >= target once found
    while hi < len(order) and agreement(hi) < target:
        lo, hi = hi, max(1, hi * 2)
    hi = min(hi, len(order) - 1)
    while hi - lo > 1:  # the smallest k in (lo, hi] that meets the target, assuming it grows with k
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if agreement(mid) >= target else (mid, hi)
    if agreement(hi) < target:
        raise QuantizeError(f"--target-agreement {target}: keeping all but one layer in floating point reaches "
                            f"only {agreement(hi):.3f} on the calibration images; lower the target or use --keep-fp")
    return list(keep_fp) + order[:hi]


def _write(gr: _Graphs, tmp: Path, int8: dict[str, float], method: str, spec: Int8Spec) -> Manifest:
    """The int8 bundle in ``tmp``: the source bundle's files, the int8 param/bin in place of the
    shipped ones, the fp32 graph kept as the reference, the calibration table, the manifest."""
    src, m = gr.b.path, gr.b.manifest
    shutil.copytree(src, tmp, dirs_exist_ok=True, symlinks=False)
    ref = dict(m.reference)
    ref_sha = dict(ref.get("sha256", {}))
    shutil.copyfile(gr.param32, tmp / FP32_PARAM)
    ref["fp32_param"], ref_sha["fp32_param"] = FP32_PARAM, sha256_file(tmp / FP32_PARAM)
    if not ref.get("fp32_bin"):  # an fp32 bundle: its shipped bin is the fp32 reference
        shutil.copyfile(gr.bin32, tmp / FP32_BIN)
        ref["fp32_bin"], ref_sha["fp32_bin"] = FP32_BIN, sha256_file(tmp / FP32_BIN)
    ref["sha256"] = ref_sha
    w_scales = q.write_int8(gr.param, gr.bin, gr.fp32, gr.shipped, int8, method, tmp / m.param, tmp / m.bin)
    (tmp / TABLE_NAME).write_text(q.table_text(w_scales, int8))
    spec = dataclasses.replace(spec, table_sha256=sha256_file(tmp / TABLE_NAME))
    new = dataclasses.replace(m, weight_storage="int8", int8=spec, reference=ref,
                              param_sha256=sha256_file(tmp / m.param), bin_sha256=sha256_file(tmp / m.bin),
                              provenance={**m.provenance, "quantized_from": {"bundle": str(src.resolve()),
                                                                             "param_sha256": m.param_sha256,
                                                                             "bin_sha256": m.bin_sha256}}).validate()
    (tmp / "manifest.json").write_text(json.dumps(new.to_dict(), indent=2) + "\n")
    return new


def summary(r: QuantizeResult) -> str:
    """What the CLI prints: the plan, the measured agreement, the sizes."""
    m, s = r.manifest, r.manifest.int8
    size = (r.bundle / m.bin).stat().st_size
    lines = [f"bundle: {r.bundle} ({m.architecture}, int8 by {s.method}, calibrated on {s.calib_images} images)",
             f"int8 layers: {len(s.int8_layers)}; kept in floating point: {len(s.fp_layers)}"
             + (f" ({', '.join(s.fp_layers[:6])}{', ...' if len(s.fp_layers) > 6 else ''})" if s.fp_layers else "")
             + (f"; {len(s.arm_fp_layers)} more kept because int8 costs ARM at least as much as fp16"
                if s.arm_fp_layers else ""),
             f"{s.agreement_metric} with the fp32 graph on the calibration images: {s.agreement:.4f}"
             + (f" (target {s.target_agreement})" if s.plan == "target-agreement" else ""),
             f"bin: {size / 1e6:.2f} MB"]
    if r.trace:
        lines.append("plan search (layers kept fp -> agreement): "
                     + ", ".join(f"{k} -> {a:.4f}" for k, a in sorted(r.trace)))
    return "\n".join(lines)

