"""The trade table: how much faster, how much smaller, how much worse, for every way litedet ships a
trained model (issue 20). One run measures everything side by side on this machine:

    python -m litedet.benchmarks.trade_table [--reference ../shared/reference] [--out benchmarks/results]
        [--models nanodet_m,nanodet_plus_m_416,squeezenet1_1] [--steps 300] [--quick]

Models: the trained NanoDet-m 320, NanoDet-Plus-m 416 and SqueezeNet v1.1 of ../shared/reference.
Ways: fp32 (the fp32 reference graph, fp16 off), fp16 (as convert ships it), planned (convert
--arm-plan: fp32 islands where fp16 costs more on ARM; "no plan" when no layer pays), int8 by KL
on every layer, int8 by the automatic plan (min-max, --target-agreement 0.97 on the calibration
photos), the same with --arm-aware (layers whose int8 costs ARM more stay fp16), and pruned 0.25 / 0.5 of the channels, before and after distillation.
Columns: params and MACs (counted on the ncnn graph), the shipped bin's size, 1-thread x86
latency (median, all ways interleaved round by round), qemu-aarch64 cortex-a76 guest instructions
of one inference (the ARM cost proxy), and accuracy on the 400 reference photos: agreement mAP
against the fp32 graph for the detectors (its boxes with score >= 0.3 as the truth, decoded as
upstream evaluates), top-1 / top-5 against the real ImageNet labels for SqueezeNet. Calibration
and distillation use every 4th photo (100 of the 400).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["TradeRow", "format_trade_table", "write_trade_table", "MODELS", "main"]

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results"
# name -> (architecture, reference checkpoint, convert flags, task)
MODELS = {
    "nanodet_m": ("nanodet_m", "nanodet-m/nanodet-m.param", [], "detection"),
    "nanodet_plus_m_416": ("nanodet_plus_m", "nanodet-plus-m-416/nanodet-plus-m-416.param", ["--input-size", "416"],
                           "detection"),
    "squeezenet1_1": ("squeezenet1_1", "squeezenet-v1.1/squeezenet_v1.1.param",
                      ["--pixel-order", "bgr", "--mean", "104,117,123", "--norm", "1,1,1", "--input-size", "227",
                       "--resize", "stretch"], "classification"),
}
TARGET_AGREEMENT = 0.97  # on the calibration photos: 0.95 or better on all 400 (NanoDet-m, measured)


@dataclass
class TradeRow:
    model: str
    way: str  # fp32 | fp16 | planned | int8-kl | int8-auto | pruned-0.25 | pruned-0.25+distill | ...
    params: int
    macs: int
    bin_bytes: int
    x86_ms: float | None  # 1 thread, median
    arm_insns: int | None  # qemu-aarch64 cortex-a76, one inference
    accuracy: dict  # AP / AP50 (agreement) or top1 / top5
    note: str = ""
    extra: dict = field(default_factory=dict)


def _acc_text(acc: dict) -> str:
    if "AP" in acc:
        return f"AP {acc['AP']:.3f} / AP50 {acc['AP50']:.3f}"
    if "top1" in acc:
        return f"top-1 {acc['top1']:.4f} / top-5 {acc['top5']:.4f}"
    return "-"


def format_trade_table(rows: list[TradeRow]) -> str:
    """A markdown table, one line per model and way; instructions and latency also as a ratio to the
    model's fp16 row (the shipped default)."""
    if not rows:
        raise ValueError("no rows to tabulate")
    base = {r.model: r for r in rows if r.way == "fp16"}
    lines = ["| model | way | params | MACs | bin | x86 1-thread ms | × fp16 | ARM instructions | × fp16 | accuracy | note |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        b = base.get(r.model)

        def ratio(v, ref):
            return f"{v / ref:.2f}" if v and ref else "-"
        lines.append(
            f"| {r.model} | {r.way} | {r.params / 1e6:.3f} M | {r.macs / 1e6:.1f} M | {r.bin_bytes / 1e6:.2f} MB | "
            f"{'-' if r.x86_ms is None else f'{r.x86_ms:.2f}'} | {ratio(r.x86_ms, b and b.x86_ms)} | "
            f"{'-' if r.arm_insns is None else f'{r.arm_insns / 1e6:.1f} M'} | {ratio(r.arm_insns, b and b.arm_insns)} | "
            f"{_acc_text(r.accuracy)} | {r.note} |")
    return "\n".join(lines) + "\n"


def write_trade_table(rows: list[TradeRow], out: str | Path, meta: dict | None = None) -> list[Path]:
    """trade_table.json, trade_table.md and trade_table.png (ARM instructions against accuracy, one
    point per way) into ``out``, each through a temp file."""
    from litedet.atomic import replace_files
    from litedet.convert.charts import log_scatter_chart

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    md = format_trade_table(rows)
    doc = {"schema": "litedet-trade-table/1", "meta": meta or {}, "rows": [asdict(r) for r in rows]}
    series: dict[str, list[tuple[float, float, str]]] = {}
    for r in rows:
        acc = r.accuracy.get("AP", r.accuracy.get("top1"))
        if r.arm_insns and acc is not None:
            series.setdefault(r.model, []).append((float(r.arm_insns), max(float(acc), 1e-3), r.way))

    with tempfile.TemporaryDirectory(prefix="litedet-trade-") as tmp:
        png = Path(tmp) / "trade_table.png"  # OpenCV picks the format by the suffix: drawn here, then copied
        log_scatter_chart(png, "litedet trade table: ARM cost against accuracy, per way",
                          "ARM instructions per inference (qemu cortex-a76)", "accuracy (agreement AP, or top-1)", series)
        data = png.read_bytes()
    return replace_files([(out / "trade_table.json", lambda t: t.write_text(json.dumps(doc, indent=2) + "\n")),
                          (out / "trade_table.md", lambda t: t.write_text(md)),
                          (out / "trade_table.png", lambda t: t.write_bytes(data))])


# -- building the ways ---------------------------------------------------------------
@dataclass
class _Way:
    name: str
    bundle: Path
    backend: str  # the eval backend that runs it: ncnn-fp32, ncnn-fp16, ncnn-int8
    note: str = ""


def _cli(*argv: str) -> None:
    from litedet.cli import main

    if main([*argv, "--quiet"]) != 0:
        raise RuntimeError(f"litedet {' '.join(argv)} failed")


def build_ways(name: str, ref: Path, calib: Path, work: Path, steps: int, quick: bool) -> list[_Way]:
    """Every way of one model, converted, planned, quantised and pruned into ``work``."""
    arch, ckpt, flags, _ = MODELS[name]
    base = work / f"{name}-fp16"
    _cli("convert", arch, "--checkpoint", str(ref / ckpt), "--out", str(base), "--force", *flags)
    ways = [_Way("fp32", base, "ncnn-fp32", "the fp32 reference graph, fp16 off"), _Way("fp16", base, "ncnn-fp16")]
    planned = work / f"{name}-planned"
    _cli("convert", arch, "--checkpoint", str(ref / ckpt), "--out", str(planned), "--force", "--arm-plan", *flags)
    from litedet.runtime.manifest import load_manifest

    plan = load_manifest(planned).precision_plan
    ways.append(_Way("planned", planned, "ncnn-fp16", f"{len(plan.fp32_layers)} fp32 layer(s)" if plan else
                     "no layer is cheaper in fp32: the plan is uniform fp16"))
    _cli("quantize", str(base), "--calib", str(calib), "--out", str(work / f"{name}-int8-kl"), "--force")
    ways.append(_Way("int8-kl", work / f"{name}-int8-kl", "ncnn-int8", "every layer int8, KL"))
    _cli("quantize", str(base), "--calib", str(calib), "--out", str(work / f"{name}-int8-auto"), "--force",
         "--method", "minmax", "--target-agreement", str(TARGET_AGREEMENT))
    q = load_manifest(work / f"{name}-int8-auto").int8
    ways.append(_Way("int8-auto", work / f"{name}-int8-auto", "ncnn-int8",
                     f"min-max, {len(q.fp_layers)} of {len(q.fp_layers) + len(q.int8_layers)} layers kept fp "
                     f"(calibration agreement {q.agreement:.3f})"))
    _cli("quantize", str(base), "--calib", str(calib), "--out", str(work / f"{name}-int8-arm"), "--force",
         "--method", "minmax", "--target-agreement", str(TARGET_AGREEMENT), "--arm-aware")
    q = load_manifest(work / f"{name}-int8-arm").int8
    ways.append(_Way("int8-auto-arm", work / f"{name}-int8-arm", "ncnn-int8",
                     f"as int8-auto, and {len(q.arm_fp_layers)} layer(s) whose int8 costs ARM more kept fp16"))
    for ratio in (() if quick else (0.25, 0.5)):
        for distill in (False, True):
            tag = f"pruned-{ratio}" + ("+distill" if distill else "")
            pth = work / f"{name}-{tag}.pth"
            _cli("prune", arch, "--checkpoint", str(ref / ckpt), "--ratio", str(ratio), "--out", str(pth), "--force",
                 *(["--distill", str(calib), "--steps", str(steps)] if distill else []), *flags)
            _cli("convert", arch, "--checkpoint", str(pth), "--out", str(work / f"{name}-{tag}"), "--force", *flags)
            ways.append(_Way(tag, work / f"{name}-{tag}", "ncnn-fp16",
                             f"distilled {steps} steps on the calibration photos" if distill else ""))
    return ways


# -- measuring -----------------------------------------------------------------------
def _accuracy(name: str, ways: list[_Way], photos: Path, ref: Path) -> dict[str, dict]:
    """Per way: agreement AP / AP50 against the fp32 graph (detectors), or top-1 / top-5 (SqueezeNet)."""
    from litedet.convert.verify.evaluate import list_images, run_backends
    from litedet.convert.verify.metrics import coco_gt_from_results, coco_map, synset_labels, topk_metrics

    images = list_images(photos)
    runs = {}
    for w in ways:
        got, sizes = run_backends(w.bundle, images, [w.backend], progress=False)
        runs[w.name] = got[w.backend].results
    if MODELS[name][3] == "detection":
        from litedet.runtime.manifest import load_manifest

        m = load_manifest(ways[0].bundle)
        gt = coco_gt_from_results(runs["fp32"], sizes, m.class_names, 0.3)
        return {w.name: {k: coco_map(gt, runs[w.name])[k] for k in ("AP", "AP50")} for w in ways}
    labels = synset_labels([im.name for im in images], ref / "squeezenet-v1.1" / "synset_words.txt", 1000)
    return {w.name: {k: topk_metrics(runs[w.name], labels, None)[k] for k in ("top1", "top5")} for w in ways}


def _latency(ways: list[_Way], runs: int = 30) -> dict[str, float]:
    """Median ms of one inference, 1 thread, the ways interleaved round by round (load spreads evenly)."""
    from litedet.runtime.runner import BundleRunner

    from .bench import standard_image

    img = standard_image()
    runners = {}
    for w in ways:
        fp32 = w.backend == "ncnn-fp32"
        b = w.bundle
        r = BundleRunner.from_bundle(b, threads=1, fp16=not fp32,
                                     bin_override=_fp32_bin(b) if fp32 else None)
        runners[w.name] = (r, r.preprocess_array(img)[0])
    times = {w.name: [] for w in ways}
    for rep in range(runs + 3):
        for w in ways:
            r, chw = runners[w.name]
            t0 = time.perf_counter()
            r.run_array(chw)
            if rep >= 3:
                times[w.name].append((time.perf_counter() - t0) * 1000)
    return {k: float(np.median(v)) for k, v in times.items()}


def _fp32_bin(bundle: Path) -> Path:
    from litedet.runtime.bundle import Bundle

    return Bundle.open(bundle).graph_files(fp32=True)["model"].bin


def _facts(w: _Way) -> dict:
    from litedet.runtime.bundle import Bundle

    from .bench import graph_facts

    b = Bundle.open(w.bundle)
    side = b.manifest.resize.target
    f = graph_facts(b, [3, side, side])
    if w.backend == "ncnn-fp32":
        f["bin_bytes"] = _fp32_bin(w.bundle).stat().st_size
    return f


def _arm(w: _Way, env) -> int:
    from .arm.icount import measure

    from litedet.runtime.manifest import load_manifest

    side = load_manifest(w.bundle).resize.target
    precision = "fp32" if w.backend == "ncnn-fp32" else "fp16"
    res = measure(w.bundle, env, repeats=1, width=side, height=side, progress=False, precisions=(precision,))
    return int(res["precisions"][precision]["inference_insns"])


def measure_model(name: str, ways: list[_Way], ref: Path, env) -> list[TradeRow]:
    acc = _accuracy(name, ways, ref / "imagenet-sample", ref)
    ms = _latency(ways)
    rows = []
    for w in ways:
        f = _facts(w)
        rows.append(TradeRow(name, w.name, f["params"], f["macs"], f["bin_bytes"], round(ms[w.name], 3),
                             _arm(w, env) if env is not None else None, acc[w.name], w.note))
        print(format_trade_table(rows[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reference", default=str(ROOT.parent / "shared" / "reference"))
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--work", default=None, help="where the bundles go (default: a temp dir)")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--steps", type=int, default=300, help="distillation steps (one photo each)")
    p.add_argument("--quick", action="store_true", help="no pruned ways")
    p.add_argument("--no-arm", action="store_true", help="skip the qemu instruction counts")
    a = p.parse_args(argv)
    ref = Path(a.reference)
    from litedet.convert.verify.arm.env import resolve_env

    env = None if a.no_arm else resolve_env(None, None)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="litedet-trade-") as tmp:
        work = Path(a.work) if a.work else Path(tmp)
        calib = work / "calib"
        calib.mkdir(parents=True, exist_ok=True)
        for photo_path in sorted((ref / "imagenet-sample").glob("*.JPEG"))[::4]:
            if not (calib / photo_path.name).exists():
                (calib / photo_path.name).symlink_to(photo_path.resolve())
        rows = []
        for name in a.models.split(","):
            rows += measure_model(name, build_ways(name, ref, calib, work, a.steps, a.quick), ref, env)
    from .machine import machine_info

    meta = {"machine": machine_info(), "wall_s": round(time.perf_counter() - t0, 1), "distill_steps": a.steps,
            "target_agreement": TARGET_AGREEMENT, "photos": 400, "calibration": "every 4th photo (100)"}
    for path in write_trade_table(rows, a.out, meta):
        print(f"wrote {path}")
    print(format_trade_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
