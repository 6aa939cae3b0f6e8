"""The qemu-aarch64 environment: an aarch64 sysroot + wheels + qemu-aarch64.

x86 ncnn never does fp16 arithmetic (its fp16 flags only store activations in
fp16); an ARM phone with ``asimdhp`` does, and accumulates in fp16. To see what
a phone computes, bundles run here through the aarch64 wheels of ncnn and
numpy, in an aarch64 CPython, emulated by ``qemu-aarch64 -cpu max`` (a CPU
with FP16 arithmetic). ``scripts/setup_arm.sh`` builds that environment (no
root chroot, no binfmt) into a cache directory; :class:`ArmEnv` finds it.
Imports no torch.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ArmEnvError", "ArmRunError", "ArmEnv", "default_cache_dir", "resolve_env", "ROOT", "SETUP_SCRIPT"]

ROOT = Path(__file__).resolve().parents[3]
SETUP_SCRIPT = ROOT / "scripts" / "setup_arm.sh"


class ArmRunError(RuntimeError):
    """The aarch64 child failed."""


class ArmEnvError(RuntimeError):
    """The qemu-aarch64 environment is missing or broken."""


def default_cache_dir() -> Path:
    """``$LITEDET_ARM_CACHE``, else ``~/.cache/litedet/arm`` (the setup script's default)."""
    env = os.environ.get("LITEDET_ARM_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "litedet" / "arm"


@dataclass(frozen=True)
class ArmEnv:
    """An aarch64 sysroot + wheels + qemu-aarch64, as written by scripts/setup_arm.sh."""

    cache_dir: Path
    qemu: Path
    sysroot: Path
    site: Path
    plugin: Path
    fp16_loop: Path
    cpu: str = "max"  # qemu CPU model; must have FP16 (asimdhp) for fp16 arithmetic
    info: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_cache(cls, cache_dir: str | Path | None = None, cpu: str = "max") -> "ArmEnv":
        cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        hint = f"run `bash {SETUP_SCRIPT} {cache}` (apt-get needs root; about 1 minute the first time)"
        env_json = cache / "env.json"
        if not env_json.is_file():
            what = "does not exist" if not cache.exists() else "has no env.json (setup never finished)"
            raise ArmEnvError(f"no ARM (qemu-aarch64) environment: {cache} {what}; {hint}")
        try:
            info = json.loads(env_json.read_text())
        except json.JSONDecodeError as e:
            raise ArmEnvError(f"{env_json} is not valid JSON ({e}); {hint}") from None
        if info.get("format") != "litedet-arm-env":
            raise ArmEnvError(f"{env_json} is not a litedet ARM environment file; {hint}")
        qemu = shutil.which("qemu-aarch64") or info.get("qemu", "")
        env = cls(cache.resolve(), Path(qemu), cache.resolve() / "sysroot", cache.resolve() / "site",
                  cache.resolve() / "plugin" / "libinsn_count.so", cache.resolve() / "bin" / "fp16_loop", cpu, info)
        missing = [str(p) for p in (env.qemu, env.python, env.site / "ncnn", env.site / "numpy") if not p.exists()]
        if not qemu or missing:
            raise ArmEnvError(f"the ARM environment in {cache} is incomplete (missing: "
                              f"{', '.join(missing) or 'qemu-aarch64'}); {hint}")
        return env

    @property
    def python(self) -> Path:
        return self.sysroot / "usr" / "bin" / "python3.11"

    def child_env(self, threads: int = 1) -> dict[str, str]:
        """The whole environment of an aarch64 python child (nothing inherited from ours)."""
        return {
            "PYTHONPATH": str(self.site),
            "PYTHONHASHSEED": "0",
            "PYTHONDONTWRITEBYTECODE": "1",  # never write .pyc files into the checkout
            "PYTHONNOUSERSITE": "1",
            "OMP_NUM_THREADS": str(threads),
            "OMP_THREAD_LIMIT": str(threads),
            "OPENBLAS_NUM_THREADS": "1",
            "LANG": "C.UTF-8",
        }

    def python_command(self, *args: str, cpu: str | None = None) -> list[str]:
        """qemu-aarch64 running the sysroot's python3.11 with ``args``."""
        return [str(self.qemu), "-cpu", cpu or self.cpu, "-L", str(self.sysroot), str(self.python), "-s", "-P", *args]

    def run_python(self, *args: str, threads: int = 1, timeout: float | None = None,
                   cpu: str | None = None) -> subprocess.CompletedProcess:
        cmd = self.python_command(*args, cpu=cpu)
        try:
            proc = subprocess.run(cmd, env=self.child_env(threads), capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ArmRunError(f"the aarch64 child did not finish within {timeout:.0f} s: {' '.join(cmd)}") from None
        if proc.returncode != 0:
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
            raise ArmRunError(f"the aarch64 child failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")
        return proc

    def cpu_features(self, cpu: str | None = None) -> dict[str, Any]:
        """What ncnn detects on the emulated CPU (``asimdhp``: fp16 arithmetic available)."""
        code = ("import json, platform, ncnn; print(json.dumps({'machine': platform.machine(), 'ncnn': ncnn.__version__, "
                "'neon': bool(ncnn.cpu_support_arm_neon()), 'asimdhp': bool(ncnn.cpu_support_arm_asimdhp())}))")
        out = self.run_python("-c", code, timeout=120, cpu=cpu).stdout
        return json.loads(out.strip().splitlines()[-1])


def resolve_env(env: ArmEnv | None, cache_dir: str | Path | None) -> ArmEnv:
    return env if env is not None else ArmEnv.from_cache(cache_dir)
