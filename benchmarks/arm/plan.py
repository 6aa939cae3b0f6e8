"""The precision of each layer on ARM: fp16 where ncnn's fp16 kernels are fast, fp32 where they are not.

ncnn's fp16 kernels do not cover every shape: a 5x5 depthwise convolution whose channel count is
not a multiple of 8 (SNet49's 30- and 60-channel branches, ThunderNet's 245-channel RPN) runs a
generic loop in fp16 that costs up to 20x its fp32 kernel. The plan is measured, not guessed:
icount.layer_costs counts every layer's guest instructions under qemu (cortex-a76) in fp32 and
in fp16; the layers whose fp16 cost exceeds their fp32 cost by more than the casts they add
become fp32 islands; the planned graph is counted again, and a layer stays fp32 only if its
island (the layer and the cast in front of it) is cheaper than its fp16 cost; the plan is kept
only if the whole graph is cheaper than uniform fp16.

An fp32 island in ncnn: featmask ``31=3`` on the layer (no fp16 arithmetic, no fp16 storage) and
an identity Dropout in front of each of its inputs. ncnn 1.0.20261020 casts a blob for a layer by the layer's
masked options, so a layer whose featmask turns fp16 storage off receives the fp16 blob uncast
and computes garbage (we found this under qemu: the probe saw non-probabilities); Dropout has no
fp16 storage on ARM, so ncnn casts fp16 to fp32 for it, and the layer then gets fp32. The output
is cast back to fp16 by the next layer as usual. On x86 and with fp16 off both are no-ops, so the
fp32 reference and every parity are unchanged.

Padding the channels to a multiple of 8 instead would change the graph's weights and, where the
producer is shared (a Split, as for the RPN's 245 channels), every consumer's; the island changes
one layer and is measured, so it is what the plan uses.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from pathlib import Path

from litedet.hashing import sha256_file
from litedet.runtime.bundle import Bundle, open_bundle_dir
from litedet.runtime.manifest import Manifest, PrecisionPlan

from .icount import DEFAULT_CPU, layer_costs

__all__ = ["PlanError", "island_param", "choose_layers", "plan_bundle", "UNIFORM_PARAM", "MIN_GAIN"]

UNIFORM_PARAM = "reference/model.uniform.ncnn.param"
ISLAND_SUFFIX = "_fp32in"
FEATMASK_FP32 = 3  # bit 0: no fp16 arithmetic, bit 1: no fp16 storage (ncnn's net.cpp get_masked_option)
MIN_GAIN = 20_000  # instructions a layer must save to be worth an island (the casts it adds cost some)


class PlanError(ValueError):
    """A bundle the plan cannot be made for (one line: what and why)."""


def island_param(text: str, layers: list[str]) -> str:
    """The param text with each named layer made an fp32 island: an identity ``Dropout
    NAME_fp32in`` feeding each of its inputs (``NAME_fp32in1``, ... for a second input on) and
    featmask 31=3 on it. Pure text: the layer and blob counts on the second line grow by one per
    Dropout; nothing else moves."""
    lines = text.splitlines()
    want = set(layers)
    counts = lines[1].split()
    n_layers, n_blobs = int(counts[0]), int(counts[1])
    out, found = lines[:2], set()
    for ln in lines[2:]:
        tok = ln.split()
        if len(tok) > 4 and tok[1] in want:
            if any(t.startswith("31=") for t in tok[4:]):
                raise PlanError(f"layer {tok[1]} already has a featmask (31=); the graph was planned before")
            for i in range(int(tok[2])):
                cast = f"{tok[4 + i]}{ISLAND_SUFFIX}{i or ''}"
                out.append(f"Dropout {tok[1]}{ISLAND_SUFFIX}{i or ''} 1 1 {tok[4 + i]} {cast}")
                tok[4 + i] = cast
                n_layers, n_blobs = n_layers + 1, n_blobs + 1
            ln = " ".join(tok) + f" 31={FEATMASK_FP32}"
            found.add(tok[1])
        out.append(ln)
    if found != want:
        raise PlanError(f"the graph has no layer {sorted(want - found)[0]!r}")
    out[1] = f"{n_layers} {n_blobs}"
    return "\n".join(out) + "\n"


def choose_layers(fp32: list[dict], fp16: list[dict], min_gain: int = MIN_GAIN) -> list[str]:
    """The layers whose fp16 cost exceeds their fp32 cost by more than ``min_gain`` instructions
    (fp32 / fp16: layer_costs of the same graph, in the same order)."""
    if [r["name"] for r in fp32] != [r["name"] for r in fp16]:
        raise PlanError("the fp32 and fp16 profiles list different layers")
    return [a["name"] for a, b in zip(fp32, fp16) if b["insns"] - a["insns"] > min_gain]


def _keep_paying(planned: list[dict], fp16: list[dict], chosen: list[str]) -> list[str]:
    """The chosen layers whose island (the layer and its cast, as counted in the planned graph)
    costs less than the layer did in uniform fp16."""
    cost = {r["name"]: r["insns"] for r in planned}
    before = {r["name"]: r["insns"] for r in fp16}
    def casts(n: str) -> int:  # the Dropouts in front of the layer: NAME_fp32in, NAME_fp32in1, ...
        pre = n + ISLAND_SUFFIX
        return sum(v for k, v in cost.items() if k == pre or (k.startswith(pre) and k[len(pre):].isdigit()))

    return [n for n in chosen if cost[n] + casts(n) < before[n]]


def variant(b: Bundle, tmp: Path, param_text: str) -> Path:
    """A copy of the bundle in ``tmp`` with another main param and no plan (the manifest's sha256
    updated): the planned graph while it is measured, the uniform one for `bench --qemu`."""
    d = tmp / "variant"
    shutil.rmtree(d, ignore_errors=True)
    shutil.copytree(b.path, d)
    m = b.manifest
    (d / m.param).write_text(param_text)
    new = dataclasses.replace(m, param_sha256=sha256_file(d / m.param), precision_plan=None)
    (d / "manifest.json").write_text(json.dumps(new.to_dict(), indent=2) + "\n")
    return d


def measure_plan(bundle: "str | Path | Bundle", env, *, cpu: str = DEFAULT_CPU,
                 progress: bool = True) -> tuple[PrecisionPlan | None, str]:
    """The plan for a bundle's main graph (or None) and the line that says why."""
    import sys

    b = open_bundle_dir(bundle)
    m = b.manifest
    if m.precision_plan is not None:
        raise PlanError(f"{b.path} already has a precision plan ({len(m.precision_plan.fp32_layers)} fp32 layers)")
    w = h = m.resize.target  # the bundle's square input
    say = (lambda s: print(s, file=sys.stderr, flush=True)) if progress else (lambda s: None)
    say(f"arm plan: per-layer instructions of {m.architecture} under qemu -cpu {cpu}, fp32 and fp16")
    fp32, fp16 = (layer_costs(b.path, env, p, cpu=cpu, width=w, height=h) for p in ("fp32", "fp16"))
    total = {"fp32": sum(r["insns"] for r in fp32), "fp16": sum(r["insns"] for r in fp16)}
    chosen = choose_layers(fp32, fp16)
    uniform = b.file(m.param, "param").read_text()
    with tempfile.TemporaryDirectory(prefix="litedet-plan-") as tmp:
        for _ in range(2):  # planned, counted; the islands that do not pay dropped, counted again
            if not chosen:
                return None, (f"no layer is cheaper in fp32 by more than {MIN_GAIN:,} instructions (fp32 "
                              f"{total['fp32']:,}, fp16 {total['fp16']:,}): uniform fp16 stays")
            say(f"arm plan: {len(chosen)} fp32 island(s), counting the planned graph")
            planned = layer_costs(variant(b, Path(tmp), island_param(uniform, chosen)), env, "fp16", cpu=cpu,
                                  width=w, height=h)
            keep = _keep_paying(planned, fp16, chosen)
            if keep == chosen:
                break
            chosen = keep
    insns = sum(r["insns"] for r in planned)
    if insns >= total["fp16"]:
        return None, f"the planned graph ({insns:,}) is not cheaper than uniform fp16 ({total['fp16']:,}): no plan"
    plan = PrecisionPlan(cpu=cpu, fp32_layers=chosen, insns_fp32=total["fp32"], insns_fp16=total["fp16"],
                         insns_planned=insns, uniform_param=UNIFORM_PARAM)
    return plan, (f"{len(chosen)} layer(s) in fp32: main-graph instructions fp32 {total['fp32']:,}, uniform fp16 "
                  f"{total['fp16']:,}, planned {insns:,} ({insns / total['fp16']:.2f}x fp16, "
                  f"{insns / total['fp32']:.2f}x fp32)")


def plan_bundle(bundle: "str | Path", out: "str | Path", *, force: bool = False, env=None, cpu: str = DEFAULT_CPU,
                progress: bool = True) -> tuple[Manifest, str]:
    """Measure the plan and write the planned bundle to ``out`` atomically (``out`` may be
    ``bundle`` itself with ``force``: the old one is replaced only when the new one loads)."""
    from litedet.convert.bundle import atomic_bundle_dir
    from litedet.convert.verify.arm.env import resolve_env

    env = resolve_env(env, None)
    b = open_bundle_dir(bundle)
    plan, why = measure_plan(b, env, cpu=cpu, progress=progress)
    if plan is None:
        raise PlanError(f"{b.path}: {why}")
    m = b.manifest
    uniform = b.file(m.param, "param").read_text()
    with atomic_bundle_dir(Path(out), force) as tmp:
        shutil.copytree(b.path, tmp, dirs_exist_ok=True)
        (tmp / UNIFORM_PARAM).write_text(uniform)
        (tmp / m.param).write_text(island_param(uniform, plan.fp32_layers))
        ref = {**m.reference, "uniform_param": UNIFORM_PARAM,
               "sha256": {**m.reference.get("sha256", {}), "uniform_param": sha256_file(tmp / UNIFORM_PARAM)}}
        new = dataclasses.replace(m, param_sha256=sha256_file(tmp / m.param), precision_plan=plan,
                                  reference=ref).validate()
        (tmp / "manifest.json").write_text(json.dumps(new.to_dict(), indent=2) + "\n")
    return new, why
