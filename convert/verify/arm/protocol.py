"""The parent side of the aarch64 child protocol.

The parent writes the preprocessed inputs to ``inputs.npz`` and a
``job.json`` (bundle, variants: fp16 on/off and bin override, thread count);
the child (``child.py``, run by the emulated python) loads the bundle with the
runtime, runs every input once per variant, prints ``DONE <variant> <i>``
after each run (the parent's progress bar counts them) and writes
``outputs.npz`` (keys ``variant|input index|blob``) and ``meta.json``. One
child serves many inputs: starting the emulated python costs about a second,
an fp16 NanoDet-m inference about ten.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .env import ArmEnv, ArmEnvError, ArmRunError, resolve_env

__all__ = ["ArmRunError", "Variant", "ArmJob", "run_bundle_arm", "CHILD"]

CHILD = Path(__file__).resolve().with_name("child.py")
# an emulated fp16 NanoDet-m inference at 320x320 takes ~10 s on the dev VM
_CHILD_TIMEOUT_BASE_S = 120.0
_CHILD_TIMEOUT_PER_RUN_S = 90.0


@dataclass
class Variant:
    key: str
    fp16: bool
    bin_override: str | None = None


class ArmJob:
    """One aarch64 child running in the background (so the x86 side can work meanwhile)."""

    def __init__(self, env: ArmEnv, bundle: Path, inputs: dict[str, np.ndarray], variants: list[Variant],
                 threads: int, timeout: float | None,
                 references: dict[str, dict[str, np.ndarray]] | None = None) -> None:
        """``references``: per input, another side's completed outputs; for multi-stage kinds the
        child also runs the later stages on them (keys ``same/...``: the head on x86's RoIs)."""
        self.env, self.variants, self.names = env, variants, list(inputs)
        if not self.names:
            raise ValueError("no inputs to run")
        for name in self.names:
            a = np.asarray(inputs[name])
            if a.ndim != 3:
                raise ValueError(f"input {name!r} has shape {a.shape}; expected a preprocessed [C, H, W] array")
        self._tmp = tempfile.TemporaryDirectory(prefix="litedet-arm-")
        self.dir = Path(self._tmp.name)
        np.savez(self.dir / "inputs.npz", **{f"x{i}": np.ascontiguousarray(inputs[n], dtype=np.float32)
                                             for i, n in enumerate(self.names)})
        refs = None
        if references:
            refs = str(self.dir / "references.npz")
            np.savez(refs, **{f"{i}|{k}": np.asarray(a) for i, n in enumerate(self.names)
                              for k, a in references.get(n, {}).items()})
        job = {"bundle": str(bundle), "inputs": str(self.dir / "inputs.npz"), "outputs": str(self.dir / "outputs.npz"),
               "meta": str(self.dir / "meta.json"), "names": self.names, "threads": threads,
               "variants": [asdict(v) for v in variants], "references": refs}
        (self.dir / "job.json").write_text(json.dumps(job))
        self.timeout = timeout if timeout is not None else (
            _CHILD_TIMEOUT_BASE_S + _CHILD_TIMEOUT_PER_RUN_S * len(self.names) * len(variants))
        self.cmd = env.python_command(str(CHILD), str(self.dir / "job.json"))
        self._log = open(self.dir / "child.log", "w+")
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(self.cmd, env=env.child_env(threads), stdout=self._log, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()
        self._tmp.cleanup()

    def _wait(self, progress: bool) -> int:
        """Wait for the child; a progress bar counts the runs it reports (emulation is slow)."""
        from tqdm import tqdm

        total = len(self.names) * len(self.variants)
        with tqdm(total=total, desc="qemu-aarch64", unit="run", disable=not progress, leave=False) as bar:
            while True:
                try:
                    rc = self.proc.wait(timeout=0.5)
                except subprocess.TimeoutExpired:
                    rc = None
                done = (self.dir / "child.log").read_text(errors="replace").count("DONE ")
                bar.update(done - bar.n)
                if rc is not None:
                    return rc
                if time.perf_counter() - self.t0 > self.timeout:
                    raise ArmRunError(f"the aarch64 child did not finish within {self.timeout:.0f} s: "
                                      f"{' '.join(self.cmd)}")

    def finish(self, progress: bool = False) -> tuple[dict[str, dict[str, dict[str, np.ndarray]]], dict[str, Any]]:
        try:
            rc = self._wait(progress)
            if rc != 0:
                self._log.seek(0)
                tail = "\n".join(self._log.read().strip().splitlines()[-15:])
                raise ArmRunError(f"the aarch64 child failed (exit {rc}): {' '.join(self.cmd)}\n{tail}")
            meta = json.loads((self.dir / "meta.json").read_text())
            with np.load(self.dir / "outputs.npz") as z:
                flat = {k: z[k] for k in z.files}
        finally:
            self.kill()
        out: dict[str, dict[str, dict[str, np.ndarray]]] = {}
        for v in self.variants:
            out[v.key] = {}
            for i, n in enumerate(self.names):
                prefix = f"{v.key}|{i}|"
                out[v.key][n] = {k[len(prefix):]: a for k, a in flat.items() if k.startswith(prefix)}
        meta["cpu"] = self.env.cpu
        meta["qemu_version"] = self.env.info.get("qemu_version", "")
        meta["child_wall_s"] = round(time.perf_counter() - self.t0, 2)
        return out, meta


def _run_arm(bundle_dir: str | Path, inputs: dict[str, np.ndarray], variants: list[Variant], threads: int = 1,
             env: ArmEnv | None = None, cache_dir: str | Path | None = None,
             timeout: float | None = None) -> tuple[dict[str, dict[str, dict[str, np.ndarray]]], dict[str, Any]]:
    """Run ``inputs`` through the bundle once per variant in one aarch64 child.
    Returns (variant -> input name -> blob -> array, the child's metadata)."""
    env = resolve_env(env, cache_dir)
    return ArmJob(env, Path(bundle_dir).resolve(), inputs, variants, threads, timeout).finish()


def run_bundle_arm(bundle_dir: str | Path, inputs: dict[str, np.ndarray], fp16: bool = True, threads: int = 1, *,
                   bin_override: str | Path | None = None, env: ArmEnv | None = None,
                   cache_dir: str | Path | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Run preprocessed [C, H, W] float32 inputs through a bundle on emulated ARM.

    ``fp16=True`` turns ncnn's fp16 storage, packing and arithmetic on (what a
    phone with asimdhp does); ``fp16=False`` runs fp32 throughout. Returns
    input name -> output blob -> array, like ``Detector.run_array``."""
    variant = Variant("fp16" if fp16 else "fp32", fp16, str(Path(bin_override).resolve()) if bin_override else None)
    out, meta = _run_arm(bundle_dir, inputs, [variant], threads, env, cache_dir)
    if fp16 and not meta.get("asimdhp"):
        raise ArmEnvError(f"ncnn on the emulated CPU ({meta.get('cpu')}) reports no asimdhp, so it ran fp32 arithmetic; "
                          "use a CPU model with FP16 (qemu -cpu max or cortex-a76)")
    return out[variant.key]
