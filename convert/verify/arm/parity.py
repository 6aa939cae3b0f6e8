"""ARM fp16 (emulated, fp16 arithmetic on) against x86 fp32 and torch, per output and per result."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..compare import Limits, align_outputs
from ..driver import Comparison, Sides, images_to_compare, judge, open_sides
from ..report import ImageParity, ParityReport, format_table, write_report
from .env import ArmEnv, resolve_env
from .protocol import ArmJob, Variant

__all__ = ["ArmParityThresholds", "arm_parity", "format_arm_report", "ARM_KEYS"]

ARM_KEYS = ["arm_fp16_vs_x86_fp32", "arm_fp16_vs_torch", "arm_fp32_vs_x86_fp32"]


@dataclass(frozen=True)
class ArmParityThresholds(Limits):
    """Exceeding any of these fails ARM parity (ARM fp16 vs x86 fp32 and vs torch).

    The tensor bounds are much looser than x86 fp16's (``ParityThresholds``):
    on ARM ncnn also *computes* in fp16 (its fp16sa kernels accumulate in fp16).
    Measured with the official NanoDet-m weights (qemu -cpu max): worst cosine
    0.9968 and worst max rel 0.16 on the four photos, 0.9933 / 0.22 on a
    160x192 crop of the reference card; fp16 storage alone gives ~2e-4 and
    ARM fp32 ~2e-6. They only catch gross errors (a wrong kernel, a garbage
    output); the results are the criterion, held to x86 fp16's bounds.
    Untrained (seeded) weights do not pass: they reach cosine 0.94, max rel
    0.49 and change 10-15 % of their (meaningless) detections."""

    min_cosine: float = 0.99
    max_rel: float = 0.35
    min_iou: float = 0.9
    max_score_diff: float = 0.02


def arm_parity(bundle_dir: str | Path, images: list[tuple[str, np.ndarray]] | None = None,
               out_dir: str | Path | None = None, *, thresholds: ArmParityThresholds | None = None,
               env: ArmEnv | None = None, cache_dir: str | Path | None = None, threads: int = 1,
               arm_fp32: bool = False, use_torch: bool = True, include_reference: bool = True,
               progress: bool = False) -> ParityReport:
    """Compare the bundle on emulated ARM (fp16 arithmetic) with x86 fp32 and torch.

    Inputs: the bundle's reference card (when it has one) and ``images`` (default:
    scikit-image's photos, as ``litedet parity``), preprocessed once on x86 so
    every side sees the same tensor. x86 fp32 is the fp32 reference bin with
    fp16 off; torch is the bundle's TorchScript, used when torch is importable.
    ``arm_fp32=True`` also runs ARM with fp16 off (a control: it matches x86
    fp32 to ~1e-6, so any larger difference is fp16). ``include_reference=False``
    leaves the reference card out. Writes ``arm_parity.json`` and
    ``arm_parity.txt`` into ``out_dir`` if given."""
    env = resolve_env(env, cache_dir)
    t0 = time.perf_counter()
    s = open_sides(Path(bundle_dir).resolve(), threads)
    th = lim = thresholds or replace(ArmParityThresholds(), **s.check.arm_overrides, **_int8_limits(s.manifest))
    todo = images_to_compare(s, images, include_reference)
    prepared = {name: s.r32.preprocess_array(img) for name, img in todo}
    variants = [Variant("arm_fp16", True, None)] + ([Variant("arm_fp32", False, str(s.fp32_bin))] if arm_fp32 else [])
    # multi-stage kinds: x86 first, so the ARM child also runs its later stages on x86's RoIs
    x86 = {name: s.r32.run_array(chw) for name, (chw, _) in prepared.items()} if s.r32.kind.complete else {}
    # the emulated child runs on one core while x86 ncnn and torch use the other
    job = ArmJob(env, s.bundle, {n: c for n, (c, _) in prepared.items()}, variants, threads, None,
                 references=x86 or None)
    notes: list[str] = []
    try:
        x86 = x86 or {name: s.r32.run_array(chw) for name, (chw, _) in prepared.items()}
        torch_out = _torch_side(s, prepared, use_torch, notes)
        t_x86 = time.perf_counter() - t0
    except BaseException:
        job.kill()
        raise
    arm, meta = job.finish(progress)
    meta.update(wall_s=round(time.perf_counter() - t0, 2), x86_wall_s=round(t_x86, 2))
    failures = _arm_setup_failures(env, meta)
    results = []
    for name, _ in todo:
        ip, bad = _compare_image(s, lim, name, prepared[name][1], x86[name], {v: arm[v][name] for v in arm},
                                 torch_out.get(name))
        results.append(ip)
        failures += bad
    notes += s.check.notes(s.manifest, any(ip.reference_results for ip in results))
    notes.append("ARM timings are qemu (TCG) emulation times, not device speed")
    m = s.manifest
    report = ParityReport(str(s.bundle), m.architecture, m.postprocess.kind, m.provenance.get("weights", "?"), results,
                          th, failures, notes, environment=meta)
    if out_dir:
        write_report(out_dir, "arm_parity", report.to_dict(), format_arm_report(report))
    return report


def _int8_limits(m) -> dict:
    """An int8 bundle's ARM side runs its int8 layers (ARM's int8 kernels) and fp16 for the rest, and
    is held to the int8 bounds of torch parity (ParityThresholds.int8_*): quantisation, not ARM,
    sets how far its tensors move."""
    if m.int8 is None:
        return {}
    from ..torch_parity import ParityThresholds

    t = ParityThresholds()
    return {"min_cosine": t.int8_min_cosine, "max_rel": t.int8_max_rel, "min_iou": t.int8_min_iou,
            "max_score_diff": t.int8_max_score_diff}


def _torch_side(s: Sides, prepared: dict, use_torch: bool, notes: list[str]) -> dict:
    """torch's completed outputs per image, or {} (with a note) where torch or its reference is missing."""
    from ..torch_parity import load_torchscript, torch_complete, torch_graphs, torch_outputs

    m = s.manifest
    if not use_torch:
        return {}
    if not m.reference.get("torchscript"):
        notes.append("the bundle has no reference TorchScript (a wrapped ncnn model?): no comparison with torch")
        return {}
    try:
        import torch  # noqa: F401
    except ImportError:
        notes.append("torch is not installed: no comparison with torch")
        return {}
    ts = load_torchscript(s.b.reference("torchscript"))
    graphs = torch_graphs(s.b, m)
    return {name: torch_complete(s.bundle, m, torch_outputs(ts, m, chw), chw, graphs) for name, (chw, _) in prepared.items()}


def _arm_setup_failures(env: ArmEnv, meta: dict) -> list[str]:
    """The emulated CPU must have run fp16 arithmetic, with fp16 storage and arithmetic on."""
    failures = []
    if not meta.get("asimdhp"):
        failures.append(f"ncnn on the emulated CPU ({env.cpu}) reports no asimdhp: the ARM run used fp32 arithmetic")
    opt16 = meta["variants"]["arm_fp16"]["opt"]
    if not (opt16["use_fp16_storage"] and opt16["use_fp16_arithmetic"]):
        failures.append(f"the ARM fp16 net did not have fp16 storage and arithmetic on: {opt16}")
    return failures


def _split(ref32: dict, out: dict) -> tuple[dict, dict | None]:
    """(the child's outputs, its later stages on x86's RoIs or None)"""
    same = {k[5:]: a for k, a in out.items() if k.startswith("same/")}
    got = align_outputs(ref32, {k: a for k, a in out.items() if not k.startswith("same/")})
    return got, ({**got, **same} if same else None)


def _compare_image(s: Sides, lim: Limits, name: str, g, ref32: dict, arm_out: dict, torch_out: dict | None):
    """One image: ARM fp16 vs x86 fp32 and vs torch (judged), ARM fp32 vs x86 fp32 (a control, not judged)."""
    r32 = s.r32
    ip = ImageParity(name, [g.src_w, g.src_h], g.input_size)
    a16, s16 = _split(ref32, arm_out["arm_fp16"])
    d32, d16 = r32.postprocess(ref32, g), r32.postprocess(a16, g)
    ip.reference_results = [d.to_dict() for d in d32]
    comparisons = [Comparison("arm_fp16_vs_x86_fp32", ref32, a16, d32, d16, r32, s16)]
    if torch_out is not None:  # the later stages ran on x86's RoIs, not torch's: end to end only
        comparisons.append(Comparison("arm_fp16_vs_torch", torch_out, a16, r32.postprocess(torch_out, g), d16, r32))
    if "arm_fp32" in arm_out:
        a32, s32 = _split(ref32, arm_out["arm_fp32"])
        comparisons.append(Comparison("arm_fp32_vs_x86_fp32", ref32, a32, d32, r32.postprocess(a32, g), r32, s32,
                                      judged=False))
    failures: list[str] = []
    for c in comparisons:
        failures += judge(s, ip, c, lim, g)
    ip.test_results["arm_fp16"] = [d.to_dict() for d in d16]
    return ip, failures


def format_arm_report(r: ParityReport) -> str:
    """A readable table, like the torch parity report, with the ARM side's setup on top."""
    from ...families import check_for_kind

    a = r.environment
    v16 = a.get("variants", {}).get("arm_fp16", {})
    opt = v16.get("opt", {})
    runs = v16.get("run_s", [])
    title = [f"ARM parity of {r.bundle} ({r.architecture}, weights: {r.weights})",
             f"ARM side: qemu-aarch64 -cpu {a.get('cpu')} ({a.get('qemu_version', '?')}), python {a.get('python')} "
             f"{a.get('machine')}, ncnn {a.get('ncnn')}, numpy {a.get('numpy')}; asimdhp (fp16 arithmetic): "
             f"{'yes' if a.get('asimdhp') else 'NO'}; fp16 storage/packed/arithmetic: "
             f"{opt.get('use_fp16_storage')}/{opt.get('use_fp16_packed')}/{opt.get('use_fp16_arithmetic')}",
             f"emulated fp16 inference {min(runs) if runs else float('nan'):.1f}-{max(runs) if runs else float('nan'):.1f} s "
             f"per image; ARM child {a.get('child_wall_s')} s, x86 side (alongside) {a.get('x86_wall_s')} s, "
             f"total {a.get('wall_s')} s"]
    th = r.thresholds
    check = check_for_kind(r.kind)
    text = format_table(r, check, ARM_KEYS, title, key_width=21)
    results = check.limits_text(th)
    limits = (f"thresholds (ARM fp16 vs x86 fp32 and vs torch): cosine >= {th.min_cosine}, max rel <= {th.max_rel}"
              + (f", {results}" if results else ""))
    head, sep, tail = text.rpartition("\n\n")
    return f"{head}\n\n{limits}\n{tail}" if sep else f"{text}\n{limits}"
