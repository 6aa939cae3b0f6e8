"""What machine a measurement ran on (stdlib only, ncnn optional): written beside every
result as machine.json, so numbers can be reproduced or explained (a busy machine, a
powersave governor, a CPU without the SIMD the kernels want)."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

__all__ = ["cpu_model", "machine_info", "loadavg"]

_INTERESTING = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx512_fp16", "avx512_bf16",
                "asimd", "asimdhp", "fphp", "asimddp", "sve")


def _pkg_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def cpu_model() -> tuple[str | None, list[str]]:
    """CPU model name and the SIMD flags that matter to ncnn on x86 / ARM (Linux only)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or None, []
    model, flags, x86_keys = None, set(), False
    for line in text.splitlines():
        key, _, val = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and model is None:
            model = val.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(val.split())
            x86_keys = x86_keys or key == "flags"
    if x86_keys and platform.machine() in ("aarch64", "arm64", "armv7l", "armv8l"):
        # qemu-user shows the host's /proc/cpuinfo to the guest: it says nothing about this CPU
        return None, []
    return model, [f for f in _INTERESTING if f in flags]


def loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _governors() -> dict[str, str]:
    """cpufreq governor per CPU, where the kernel exposes it (VMs often do not)."""
    out = {}
    for p in sorted(Path("/sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq/scaling_governor")):
        try:
            out[p.parent.parent.name] = p.read_text().strip()
        except OSError:
            pass
    return out


def machine_info(packages: tuple[str, ...] = ("ncnn", "numpy", "torch", "pnnx", "onnxruntime",
                                             "opencv-python-headless", "scikit-image", "litedet")) -> dict:
    model, simd = cpu_model()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = None
    try:
        import ncnn

        ncnn_cpu = {n[len("cpu_support_"):]: bool(getattr(ncnn, n)()) for n in dir(ncnn) if n.startswith("cpu_support_")}
    except Exception:  # noqa: BLE001 - informational only
        ncnn_cpu = {}
    return {
        "cpu_count": os.cpu_count(),
        "cpu_usable": usable,
        "cpu_model": model,
        "simd_flags": simd,
        "ncnn_cpu_support": {k: v for k, v in ncnn_cpu.items() if v},
        "governor": _governors() or None,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "versions": {p: _pkg_version(p) for p in packages},
        "loadavg": loadavg(),
    }
