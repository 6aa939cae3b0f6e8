"""Time a bundle through the Python runtime (numpy + ncnn + litedet.runtime; never torch),
stage by stage: the same code on the desktop and on an ARM board over ssh.

On a board it runs from a self-contained zip (``litedet bench --ssh`` builds it from
litedet's runtime, this file, schema.py and machine.py):

    python3 litedet_bench_runner.pyz IMAGE.npy BUNDLE [BUNDLE ...] [--threads 1] [--precisions fp16,fp32]
                                     [--runs 20] [--warmup 3] [--device NAME]

It prints one JSON line per measurement as soon as it has it, ``{"record": {...}}``
(schema.py's records: a connection lost mid-run keeps what was measured), then
``{"machine": {...}}``. When numpy or ncnn cannot be imported it says which and exits 3.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

__all__ = ["time_pipeline", "bench_bundle", "peak_rss_bytes", "main"]

MISSING_EXIT = 3
PROGRESS = "litedet bench runner progress: "  # its progress lines on stderr (not errors)


def _now() -> float:
    return time.perf_counter() * 1e3


def pipeline_once(runner, image) -> tuple[dict[str, float | None], object, list[int]]:
    """One image through the runtime: ms per stage (pre, inference of every graph, the glue
    between graphs or None, post), the results and the network input [C, H, W]."""
    t0 = _now()
    mat, geom = runner.preprocess(image)
    t1 = _now()
    outs = runner.run_stage1(mat)
    t2 = _now()
    glue = None
    head = 0.0
    complete = runner.kind.complete
    if complete is not None:
        def timed_graph(name, x):
            nonlocal head
            a = _now()
            r = runner.run_graph(name, x)
            head += _now() - a
            return r

        outs = {**outs, **complete(runner.manifest, outs, mat.w, mat.h, timed_graph)}
        glue = _now() - t2 - head
    elif runner.kind.task == "classification":
        outs = {k: v.reshape(-1) for k, v in outs.items()}
    t3 = _now()
    results = runner.postprocess(outs, geom)
    t4 = _now()
    return ({"pre": t1 - t0, "inference": (t2 - t1) + head, "glue": glue, "post": t4 - t3},
            results, [mat.c, mat.h, mat.w])


def time_pipeline(runner, image, runs: int, warmup: int) -> dict:
    """Warm-up, then ``runs`` timed runs: stats of the whole pipeline and of each stage."""
    from litedet.benchmarks.schema import stats

    for _ in range(warmup):
        pipeline_once(runner, image)
    total, per = [], {"pre": [], "inference": [], "glue": [], "post": []}
    res, shape = None, None
    for _ in range(runs):
        t, res, shape = pipeline_once(runner, image)
        total.append(sum(v for v in t.values() if v is not None))
        for k, v in t.items():
            if v is not None:
                per[k].append(v)
    return {"latency_ms": stats(total), "stages_ms": {k: (stats(v) if v else None) for k, v in per.items()},
            "input": shape, "results": len(res) if res is not None else 0}


def peak_rss_bytes() -> int:
    """This process's peak resident set: VmHWM (reset by exec; ru_maxrss is inherited from
    the process that started this one), else ru_maxrss (KiB on Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def bin_bytes(bundle) -> int:
    """The size of the shipped weights (every graph's bin) of a Bundle or a bundle directory."""
    from litedet.runtime.bundle import open_bundle_dir

    return sum(g.bin.stat().st_size for g in open_bundle_dir(bundle, verify=False).graph_files().values())


def bench_bundle(bundle: str | Path, image, *, threads: int = 1, precision: str = "fp16", runs: int = 20,
                 warmup: int = 3, place: str = "desktop", device: str = "") -> dict:
    """One record (schema.py) of a bundle run through the Python runtime."""
    from litedet.runtime import open_bundle

    bundle = Path(bundle)
    runner = open_bundle(bundle, threads=threads, fp16=precision == "fp16")
    t = time_pipeline(runner, image, runs, warmup)
    return {"model": runner.manifest.architecture, "place": place, "runtime": "ncnn", "precision": precision, "threads": threads,
            "device": device, "input": t["input"], "latency_ms": t["latency_ms"], "stages_ms": t["stages_ms"],
            "bin_bytes": bin_bytes(bundle)}


def main(argv: list[str] | None = None) -> int:
    import os

    os.environ.setdefault("LITEDET_PROBE_CHILD", "0")  # on a board litedet runs from a zip: no probe child
    ap = argparse.ArgumentParser(prog="litedet_bench_runner", description="time bundles through litedet's runtime")
    ap.add_argument("image", help="the input image as a uint8 BGR .npy (litedet bench writes it)")
    ap.add_argument("bundles", nargs="+")
    ap.add_argument("--threads", default="1")
    ap.add_argument("--precisions", default="fp16,fp32")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--place", default="ssh")
    ap.add_argument("--device", default="")
    a = ap.parse_args(argv)
    missing = []
    for mod in ("numpy", "ncnn"):
        try:
            __import__(mod)
        except ImportError as e:
            missing.append(f"{mod} ({e})")
    if missing:
        print(f"litedet bench runner: this python ({sys.executable}, {sys.version.split()[0]}) cannot import "
              f"{', '.join(missing)}; install them (pip install numpy ncnn) or pass --remote-python",
              file=sys.stderr)
        return MISSING_EXIT
    import numpy as np

    from litedet.benchmarks.machine import machine_info

    image = np.load(a.image)
    machine = machine_info(("ncnn", "numpy"))
    device = a.device or " ".join(v for v in (machine.get("machine"), machine.get("cpu_model")) if v)
    records = []
    for b in a.bundles:
        for threads in (int(t) for t in a.threads.split(",")):
            for precision in a.precisions.split(","):
                rec = bench_bundle(b, image, threads=threads, precision=precision, runs=a.runs, warmup=a.warmup,
                                   place=a.place, device=device)
                records.append(rec)
                print(json.dumps({"record": rec}), flush=True)
                print(f"{PROGRESS}measured {b} {precision} {threads}t: {rec['latency_ms']['median']:.2f} ms",
                      file=sys.stderr, flush=True)
    machine["loadavg_end"] = machine_info(())["loadavg"]
    machine["peak_rss_bytes"] = peak_rss_bytes()
    print(json.dumps({"machine": machine}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
