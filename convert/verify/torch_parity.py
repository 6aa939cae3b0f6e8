"""torch <-> ncnn parity of a bundle, per output tensor and per result.

The PyTorch side comes from the bundle itself (``reference/model.torchscript.pt``),
so no checkpoint or model code is needed. For every image: the runtime's
ncnn preprocessing gives one input tensor; torch (fp32), ncnn with the fp32
reference bin and fp16 flags off ("ncnn_fp32"), and ncnn with the shipped bin
and fp16 flags on ("ncnn_fp16") all run on that same tensor; their outputs
are compared to torch's, then their results, by the check of the bundle's
postprocess kind (``convert/verify/checks.py``).

Thresholds (``ParityThresholds``) are deliberately asymmetric: fp32 must be
numerically the same network; fp16 must give the same results.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from litedet.runtime.bundle import Bundle, open_bundle_dir
from litedet.runtime.manifest import Manifest, ManifestError
from litedet.runtime.runner import BundleRunner

from .compare import Limits, align_outputs
from .driver import Comparison, Sides, default_images, images_to_compare, judge, open_sides, reference_file
from .report import ImageParity, ParityReport, error_chart, format_table, write_report

__all__ = ["ParityThresholds", "run_parity", "format_report", "reference_file", "torch_outputs", "torch_runner",
           "default_images"]

KEYS = ["ncnn_fp32", "ncnn_fp16"]


def parity_keys(m: Manifest) -> list[str]:
    """torch against ncnn fp32 and the shipped graph: ncnn_fp16, or ncnn_int8 for an int8 bundle."""
    return ["ncnn_fp32", "ncnn_int8" if m.int8 is not None else "ncnn_fp16"]


@dataclass
class ParityThresholds:
    """Exceeding any of these makes ``litedet parity`` exit non-zero.

    max_rel is max|a - b| / max|a| over the tensor (relative to its range, so
    near-zero elements do not blow it up)."""

    fp32_min_cosine: float = 0.99999
    fp32_max_rel: float = 1e-3
    fp32_min_iou: float = 0.99
    fp32_max_score_diff: float = 1e-3
    fp16_min_cosine: float = 0.999
    # x86 ncnn stores activations in fp16 too: ~1e-2 of the range on untrained
    # weights, ~3e-4 on the trained NanoDet-m; result agreement is the real criterion
    fp16_max_rel: float = 0.1
    fp16_min_iou: float = 0.9
    fp16_max_score_diff: float = 0.02
    match_iou: float = 0.5
    borderline_margin: float = 0.02
    max_label_flip_frac: float = 0.05
    # int8 (a bundle from litedet quantize, its float layers fp16): quantisation moves every tensor;
    # its accuracy is eval's question (agreement mAP, top-1), so parity holds it to the same results
    # with looser box and score limits (calibrated on the trained NanoDet-m and SqueezeNet v1.1)
    int8_min_cosine: float = 0.95
    # a single score cell may move by most of its range under int8 (0.94 measured on ARM, all layers
    # int8): only a garbage tensor exceeds this; cosine and the detections are the criterion
    int8_max_rel: float = 1.0
    int8_min_iou: float = 0.8
    int8_max_score_diff: float = 0.15

    def check(self, key: str, value: float) -> None:
        """A finite number in the key's range, or ValueError naming both."""
        import math

        lo, hi = (0.0, 10.0) if key.endswith("max_rel") else (0.0, 1.0)
        if not (isinstance(value, (int, float)) and math.isfinite(value) and lo <= value <= hi):
            raise ValueError(f"--threshold {key}={value!r}: a threshold must be a finite number in [{lo:g}, {hi:g}]")

    def limits(self, key: str) -> Limits:
        p = {"ncnn_fp16": "fp16", "ncnn_int8": "int8"}.get(key, "fp32")
        return Limits(getattr(self, f"{p}_min_cosine"), getattr(self, f"{p}_max_rel"), getattr(self, f"{p}_min_iou"),
                      getattr(self, f"{p}_max_score_diff"), self.match_iou, self.borderline_margin,
                      self.max_label_flip_frac)


def torch_outputs(ts, m: Manifest, chw: np.ndarray) -> dict[str, np.ndarray]:
    """The TorchScript's outputs for one [C, H, W] input, by the manifest's output blobs."""
    import torch

    with torch.no_grad():
        touts = ts(torch.from_numpy(chw)[None])
    blobs = [o.blob for o in m.outputs]
    if len(touts) != len(blobs):
        raise ManifestError(f"TorchScript returns {len(touts)} outputs; the manifest lists {len(blobs)}")
    return {b: o[0].numpy() for b, o in zip(blobs, touts)}


def torch_complete(bundle: Path, m: Manifest, outputs: dict[str, np.ndarray], chw: np.ndarray,
                   graphs: dict | None = None) -> dict[str, np.ndarray]:
    """Torch's stage-1 outputs completed with the later stages (two-stage kinds): the runtime's
    glue between the graphs, each further graph run by its reference TorchScript."""
    import torch

    from litedet.runtime.kinds import postprocess_kind

    kind = postprocess_kind(m.postprocess.kind)
    if kind.complete is None:
        return outputs
    graphs = graphs if graphs is not None else torch_graphs(bundle, m)

    def run_graph(name: str, x: np.ndarray) -> dict[str, np.ndarray]:
        with torch.no_grad():
            outs = graphs[name](torch.from_numpy(np.ascontiguousarray(x, np.float32))[None])
        return {b: o[0].numpy() for b, o in zip(m.extra_graphs()[name].blobs()[1], outs)}

    return {**outputs, **kind.complete(m, outputs, chw.shape[2], chw.shape[1], run_graph)}


def torch_runner(bundle: "Path | Bundle"):
    """[C, H, W] -> torch's completed outputs of the bundle (its reference TorchScript, every graph),
    by the manifest's blob names."""
    b = open_bundle_dir(bundle, verify=False)
    m = b.manifest
    ts, graphs = load_torchscript(b.reference("torchscript")), torch_graphs(b, m)
    return lambda chw: torch_complete(b, m, torch_outputs(ts, m, chw), chw, graphs)


def torch_graphs(bundle: Path, m: Manifest) -> dict:
    """The reference TorchScript of each further graph of the bundle, by name."""
    return {name: load_torchscript(reference_file(bundle, m, f"{name}_torchscript")) for name in m.extra_graphs()}


def load_torchscript(path: Path):
    import torch

    try:
        return torch.jit.load(str(path)).eval()
    except RuntimeError as e:
        raise ManifestError(f"{path} is not a loadable TorchScript ({str(e).splitlines()[0]})") from None


def run_parity(bundle: str | Path, images: list[tuple[str, np.ndarray]] | None = None,
               thresholds: ParityThresholds | None = None, out_dir: str | Path | None = None,
               threads: int = 1, progress: bool = True, cpp: bool = False) -> ParityReport:
    """Parity report of a bundle. ``cpp=True`` also runs the on-device C++
    postprocessing core (built with g++) on the ncnn fp16 outputs and requires
    results identical to Python's (boxes and scores within 1e-4)."""
    from tqdm import tqdm

    s = open_sides(bundle, threads)
    th = thresholds or ParityThresholds()
    r16 = BundleRunner.from_bundle(s.b, threads=threads, fp16=True)
    ts = load_torchscript(s.b.reference("torchscript"))
    graphs = torch_graphs(s.b, s.manifest)
    todo = images_to_compare(s, images)
    out_dir = Path(out_dir) if out_dir else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    core = _cpp_core(s) if cpp else None
    results, failures = [], []
    for name, img in tqdm(todo, desc="parity", disable=not progress, leave=False):
        ip, bad = _parity_of_image(s, th, name, img, ts, graphs, r16, core, out_dir)
        results.append(ip)
        failures += bad
    m = s.manifest
    notes = s.check.notes(m, any(ip.reference_results for ip in results))
    report = ParityReport(str(s.bundle), m.architecture, m.postprocess.kind, m.provenance.get("weights", "?"), results,
                          th, failures, notes)
    if out_dir:
        write_report(out_dir, "parity", report.to_dict(), format_report(report))
        error_chart(report, out_dir / "parity_errors.png", parity_keys(m), th.fp32_max_rel)
    return report


def _cpp_core(s: Sides):
    from .cpp_core import CppCore

    if not s.check.has_cpp:
        raise ValueError(f"--cpp: the C++ core has no postprocess kind {s.manifest.postprocess.kind!r}")
    return CppCore()


def _parity_of_image(s: Sides, th: ParityThresholds, name: str, img: np.ndarray, ts, graphs, r16: BundleRunner,
                     core, out_dir: Path | None) -> tuple[ImageParity, list[str]]:
    """torch fp32 against ncnn fp32 and ncnn fp16 on one image (and the C++ core on fp16's outputs)."""
    m, r32 = s.manifest, s.r32
    chw, g = r32.preprocess_array(img)
    t = torch_complete(s.bundle, m, torch_outputs(ts, m, chw), chw, graphs)
    ip = ImageParity(name, [g.src_w, g.src_h], g.input_size)
    t_res = r32.postprocess(t, g)
    ip.reference_results = [x.to_dict() for x in t_res]
    failures: list[str] = []
    shipped = parity_keys(m)[1]
    for key, runner in (("ncnn_fp32", r32), (shipped, r16)):
        n = align_outputs(t, runner.run_array(chw))
        same = runner.complete(n, chw.shape[2], chw.shape[1], reference=t) if runner.kind.complete else None
        n_res = runner.postprocess(n, g)
        ip.test_results[key] = [x.to_dict() for x in n_res]
        c = Comparison(key, t, n, t_res, n_res, runner, same, fp16=key == shipped)
        failures += judge(s, ip, c, th.limits(key), g)
        if key == shipped and out_dir:
            s.check.draw(img, t_res, n_res, out_dir / f"parity_{name}.jpg")
        if key == shipped and core is not None:
            ip.cpp, why = s.check.cpp(core, m, n, g)
            failures += [f"{name}: {why}"] if why else []
    return ip, failures


def format_report(r: ParityReport) -> str:
    from ..families import check_for_kind

    keys = [k for k in ("ncnn_fp32", "ncnn_fp16", "ncnn_int8") if any(k in ip.tensors for ip in r.images)]
    return format_table(r, check_for_kind(r.kind), keys or KEYS, [f"parity of {r.bundle} ({r.architecture}, weights: {r.weights})"])
