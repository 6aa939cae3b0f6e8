"""torch <-> ncnn parity of a bundle, per output tensor and per detection.

The PyTorch side comes from the bundle itself (``reference/model.torchscript.pt``),
so no checkpoint or model code is needed. For every image: the runtime's
ncnn preprocessing gives one input tensor; torch (fp32), ncnn with the fp32
reference bin and fp16 flags off ("ncnn_fp32"), and ncnn with the shipped bin
and fp16 flags on ("ncnn_fp16") all run on that same tensor; their outputs
and their decoded detections are compared to torch's.

Thresholds (``ParityThresholds``) are deliberately asymmetric: fp32 must be
numerically the same network; fp16 must give the same detections.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from litedet.runtime.detector import Detection, Detector, postprocess_outputs
from litedet.runtime.manifest import ManifestError

__all__ = ["ParityThresholds", "TensorStats", "DetectionMatch", "ParityReport", "tensor_stats", "match_detections",
           "run_parity", "default_images", "format_report"]


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
    # weights, ~3e-4 on the trained NanoDet-m; detection agreement is the real criterion
    fp16_max_rel: float = 0.1
    fp16_min_iou: float = 0.9
    fp16_max_score_diff: float = 0.02
    match_iou: float = 0.5  # a pair must overlap this much to count as the same detection
    # unmatched detections this close to the score threshold are reported as
    # borderline (a 0.351 vs 0.349 flip), not as failures
    borderline_margin: float = 0.02
    # label flips tolerated, as a fraction of the reference detections; a
    # class-index bug flips nearly all of them
    max_label_flip_frac: float = 0.05


@dataclass
class TensorStats:
    blob: str
    role: str
    stride: int
    max_abs: float
    max_rel: float
    cosine: float


@dataclass
class DetectionMatch:
    reference: int
    test: int
    matched: int
    missed: int
    extra: int
    borderline: int
    label_flips: int  # same box and score, another label: an argmax near-tie flipped
    mean_iou: float
    min_iou: float
    max_score_diff: float


@dataclass
class TopKMatch:
    """Classification agreement of one backend with torch on one image."""

    torch_top1: int
    test_top1: int
    top1_agrees: bool
    top5_overlap: int  # how many of torch's top-5 are in the backend's top-5
    margin: float  # torch logit of its top-1 minus its logit of the backend's top-1
    explained: bool  # a flip the measured logit error can account for (margin <= 2 * max abs error)


@dataclass
class CppMatch:
    """C++ core vs Python postprocessing on the same raw ncnn fp16 outputs."""

    python: int
    cpp: int
    identical: bool  # same count, labels and order
    max_box_diff: float  # network-input pixels
    max_score_diff: float


@dataclass
class ImageParity:
    image: str
    size: list[int]  # [w, h]
    input_size: list[int]  # [w, h] after letterbox
    tensors: dict[str, list[TensorStats]] = field(default_factory=dict)
    detections: dict[str, DetectionMatch] = field(default_factory=dict)
    torch_detections: list[dict] = field(default_factory=list)
    topk: dict[str, TopKMatch] = field(default_factory=dict)
    cpp: CppMatch | None = None


@dataclass
class ParityReport:
    bundle: str
    architecture: str
    weights: str
    images: list[ImageParity]
    thresholds: ParityThresholds
    failures: list[str]
    notes: list[str]

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def write_report(out_dir: str | Path, stem: str, data: dict, text: str) -> None:
    """STEM.json and STEM.txt side by side in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(data, indent=2) + "\n")
    (out / f"{stem}.txt").write_text(text + "\n")


def tensor_stats(ref: np.ndarray, got: np.ndarray) -> tuple[float, float, float]:
    """(max abs, max rel to the reference's range, cosine) of two tensors."""
    a = ref.astype(np.float64).ravel()
    b = got.astype(np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {ref.shape} vs {got.shape}")
    diff = np.abs(a - b)
    max_abs = float(diff.max()) if diff.size else 0.0
    scale = float(np.abs(a).max()) if a.size else 0.0
    max_rel = max_abs / max(scale, 1e-6)
    den = np.linalg.norm(a) * np.linalg.norm(b)
    cosine = float(a @ b / den) if den > 0 else float(np.array_equal(a, b))
    return max_abs, max_rel, cosine


def output_stats(m, ref: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> list[TensorStats]:
    """tensor_stats for every output of the manifest (``got`` reshaped to ``ref``)."""
    stats = []
    for o in m.outputs:
        ma, mr, cs = tensor_stats(ref[o.blob], got[o.blob].reshape(ref[o.blob].shape))
        stats.append(TensorStats(o.blob, o.role, o.stride, ma, mr, cs))
    return stats


def tensor_failures(name: str, key: str, stats: list[TensorStats], min_cosine: float, max_rel: float) -> list[str]:
    return [f"{name}: {key} output {s.blob} ({s.role}/{s.stride}) cosine {s.cosine:.6f} (min {min_cosine}), "
            f"max_rel {s.max_rel:.2e} (max {max_rel})"
            for s in stats if s.cosine < min_cosine or s.max_rel > max_rel]


def detection_failure(name: str, key: str, dm: "DetectionMatch", min_iou: float, max_score_diff: float,
                      max_label_flip_frac: float) -> str | None:
    """Why a detection comparison fails, or None when it passes."""
    flips_bad = dm.label_flips > max_label_flip_frac * max(dm.reference, 1)
    if dm.missed or dm.extra or flips_bad or dm.min_iou < min_iou or dm.max_score_diff > max_score_diff:
        return (f"{name}: {key} detections missed {dm.missed}, extra {dm.extra}, label flips {dm.label_flips}, "
                f"min IoU {dm.min_iou:.3f} (min {min_iou}), max score diff {dm.max_score_diff:.4f} (max {max_score_diff})")
    return None


def detection_notes(m, any_detections: bool) -> list[str]:
    """What a reader must know before trusting a detection parity report."""
    notes = []
    if m.provenance.get("weights") == "seeded-random":
        notes.append("weights are seeded random weights (UNTRAINED): tensor and detection parity are meaningful, "
                     "but its detections are not real objects")
    if not any_detections:
        notes.append(f"no image produced a detection above score_threshold {m.postprocess.score_threshold}: "
                     "detection parity is vacuous")
    return notes


def _iou(a: Detection, b: Detection) -> float:
    iw = max(0.0, min(a.x2, b.x2) - max(a.x1, b.x1))
    ih = max(0.0, min(a.y2, b.y2) - max(a.y1, b.y1))
    inter = iw * ih
    union = (a.x2 - a.x1) * (a.y2 - a.y1) + (b.x2 - b.x1) * (b.y2 - b.y1) - inter
    return inter / union if union > 0 else 0.0


def _cut(dets: list[Detection], score_threshold: float, max_detections: int | None) -> float:
    """The score a detection had to beat to be in this list: the threshold, or
    the lowest kept score when the list was cut at max_detections."""
    if max_detections is not None and len(dets) >= max_detections:
        return max(score_threshold, min(d.score for d in dets))
    return score_threshold


def match_detections(ref: list[Detection], test: list[Detection], match_iou: float = 0.5,
                     score_threshold: float = 0.0, borderline_margin: float = 0.0,
                     max_detections: int | None = None) -> DetectionMatch:
    """Greedy one-to-one matching by label and IoU, best reference score first.

    An unmatched detection whose score is within ``borderline_margin`` of the
    cut (score threshold, or the max_detections cut) is counted as borderline:
    it flipped across a threshold, which is not a conversion error."""
    cut = max(_cut(ref, score_threshold, max_detections), _cut(test, score_threshold, max_detections))
    used = [False] * len(test)
    ious, sdiffs = [], []
    missed = borderline = 0
    matched_ref: list[Detection] = []
    for r in sorted(ref, key=lambda d: -d.score):
        best, best_iou = -1, match_iou
        for j, t in enumerate(test):
            if not used[j] and t.label == r.label:
                iou = _iou(r, t)
                if iou >= best_iou:
                    best, best_iou = j, iou
        if best < 0:
            if r.score < cut + borderline_margin:
                borderline += 1
            else:
                missed += 1
            continue
        used[best] = True
        matched_ref.append(r)
        ious.append(best_iou)
        sdiffs.append(abs(r.score - test[best].score))
    # an unmatched pair with the same box and score but another label is a flip
    unmatched_ref = [r for r in ref if not any(used_r is r for used_r in matched_ref)]
    flips = 0
    for r in unmatched_ref:
        for j, t in enumerate(test):
            if not used[j] and t.label != r.label and _iou(r, t) >= 0.9 and abs(t.score - r.score) <= borderline_margin:
                used[j] = True
                flips += 1
                if r.score < cut + borderline_margin:
                    borderline -= 1
                else:
                    missed -= 1
                break
    extra = 0
    for j, t in enumerate(test):
        if not used[j]:
            if t.score < cut + borderline_margin:
                borderline += 1
            else:
                extra += 1
    return DetectionMatch(len(ref), len(test), len(ious), missed, extra, borderline, flips,
                          float(np.mean(ious)) if ious else 1.0, float(min(ious)) if ious else 1.0,
                          float(max(sdiffs)) if sdiffs else 0.0)


def default_images() -> list[tuple[str, np.ndarray]]:
    """scikit-image's real photos (BGR), when scikit-image is installed."""
    try:
        import skimage.data as data
    except ImportError:
        return []
    out = []
    for name in ("astronaut", "chelsea", "coffee"):
        out.append((name, np.ascontiguousarray(getattr(data, name)()[:, :, ::-1])))
    left, _, _ = data.stereo_motorcycle()
    out.append(("motorcycle_left", np.ascontiguousarray(left[:, :, ::-1])))
    return out


def _draw(img: np.ndarray, ref: list[Detection], test: list[Detection], path: Path) -> None:
    import cv2

    vis = img.copy() if img.ndim == 3 and img.shape[2] == 3 else cv2.cvtColor(img, cv2.COLOR_GRAY2BGR if img.ndim == 2 else cv2.COLOR_BGRA2BGR)
    for dets, color, thick in ((ref, (0, 200, 0), 3), (test, (0, 0, 255), 1)):
        for d in dets:
            cv2.rectangle(vis, (int(d.x1), int(d.y1)), (int(d.x2), int(d.y2)), color, thick)
            cv2.putText(vis, f"{d.name} {d.score:.2f}", (int(d.x1) + 2, int(d.y1) + 14 + (0 if thick == 3 else 16)),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.45, color, 1, cv2.LINE_AA)
    cv2.putText(vis, "green: torch fp32   red: ncnn fp16", (4, vis.shape[0] - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                (255, 255, 255), 1, cv2.LINE_AA)
    cv2.imwrite(str(path), vis)


def _cpp_match(cpp, m, outputs: dict[str, np.ndarray], lb) -> CppMatch:
    py = postprocess_outputs(m, outputs, lb)
    cc = cpp.postprocess(m, outputs, lb)
    same = len(py) == len(cc) and all(a.label == b.label for a, b in zip(py, cc))
    # compare boxes in network-input pixels (image pixels scale float32 steps up)
    sx, sy = lb.resized_w / lb.src_w, lb.resized_h / lb.src_h
    box = max((max(abs(a.x1 - b.x1) * sx, abs(a.x2 - b.x2) * sx, abs(a.y1 - b.y1) * sy, abs(a.y2 - b.y2) * sy)
               for a, b in zip(py, cc)), default=0.0) if same else float("inf")
    score = max((abs(a.score - b.score) for a, b in zip(py, cc)), default=0.0) if same else float("inf")
    return CppMatch(len(py), len(cc), same, box, score)


def run_parity(bundle: str | Path, images: list[tuple[str, np.ndarray]] | None = None,
               thresholds: ParityThresholds | None = None, out_dir: str | Path | None = None,
               threads: int = 1, progress: bool = True, cpp: bool = False) -> ParityReport:
    """Parity report of a bundle. ``cpp=True`` also runs the on-device C++
    postprocessing core (built with g++) on the ncnn fp16 outputs and requires
    detections identical to Python's (boxes and scores within 1e-4)."""
    import torch
    from tqdm import tqdm

    bundle = Path(bundle)
    th = thresholds or ParityThresholds()
    from litedet.runtime.manifest import load_manifest

    if load_manifest(bundle).task == "classification":
        return _run_classification_parity(bundle, images, th, out_dir, threads, progress)
    det16 = Detector.from_bundle(bundle, threads=threads, fp16=True)
    m = det16.manifest
    ts_rel = m.reference.get("torchscript")
    if not ts_rel or not (bundle / ts_rel).is_file():
        raise ManifestError(f"{bundle} has no reference TorchScript (reference/model.torchscript.pt); parity needs a bundle "
                            "written by 'litedet convert' (a wrapped ncnn model has no PyTorch side)")
    fp32_bin = bundle / m.reference["fp32_bin"] if m.reference.get("fp32_bin") else bundle / m.bin
    det32 = Detector.from_bundle(bundle, threads=threads, fp16=False, bin_override=fp32_bin)
    ts = torch.jit.load(str(bundle / ts_rel)).eval()
    import cv2

    ref_img = cv2.imread(str(bundle / m.reference["image"]), cv2.IMREAD_UNCHANGED)
    todo = [("reference", ref_img)] + list(images if images is not None else default_images())
    out_dir = Path(out_dir) if out_dir else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    blobs = [o.blob for o in m.outputs]
    results, failures = [], []
    core = None
    if cpp:
        from .cpp_core import CppPostprocessor

        core = CppPostprocessor()
    p = m.postprocess
    for name, img in tqdm(todo, desc="parity", disable=not progress, leave=False):
        chw, lb = det32.preprocess_array(img)
        with torch.no_grad():
            touts = ts(torch.from_numpy(chw)[None])
        t = {b: o[0].numpy() for b, o in zip(blobs, touts)} if len(touts) == len(blobs) else None
        if t is None:
            raise ManifestError(f"TorchScript returns {len(touts)} outputs; manifest lists {len(blobs)}")
        ip = ImageParity(name, [lb.src_w, lb.src_h], [lb.in_w, lb.in_h])
        t_dets = postprocess_outputs(m, t, lb)
        ip.torch_detections = [d.to_dict() for d in t_dets]
        for key, det, cos_min, rel_max, iou_min, sd_max in (
            ("ncnn_fp32", det32, th.fp32_min_cosine, th.fp32_max_rel, th.fp32_min_iou, th.fp32_max_score_diff),
            ("ncnn_fp16", det16, th.fp16_min_cosine, th.fp16_max_rel, th.fp16_min_iou, th.fp16_max_score_diff),
        ):
            n = {k: v.reshape(t[k].shape) for k, v in det.run_array(chw).items()}
            ip.tensors[key] = output_stats(m, t, n)
            failures += tensor_failures(name, key, ip.tensors[key], cos_min, rel_max)
            n_dets = postprocess_outputs(m, n, lb)
            dm = match_detections(t_dets, n_dets, th.match_iou, p.score_threshold, th.borderline_margin,
                                  p.max_detections)
            ip.detections[key] = dm
            why = detection_failure(name, key, dm, iou_min, sd_max, th.max_label_flip_frac)
            if why:
                failures.append(why)
            if key == "ncnn_fp16" and out_dir:
                _draw(img, t_dets, n_dets, out_dir / f"parity_{name}.jpg")
            if key == "ncnn_fp16" and core is not None:
                ip.cpp = _cpp_match(core, m, n, lb)
                if not ip.cpp.identical or ip.cpp.max_box_diff > 1e-4 or ip.cpp.max_score_diff > 1e-4:
                    failures.append(f"{name}: C++ postprocessing differs from Python: {ip.cpp}")
        results.append(ip)
    notes = detection_notes(m, any(ip.torch_detections for ip in results))
    report = ParityReport(str(bundle), m.architecture, m.provenance.get("weights", "?"), results, th, failures, notes)
    if out_dir:
        write_report(out_dir, "parity", report.to_dict(), format_report(report))
        _error_chart(report, Path(out_dir) / "parity_errors.png")
    return report


def _topk_match(t: np.ndarray, n: np.ndarray, max_abs: float) -> TopKMatch:
    t1, n1 = int(np.argmax(t)), int(np.argmax(n))
    t5, n5 = set(np.argsort(-t, kind="stable")[:5].tolist()), set(np.argsort(-n, kind="stable")[:5].tolist())
    margin = float(t[t1] - t[n1])
    return TopKMatch(t1, n1, t1 == n1, len(t5 & n5), margin, t1 == n1 or margin <= 2 * max_abs)


def _run_classification_parity(bundle: Path, images, th: ParityThresholds, out_dir, threads: int,
                               progress: bool) -> ParityReport:
    """Logits per backend vs torch. fp32: cosine and max rel thresholds. Both:
    top-1 must agree unless torch's own margin between the two classes is
    within twice the measured logit error (a near-tie the error explains)."""
    import cv2
    import torch
    from tqdm import tqdm

    from litedet.runtime.classifier import Classifier

    c16 = Classifier.from_bundle(bundle, threads=threads, fp16=True)
    m = c16.manifest
    ts_rel, fp32_rel = m.reference.get("torchscript"), m.reference.get("fp32_bin")
    if not ts_rel or not (bundle / ts_rel).is_file():
        raise ManifestError(f"{bundle} has no reference TorchScript; parity needs a bundle written by 'litedet convert'")
    c32 = Classifier.from_bundle(bundle, threads=threads, fp16=False, bin_override=bundle / (fp32_rel or m.bin))
    ts = torch.jit.load(str(bundle / ts_rel)).eval()
    ref_img = cv2.imread(str(bundle / m.reference["image"]), cv2.IMREAD_UNCHANGED)
    todo = [("reference", ref_img)] + list(images if images is not None else default_images())
    blob = c16.output.blob
    results, failures = [], []
    for name, img in tqdm(todo, desc="parity", disable=not progress, leave=False):
        chw, g = c32.preprocess_array(img)
        with torch.no_grad():
            t = ts(torch.from_numpy(chw)[None])[0][0].numpy().reshape(-1)
        ip = ImageParity(name, [g.src_w, g.src_h], [g.target, g.target])
        for key, clf, cos_min, rel_max in (("ncnn_fp32", c32, th.fp32_min_cosine, th.fp32_max_rel),
                                           ("ncnn_fp16", c16, th.fp16_min_cosine, th.fp16_max_rel)):
            n = clf.run_array(chw)[blob].reshape(-1)
            ma, mr, cs = tensor_stats(t, n)
            ip.tensors[key] = [TensorStats(blob, "logits", 0, ma, mr, cs)]
            # fp32 must be the same network; for fp16 the criterion is top-1 agreement
            # and the logit error is reported, not thresholded
            if key == "ncnn_fp32" and (cs < cos_min or mr > rel_max):
                failures.append(f"{name}: {key} logits cosine {cs:.6f} (min {cos_min}), max_rel {mr:.2e} (max {rel_max})")
            tk = _topk_match(t, n, ma)
            ip.topk[key] = tk
            if not tk.explained:
                failures.append(f"{name}: {key} top-1 is class {tk.test_top1}, torch says {tk.torch_top1} with a logit "
                                f"margin {tk.margin:.4f} larger than twice the max logit error {ma:.2e}")
        results.append(ip)
    notes = []
    if m.provenance.get("weights") == "seeded-random":
        notes.append("weights are seeded random weights (UNTRAINED): logits and top-k agreement are meaningful, "
                     "the classes are not")
    report = ParityReport(str(bundle), m.architecture, m.provenance.get("weights", "?"), results, th, failures, notes)
    if out_dir:
        write_report(out_dir, "parity", report.to_dict(), format_report(report))
        _error_chart(report, Path(out_dir) / "parity_errors.png")
    return report


def _error_chart(r: ParityReport, path: Path) -> None:
    """Worst max-rel error per output over all images, fp32 vs fp16, on a log axis."""
    from .charts import log_bar_chart

    first = r.images[0].tensors
    labels = [f"{s.blob} {s.role}" + (f"/{s.stride}" if s.stride else "") for s in first["ncnn_fp32"]]
    series = {}
    for key in ("ncnn_fp32", "ncnn_fp16"):
        series[key] = [max(ip.tensors[key][i].max_rel for ip in r.images) for i in range(len(labels))]
    log_bar_chart(path, f"{r.architecture}: worst max rel error vs torch over {len(r.images)} images",
                  labels, series, limit=r.thresholds.fp32_max_rel, limit_label="fp32 limit")


def format_report(r: ParityReport) -> str:
    lines = [f"parity of {r.bundle} ({r.architecture}, weights: {r.weights})", ""]
    if r.images and r.images[0].topk:
        lines.append(f"{'image':<16} {'size':>9} {'vs torch':<10} {'cosine':>11} {'max rel':>9} {'max abs':>9}  "
                     f"{'top1 t/n':>9} {'agree':>5} {'top5 overlap':>12}")
        for ip in r.images:
            for key, tk in ip.topk.items():
                st = ip.tensors[key][0]
                lines.append(f"{ip.image:<16} {'x'.join(map(str, ip.size)):>9} {key:<10} {st.cosine:>11.7f} "
                             f"{st.max_rel:>9.2e} {st.max_abs:>9.2e}  {tk.torch_top1:>4}/{tk.test_top1:<4} "
                             f"{'yes' if tk.top1_agrees else ('tie' if tk.explained else 'NO'):>5} {tk.top5_overlap:>9}/5")
        lines.append("")
        lines += [f"note: {n}" for n in r.notes]
        lines.append("PASS" if r.passed else "FAIL:\n  " + "\n  ".join(r.failures))
        return "\n".join(lines)
    lines.append(f"{'image':<16} {'size':>9} {'input':>9} {'vs torch':<10} {'worst cosine':>13} {'max rel':>9} "
                 f"{'max abs':>9}  {'dets t/n':>8} {'match':>5} {'miss':>4} {'extra':>5} {'bord':>4} {'flip':>4} {'minIoU':>6} {'dScore':>7}")
    for ip in r.images:
        for key in ("ncnn_fp32", "ncnn_fp16"):
            st, dm = ip.tensors[key], ip.detections[key]
            lines.append(
                f"{ip.image:<16} {'x'.join(map(str, ip.size)):>9} {'x'.join(map(str, ip.input_size)):>9} {key:<10} "
                f"{min(s.cosine for s in st):>13.7f} {max(s.max_rel for s in st):>9.2e} {max(s.max_abs for s in st):>9.2e}  "
                f"{dm.reference:>3}/{dm.test:<4} {dm.matched:>5} {dm.missed:>4} {dm.extra:>5} {dm.borderline:>4} {dm.label_flips:>4} {dm.min_iou:>6.3f} "
                f"{dm.max_score_diff:>7.4f}")
    if any(ip.cpp for ip in r.images):
        lines.append("")
        lines.append(f"{'image':<16} {'C++ vs Python (same ncnn fp16 outputs)':<40} {'dets py/c++':>11} {'max box diff':>13} {'max score diff':>15}")
        for ip in r.images:
            c = ip.cpp
            if c:
                lines.append(f"{ip.image:<16} {'identical' if c.identical else 'DIFFERENT':<40} {c.python:>5}/{c.cpp:<5} "
                             f"{c.max_box_diff:>13.2e} {c.max_score_diff:>15.2e}")
    lines.append("")
    for n in r.notes:
        lines.append(f"note: {n}")
    lines.append("PASS" if r.passed else "FAIL:\n  " + "\n  ".join(r.failures))
    return "\n".join(lines)
