"""RefineDet and OneNet against NanoDet-m, measured in one run so the ratios compare.

    python -m litedet.benchmarks.single_shot [--out benchmarks/results] [--models ...] [--runs N] [--qemu]

For each model at its input (NanoDet-m and RefineDet 320, OneNet 512; ``arch@size`` to choose):
params and MACs of the bundle's graph beside the published figures (the papers publish accuracy
and GPU speed, not MACs), the app's C++ pipeline on x86 (``litedet_cpp bench``, one thread, median
of N: preprocessing, inference, the C++ core's postprocessing), and with ``--qemu`` the guest
instructions on a qemu-aarch64 cortex-a76 with fp16 arithmetic of the graph and of the C++ core's
postprocessing (benchmarks/arm/detect_post.cpp). Seeded weights: the cost does not depend on
them, except the postprocessing's, which grows with the candidates that pass. Writes
single_shot.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

MODELS = ("nanodet_m@320", "refinedet_vgg16@320", "refinedet_resnest50@320", "onenet_resnet18@512",
          "onenet_resnet50@512")
# what the authors publish (accuracy and GPU speed; none of them gives MACs or params)
PUBLISHED = {
    "nanodet_m": "COCO mAP 20.6 at 320 (NanoDet README); 0.72 G FLOPs, 0.95 M params",
    "refinedet_vgg16": "VOC07 mAP 80.0 (320) / 81.8 (512), paper; 79.81 / 80.50 RefineDet.PyTorch",
    "refinedet_resnest50": "no published figure (resnest-refinedet reports none on VOC)",
    "onenet_resnet18": "no published figure (the no-DCN R18 config ships without results)",
    "onenet_resnet50": "COCO box AP 32.7, 73 FPS on a V100 (OneNet README, R50_nodcn)",
}


def _photo(work: Path) -> Path:
    import cv2
    import skimage.data

    p = work / "coffee.png"
    cv2.imwrite(str(p), skimage.data.coffee()[:, :, ::-1])
    return p


def measure(models: list[str], runs: int, qemu: bool, work: Path) -> list[dict]:
    from litedet.benchmarks.arm.cpp_glue import count_cpp_glue
    from litedet.benchmarks.bench import graph_facts
    from litedet.benchmarks.cpp import build_litedet_cpp, run_cpp
    from litedet.convert.pipeline import convert_model
    from litedet.runtime import open_bundle
    from litedet.runtime.bundle import Bundle
    from litedet.runtime.devconfig import export_device_assets

    binary, png = build_litedet_cpp(), _photo(work)
    env = None
    if qemu:
        from litedet.convert.verify.arm.env import resolve_env

        env = resolve_env(None, None)
    rows = []
    for spec in models:
        arch, _, size = spec.partition("@")
        out = work / spec
        convert_model(arch, out, input_size=int(size) if size else None, force=True, progress=False)
        b = Bundle.open(out)
        export_device_assets(b, work / f"assets-{spec}", name="m")
        (rec,) = run_cpp(binary, ["bench", str(work / f"assets-{spec}"), str(png), "--runs", str(runs), "--warmup", "2"])
        st = {k: (v or {}).get("median") for k, v in rec["stages_ms"].items()}
        chw, _ = open_bundle(b, threads=1, fp16=False).preprocess_array(__import__("cv2").imread(str(png)))
        facts = graph_facts(b, list(chw.shape))
        row = {"model": arch, "input": [chw.shape[2], chw.shape[1]], "kind": b.manifest.postprocess.kind,
               "total_ms": rec["latency_ms"]["median"], "stages_ms": st, "params": facts["params"],
               "macs": facts["macs"], "published": PUBLISHED.get(arch, "")}
        if env is not None:
            from litedet.benchmarks.arm.icount import DEFAULT_CPU, measure as icount

            r = icount(out, env, repeats=1, width=chw.shape[2], height=chw.shape[1], progress=False,
                       precisions=("fp16",))
            row["qemu_fp16_insns"] = r["precisions"]["fp16"]["inference_insns"]
            post = count_cpp_glue(b, env, chw, 1, DEFAULT_CPU)
            row["qemu_post_insns"] = post["glue_insns"] if post else None
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def _m(n) -> str:
    return "-" if n is None else f"{n / 1e6:,.1f} M"


def table(rows: list[dict]) -> str:
    base = next((r for r in rows if r["model"] == "nanodet_m"), None)
    lines = ["| model | input | kind | params | MACs | x86 C++ total ms | pre | inference | post | x NanoDet-m | "
             "qemu fp16 insns: graph | C++ post | x NanoDet-m | published |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        s = r["stages_ms"]
        x_ms = f"{r['total_ms'] / base['total_ms']:.1f}" if base else "-"
        q, qb = r.get("qemu_fp16_insns"), (base or {}).get("qemu_fp16_insns")
        x_q = f"{(q + (r.get('qemu_post_insns') or 0)) / (qb + (base.get('qemu_post_insns') or 0)):.1f}" \
            if q and qb else "-"
        lines.append(f"| {r['model']} | {r['input'][0]}x{r['input'][1]} | {r['kind']} | {r['params'] / 1e6:.2f} M | "
                     f"{r['macs'] / 1e9:.2f} G | {r['total_ms']:.1f} | {s['pre']:.2f} | {s['inference']:.1f} | "
                     f"{s['post']:.2f} | {x_ms} | {_m(q)} | {_m(r.get('qemu_post_insns'))} | {x_q} | {r['published']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--models", default=",".join(MODELS), help="arch@input_size, comma-separated")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--qemu", action="store_true", help="also count guest instructions under qemu-aarch64 (slow)")
    ap.add_argument("--qemu-from", help="take the instruction counts of an earlier run's single_shot.json (they do "
                                        "not depend on the machine's load; the x86 times do)")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="litedet-single-shot-") as tmp:
        rows = measure(a.models.split(","), a.runs, a.qemu, Path(tmp))
    if a.qemu_from:
        earlier = {(r["model"], tuple(r["input"])): r for r in json.loads(Path(a.qemu_from).read_text())}
        for r in rows:
            e = earlier.get((r["model"], tuple(r["input"])), {})
            r.update({k: v for k, v in e.items() if k.startswith("qemu_")})
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "single_shot.json").write_text(json.dumps(rows, indent=1) + "\n")
    (out / "single_shot.md").write_text(table(rows))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
