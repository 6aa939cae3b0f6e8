#!/usr/bin/env python
"""Benchmark NanoDet-m end to end: conversion wall time and per-stage runtime cost.

Measures, in one run:

1. Conversion wall time of ``nanodet_m`` (pnnx route, fp16 bundle), repeated
   ``--convert-repeats`` times (default 3) into fresh temp dirs: min / median,
   plus the per-step timings of the median run.  Goal: < 15 s.
2. Single-thread (threads=1) ncnn inference vs the runtime's own
   preprocessing + postprocessing, per real photo (scikit-image samples),
   after warm-up, ``--repeats`` times (default 20); medians per stage per
   image and the ratio (pre + post) / inference.  Goal: pre + post < 15 % of
   inference.  Done once with fp16=True and once with fp16=False.
3. Prints a table, writes JSON (default benchmarks/results/nanodet_m.json) and
   a bar chart of the per-image stage medians drawn with OpenCV
   (<json stem>_stages.png beside the JSON).

Timings are reported, never asserted.

    python benchmarks/bench_nanodet.py [--checkpoint PATH] [--repeats N] [--out results.json]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from litedet.benchmarks.machine import loadavg
from litedet.benchmarks.machine import machine_info as _machine_info

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS_DIR = HERE / "results"
DEFAULT_OUT = RESULTS_DIR / "nanodet_m.json"
ARCH = "nanodet_m"
_CKPT_REL = Path("shared") / "reference" / "nanodet-m" / "nanodet-m.param"
# the official weights (ncnn param + bin): beside the checkout, or inside it on a device copy
OFFICIAL_CHECKPOINTS = (REPO.parent / _CKPT_REL, REPO / _CKPT_REL)

GOAL_CONVERT_S = 15.0
GOAL_PREPOST_RATIO = 0.15

STAGES = ("pre", "infer", "post")
STAGE_LABELS = {"pre": "preprocess", "infer": "inference", "post": "postprocess"}


# -- environment ---------------------------------------------------------------
def machine_info() -> dict:
    info = _machine_info()
    info.pop("loadavg", None)  # this script records it at start and end
    return info


def _loadavg() -> list[float] | None:
    return loadavg()


def resolve_checkpoint(arg: str | None, seeded: bool) -> tuple[Path | None, str]:
    if seeded:
        return None, "seeded random weights (--seeded)"
    if arg:
        p = Path(arg).expanduser()
        if not p.is_file():
            sys.exit(f"error: checkpoint not found: {p}")
        return p.resolve(), f"checkpoint {p.resolve()} (--checkpoint)"
    for p in OFFICIAL_CHECKPOINTS:
        if p.is_file() and p.with_suffix(".bin").is_file():
            return p.resolve(), f"official NanoDet-m weights {p.resolve()}"
    return None, ("seeded random weights (official weights not found at "
                  f"{' or '.join(str(p) for p in OFFICIAL_CHECKPOINTS)}); detections are not meaningful")


# -- images ----------------------------------------------------------------------
def load_photos() -> dict[str, np.ndarray]:
    """The four real photos, as contiguous BGR uint8."""
    from skimage import data

    rgb = {
        "astronaut": data.astronaut(),
        "chelsea": data.chelsea(),
        "coffee": data.coffee(),
        "motorcycle": data.stereo_motorcycle()[0],
    }
    return {k: np.ascontiguousarray(v[:, :, ::-1]).copy() for k, v in rgb.items()}


# -- 1. conversion -----------------------------------------------------------------
def bench_conversion(work: Path, checkpoint: Path | None, input_size: int, repeats: int) -> tuple[dict, Path]:
    from litedet.convert.pipeline import convert_model

    runs = []
    for i in range(repeats):
        out = work / f"convert_{i}"
        t0 = time.perf_counter()
        res = convert_model(ARCH, out, checkpoint=checkpoint, input_size=input_size, fp32=False, route="pnnx",
                            force=True, progress=False)
        wall = time.perf_counter() - t0
        runs.append({"run": i, "wall_s": round(wall, 3), "steps_s": dict(res.timings), "bundle": str(res.bundle)})
        print(f"  conversion run {i + 1}/{repeats}: {round(wall, 3):.2f} s", flush=True)
    walls = [r["wall_s"] for r in runs]
    # the median run: for an even count take the lower middle, so it is a real run
    order = sorted(range(len(runs)), key=lambda k: walls[k])
    med_run = runs[order[(len(runs) - 1) // 2]]
    summary = {
        "arch": ARCH, "route": "pnnx", "fp16": True, "input_size": input_size, "repeats": repeats,
        "wall_s": walls,
        "min_s": min(walls),
        "median_s": round(statistics.median(walls), 3),
        "median_run": med_run["run"],
        "median_run_steps_s": med_run["steps_s"],
        "note": "run 0 also pays one-time imports (torch tracing, pnnx) inside convert_model",
        "goal": {"metric": "median_s", "target_s": GOAL_CONVERT_S},
    }
    summary["goal"]["met"] = summary["median_s"] < GOAL_CONVERT_S
    summary["runs"] = runs
    return summary, Path(runs[-1]["bundle"])


# -- 2. runtime stages -------------------------------------------------------------
def bench_runtime(bundle: Path, photos: dict[str, np.ndarray], repeats: int, warmup: int) -> list[dict]:
    """Per-stage times for fp16=True and fp16=False on every photo.

    The timed runs are interleaved (repeat -> precision -> image), so a burst of
    load from another process lands on all cells alike instead of on one image.
    """
    from litedet.runtime.detector import Detector

    precisions = (True, False)
    dets_by = {fp16: Detector.from_bundle(bundle, threads=1, fp16=fp16) for fp16 in precisions}
    for det in dets_by.values():
        for img in photos.values():
            for _ in range(warmup):
                mat, lb = det.preprocess(img)
                det.postprocess(det.run_mat(mat), lb)
    samples = {(fp16, name): {s: [] for s in STAGES} for fp16 in precisions for name in photos}
    last = {}
    gc.collect()
    for _ in range(repeats):
        for fp16, det in dets_by.items():
            for name, img in photos.items():
                t0 = time.perf_counter()
                mat, lb = det.preprocess(img)
                t1 = time.perf_counter()
                outs = det.run_mat(mat)
                t2 = time.perf_counter()
                dets = det.postprocess(outs, lb)
                t3 = time.perf_counter()
                cell = samples[(fp16, name)]
                cell["pre"].append((t1 - t0) * 1e3)
                cell["infer"].append((t2 - t1) * 1e3)
                cell["post"].append((t3 - t2) * 1e3)
                last[(fp16, name)] = (lb, dets)

    results = []
    for fp16 in precisions:
        per_image = {}
        for name, img in photos.items():
            cell = samples[(fp16, name)]
            lb, dets = last[(fp16, name)]
            med = {s: statistics.median(v) for s, v in cell.items()}
            mins = {s: min(v) for s, v in cell.items()}
            per_image[name] = {
                "image_wh": [int(img.shape[1]), int(img.shape[0])],
                "net_input_wh": [lb.in_w, lb.in_h],
                "median_ms": {s: round(v, 4) for s, v in med.items()},
                "min_ms": {s: round(v, 4) for s, v in mins.items()},
                "ratio_prepost_over_infer": round((med["pre"] + med["post"]) / med["infer"], 4),
                # the same ratio from per-stage minimums: what the stages cost when nothing else interferes
                "ratio_prepost_over_infer_min": round((mins["pre"] + mins["post"]) / mins["infer"], 4),
                "detections": len(dets),
                "top": [d.to_dict() for d in dets[:3]],
                "samples_ms": {s: [round(x, 4) for x in v] for s, v in cell.items()},
            }
        tot = {s: sum(r["median_ms"][s] for r in per_image.values()) for s in STAGES}
        ratios = [r["ratio_prepost_over_infer"] for r in per_image.values()]
        overall = (tot["pre"] + tot["post"]) / tot["infer"]
        tmin = {s: sum(r["min_ms"][s] for r in per_image.values()) for s in STAGES}
        results.append({
            "fp16": fp16, "threads": 1, "repeats": repeats, "warmup": warmup, "order": "interleaved",
            "per_image": per_image,
            "overall": {
                "sum_median_ms": {s: round(v, 4) for s, v in tot.items()},
                "ratio_prepost_over_infer": round(overall, 4),
                "max_image_ratio": max(ratios),
                "sum_min_ms": {s: round(v, 4) for s, v in tmin.items()},
                "ratio_prepost_over_infer_min": round((tmin["pre"] + tmin["post"]) / tmin["infer"], 4),
                "definition": "(sum over images of median pre + median post) / (sum over images of median inference)",
            },
            "goal": {"metric": "overall.ratio_prepost_over_infer", "target": GOAL_PREPOST_RATIO,
                     "met": overall < GOAL_PREPOST_RATIO, "met_every_image": max(ratios) < GOAL_PREPOST_RATIO},
        })
    return results


# -- 3. report -----------------------------------------------------------------------
def _met(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


def print_report(res: dict) -> None:
    m = res["machine"]
    v = m["versions"]
    print()
    print("=" * 86)
    print(f"NanoDet-m benchmark  {res['created']}")
    print(f"machine : {m['cpu_model']} | cpu_count {m['cpu_count']} (usable {m['cpu_usable']}) | {m['machine']} "
          f"| simd {','.join(m['simd_flags']) or '-'}")
    print(f"ncnn cpu: {', '.join(k for k, on in m['ncnn_cpu_support'].items() if on) or '-'}")
    print(f"platform: {m['platform']} | python {m['python']} | load avg 1/5/15 min: start {res['loadavg_start']}, "
          f"end {res['loadavg_end']}")
    print(f"versions: ncnn {v['ncnn']} | torch {v['torch']} | pnnx {v['pnnx']} | numpy {v['numpy']} "
          f"| opencv {v['opencv-python-headless']}")
    print(f"weights : {res['weights']}")
    print("=" * 86)

    c = res["conversion"]
    print(f"\n[1] conversion {c['arch']} (route {c['route']}, fp16, {c['input_size']}px), {c['repeats']} runs")
    print(f"    wall s : {'  '.join(f'{w:.2f}' for w in c['wall_s'])}")
    print(f"    min {c['min_s']:.2f} s | median {c['median_s']:.2f} s | goal median < {GOAL_CONVERT_S:g} s: "
          f"{_met(c['goal']['met'])}")
    steps = c["median_run_steps_s"]
    print("    steps of the median run (s): " + "  ".join(f"{k} {steps[k]:.3f}" for k in steps if k != "total")
          + f"  | total {steps.get('total', float('nan')):.3f}")

    print(f"\n[2] runtime, threads=1, median of {res['runtime'][0]['repeats']} interleaved runs after "
          f"{res['runtime'][0]['warmup']} warm-up runs per image (ms)")
    hdr = f"    {'fp16':<6}{'image':<12}{'image WxH':>10}{'net WxH':>10}{'pre':>9}{'infer':>9}{'post':>9}" \
          f"{'(pre+post)/inf':>16}{'dets':>6}"
    print(hdr)
    print("    " + "-" * (len(hdr) - 4))
    for r in res["runtime"]:
        for name, row in r["per_image"].items():
            md = row["median_ms"]
            print(f"    {str(r['fp16']):<6}{name:<12}{'%dx%d' % tuple(row['image_wh']):>10}"
                  f"{'%dx%d' % tuple(row['net_input_wh']):>10}{md['pre']:>9.2f}{md['infer']:>9.2f}{md['post']:>9.2f}"
                  f"{row['ratio_prepost_over_infer'] * 100:>15.1f}%{row['detections']:>6}")
        o = r["overall"]
        s = o["sum_median_ms"]
        print(f"    {str(r['fp16']):<6}{'OVERALL':<12}{'':>10}{'(sum)':>10}{s['pre']:>9.2f}{s['infer']:>9.2f}"
              f"{s['post']:>9.2f}{o['ratio_prepost_over_infer'] * 100:>15.1f}%")
        print(f"    -> fp16={r['fp16']}: goal pre+post < {GOAL_PREPOST_RATIO:.0%} of inference: "
              f"{_met(r['goal']['met'])} overall, {_met(r['goal']['met_every_image'])} on every image "
              f"(worst {o['max_image_ratio']:.1%})")
        print(f"       same ratio from per-stage minimums (least disturbed runs): overall "
              f"{o['ratio_prepost_over_infer_min']:.1%}; per image "
              + ", ".join(f"{k} {row['ratio_prepost_over_infer_min']:.1%}" for k, row in r["per_image"].items()))
        print()


def draw_chart(res: dict, path: Path) -> None:
    """Grouped bars (pre, inference, post) per image, one panel per fp16 setting; OpenCV drawing only."""
    import cv2

    runs = res["runtime"]
    images = list(runs[0]["per_image"])
    colors = {"pre": (200, 120, 40), "infer": (40, 120, 230), "post": (60, 170, 60)}  # BGR
    W, H = 520 * len(runs), 460
    top, bottom, left, right = 78, 60, 56, 16
    canvas = np.full((H, W, 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    peak = max(r["per_image"][i]["median_ms"][s] for r in runs for i in images for s in STAGES) * 1.1
    mag = 10 ** np.floor(np.log10(max(peak, 1e-3) / 5))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag * 5 >= peak)  # round y ticks
    nticks = max(1, int(np.ceil(peak / step)))
    vmax = step * nticks
    title = f"NanoDet-m ncnn, threads=1: median ms per stage ({res['created'][:10]}, {res['machine']['machine']})"
    cv2.putText(canvas, title, (10, 22), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    x = 10
    for s in STAGES:  # legend
        cv2.rectangle(canvas, (x, 34), (x + 14, 46), colors[s], -1)
        cv2.putText(canvas, STAGE_LABELS[s], (x + 20, 45), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        x += 140
    pw = W // len(runs)
    for p, r in enumerate(runs):
        x0, x1 = p * pw + left, (p + 1) * pw - right
        y0, y1 = top, H - bottom  # plot area, y1 is the baseline
        cv2.putText(canvas, f"fp16={r['fp16']}  (pre+post)/inf overall "
                            f"{r['overall']['ratio_prepost_over_infer']:.1%}",
                    (x0, top - 10), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        for k in range(nticks + 1):  # y grid + labels
            y = int(y1 - (y1 - y0) * k / nticks)
            cv2.line(canvas, (x0, y), (x1, y), (225, 225, 225), 1)
            cv2.putText(canvas, f"{step * k:g}", (x0 - 40, y + 4), font, 0.38, (90, 90, 90), 1, cv2.LINE_AA)
        cv2.line(canvas, (x0, y1), (x1, y1), (0, 0, 0), 1)
        cv2.line(canvas, (x0, y0), (x0, y1), (0, 0, 0), 1)
        gw = (x1 - x0) / len(images)
        bw = int(gw * 0.8 / len(STAGES))
        for g, name in enumerate(images):
            gx = int(x0 + g * gw + gw * 0.1)
            md = r["per_image"][name]["median_ms"]
            for b, s in enumerate(STAGES):
                bx = gx + b * bw
                by = int(y1 - (y1 - y0) * md[s] / vmax)
                cv2.rectangle(canvas, (bx + 1, min(by, y1 - 1)), (bx + bw - 1, y1), colors[s], -1)
                cv2.putText(canvas, f"{md[s]:.1f}", (bx, min(by, y1 - 1) - 4), font, 0.3, (0, 0, 0), 1, cv2.LINE_AA)
            (tw, _), _ = cv2.getTextSize(name, font, 0.42, 1)
            cv2.putText(canvas, name, (int(x0 + g * gw + (gw - tw) / 2), y1 + 18), font, 0.42, (0, 0, 0), 1,
                        cv2.LINE_AA)
        cv2.putText(canvas, "ms", (x0 - 40, y0 - 26 + 8), font, 0.38, (90, 90, 90), 1, cv2.LINE_AA)
    if not cv2.imwrite(str(path), canvas):
        raise OSError(f"could not write {path}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", help="weights to convert (default: the official NanoDet-m ncnn weights "
                                         "if present, else seeded random weights)")
    ap.add_argument("--seeded", action="store_true", help="use seeded random weights even if official ones exist")
    ap.add_argument("--repeats", type=int, default=20, help="timed runs per image and precision (default 20)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed runs per image before timing (default 3)")
    ap.add_argument("--convert-repeats", type=int, default=3, help="conversions to time (default 3)")
    ap.add_argument("--input-size", type=int, default=320, help="network input size (default 320)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT,
                    help="JSON results path (default benchmarks/results/nanodet_m.json); "
                         "the chart goes beside it as <stem>_stages.png")
    args = ap.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0 or args.convert_repeats < 1:
        ap.error("--repeats and --convert-repeats must be >= 1, --warmup >= 0")

    out = args.out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.parent == RESULTS_DIR:
        gi = RESULTS_DIR / ".gitignore"
        if not gi.exists():
            gi.write_text("# benchmark outputs are machine-specific: keep them out of git\n*.json\n*.png\n")
    png = out.with_name(out.stem + "_stages.png")

    checkpoint, weights = resolve_checkpoint(args.checkpoint, args.seeded)
    res = {"created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
           "machine": machine_info(), "weights": weights,
           "checkpoint": str(checkpoint) if checkpoint else None}
    print(f"weights: {weights}", flush=True)
    m = res["machine"]
    print(f"machine: cpu_count {m['cpu_count']}, {m['platform']}, ncnn {m['versions']['ncnn']}, "
          f"torch {m['versions']['torch']}", flush=True)

    res["loadavg_start"] = _loadavg()
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="litedet-bench-") as tmp:
        print(f"[1] converting {ARCH} x{args.convert_repeats} ...", flush=True)
        res["conversion"], bundle = bench_conversion(Path(tmp), checkpoint, args.input_size, args.convert_repeats)
        photos = load_photos()
        print(f"[2] runtime fp16=True/False: {len(photos)} images x ({args.warmup} warm-up + {args.repeats} timed, "
              f"interleaved) ...", flush=True)
        res["runtime"] = bench_runtime(bundle, photos, args.repeats, args.warmup)
    res["bench_wall_s"] = round(time.perf_counter() - t_all, 2)
    res["loadavg_end"] = _loadavg()

    print_report(res)
    out.write_text(json.dumps(res, indent=2) + "\n")
    draw_chart(res, png)
    print(f"wrote {out}\nwrote {png}\n(benchmark wall time {res['bench_wall_s']:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
