"""Segmentation cost: BiSeNet V1/V2 and DFANet A/B at 1024x512 and 512x256, the logits upsampled
in the graph or in the runtime, measured in one run so the ratios compare.

    python -m litedet.benchmarks.segmentation [--out benchmarks/results] [--models ...] [--runs N] [--qemu]

For each model, size and upsample mode: the app's C++ pipeline (``litedet_cpp bench``, x86, one
thread, fp16 flags on): the median total and each stage, and the share of the C++ core's argmax +
upsample + nearest map back (``post``) in the total; with ``--qemu`` the guest instructions of
the graph alone on a qemu-aarch64 cortex-a76 with fp16 arithmetic (benchmarks/arm/icount.py; the
graph is where the two modes differ: Interp in the graph or not). Params and MACs (from the
bundle's manifest and graph) beside the papers' figures. Writes segmentation.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

MODELS = ("bisenet_v1", "bisenet_v2", "dfanet_a", "dfanet_b")
SIZES = (1024, 512)  # stretch_multiple on a 2:1 frame: 1024x512 and 512x256
# the papers' multiply-adds ("FLOPs") and their inputs [w, h]; CoinCheung's V1 has no paper figure
PAPER = {"bisenet_v2": (21.15e9, "1024x512 (its inference input: Cityscapes' 2048x1024 frames halved)"),
         "dfanet_a": (1.7e9, "1024x512 (\"A'\"); 3.4 G at 1024x1024"),
         "dfanet_b": (2.1e9, "1024x1024")}


def frame(size: int):
    """A 2:1 frame (the reference card stretched), so stretch_multiple gives size x size/2."""
    import cv2

    from litedet.convert.bundle import reference_image

    return cv2.resize(reference_image(), (size, size // 2))


def count_post(bundle, env, size: int) -> int:
    """Guest instructions (qemu-aarch64 cortex-a76) of the C++ core's postprocessing
    (benchmarks/arm/mask_post.cpp: argmax, upsample when the runtime does it, map back) on the
    graph's logits for a size x size/2 input: run - load of one process."""
    import numpy as np

    from litedet.benchmarks.arm.cpp_glue import GlueProgram, build_glue
    from litedet.benchmarks.arm.icount import DEFAULT_CPU, count_insns
    from litedet.runtime import open_bundle
    from litedet.runtime.devconfig import device_config_text

    exe = build_glue(GlueProgram(Path(__file__).resolve().parent / "arm" / "mask_post.cpp", ("logits",)), env.cache_dir)
    x = np.random.default_rng(0).standard_normal((3, size // 2, size)).astype(np.float32)
    (logits,) = open_bundle(bundle, threads=1, fp16=False).run_stage1_array(x).values()
    with tempfile.TemporaryDirectory(prefix="litedet-mask-post-") as tmp:
        f, cfg = Path(tmp) / "logits.bin", Path(tmp) / "m.cfg"
        np.ascontiguousarray(logits, np.float32).tofile(f)
        cfg.write_text(device_config_text(bundle.manifest, "m.param", "m.bin"))
        n = {mode: count_insns(env, [str(exe), str(cfg), str(f), str(size), str(size // 2), mode], cpu=DEFAULT_CPU)[0]
             for mode in ("load", "run")}
    return n["run"] - n["load"]


def measure(models, sizes, runs: int, qemu: bool, work: Path) -> list[dict]:
    import cv2

    from litedet.benchmarks.bench import graph_facts
    from litedet.benchmarks.cpp import build_litedet_cpp, run_cpp
    from litedet.convert.pipeline import convert_model
    from litedet.runtime.bundle import Bundle
    from litedet.runtime.devconfig import export_device_assets

    binary = build_litedet_cpp()
    env = None
    if qemu:
        from litedet.convert.verify.arm.env import resolve_env

        env = resolve_env(None, None)
    rows = []
    for arch in models:
        for size in sizes:
            png = work / f"frame{size}.png"
            cv2.imwrite(str(png), frame(size))
            for up in ("graph", "runtime"):
                out = work / f"{arch}-{size}-{up}"
                convert_model(arch, out, input_size=size, force=True, progress=False, options={"upsample": up})
                b = Bundle.open(out)
                assets = work / f"assets-{arch}-{size}-{up}"
                export_device_assets(b, assets, name="m")
                (rec,) = run_cpp(binary, ["bench", str(assets), str(png), "--runs", str(runs), "--warmup", "2"])
                st = {k: (v or {}).get("median") for k, v in rec["stages_ms"].items()}
                row = {"model": arch, "input": [size, size // 2], "upsample": up,
                       "total_ms": rec["latency_ms"]["median"], "stages_ms": st,
                       "post_share": st["post"] / rec["latency_ms"]["median"],
                       **{k: v for k, v in graph_facts(b, [3, size // 2, size]).items() if k in ("params", "macs")}}
                if env is not None:
                    from litedet.benchmarks.arm.icount import measure as icount

                    r = icount(out, env, repeats=1, width=size, height=size // 2, progress=False, precisions=("fp16",))
                    row["qemu_fp16_insns"] = r["precisions"]["fp16"]["inference_insns"]
                    row["qemu_post_insns"] = count_post(b, env, size)
                    row["qemu_post_share"] = row["qemu_post_insns"] / (row["qemu_post_insns"] + row["qemu_fp16_insns"])
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def _m(n) -> str:
    return "-" if n is None else f"{n / 1e6:.1f} M"


def table(rows: list[dict]) -> str:
    lines = ["| model | input | upsample | x86 C++ total ms | pre | inference | post (argmax) | post share | "
             "qemu fp16 insns: graph | C++ post | post share | params | MACs | paper |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        s = r["stages_ms"]
        paper = PAPER.get(r["model"])
        share = f"{100 * r['qemu_post_share']:.1f} %" if "qemu_post_share" in r else "-"
        lines.append(
            f"| {r['model']} | {r['input'][0]}x{r['input'][1]} | {r['upsample']} | {r['total_ms']:.1f} | {s['pre']:.2f} | "
            f"{s['inference']:.1f} | {s['post']:.2f} | {100 * r['post_share']:.1f} % | "
            f"{_m(r.get('qemu_fp16_insns'))} | {_m(r.get('qemu_post_insns'))} | {share} | "
            f"{(r['params'] or 0) / 1e6:.2f} M | {(r['macs'] or 0) / 1e9:.2f} G | "
            f"{f'{paper[0] / 1e9:.2f} G at {paper[1]}' if paper else '-'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--qemu", action="store_true", help="also count the graph's guest instructions (slow)")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="litedet-seg-bench-") as tmp:
        rows = measure(a.models.split(","), [int(s) for s in a.sizes.split(",")], a.runs, a.qemu, Path(tmp))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "segmentation.json").write_text(json.dumps(rows, indent=1) + "\n")
    (out / "segmentation.md").write_text(table(rows))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
