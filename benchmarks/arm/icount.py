"""ARM cost proxy: guest instructions of one NanoDet-m inference under qemu-aarch64.

Wall time under qemu says little about a phone (TCG emulates fp16 with
softfloat helpers), but the number of aarch64 instructions the ncnn build
executes is a stable, machine-independent proxy for its cost. The TCG plugin
``insn_count.c`` (built by scripts/setup_arm.sh, or here when missing) adds
each translation block's instruction count to a counter every time the block
runs.

One measurement = one emulated process, single-threaded and deterministic:

    env -i OMP_THREAD_LIMIT=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 PYTHONHASHSEED=0 \\
        setarch x86_64 -R qemu-aarch64 -cpu cortex-a76 -L SYSROOT -plugin libinsn_count.so,outfile=N \\
        SYSROOT/usr/bin/python3.11 -s -P benchmarks/arm/icount_child.py BUNDLE INPUT.npy fp16 run

(setarch -R: without address randomisation the counts repeat to the
instruction; with it they drift by a few thousandths of a percent). For each
precision a baseline (``load``: python start, imports, ``Detector.from_bundle``)
is subtracted from ``run`` (the same plus one ``run_array``), so only the
inference is counted; each is repeated to show that the counts repeat exactly.

The CPU model is fixed to ``cortex-a76`` (ARMv8.2-A with FP16 arithmetic,
``asimdhp``, and dot product; no SVE/BF16/I8MM, so ncnn picks the kernels a
typical 2019-2022 phone big core gets).

    python benchmarks/arm/icount.py [BUNDLE] [--checkpoint CKPT] [--repeats 3] [--out benchmarks/results/arm_icount.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from litedet.convert.verify.arm import ArmEnv, ArmEnvError, default_cache_dir

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PLUGIN_SOURCES = (HERE / "insn_count.c", HERE / "qemu_plugin_min.h")
DEFAULT_CPU = "cortex-a76"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "arm_icount.json"


def _source_hash(paths) -> str:
    return hashlib.sha256(b"".join(Path(p).read_bytes() for p in paths)).hexdigest()[:16]


def ensure_plugin(env: ArmEnv) -> Path:
    """The plugin in the cache, rebuilt with gcc when its source changed (same rule as setup_arm.sh)."""
    plugin = env.plugin
    want = _source_hash(PLUGIN_SOURCES)
    stamp = Path(str(plugin) + ".src-sha256")
    if plugin.is_file() and stamp.is_file() and stamp.read_text().strip() == want:
        return plugin
    gcc = shutil.which("gcc") or shutil.which("cc")
    if not gcc:
        raise ArmEnvError("no C compiler (gcc) to build the insn_count plugin; run scripts/setup_arm.sh")
    plugin.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(str(plugin) + ".tmp")
    subprocess.run([gcc, "-O2", "-Wall", "-Wextra", "-Werror", "-fPIC", "-shared", "-fvisibility=hidden",
                    f"-I{HERE}", "-o", str(tmp), str(HERE / "insn_count.c")], check=True)
    tmp.replace(plugin)
    stamp.write_text(want + "\n")
    return plugin


def count_insns(env: ArmEnv, argv: list[str], *, cpu: str = DEFAULT_CPU, extra_env: dict[str, str] | None = None,
                timeout: float = 900, marks: list[int] | None = None) -> tuple[int, float, str]:
    """Run one aarch64 program under qemu with the plugin; (instructions, wall s, stdout).

    ``argv[0]`` is the guest program; the environment is empty except
    ``extra_env`` and the single-thread limits (as ``env -i``). ``marks``: filled with the count at
    each getppid call of the guest (the plugin's marks=PATH)."""
    plugin = ensure_plugin(env)
    with tempfile.TemporaryDirectory(prefix="litedet-icount-") as tmp:
        out, mark_file = Path(tmp) / "insns.txt", Path(tmp) / "marks.txt"
        opts = f"{plugin},outfile={out}" + (f",marks={mark_file}" if marks is not None else "")
        cmd = ["setarch", platform.machine(), "-R", str(env.qemu), "-cpu", cpu, "-L", str(env.sysroot),
               "-plugin", opts, *argv]
        child_env = {"OMP_THREAD_LIMIT": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", **(extra_env or {})}
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=child_env, capture_output=True, text=True, timeout=timeout)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
            raise RuntimeError(f"qemu run failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")
        if not out.is_file():
            raise RuntimeError(f"the insn_count plugin wrote no count ({out}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")
        words = out.read_text().split()
        if len(words) != 2 or words[0] != "insns":
            raise RuntimeError(f"unexpected plugin output {out.read_text()!r}")
        if marks is not None:
            marks[:] = [int(v) for v in mark_file.read_text().split()]
        return int(words[1]), wall, proc.stdout


def python_argv(env: ArmEnv, *args: str) -> list[str]:
    return [str(env.python), "-s", "-P", *args]


def python_env(env: ArmEnv) -> dict[str, str]:
    # LITEDET_PROBE_CHILD=0: no probe in a forked child (litedet.runtime.runner), whose count and
    # cache would make repeats differ
    return {"PYTHONPATH": str(env.site), "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1", "LANG": "C.UTF-8",
            "LITEDET_PROBE_CHILD": "0"}


def make_input(path: Path, width: int, height: int, seed: int = 0) -> np.ndarray:
    """A fixed pseudo-random normalised input (the counts do not depend on the values)."""
    x = np.random.default_rng(seed).standard_normal((3, height, width)).astype(np.float32)
    np.save(path, x)
    return x


def measure(bundle: Path, env: ArmEnv, *, cpu: str = DEFAULT_CPU, repeats: int = 3, width: int = 320,
            height: int = 320, progress: bool = True, modes: tuple[str, ...] = ("load", "run"),
            precisions: tuple[str, ...] = ("fp32", "fp16")) -> dict:
    """Guest instructions per mode (see icount_child.py), each repeated; ``inference_insns`` is
    run - load, and with more modes ``parts`` holds each consecutive difference
    (two-stage: stage1 = stage1 - load, glue = glue - stage1, head = run - glue)."""
    bundle = bundle.resolve()
    child = str(HERE / "icount_child.py")
    runs: dict[str, dict[str, list]] = {}
    with tempfile.TemporaryDirectory(prefix="litedet-icount-in-") as tmp:
        inp = Path(tmp) / "input.npy"
        make_input(inp, width, height)
        info = {}
        for rep in range(repeats):
            for precision in precisions:
                for mode in modes:
                    n, wall, out = count_insns(env, python_argv(env, child, str(bundle), str(inp), precision, mode),
                                               cpu=cpu, extra_env=python_env(env))
                    r = runs.setdefault(precision, {}).setdefault(mode, [])
                    r.append({"insns": n, "wall_s": round(wall, 2)})
                    info[(precision, mode)] = json.loads(out.strip().splitlines()[-1])
                    if progress:
                        print(f"  repeat {rep + 1}/{repeats} {precision} {mode:<4} {n:>15,d} insns  {wall:6.1f} s",
                              file=sys.stderr, flush=True)
    result: dict = {"cpu": cpu, "input": [3, height, width], "repeats": repeats, "precisions": {}}
    for precision, by_mode in runs.items():
        counts = {mode: [r["insns"] for r in by_mode[mode]] for mode in modes}
        base, full = counts["load"], counts["run"]
        meta = info[(precision, "run")]
        result["precisions"][precision] = {
            "opt": meta["opt"], "asimdhp": meta["asimdhp"], "outputs": meta["outputs"],
            "baseline_insns": base, "run_insns": full,
            "inference_insns": full[0] - base[0],
            "mode_insns": counts,
            "parts": {b: counts[b][0] - counts[a][0] for a, b in zip(modes, modes[1:])},
            "repeatable": all(len(set(v)) == 1 for v in counts.values()),
            "spread_insns": max(max(v) - min(v) for v in counts.values()),
            "baseline_wall_s": [r["wall_s"] for r in by_mode["load"]],
            "run_wall_s": [r["wall_s"] for r in by_mode["run"]],
        }
    p = result["precisions"]
    if "fp16" in p and "fp32" in p:
        result["fp16_over_fp32"] = p["fp16"]["inference_insns"] / p["fp32"]["inference_insns"]
    return result


def layer_costs(bundle: Path, env: ArmEnv, precision: str, *, cpu: str = DEFAULT_CPU, width: int = 320,
                height: int = 320) -> list[dict]:
    """Guest instructions of each layer of the bundle's main graph at ``precision``, one emulated run
    (icount_child.py's ``layers`` mode): [{name, type, insns}] in the param's order."""
    with tempfile.TemporaryDirectory(prefix="litedet-icount-in-") as tmp:
        inp = Path(tmp) / "input.npy"
        make_input(inp, width, height)
        marks: list[int] = []
        _, _, out = count_insns(env, python_argv(env, str(HERE / "icount_child.py"), str(Path(bundle).resolve()),
                                                 str(inp), precision, "layers"),
                                cpu=cpu, extra_env=python_env(env), marks=marks)
    layers = json.loads(out.strip().splitlines()[-1])["layers"]
    if len(marks) != 3 * len(layers):
        raise RuntimeError(f"{len(marks)} marks for {len(layers)} layers: something else called getppid")
    return [{"name": n, "type": t, "insns": max(0, (marks[3 * i + 1] - marks[3 * i]) - (marks[3 * i + 2] - marks[3 * i + 1]))}
            for i, (n, t) in enumerate(layers)]


def format_table(res: dict) -> str:
    lines = [f"guest instructions of one inference, qemu-aarch64 -cpu {res['cpu']}, input {res['input']}, "
             f"threads=1, {res['repeats']} repeats", "",
             f"{'precision':<10} {'fp16 storage/arith':<19} {'baseline (load only)':>22} {'load + inference':>18} "
             f"{'inference':>15} {'repeats exact':>14} {'emulated s':>11}"]
    for precision in ("fp32", "fp16"):
        q = res["precisions"][precision]
        flags = f"{q['opt']['use_fp16_storage']}/{q['opt']['use_fp16_arithmetic']}"
        exact = "yes" if q["repeatable"] else f"NO (±{q['spread_insns']})"
        lines.append(f"{precision:<10} {flags:<19} {q['baseline_insns'][0]:>22,d} {q['run_insns'][0]:>18,d} "
                     f"{q['inference_insns']:>15,d} {exact:>14} {min(q['run_wall_s']) - min(q['baseline_wall_s']):>11.1f}")
    lines += ["", f"fp16 / fp32 instructions per inference: {res['fp16_over_fp32']:.3f}",
              "(emulated seconds are qemu TCG time, not device speed: qemu runs fp16 through softfloat helpers)"]
    return "\n".join(lines)


def _default_bundle(tmp: Path, checkpoint: str | None) -> Path:
    from litedet.convert.pipeline import convert_model  # same as `litedet convert nanodet_m --out ...`

    out = tmp / "nanodet_m"
    print(f"converting nanodet_m ({'weights ' + checkpoint if checkpoint else 'seeded weights'}) into {out}",
          file=sys.stderr)
    convert_model("nanodet_m", out, checkpoint=checkpoint, progress=False)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle", nargs="?", help="bundle directory (default: convert nanodet_m into a temp dir)")
    ap.add_argument("--checkpoint", help="weights for the default conversion (as `litedet convert --checkpoint`)")
    ap.add_argument("--cache", default=None, help=f"ARM environment (default {default_cache_dir()})")
    ap.add_argument("--cpu", default=DEFAULT_CPU, help="qemu CPU model; needs FP16 (default %(default)s)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--input-size", default="320x320", help="WxH of the network input (default %(default)s)")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="JSON results (default %(default)s)")
    a = ap.parse_args(argv)
    try:
        w, h = (int(v) for v in a.input_size.lower().split("x"))
    except ValueError:
        ap.error(f"--input-size must be WxH, e.g. 320x320; got {a.input_size!r}")
    try:
        env = ArmEnv.from_cache(a.cache, cpu=a.cpu)
    except ArmEnvError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="litedet-icount-bundle-") as tmp:
        bundle = Path(a.bundle) if a.bundle else _default_bundle(Path(tmp), a.checkpoint)
        from litedet.runtime.manifest import load_manifest

        m = load_manifest(bundle)
        t0 = time.perf_counter()
        res = measure(bundle, env, cpu=a.cpu, repeats=a.repeats, width=w, height=h)
        res["wall_s"] = round(time.perf_counter() - t0, 1)
    res.update({
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "bundle": str(bundle) if a.bundle else "(temporary conversion)",
        "architecture": m.architecture, "weights": m.provenance.get("weights", "?"),
        "bin_sha256": m.bin_sha256, "weight_storage": m.weight_storage,
        "qemu": env.info.get("qemu_version"), "ncnn": env.info.get("ncnn"), "numpy": env.info.get("numpy"),
        "python": env.info.get("python_version"), "plugin": str(env.plugin), "host": platform.machine(),
    })
    print(format_table(res))
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {out}")
    bad = [p for p, q in res["precisions"].items() if not q["repeatable"]]
    if bad:
        print(f"error: counts did not repeat exactly for {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
