#!/usr/bin/env python
"""Benchmark two-stage detectors: stage 1, the glue between the graphs, and stage 2, apart.

In one run, for ThunderNet-SNet49 at 320 (or a given bundle), one thread, ncnn fp16:

1. per real photo (scikit-image), interleaved, after warm-up, ``--repeats`` times: stage 1
   (backbone + CEM + RPN + SAM), the glue (proposals + PSRoIAlign) in the Python runtime
   and in the C++ core (ctypes, the code the phone runs), stage 2 (the R-CNN head on every
   proposal in one extract) and the final decode; medians, and the glue's share of the
   total (goal: C++ glue < 25 %);
2. MACs and parameters of every registered two-stage model (stage 1, the head per RoI, the
   total at post_nms_top_n RoIs) beside the papers' numbers;
3. with ``--qemu``: aarch64 guest instructions (qemu-aarch64 -cpu cortex-a76, fp16
   arithmetic) of stage 1, of the numpy glue and of the head, each repeated to show the
   counts repeat exactly (benchmarks/arm/icount.py's method).

Writes JSON (default benchmarks/results/two_stage.json) and a stage chart beside it.
Timings are reported, never asserted.

    python benchmarks/bench_two_stage.py [--bundle DIR] [--repeats 20] [--qemu] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_OUT = HERE / "results" / "two_stage.json"
ARCH = "thundernet_snet49"
GOAL_GLUE_SHARE = 0.25
# the papers' complexity (multiply-adds, "FLOPs" there) for the whole detector
PAPER_MFLOPS = {"thundernet_snet49": 262, "thundernet_snet146": 473, "thundernet_snet535": 1300}
STAGES = ("stage1", "glue_python", "glue_cpp", "stage2", "decode_python")


def model_costs() -> list[dict]:
    """Params and MACs of every two-stage model beside the papers' (the convert layer profiles them)."""
    from litedet.convert.families.two_stage import cost_table

    rows = cost_table()
    for r in rows:
        paper = PAPER_MFLOPS.get(r["model"])
        r["paper_mflops"] = paper
        r["ratio_to_paper"] = round(r["macs_total"] / 1e6 / paper, 3) if paper else None
    return rows


def bench_stages(bundle: Path, photos: dict[str, np.ndarray], repeats: int, warmup: int) -> list[dict]:
    from litedet.convert.verify.cpp_core import CppPostprocessor
    from litedet.runtime.kinds.rpn_psroi import (PROPOSALS, RCNN_DELTAS, RCNN_SCORES, head_input, pool_rois,
                                                 proposals_of)
    from litedet.runtime.runner import open_bundle

    r = open_bundle(bundle, threads=1, fp16=True)
    m, p = r.manifest, r.manifest.postprocess
    core = CppPostprocessor()
    rows = []
    for name, img in photos.items():
        mat, g = r.preprocess(img)
        w, h = mat.w, mat.h
        fh, fw = -(-h // p.stride), -(-w // p.stride)
        feat_blob = m.outputs_with_role("psroi_features")[0].blob
        times: dict[str, list[float]] = {k: [] for k in STAGES}
        n_props = 0
        for i in range(warmup + repeats):
            t0 = time.perf_counter()
            out = r.run_stage1(mat)
            t1 = time.perf_counter()
            props = proposals_of(m, out, w, h)
            pooled = pool_rois(m, out, props.boxes, w, h)
            t2 = time.perf_counter()
            boxes, _ = core.proposals(m, out, w, h)
            core.ps_roi_align(out[feat_blob].reshape(-1, fh, fw), boxes, 1.0 / p.stride, p.pooled_size,
                              p.sampling_ratio)
            t3 = time.perf_counter()
            head = r.run_graph("head", head_input(pooled))
            t4 = time.perf_counter()
            n = len(pooled)  # features_by_rois: one column per RoI
            full = {**out, PROPOSALS: props.boxes, RCNN_SCORES: head[p.head.scores_blob].reshape(-1, n).T,
                    RCNN_DELTAS: head[p.head.deltas_blob].reshape(-1, n).T}
            dets = r.postprocess(full, g)
            t5 = time.perf_counter()
            if i >= warmup:
                for k, dt in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
                    times[k].append(dt * 1e3)
            n_props = len(props)
        med = {k: statistics.median(v) for k, v in times.items()}
        total_cpp = med["stage1"] + med["glue_cpp"] + med["stage2"]
        total_py = med["stage1"] + med["glue_python"] + med["stage2"] + med["decode_python"]
        rows.append({"image": name, "input": [w, h], "proposals": n_props, "detections": len(dets),
                     "median_ms": {k: round(v, 3) for k, v in med.items()},
                     "min_ms": {k: round(min(v), 3) for k, v in times.items()},
                     "max_ms": {k: round(max(v), 3) for k, v in times.items()},
                     "glue_share_cpp": round(med["glue_cpp"] / total_cpp, 4),
                     "glue_share_python": round((med["glue_python"] + med["decode_python"]) / total_py, 4)})
    return rows


def _glue_program(env) -> Path:
    """benchmarks/arm/two_stage_glue.cpp + the C++ core, built static for aarch64 (cached by source hash)."""
    import hashlib
    import shutil
    import subprocess

    from litedet.convert.verify.cpp_core import CPP_DIR

    sources = [HERE / "arm" / "two_stage_glue.cpp", CPP_DIR / "litedet_rpn_psroi.cpp", CPP_DIR / "litedet_post.cpp"]
    headers = [CPP_DIR / n for n in ("litedet_rpn_psroi.h", "litedet_post.h", "litedet_config_keys.h",
                                     "litedet_config_reader.h")]
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources + headers)).hexdigest()[:16]
    out = env.cache_dir / "bin" / f"two_stage_glue-{digest}"
    if out.is_file():
        return out
    cxx = shutil.which("aarch64-linux-gnu-g++")
    if cxx is None:
        raise RuntimeError("aarch64-linux-gnu-g++ not found: run scripts/setup_arm.sh")
    out.parent.mkdir(parents=True, exist_ok=True)
    # the phone's flags: ARMv8.2-A, no FMA contraction (litedet_post.h's float policy)
    subprocess.run([cxx, "-O2", "-std=c++17", "-static", "-march=armv8.2-a+fp16", "-ffp-contract=off",
                    f"-I{CPP_DIR}", "-o", f"{out}.tmp", *map(str, sources)], check=True)
    Path(f"{out}.tmp").replace(out)
    return out


def bench_qemu(bundle: Path, photo: np.ndarray, repeats: int) -> dict:
    """Guest instructions of stage 1, the numpy glue and the head (the Python runtime under qemu),
    and of the C++ glue (a static aarch64 build of the core) on one photo's stage-1 outputs."""
    sys.path.insert(0, str(HERE / "arm"))
    from icount import count_insns, measure  # noqa: E402  (benchmarks/arm/icount.py)

    from litedet.convert.verify.arm import ArmEnv
    from litedet.runtime.devconfig import device_config_text
    from litedet.runtime.runner import open_bundle

    env = ArmEnv.from_cache(None, cpu="cortex-a76")
    res = measure(bundle, env, repeats=repeats, modes=("load", "stage1", "glue", "run"), precisions=("fp16",))
    r = open_bundle(bundle, fp16=False)
    mat, _ = r.preprocess(photo)
    out = r.run_stage1(mat)
    prog = _glue_program(env)
    with tempfile.TemporaryDirectory(prefix="litedet-glue-") as tmp:
        files = []
        for role in ("rpn_objectness", "rpn_deltas", "psroi_features"):
            f = Path(tmp) / f"{role}.bin"
            np.ascontiguousarray(out[r.manifest.outputs_with_role(role)[0].blob], np.float32).tofile(f)
            files.append(str(f))
        cfg = Path(tmp) / "m.cfg"
        cfg.write_text(device_config_text(r.manifest, "m.param", "m.bin"))
        counts = {mode: [count_insns(env, [str(prog), str(cfg), *files, str(mat.w), str(mat.h), mode])[0]
                         for _ in range(repeats)] for mode in ("load", "run")}
    res["cpp_glue"] = {"input": [mat.w, mat.h], "load_insns": counts["load"], "run_insns": counts["run"],
                       "glue_insns": counts["run"][0] - counts["load"][0],
                       "repeatable": all(len(set(v)) == 1 for v in counts.values())}
    return res


def draw_chart(res: dict, path: Path) -> None:
    """Stacked horizontal bars per image: stage 1, C++ glue, stage 2 (ms, one thread)."""
    import cv2

    rows = res["stages"]
    parts = [("stage1", (200, 120, 40)), ("glue_cpp", (40, 140, 230)), ("stage2", (60, 170, 60))]
    top, left, bar, gap, width = 50, 150, 22, 14, 560
    h = top + len(rows) * (bar + gap) + 40
    img = np.full((h, left + width + 110, 3), 255, np.uint8)  # room for the share label
    cv2.putText(img, f"{res['architecture']} one thread, ncnn fp16: stage 1 | C++ glue | stage 2 (ms)", (10, 22),
                cv2.FONT_HERSHEY_SIMPLEX, 0.5, (30, 30, 30), 1, cv2.LINE_AA)
    biggest = max(sum(r["median_ms"][k] for k, _ in parts) for r in rows)
    scale = width / biggest
    for i, r in enumerate(rows):
        y = top + i * (bar + gap)
        cv2.putText(img, r["image"], (8, y + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (30, 30, 30), 1, cv2.LINE_AA)
        x = left
        for k, color in parts:
            dx = int(round(r["median_ms"][k] * scale))
            cv2.rectangle(img, (x, y), (x + dx, y + bar), color, -1)
            if dx > 40:
                cv2.putText(img, f"{r['median_ms'][k]:.1f}", (x + 4, y + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.42,
                            (255, 255, 255), 1, cv2.LINE_AA)
            x += dx
        cv2.putText(img, f"glue {100 * r['glue_share_cpp']:.1f}%", (x + 6, y + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.42,
                    (30, 30, 30), 1, cv2.LINE_AA)
    cv2.imwrite(str(path), img)


def format_report(res: dict) -> str:
    lines = [f"{res['architecture']} ({res['weights']}), one thread, ncnn fp16, medians of {res['repeats']} runs", "",
             f"{'image':<16} {'input':>8} {'props':>5} {'stage1':>8} {'glue C++':>9} {'glue py':>8} {'stage2':>8} "
             f"{'decode py':>9} {'glue share C++':>15} {'py':>6}"]
    for r in res["stages"]:
        t = r["median_ms"]
        lines.append(f"{r['image']:<16} {'x'.join(map(str, r['input'])):>8} {r['proposals']:>5} {t['stage1']:>8.2f} "
                     f"{t['glue_cpp']:>9.2f} {t['glue_python']:>8.2f} {t['stage2']:>8.2f} {t['decode_python']:>9.2f} "
                     f"{100 * r['glue_share_cpp']:>14.1f}% {100 * r['glue_share_python']:>5.1f}%")
    worst = max(r["glue_share_cpp"] for r in res["stages"])
    lines += ["", f"goal: C++ glue < {100 * GOAL_GLUE_SHARE:.0f} % of stage1 + glue + stage2: worst "
                  f"{100 * worst:.1f} % -> {'met' if worst < GOAL_GLUE_SHARE else 'NOT met'}", "",
              f"{'model':<26} {'input':>5} {'params M':>9} {'stage1 MMACs':>13} {'head MMACs/RoI':>15} {'RoIs':>5} "
              f"{'total MMACs':>12} {'paper':>6} {'ratio':>6}"]
    for c in res["costs"]:
        lines.append(f"{c['model']:<26} {c['input']:>5} {(c['params_stage1'] + c['params_head']) / 1e6:>9.2f} "
                     f"{c['macs_stage1'] / 1e6:>13.1f} {c['macs_head_per_roi'] / 1e6:>15.3f} {c['rois']:>5} "
                     f"{c['macs_total'] / 1e6:>12.1f} {c['paper_mflops'] or '-':>6} {c['ratio_to_paper'] or '-':>6}")
    q = res.get("qemu")
    if q:
        f = q["precisions"]["fp16"]
        g = q["cpp_glue"]
        s1, head = f["parts"]["stage1"], f["parts"]["run"]
        lines += ["", f"qemu-aarch64 -cpu {q['cpu']}, fp16 arithmetic, guest instructions ({q['repeats']} repeats, "
                      f"exact: {'yes' if f['repeatable'] and g['repeatable'] else 'NO'}):",
                  f"  stage 1 {s1:,d}   head + decode (python) {head:,d}   glue: numpy {f['parts']['glue']:,d}, "
                  f"C++ {g['glue_insns']:,d} ({100 * g['glue_insns'] / (s1 + g['glue_insns'] + head):.1f} % of "
                  "stage 1 + C++ glue + head)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", help="a two-stage bundle (default: convert thundernet_snet49 into a temp dir)")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--qemu", action="store_true", help="also count aarch64 instructions under qemu (slow)")
    ap.add_argument("--qemu-repeats", type=int, default=2)
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    a = ap.parse_args(argv)
    from litedet.photos import default_images
    from litedet.runtime.manifest import load_manifest

    sys.path.insert(0, str(HERE))
    from bench_nanodet import machine_info  # noqa: E402

    photos = dict(default_images())
    with tempfile.TemporaryDirectory(prefix="litedet-bench2-") as tmp:
        bundle = Path(a.bundle) if a.bundle else Path(tmp) / ARCH
        if not a.bundle:
            from litedet.convert.pipeline import convert_model

            print(f"converting {ARCH} (seeded weights) into {bundle}", file=sys.stderr)
            convert_model(ARCH, bundle, progress=False)
        m = load_manifest(bundle)
        if m.postprocess.kind != "rpn_psroi":
            print(f"error: {bundle} is a {m.postprocess.kind!r} bundle; this benchmark runs two-stage (rpn_psroi) ones",
                  file=sys.stderr)
            return 2
        t0 = time.perf_counter()
        res = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "architecture": m.architecture,
               "weights": m.provenance.get("weights", "?"), "repeats": a.repeats, "machine": machine_info(),
               "stages": bench_stages(bundle, photos, a.repeats, a.warmup), "costs": model_costs()}
        if a.qemu:
            res["qemu"] = bench_qemu(bundle, next(iter(photos.values())), a.qemu_repeats)
        res["wall_s"] = round(time.perf_counter() - t0, 1)
    print(format_report(res))
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    draw_chart(res, out.with_name(out.stem + "_stages.png"))
    print(f"wrote {out} and {out.with_name(out.stem + '_stages.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
