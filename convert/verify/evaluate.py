"""`litedet eval`: accuracy of one bundle on real photos, per backend (torch fp32, ncnn fp32 and
fp16 on this machine, ncnn fp32 and fp16 arithmetic on emulated ARM), in one report.

Every backend gets the same preprocessed tensor per image (the runtime's preprocessing, as the
manifest states it), so what differs between them is the arithmetic only. Results are decoded
by the bundle's kind, for detectors as upstream evaluates them (``EVAL_DECODE``: every class
above 0.05, at most 100 boxes), then scored by the task's metric (``metrics.py``): COCO mAP
(faster-coco-eval) against real annotations or, in agreement mode, against another backend's
detections; top-1 / top-5 against real labels and agreement with another backend.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from litedet.runtime.bundle import Bundle, open_bundle_dir
from litedet.runtime.manifest import Manifest

__all__ = ["BACKENDS", "EVAL_DECODE", "shipped", "default_backends", "EvalError", "EvalImage", "BackendRun", "list_images", "eval_manifest",
           "run_backends"]

BACKENDS = ("torch", "ncnn-fp32", "ncnn-fp16", "ncnn-int8", "arm-fp32", "arm-fp16", "arm-int8")
# detectors are scored as upstream NanoDet evaluates (its val decode): a low score threshold, every
# class of a cell above it, a hundred boxes per image; fields a kind does not have are left alone
EVAL_DECODE = {"score_threshold": 0.05, "multi_label": True, "max_detections": 100}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
MAX_IMAGES = 100_000


class EvalError(ValueError):
    """Bad input to litedet eval (one line: what is wrong, what would be right)."""


@dataclass(frozen=True)
class EvalImage:
    name: str  # the file name
    path: Path


@dataclass
class BackendRun:
    """One backend's results by image name, and what it cost."""

    backend: str
    results: dict[str, list] = field(default_factory=dict)
    wall_s: float = 0.0
    note: str = ""
    device_reference: dict | None = None  # on a phone: its detections on the bundle's reference image vs torch's
    error: str | None = None  # on a phone: what stopped it (the images before are kept)


def list_images(folder: str | Path, limit: int | None = None) -> list[EvalImage]:
    """The images of a folder (sorted by name; not recursive), or EvalError naming the problem."""
    d = Path(folder)
    if not d.is_dir():
        raise EvalError(f"--images {d}: not a directory (expected a folder of .jpg/.png photos)")
    found = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not found:
        raise EvalError(f"--images {d} holds no images ({', '.join(IMAGE_SUFFIXES)}); point it at a folder of photos")
    if len(found) > MAX_IMAGES:
        raise EvalError(f"--images {d} holds {len(found)} images; litedet eval takes at most {MAX_IMAGES} (use --limit)")
    found = found[:limit] if limit else found
    return [EvalImage(p.name, p) for p in found]


def eval_manifest(m: Manifest) -> tuple[Manifest, dict[str, Any]]:
    """The manifest as the metric decodes it (EVAL_DECODE for detectors), and what was changed."""
    if m.task != "detection":
        return m, {}
    names = {f.name for f in dataclasses.fields(m.postprocess)}
    changed = {k: v for k, v in EVAL_DECODE.items() if k in names}
    return dataclasses.replace(m, postprocess=dataclasses.replace(m.postprocess, **changed)), changed


def shipped(m: Manifest) -> str:
    """The name of the shipped graph's precision in backend names: int8 for an int8 bundle (its
    float layers run with fp16 on), fp16 for any other (fp16 storage and arithmetic on)."""
    return "int8" if m.int8 is not None else "fp16"


def default_backends(m: Manifest) -> list[str]:
    return ["torch", "ncnn-fp32", f"ncnn-{shipped(m)}"]


def check_backends(b: Bundle, backends: list[str]) -> None:
    s = shipped(b.manifest)
    valid = [x for x in BACKENDS if not x.endswith(("-fp16", "-int8")) or x.endswith(s)]
    bad = [x for x in backends if x not in valid]
    if bad or not backends:
        other = " (an int8 bundle's shipped graph is ncnn-int8 / arm-int8; ncnn-fp32 runs its fp32 reference)" \
            if s == "int8" else " (int8 backends need a bundle written by litedet quantize)" if any(
                x.endswith("-int8") for x in bad) else ""
        raise EvalError(f"--backends {','.join(backends)!r}: expected some of {', '.join(valid)}{other}")
    if len(set(backends)) != len(backends):
        raise EvalError(f"--backends names a backend twice: {','.join(backends)}")
    if "torch" in backends and not b.has_reference("torchscript"):
        raise EvalError(f"{b.path} has no PyTorch side (a wrapped ncnn/ONNX model); drop torch from --backends and "
                        "compare against ncnn-fp32 (--against ncnn-fp32)")


def run_backends(bundle: "str | Path | Bundle", images: list[EvalImage], backends: list[str], *, arm_images: int = 20,
                 threads: int = 1, progress: bool = True, arm_env=None, phone=None) -> tuple[dict[str, BackendRun], dict]:
    """Every backend on the images (the ARM ones on the first ``arm_images``: under qemu, or with
    ``phone`` on a phone); the results decoded by eval_manifest. Returns the runs by backend and
    each image's [w, h]."""
    from tqdm import tqdm

    from litedet.runtime.runner import BundleRunner, load_image

    b = open_bundle_dir(bundle)
    check_backends(b, backends)
    m, _ = eval_manifest(b.manifest)
    fp32_bin = b.graph_files(fp32=True)["model"].bin
    r32 = BundleRunner.from_bundle(b, threads=threads, fp16=False, bin_override=fp32_bin)
    local = _local_backends(b, backends, threads, r32)
    runs = {k: BackendRun(k) for k in backends}
    sizes: dict[str, list[int]] = {}
    arm = [k for k in backends if k.startswith("arm-")]
    job = None
    if arm and phone is None:  # the emulated child works on one core while this loop uses the other
        arm_in = {im.name: r32.preprocess_array(load_image(im.path)) for im in images[:arm_images]}
        job = _start_arm(b, arm, arm_in, threads, arm_env)
    try:
        for img in tqdm(images, desc="eval", unit="image", disable=not progress, file=None):
            a = load_image(img.path)
            chw, g = r32.preprocess_array(a)
            sizes[img.name] = [int(a.shape[1]), int(a.shape[0])]
            for key, fn in local.items():
                t0 = time.perf_counter()
                runs[key].results[img.name] = r32.kind.decode(m, fn(chw), g)
                runs[key].wall_s += time.perf_counter() - t0
    except BaseException:
        if job is not None:
            job.kill()
        raise
    if job is not None:
        _finish_arm(job, m, r32, arm, arm_in, runs, progress)
    elif arm:
        _run_phone_backends(b, m, arm, images[:arm_images], runs, phone, progress)
    return runs, sizes


def _run_phone_backends(b: Bundle, m: Manifest, arm: list[str], images: list[EvalImage], runs: dict, phone,
                        progress: bool) -> None:
    """The ARM backends on a phone: ``phone(bundle, manifest, [(name, file)], backends, progress)``
    (benchmarks/remote_eval.py: litedet_cpp over adb) gives detections per backend and image."""
    t0 = time.perf_counter()
    got = phone(b, m, [(im.name, im.path) for im in images], arm, progress)
    for k in arm:
        runs[k].results = got.results.get(k, {})
        runs[k].wall_s = (time.perf_counter() - t0) / len(arm)
        dev = got.device
        runs[k].note = (f"phone {dev.get('model') or '?'} ({dev.get('serial')}) through litedet_cpp, the app's C++ "
                        f"pipeline ({'fp16 arithmetic' if k == 'arm-fp16' else 'fp32 weights, fp16 off'}; it reads and "
                        "preprocesses the photo itself)")
        runs[k].device_reference = got.reference.get(k)
        runs[k].error = got.error


def _local_backends(b: Bundle, backends: list[str], threads: int, r32) -> dict:
    """backend -> (chw -> completed outputs) for the backends that run on this machine."""
    from litedet.runtime.runner import BundleRunner

    fns = {}
    if "torch" in backends:
        from .torch_parity import torch_runner

        fns["torch"] = torch_runner(b)
    if "ncnn-fp32" in backends:
        fns["ncnn-fp32"] = r32.run_array
    key = f"ncnn-{shipped(b.manifest)}"
    if key in backends:  # the shipped graph, fp16 on (an int8 bundle's float layers too)
        fns[key] = BundleRunner.from_bundle(b, threads=threads, fp16=True).run_array
    return fns


def _start_arm(b: Bundle, arm: list[str], arm_in: dict, threads: int, env):
    """The ARM backends in one emulated child, started in the background (fp32: the fp32 reference
    bin with fp16 off; fp16: the shipped bin with fp16 storage and arithmetic)."""
    from .arm.env import resolve_env
    from .arm.protocol import ArmJob, Variant

    fp32_bin = str(b.graph_files(fp32=True)["model"].bin)
    variants = [Variant(k, k != "arm-fp32", None if k != "arm-fp32" else fp32_bin) for k in arm]
    return ArmJob(resolve_env(env, None), b.path.resolve(), {n: c for n, (c, _) in arm_in.items()}, variants,
                  threads, None)


def _finish_arm(job, m: Manifest, r32, arm: list[str], arm_in: dict, runs: dict, progress: bool) -> None:
    """The child's outputs decoded here, as the local backends' are."""
    out, meta = job.finish(progress)
    for k in arm:
        for name, (_, g) in arm_in.items():
            runs[k].results[name] = r32.kind.decode(m, out[k][name], g)
        runs[k].wall_s = meta.get("child_wall_s", 0.0) / len(arm)
        runs[k].note = (f"qemu-aarch64 -cpu {meta.get('cpu')} ({_arith(k)}); "
                        f"asimdhp {meta.get('asimdhp')}; emulated time, not device speed")


def _arith(backend: str) -> str:
    return {"arm-fp32": "fp32 weights, fp16 off", "arm-fp16": "fp16 arithmetic",
            "arm-int8": "int8 layers, the others fp16 arithmetic"}[backend]


# -- the whole evaluation -----------------------------------------------------------
@dataclass
class EvalReport:
    bundle: str
    architecture: str
    task: str
    weights: str
    against: str
    labels: str  # what the metric is measured against
    decode: dict  # the decode settings the metric used (EVAL_DECODE for detectors)
    backends: dict[str, dict]  # backend -> metric record (images, metrics, wall_s, note)
    losers: dict[str, list]  # backend -> the classes (or images) that lose most against `against`
    wall_s: float = 0.0
    partial: bool = False  # a phone went away mid-run: its backends saw fewer images (errors say where)
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def evaluate(bundle: "str | Path | Bundle", images_dir: str | Path, *, backends: list[str], labels: tuple | None = None,
             against: str | None = None, arm_images: int = 20, limit: int | None = None, gt_score: float = 0.3,
             threads: int = 1, progress: bool = True, arm_env=None, phone=None) -> EvalReport:
    """Run the backends on the images and score each (see the module doc)."""
    t0 = time.perf_counter()
    b = open_bundle_dir(bundle)
    m = b.manifest
    images = list_images(images_dir, limit)
    against = against or ("torch" if "torch" in backends else backends[0])
    _check_args(b, backends, against, labels, arm_images)
    target = _labels(m, labels, [im.name for im in images])  # before any backend runs
    runs, sizes = run_backends(b, images, backends, arm_images=arm_images, threads=threads, progress=progress,
                               arm_env=arm_env, phone=phone)
    _, decode = eval_manifest(m)
    if m.task == "classification":
        records, losers, what = _score_classification(runs, against, target)
    elif m.task == "segmentation":
        records, losers, what = _score_segmentation(m, runs, against, target)
    else:
        records, losers, what = _score_detection(m, runs, against, target, sizes, gt_score)
    for k, r in runs.items():
        records[k].update(wall_s=round(r.wall_s, 2), note=r.note)
        if r.device_reference is not None:
            records[k]["device_reference"] = r.device_reference
    errors = sorted({r.error for r in runs.values() if r.error})
    return EvalReport(str(b.path), m.architecture, m.task, m.provenance.get("weights", "?"), against, what, decode,
                      records, losers, round(time.perf_counter() - t0, 1), partial=bool(errors), errors=errors)


def _check_args(b: Bundle, backends: list[str], against: str, labels, arm_images: int) -> None:
    check_backends(b, backends)
    if against not in backends:
        raise EvalError(f"--against {against}: it must be one of the backends evaluated ({','.join(backends)})")
    if any(k.startswith("arm-") for k in backends) and arm_images < 1:
        raise EvalError(f"--arm-images {arm_images}: the ARM backends need at least one image")
    if labels is not None:
        kind, _ = labels
        want = {"classification": "synset", "segmentation": "masks"}.get(b.manifest.task, "coco")
        if kind != want:
            raise EvalError(f"--labels {kind}: a {b.manifest.task} bundle is scored with --labels {want} FILE")


def _labels(m: Manifest, labels, names: list[str]):
    from .metrics import MetricError, coco_gt_from_file, read_label_masks, synset_labels

    if labels is None:
        return None
    try:
        if labels[0] == "masks":
            return read_label_masks(labels[1], names, m.num_classes)
        if labels[0] == "synset":
            return synset_labels(names, labels[1], m.num_classes)
        return coco_gt_from_file(labels[1], names, m.class_names)
    except MetricError as e:
        raise EvalError(str(e)) from None


def _score_classification(runs: dict[str, BackendRun], against: str, labels) -> tuple[dict, dict, str]:
    from .metrics import topk_metrics

    ref = runs[against].results
    records = {k: topk_metrics(r.results, labels, ref) for k, r in runs.items()}
    for k, r in runs.items():  # a backend on a subset (ARM) beside the reference on the same images
        if len(r.results) < len(ref):
            same = topk_metrics({n: ref[n] for n in r.results}, labels, None)
            records[k]["reference_same_images"] = {x: same.get(x) for x in ("top1", "top5")}
    losers = {}
    for k, rec in records.items():
        if k != against and labels is not None:
            lost = sorted(set(rec["wrong"]) - set(records[against]["wrong"]))
            losers[k] = [f"{n} (true {labels.names[labels.by_image[n]]}, got {runs[k].results[n][0].name})"
                         for n in lost]
    what = f"ImageNet synsets ({len(labels.by_image)} labelled images)" if labels is not None else \
        f"agreement with {against} only (no labels)"
    return records, losers, what


def _score_segmentation(m: Manifest, runs: dict[str, BackendRun], against: str, truth):
    """mIoU and pixel accuracy against the label masks (when given) and the agreement with ``against``."""
    from .metrics import mask_metrics

    ref = runs[against].results
    records = {k: mask_metrics(r.results, truth, {n: ref[n] for n in r.results}, m.class_names)
               for k, r in runs.items()}
    losers = {}
    key = "per_class"
    base = records[against].get(key, {}) if truth is not None else {}
    for k, rec in records.items():
        if k == against:
            continue
        if truth is not None:
            drops = sorted(((base[c] - v, c) for c, v in rec.get(key, {}).items() if c in base), reverse=True)
            losers[k] = [f"{c}: IoU {base[c]:.3f} -> {base[c] - d:.3f}" for d, c in drops[:10] if d > 0]
        else:  # agreement IoU per class: the classes the backend moves most
            worst = sorted(rec.get(key, {}).items(), key=lambda kv: kv[1])[:10]
            losers[k] = [f"{c}: agreement IoU {v:.3f}" for c, v in worst if v < 1.0]
    what = (f"label masks ({len(truth)} labelled images)" if truth is not None else
            f"agreement with {against} only (no labels)")
    return records, losers, what


def _score_detection(m: Manifest, runs: dict[str, BackendRun], against: str, gt, sizes, gt_score: float):
    from .metrics import coco_gt_from_results, coco_map

    if gt is None:
        gt = coco_gt_from_results(runs[against].results, sizes, m.class_names, gt_score)
    records = {k: coco_map(gt, r.results) for k, r in runs.items()}
    ref_res = runs[against].results
    for k, r in runs.items():  # a backend on a subset (ARM) beside the reference on the same images
        if len(r.results) < len(ref_res):
            same = coco_map(gt, {n: ref_res[n] for n in r.results})
            records[k]["reference_same_images"] = {x: same.get(x) for x in ("AP", "AP50")}
    losers = {}
    ref = records[against].get("per_class", {})
    for k, rec in records.items():
        if k == against:
            continue
        drops = sorted(((ref[c] - v, c) for c, v in rec.get("per_class", {}).items() if c in ref), reverse=True)
        losers[k] = [f"{c}: AP {ref[c]:.3f} -> {ref[c] - d:.3f}" for d, c in drops[:10] if d > 0]
    what = (f"{gt.source}, reference {against}" if gt.source.startswith("agreement") else gt.source)
    return records, losers, what


# -- report ------------------------------------------------------------------------
def format_eval(r: EvalReport) -> str:
    """The Markdown report: one row per backend, then the classes that lose most."""
    from .metrics import COCO_KEYS

    keys = list(COCO_KEYS) if r.task == "detection" else (
        ["mIoU", "pixel_acc", "agreement_mIoU", "agreement_pixel"] if r.task == "segmentation" else
        ["top1", "top5", "agreement_top1", "agreement_top5"])
    lines = [f"# litedet eval: {r.architecture} ({r.task}, weights: {r.weights})", "",
             f"bundle {r.bundle}; scored against {r.labels}" + (f"; decoded as upstream evaluates: {r.decode}"
                                                                 if r.decode else ""), "",
             "| backend | images | " + " | ".join(keys) + " | wall s | note |",
             "|---|---:|" + "---:|" * len(keys) + "---:|---|"]
    for k, rec in r.backends.items():
        cells = [_cell(rec.get(x)) for x in keys]
        lines.append(f"| {k} | {rec.get('images', 0)} | " + " | ".join(cells) + f" | {rec.get('wall_s', 0):.1f} | "
                     f"{rec.get('note', '')} |")
    for k, lost in r.losers.items():
        lines += ["", f"**{k}, what it loses against {r.against}** ({len(lost)}): " + ("; ".join(lost[:10]) or "nothing")]
    for k, rec in r.backends.items():
        same = rec.get("reference_same_images")
        if same:
            lines += ["", f"**{k}** saw {rec.get('images')} images; {r.against} on the same images: " +
                      ", ".join(f"{x} {_cell(v)}" for x, v in same.items())]
    for k, rec in r.backends.items():
        d = rec.get("device_reference")
        if d:
            lines += ["", f"**{k} on the device, the bundle's reference image against torch**: {d['matched']} of "
                          f"{d['reference']} detections matched ({d['missed']} missed, {d['extra']} extra, "
                          f"min IoU {d['min_iou']:.3f}, max score gap {d['max_score_diff']:.4f})"]
    if r.partial:
        lines = [f"**PARTIAL**: {'; '.join(r.errors)}", ""] + lines
    return "\n".join(lines) + "\n"


def _cell(v) -> str:
    return "–" if v is None or (isinstance(v, float) and v < 0) else f"{v:.4f}"


def write_eval(out: str | Path, r: EvalReport) -> list[Path]:
    """eval.json, eval.md and eval.png in ``out``, all or none."""
    import json

    from litedet.atomic import replace_files

    from ..charts import metric_bar_chart

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if r.task == "segmentation":
        key = "mIoU" if any("mIoU" in v for v in r.backends.values()) else "agreement_mIoU"
    else:
        key = "AP" if r.task == "detection" else ("top1" if any("top1" in v for v in r.backends.values()) else
                                                  "agreement_top1")
    values = {f"{k} ({v.get('images', 0)})": max(v.get(key) or 0.0, 0.0) for k, v in r.backends.items()}
    notes = [f"{k} loses most: " + "; ".join(lost[:3]) for k, lost in r.losers.items() if lost]
    with tempfile.TemporaryDirectory(dir=out, prefix=".chart-") as tmp:
        png = Path(tmp) / "eval.png"
        metric_bar_chart(png, f"{r.architecture}: {key} per backend ({r.labels})", values, notes)
        data = png.read_bytes()
        return replace_files([
            (out / "eval.json", lambda p: p.write_text(json.dumps(r.to_dict(), indent=1) + "\n")),
            (out / "eval.md", lambda p: p.write_text(format_eval(r))),
            (out / "eval.png", lambda p: p.write_bytes(data))])
