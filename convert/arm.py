"""x86 <-> ARM parity: run a bundle with the aarch64 ncnn build under qemu-user.

x86 ncnn never does fp16 arithmetic (its fp16 flags only store activations in
fp16); an ARM phone with ``asimdhp`` does, and accumulates in fp16. To see what
a phone computes, the same bundle runs here through the aarch64 wheels of ncnn
and numpy, in an aarch64 CPython, emulated by ``qemu-aarch64 -cpu max`` (a CPU
with FP16 arithmetic). ``scripts/setup_arm.sh`` builds that environment (no
root chroot, no binfmt) into a cache directory; :class:`ArmEnv` finds it.

The ARM side is a child process: the parent writes the preprocessed inputs to
an ``.npz``, the child (this very file, run by the emulated python with
``--child``) loads the bundle with ``litedet.runtime.detector.Detector`` (fp16
storage, packing and arithmetic set explicitly by ``make_net``), runs every
input and writes the outputs back. One child serves many inputs, because
starting the emulated python costs about a second and an fp16 NanoDet-m
inference about ten.

This module imports no torch (it is also the aarch64 child); ``arm_parity``
uses torch only when it is importable and the bundle has its TorchScript.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # the child imports litedet only after bootstrapping it
    from litedet.convert.parity import DetectionMatch, TensorStats

__all__ = ["ArmEnvError", "ArmRunError", "ArmEnv", "default_cache_dir", "run_bundle_arm", "ArmParityThresholds",
           "ArmImageParity", "ArmParityReport", "arm_parity", "format_arm_report"]

ROOT = Path(__file__).resolve().parents[1]
SETUP_SCRIPT = ROOT / "scripts" / "setup_arm.sh"
# an emulated fp16 NanoDet-m inference at 320x320 takes ~10 s on the dev VM
_CHILD_TIMEOUT_BASE_S = 120.0
_CHILD_TIMEOUT_PER_RUN_S = 90.0


class ArmEnvError(RuntimeError):
    """The qemu-aarch64 environment is missing or broken."""


class ArmRunError(RuntimeError):
    """The aarch64 child failed."""


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


def _resolve_env(env: ArmEnv | None, cache_dir: str | Path | None) -> ArmEnv:
    return env if env is not None else ArmEnv.from_cache(cache_dir)


@dataclass
class _Variant:
    key: str
    fp16: bool
    bin_override: str | None = None


class _ArmJob:
    """One aarch64 child running in the background (so the x86 side can work meanwhile)."""

    def __init__(self, env: ArmEnv, bundle: Path, inputs: dict[str, np.ndarray], variants: list[_Variant],
                 threads: int, timeout: float | None) -> None:
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
        job = {"bundle": str(bundle), "inputs": str(self.dir / "inputs.npz"), "outputs": str(self.dir / "outputs.npz"),
               "meta": str(self.dir / "meta.json"), "names": self.names, "threads": threads,
               "variants": [asdict(v) for v in variants]}
        (self.dir / "job.json").write_text(json.dumps(job))
        self.timeout = timeout if timeout is not None else (
            _CHILD_TIMEOUT_BASE_S + _CHILD_TIMEOUT_PER_RUN_S * len(self.names) * len(variants))
        self.cmd = env.python_command(str(Path(__file__).resolve()), "--child", str(self.dir / "job.json"))
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


def _run_arm(bundle_dir: str | Path, inputs: dict[str, np.ndarray], variants: list[_Variant], threads: int = 1,
             env: ArmEnv | None = None, cache_dir: str | Path | None = None,
             timeout: float | None = None) -> tuple[dict[str, dict[str, dict[str, np.ndarray]]], dict[str, Any]]:
    """Run ``inputs`` through the bundle once per variant in one aarch64 child.
    Returns (variant -> input name -> blob -> array, the child's metadata)."""
    env = _resolve_env(env, cache_dir)
    return _ArmJob(env, Path(bundle_dir).resolve(), inputs, variants, threads, timeout).finish()


def run_bundle_arm(bundle_dir: str | Path, inputs: dict[str, np.ndarray], fp16: bool = True, threads: int = 1, *,
                   bin_override: str | Path | None = None, env: ArmEnv | None = None,
                   cache_dir: str | Path | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Run preprocessed [C, H, W] float32 inputs through a bundle on emulated ARM.

    ``fp16=True`` turns ncnn's fp16 storage, packing and arithmetic on (what a
    phone with asimdhp does); ``fp16=False`` runs fp32 throughout. Returns
    input name -> output blob -> array, like ``Detector.run_array``."""
    variant = _Variant("fp16" if fp16 else "fp32", fp16, str(Path(bin_override).resolve()) if bin_override else None)
    out, meta = _run_arm(bundle_dir, inputs, [variant], threads, env, cache_dir)
    if fp16 and not meta.get("asimdhp"):
        raise ArmEnvError(f"ncnn on the emulated CPU ({meta.get('cpu')}) reports no asimdhp, so it ran fp32 arithmetic; "
                          "use a CPU model with FP16 (qemu -cpu max or cortex-a76)")
    return out[variant.key]


# ---------------------------------------------------------------------------
# parity: ARM fp16 vs x86 fp32 and vs torch
# ---------------------------------------------------------------------------

@dataclass
class ArmParityThresholds:
    """Exceeding any of these fails ARM parity (ARM fp16 vs x86 fp32 and vs torch).

    The tensor bounds are much looser than x86 fp16's (``ParityThresholds``):
    on ARM ncnn also *computes* in fp16 (its fp16sa kernels accumulate in fp16).
    Measured with the official NanoDet-m weights (qemu -cpu max): worst cosine
    0.9968 and worst max rel 0.16 on the four photos, 0.9933 / 0.22 on a
    160x192 crop of the reference card; fp16 storage alone gives ~2e-4 and
    ARM fp32 ~2e-6. They only catch gross errors (a wrong kernel, a garbage
    output); the detections are the criterion, held to x86 fp16's bounds.
    Untrained (seeded) weights do not pass: they reach cosine 0.94, max rel
    0.49 and change 10-15 % of their (meaningless) detections."""

    min_cosine: float = 0.99
    max_rel: float = 0.35
    min_iou: float = 0.9
    max_score_diff: float = 0.02
    match_iou: float = 0.5
    borderline_margin: float = 0.02
    max_label_flip_frac: float = 0.05


@dataclass
class ArmImageParity:
    image: str
    size: list[int]
    input_size: list[int]
    # comparison ("arm_fp16_vs_x86_fp32", "arm_fp16_vs_torch", "arm_fp32_vs_x86_fp32") -> per-output stats
    tensors: dict[str, list[TensorStats]] = field(default_factory=dict)
    detections: dict[str, DetectionMatch] = field(default_factory=dict)
    x86_fp32_detections: list[dict] = field(default_factory=list)
    arm_fp16_detections: list[dict] = field(default_factory=list)


@dataclass
class ArmParityReport:
    bundle: str
    architecture: str
    weights: str
    arm: dict[str, Any]  # qemu cpu/version, ncnn/numpy/python versions, asimdhp, net options, timings
    images: list[ArmImageParity]
    thresholds: ArmParityThresholds
    failures: list[str]
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict:
        d = asdict(self)
        d["passed"] = self.passed
        return d


def arm_parity(bundle_dir: str | Path, images: list[tuple[str, np.ndarray]] | None = None,
               out_dir: str | Path | None = None, *, thresholds: ArmParityThresholds | None = None,
               env: ArmEnv | None = None, cache_dir: str | Path | None = None, threads: int = 1,
               arm_fp32: bool = False, use_torch: bool = True, include_reference: bool = True,
               progress: bool = False) -> ArmParityReport:
    """ARM fp16 (emulated, fp16 arithmetic on) against x86 fp32 and torch, per output and per detection.

    Inputs: the bundle's reference card (when it has one) and ``images`` (default:
    scikit-image's photos, as ``litedet parity``), preprocessed once on x86 by
    ``Detector.preprocess_array`` so every side sees the same tensor. x86 fp32 is
    the fp32 reference bin with fp16 off; torch is the bundle's TorchScript, used
    when torch is importable. ``arm_fp32=True`` also runs ARM with fp16 off (a
    control: it matches x86 fp32 to ~1e-6, so any larger difference is fp16).
    ``include_reference=False`` leaves the reference card out (only ``images``).
    Writes ``arm_parity.json`` and ``arm_parity.txt`` into ``out_dir`` if given."""
    import cv2

    from litedet.convert.parity import (default_images, detection_failure, detection_notes, match_detections,
                                        output_stats, tensor_failures)
    from litedet.runtime.detector import Detector, postprocess_outputs
    from litedet.runtime.manifest import load_manifest

    th = thresholds or ArmParityThresholds()
    env = _resolve_env(env, cache_dir)
    bundle = Path(bundle_dir).resolve()
    t0 = time.perf_counter()
    m = load_manifest(bundle)
    fp32_rel = m.reference.get("fp32_bin")
    fp32_bin = bundle / fp32_rel if fp32_rel and (bundle / fp32_rel).is_file() else bundle / m.bin
    det32 = Detector.from_bundle(bundle, threads=threads, fp16=False, bin_override=fp32_bin)

    notes: list[str] = []
    todo: list[tuple[str, np.ndarray]] = []
    img_rel = m.reference.get("image")
    if include_reference and img_rel and (bundle / img_rel).is_file():
        todo.append(("reference", cv2.imread(str(bundle / img_rel), cv2.IMREAD_UNCHANGED)))
    todo += list(images if images is not None else default_images())
    if not todo:
        raise ValueError(f"nothing to compare: {bundle} has no reference image and no images were given "
                         "(install scikit-image for the default photos)")
    if len({n for n, _ in todo}) != len(todo):
        raise ValueError(f"image names must be unique; got {[n for n, _ in todo]}")

    prepared: dict[str, tuple] = {}
    for name, img in todo:
        prepared[name] = det32.preprocess_array(img)
    variants = [_Variant("arm_fp16", True, None)]
    if arm_fp32:
        variants.append(_Variant("arm_fp32", False, str(fp32_bin)))
    # the emulated child runs on one core while x86 ncnn and torch use the other
    job = _ArmJob(env, bundle, {n: c for n, (c, _) in prepared.items()}, variants, threads, None)
    ts = None
    try:
        ts_rel = m.reference.get("torchscript")
        if use_torch and ts_rel and (bundle / ts_rel).is_file():
            try:
                import torch
            except ImportError:
                notes.append("torch is not installed: no comparison with torch")
            else:
                ts = torch.jit.load(str(bundle / ts_rel)).eval()
        elif use_torch:
            notes.append("the bundle has no reference TorchScript (a wrapped ncnn model?): no comparison with torch")
        x86, torch_out = {}, {}
        blobs = [o.blob for o in m.outputs]
        for name, (chw, _) in prepared.items():
            x86[name] = det32.run_array(chw)
            if ts is not None:
                import torch

                with torch.no_grad():
                    touts = ts(torch.from_numpy(chw)[None])
                if len(touts) != len(blobs):
                    raise ValueError(f"TorchScript returns {len(touts)} outputs; the manifest lists {len(blobs)}")
                torch_out[name] = {b: o[0].numpy() for b, o in zip(blobs, touts)}
        t_x86 = time.perf_counter() - t0
    except BaseException:
        job.kill()
        raise
    arm, meta = job.finish(progress)
    meta["wall_s"] = round(time.perf_counter() - t0, 2)
    meta["x86_wall_s"] = round(t_x86, 2)

    failures: list[str] = []
    if not meta.get("asimdhp"):
        failures.append(f"ncnn on the emulated CPU ({env.cpu}) reports no asimdhp: the ARM run used fp32 arithmetic")
    opt16 = meta["variants"]["arm_fp16"]["opt"]
    if not (opt16["use_fp16_storage"] and opt16["use_fp16_arithmetic"]):
        failures.append(f"the ARM fp16 net did not have fp16 storage and arithmetic on: {opt16}")

    p = m.postprocess
    results = []
    for name, _ in todo:
        chw, lb = prepared[name]
        ip = ArmImageParity(name, [lb.src_w, lb.src_h], [lb.in_w, lb.in_h])
        ref32 = x86[name]
        a16 = {b: a.reshape(ref32[b].shape) for b, a in arm["arm_fp16"][name].items()}
        d32 = postprocess_outputs(m, ref32, lb)
        d16 = postprocess_outputs(m, a16, lb)
        ip.x86_fp32_detections = [d.to_dict() for d in d32]
        ip.arm_fp16_detections = [d.to_dict() for d in d16]
        comparisons = [("arm_fp16_vs_x86_fp32", ref32, a16, d32, d16, True)]
        if name in torch_out:
            dt = postprocess_outputs(m, torch_out[name], lb)
            comparisons.append(("arm_fp16_vs_torch", torch_out[name], a16, dt, d16, True))
        if arm_fp32:
            a32 = {b: a.reshape(ref32[b].shape) for b, a in arm["arm_fp32"][name].items()}
            comparisons.append(("arm_fp32_vs_x86_fp32", ref32, a32, d32, postprocess_outputs(m, a32, lb), False))
        for key, ref, got, dref, dgot, judged in comparisons:
            stats = output_stats(m, ref, got)
            dm = match_detections(dref, dgot, th.match_iou, p.score_threshold, th.borderline_margin, p.max_detections)
            ip.tensors[key], ip.detections[key] = stats, dm
            if not judged:
                continue
            failures += tensor_failures(name, key, stats, th.min_cosine, th.max_rel)
            why = detection_failure(name, key, dm, th.min_iou, th.max_score_diff, th.max_label_flip_frac)
            if why:
                failures.append(why)
        results.append(ip)

    prov = m.provenance
    notes += detection_notes(m, any(ip.x86_fp32_detections for ip in results))
    notes.append("ARM timings are qemu (TCG) emulation times, not device speed")
    report = ArmParityReport(str(bundle), m.architecture, prov.get("weights", "?"), meta, results, th, failures, notes)
    if out_dir:
        from litedet.convert.parity import write_report

        write_report(out_dir, "arm_parity", report.to_dict(), format_arm_report(report))
    return report


def format_arm_report(r: ArmParityReport) -> str:
    """A readable table, like ``litedet.convert.parity.format_report``."""
    a = r.arm
    v16 = a.get("variants", {}).get("arm_fp16", {})
    opt = v16.get("opt", {})
    runs = v16.get("run_s", [])
    lines = [f"ARM parity of {r.bundle} ({r.architecture}, weights: {r.weights})",
             f"ARM side: qemu-aarch64 -cpu {a.get('cpu')} ({a.get('qemu_version', '?')}), python {a.get('python')} "
             f"{a.get('machine')}, ncnn {a.get('ncnn')}, numpy {a.get('numpy')}; asimdhp (fp16 arithmetic): "
             f"{'yes' if a.get('asimdhp') else 'NO'}; fp16 storage/packed/arithmetic: "
             f"{opt.get('use_fp16_storage')}/{opt.get('use_fp16_packed')}/{opt.get('use_fp16_arithmetic')}",
             f"emulated fp16 inference {min(runs) if runs else float('nan'):.1f}-{max(runs) if runs else float('nan'):.1f} s "
             f"per image; ARM child {a.get('child_wall_s')} s, x86 side (alongside) {a.get('x86_wall_s')} s, "
             f"total {a.get('wall_s')} s", ""]
    lines.append(f"{'image':<16} {'size':>9} {'input':>9} {'comparison':<21} {'worst cosine':>13} {'max rel':>9} "
                 f"{'max abs':>9}  {'dets r/t':>8} {'match':>5} {'miss':>4} {'extra':>5} {'bord':>4} {'flip':>4} "
                 f"{'minIoU':>6} {'dScore':>7}")
    for ip in r.images:
        for key in ("arm_fp16_vs_x86_fp32", "arm_fp16_vs_torch", "arm_fp32_vs_x86_fp32"):
            if key not in ip.tensors:
                continue
            st, dm = ip.tensors[key], ip.detections[key]
            lines.append(
                f"{ip.image:<16} {'x'.join(map(str, ip.size)):>9} {'x'.join(map(str, ip.input_size)):>9} {key:<21} "
                f"{min(s.cosine for s in st):>13.7f} {max(s.max_rel for s in st):>9.2e} {max(s.max_abs for s in st):>9.2e}  "
                f"{dm.reference:>3}/{dm.test:<4} {dm.matched:>5} {dm.missed:>4} {dm.extra:>5} {dm.borderline:>4} "
                f"{dm.label_flips:>4} {dm.min_iou:>6.3f} {dm.max_score_diff:>7.4f}")
    th = r.thresholds
    lines += ["", f"thresholds (ARM fp16 vs x86 fp32 and vs torch): cosine >= {th.min_cosine}, max rel <= {th.max_rel}, "
                  f"no missed/extra detections, min IoU >= {th.min_iou}, score diff <= {th.max_score_diff}"]
    for n in r.notes:
        lines.append(f"note: {n}")
    lines.append("PASS" if r.passed else "FAIL:\n  " + "\n  ".join(r.failures))
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# the aarch64 child (run by the emulated python: numpy + ncnn + litedet.runtime)
# ---------------------------------------------------------------------------

def _bootstrap_litedet(root: Path) -> None:
    """Make ``litedet.*`` importable as the editable install maps it
    (litedet -> root/litedet, litedet.runtime -> root/runtime, ...) without
    installing anything into the aarch64 python."""
    import importlib.util

    if "litedet" in sys.modules:
        return
    spec = importlib.util.spec_from_file_location("litedet", root / "litedet" / "__init__.py",
                                                  submodule_search_locations=[str(root / "litedet"), str(root)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules["litedet"] = mod
    spec.loader.exec_module(mod)


def _child_main(job_path: str) -> int:
    import platform

    t0 = time.perf_counter()
    _bootstrap_litedet(ROOT)
    import ncnn

    from litedet.runtime.detector import Detector

    job = json.loads(Path(job_path).read_text())
    threads = int(job["threads"])
    meta: dict[str, Any] = {"machine": platform.machine(), "python": platform.python_version(), "ncnn": ncnn.__version__,
                            "numpy": np.__version__, "asimdhp": bool(ncnn.cpu_support_arm_asimdhp()),
                            "threads": threads, "import_s": round(time.perf_counter() - t0, 2), "variants": {}}
    out: dict[str, np.ndarray] = {}
    with np.load(job["inputs"]) as z:
        xs = [z[f"x{i}"] for i in range(len(job["names"]))]
    for v in job["variants"]:
        t = time.perf_counter()
        det = Detector.from_bundle(job["bundle"], threads=threads, fp16=v["fp16"], bin_override=v["bin_override"])
        o = det.net.opt
        vm = {"opt": {k: bool(getattr(o, k)) for k in ("use_fp16_storage", "use_fp16_packed", "use_fp16_arithmetic",
                                                        "use_bf16_storage")},
              "load_s": round(time.perf_counter() - t, 3), "run_s": []}
        for i, x in enumerate(xs):
            t = time.perf_counter()
            res = det.run_array(x)
            vm["run_s"].append(round(time.perf_counter() - t, 3))
            print(f"DONE {v['key']} {i}", flush=True)  # the parent's progress bar counts these
            for blob, a in res.items():
                out[f"{v['key']}|{i}|{blob}"] = a
        meta["variants"][v["key"]] = vm
    np.savez(job["outputs"], **out)
    Path(job["meta"]).write_text(json.dumps(meta))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        sys.exit(_child_main(sys.argv[2]))
    sys.exit("usage: python convert/arm.py --child JOB.json (internal: run by litedet.convert.arm under qemu-aarch64)")
