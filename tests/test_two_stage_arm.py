"""Two-stage bundles on aarch64 under qemu: the whole pipeline (both graphs + the glue) with
fp16 arithmetic, and the C++ glue built for aarch64 against the one built for x86-64."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest


pytestmark = pytest.mark.arm

ROOT = Path(__file__).resolve().parents[1]
GLUE = ROOT / "benchmarks" / "arm" / "two_stage_glue.cpp"


def test_arm_parity_of_both_graphs_and_the_glue(arm_env, thundernet_bundle, photos, tmp_path):
    """ARM fp16 vs x86 fp32 and torch end to end, the ARM head on x86's RoIs, and the ARM fp32
    control, which must be the same program as x86 fp32 (identical detections)."""
    from litedet.convert.verify.arm import arm_parity

    rep = arm_parity(thundernet_bundle, [("astronaut", photos["astronaut"])], tmp_path, env=arm_env, arm_fp32=True,
                     include_reference=False)
    assert rep.passed, rep.failures
    ip = rep.images[0]
    fp16 = ip.results["arm_fp16_vs_x86_fp32"]
    assert fp16.same_rois is not None and fp16.same_rois.matched > 0.8 * fp16.same_rois.reference
    roles = {s.blob for s in ip.tensors["arm_fp16_vs_x86_fp32"]}
    assert {"pooled", "rcnn_scores", "rcnn_deltas"} <= roles  # the ARM head on x86's RoIs, tensor by tensor
    control = ip.results["arm_fp32_vs_x86_fp32"]
    assert control.proposal_recall == 1.0 and control.end_to_end.matched == control.end_to_end.reference
    assert control.same_rois.missed == control.same_rois.extra == 0 and control.same_rois.max_score_diff < 1e-4
    assert rep.environment["asimdhp"] and (tmp_path / "arm_parity.txt").is_file()


def test_cpp_glue_built_for_aarch64_equals_the_x86_build(arm_env, thundernet_bundle, photos, tmp_path):
    """Proposals and PSRoIAlign of the C++ core, compiled for aarch64 (the phone's flags) and run
    under qemu, print exactly what the x86-64 build prints (hexadecimal floats)."""
    from litedet.convert.verify.cpp_core import CPP_DIR, core_sources
    from litedet.runtime.devconfig import device_config_text
    from litedet.runtime.runner import open_bundle

    cxx = shutil.which("aarch64-linux-gnu-g++")
    assert cxx, "aarch64-linux-gnu-g++ is missing (scripts/setup_arm.sh installs it)"
    sources = [str(GLUE), *(str(CPP_DIR / s) for s in core_sources())]
    builds = {"x86": ["g++", "-O2"], "arm": [cxx, "-O2", "-static", "-march=armv8.2-a+fp16"]}
    for name, cmd in builds.items():
        subprocess.run([*cmd, "-std=c++17", "-ffp-contract=off", f"-I{CPP_DIR}", "-o", str(tmp_path / name), *sources],
                       check=True, timeout=600)
    r = open_bundle(thundernet_bundle, fp16=False)
    mat, _ = r.preprocess(photos["coffee"])
    out = r.run_stage1(mat)
    files = []
    for role in ("rpn_objectness", "rpn_deltas", "psroi_features"):
        f = tmp_path / f"{role}.bin"
        np.ascontiguousarray(out[r.manifest.outputs_with_role(role)[0].blob], np.float32).tofile(f)
        files.append(str(f))
    cfg = tmp_path / "m.cfg"
    cfg.write_text(device_config_text(r.manifest, "m.param", "m.bin"))
    args = [str(cfg), *files, str(mat.w), str(mat.h), "print"]
    x86 = subprocess.run([str(tmp_path / "x86"), *args], capture_output=True, text=True, timeout=120, check=True)
    arm = subprocess.run([str(arm_env.qemu), "-cpu", "cortex-a76", str(tmp_path / "arm"), *args], capture_output=True,
                         text=True, timeout=600, check=True)
    lines = x86.stdout.splitlines()
    assert lines[0].startswith("proposals 200 ") and len(lines) == 201
    assert arm.stdout == x86.stdout


def test_bench_counts_the_apps_cpp_glue_under_qemu(arm_env, thundernet_bundle):
    """`litedet bench --qemu` counts the kind's C++ glue (the static aarch64 two_stage_glue on the
    core), a fraction of the numpy glue the Python runtime pays, and the count repeats exactly."""
    from litedet.benchmarks.arm.cpp_glue import count_cpp_glue, glue_program
    from litedet.benchmarks.arm.icount import DEFAULT_CPU
    from litedet.runtime.bundle import Bundle

    assert glue_program("gfl") is None and glue_program("rpn_psroi").roles[0] == "rpn_objectness"
    x = np.random.default_rng(0).standard_normal((3, 320, 320)).astype(np.float32)
    res = count_cpp_glue(Bundle.open(thundernet_bundle), arm_env, x, repeats=2, cpu=DEFAULT_CPU)
    # measured 2026-12-01 on a photo: 14.0 M for 200 proposals x 245 channels of PSRoIAlign
    assert res["repeatable"] and 1e6 < res["glue_insns"] < 6e7, res
