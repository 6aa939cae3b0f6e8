"""Build and run ``litedet_cpp`` (android_demo/host_tests/litedet_cpp.cpp): the app's own C++
pipeline, linked against the ncnn C++ library that scripts/setup_ncnn_lib.sh builds from
PyPI's ncnn sdist, for x86_64 (this machine) and aarch64 (static: runs under qemu-aarch64,
on an ARM Linux board, and from /data/local/tmp on a phone).

Builds are cached in ~/.cache/litedet/cpp (``$LITEDET_CPP_CACHE``) by the hash of the sources
and of the library build, so a changed demo source rebuilds and nothing else does.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

from litedet.convert.verify.cpp_core import core_sources

ROOT = Path(__file__).resolve().parents[1]
CPP = ROOT / "android_demo" / "app" / "src" / "main" / "cpp"
MAIN = ROOT / "android_demo" / "host_tests" / "litedet_cpp.cpp"
# the C++ core (no ncnn: box maths, letterbox, one file per kind), found by cpp_core's rule; the
# runner and the kinds' ncnn steps: litedet_cpp_sources
CORE_SOURCES = tuple(CPP / s for s in core_sources(CPP))
# the postprocessing core rounds as the Python does only without FMA contraction (CMakeLists.txt)
CORE_FLAGS = ("-ffp-contract=off", "-fno-fast-math")
ARCHES = {"x86_64": ("g++", ()), "aarch64": ("aarch64-linux-gnu-g++", ("-static",))}


class CppError(RuntimeError):
    """litedet_cpp could not be built or run (the message says what to do)."""


def ncnn_lib_dir(arch: str) -> Path:
    cache = Path(os.environ.get("LITEDET_NCNN_SRC", Path.home() / ".cache" / "litedet" / "ncnn-src"))
    return cache / f"lib-{arch}"


def ncnn_layers(arch: str) -> set[str]:
    """The layer types the cached ncnn build registers (setup_ncnn_lib.sh writes the list)."""
    p = ncnn_lib_dir(arch) / "install" / "layers.txt"
    if not p.is_file():
        raise CppError(f"no ncnn library for {arch} at {p.parent}: run `bash scripts/setup_ncnn_lib.sh {arch}`")
    return set(p.read_text().split())


def litedet_cpp_sources(kinds: tuple[Path, ...] = ()) -> list[Path]:
    """Every source a litedet_cpp build compiles: the driver, the runner, each kind's file found
    beside it (litedet_*_ncnn.cpp) and ``kinds`` (further kinds' files, e.g. from a test tree),
    then the core."""
    found = sorted(CPP.glob("litedet_*_ncnn.cpp"))
    return [MAIN, CPP / "litedet_ncnn.cpp", *found, *kinds, *CORE_SOURCES]


def build_litedet_cpp(arch: str = "x86_64", kinds: tuple[Path, ...] = ()) -> Path:
    """The litedet_cpp binary for ``arch`` (built when its sources or the library changed).
    ``kinds``: the source files of further postprocess kinds to compile in (each registers itself
    with LITEDET_REGISTER_NCNN_KIND; its headers beside it)."""
    if arch not in ARCHES:
        raise CppError(f"unknown arch {arch!r}; expected one of {', '.join(ARCHES)}")
    if not MAIN.is_file():
        raise CppError(f"litedet_cpp's sources are not here ({MAIN}): build it from a litedet checkout")
    lib = ncnn_lib_dir(arch)
    ok, archive = lib / "ok", lib / "install" / "lib" / "libncnn.a"
    if not ok.is_file() or not archive.is_file():
        raise CppError(f"no ncnn library for {arch} at {lib}: run `bash scripts/setup_ncnn_lib.sh {arch}`")
    cxx_name, extra = ARCHES[arch]
    cxx = shutil.which(cxx_name)
    if cxx is None:
        raise CppError(f"{cxx_name} not found: " + ("apt-get install g++" if arch == "x86_64"
                                                     else "run scripts/setup_arm.sh (g++-aarch64-linux-gnu)"))
    kinds = tuple(Path(k) for k in kinds)
    sources = litedet_cpp_sources(kinds)
    headers = sorted(CPP.glob("*.h")) + [ROOT / "runtime" / "litedet_config_keys.h"] + \
        sorted(h for k in kinds for h in k.parent.glob("*.h"))
    h = hashlib.sha256(ok.read_bytes() + " ".join(CORE_FLAGS + extra).encode())
    for p in (*sources, *headers):
        if p.is_file():
            h.update(p.read_bytes())
    cache = Path(os.environ.get("LITEDET_CPP_CACHE", Path.home() / ".cache" / "litedet" / "cpp"))
    out = cache / f"litedet_cpp-{arch}-{h.hexdigest()[:16]}"
    if out.is_file():
        return out
    cache.mkdir(parents=True, exist_ok=True)
    inc = lib / "install" / "include" / "ncnn"
    tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
    objs = []
    try:
        common = [cxx, "-std=c++17", "-O2", "-fopenmp", f"-I{CPP}", f"-I{inc}",
                  *sorted({f"-I{k.parent}" for k in kinds}), *extra]
        for src in CORE_SOURCES:  # the core, compiled as the app's CMakeLists.txt compiles it
            obj = tmp.with_name(tmp.name + f".{src.stem}.o")
            _run([*common, *CORE_FLAGS, "-c", str(src), "-o", str(obj)])
            objs.append(obj)
        runner = [str(p) for p in sources if p not in CORE_SOURCES]
        _run([*common, "-Wall", "-Wextra", *runner, *map(str, objs), str(archive),
              "-lpthread", "-o", str(tmp)])
        tmp.replace(out)
    finally:
        for p in objs + [tmp]:
            p.unlink(missing_ok=True)
    return out


def _run(cmd: list[str]) -> None:
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        errs = [ln for ln in p.stderr.splitlines() if "error" in ln] or p.stderr.splitlines()[-10:]
        raise CppError(f"building litedet_cpp failed: {' '.join(cmd[:3])} ...\n" + "\n".join(errs[:10]))


def run_cpp(binary: Path, args: list[str], qemu: list[str] | None = None, timeout: float = 900) -> list[dict]:
    """Run litedet_cpp (under ``qemu``, e.g. [qemu-aarch64, -cpu, cortex-a76], for an aarch64
    build); its JSON lines. A failure raises CppError with litedet_cpp's own message."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    p = subprocess.run([*(qemu or []), str(binary), *args], capture_output=True, text=True, timeout=timeout, env=env)
    if p.returncode != 0:
        raise CppError((p.stderr.strip() or p.stdout.strip() or f"litedet_cpp exited {p.returncode}").splitlines()[-1])
    return [json.loads(ln) for ln in p.stdout.splitlines() if ln.startswith("{")]


def cpp_record(raw: dict, place: str, device: str = "") -> dict:
    """litedet_cpp bench's JSON -> a schema record (its own fields already follow the schema)."""
    return {"model": raw["model"], "place": place, "runtime": "litedet_cpp", "precision": raw["precision"],
            "threads": raw["threads"], "device": device, "input": raw["input"], "latency_ms": raw["latency_ms"],
            "stages_ms": raw["stages_ms"], "peak_rss_bytes": raw["peak_rss_bytes"],
            "note": f"{raw['detections']} detections on {Path(raw['image']).name}"}
