"""x86 <-> ARM: bundles run by the aarch64 ncnn build under qemu-aarch64, with real fp16 arithmetic.

Needs the environment that ``scripts/setup_arm.sh`` writes ($LITEDET_ARM_CACHE,
else ~/.cache/litedet/arm): without it these tests skip, and FAIL when CI is
set. qemu is slow (an emulated fp16 NanoDet-m inference takes 10-20 s on the
dev VM), so each test starts one aarch64 child for all its inputs.

Measured on the dev VM (qemu 7.2, ncnn 1.0.20261020, -cpu max), ARM fp16
(storage + arithmetic) against x86 fp32, worst output per image:
- official NanoDet-m weights: cosine 0.9968-0.9996, max rel 0.07-0.16 on the
  four photos; detections identical (IoU >= 0.994, score diff <= 0.0025);
- seeded random weights, 160x192 crop of the reference card: cosine 0.944,
  max rel 0.42 (untrained weights give fp16 accumulation a far wider range);
- ARM fp32 against x86 fp32: max rel <= 1e-5; x86 "fp16" (storage only, no
  fp16 arithmetic on x86): max rel 1.6e-4 (official), 1.7e-2 (seeded crop).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from litedet.convert.verify.arm import ArmEnv, ArmEnvError, arm_parity, format_arm_report, run_bundle_arm
from litedet.convert.verify.compare import tensor_stats
from litedet.runtime.detector import Detector

pytestmark = pytest.mark.arm

PHOTOS = ("astronaut", "chelsea", "coffee", "motorcycle_left")


def _reference_input(bundle) -> np.ndarray:
    x = np.load(bundle / "reference" / "input.npy")
    return x[0] if x.ndim == 4 else x


def _worst(ref: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> tuple[float, float]:
    """(worst cosine, worst max rel) over the outputs."""
    stats = [tensor_stats(ref[k], got[k].reshape(ref[k].shape)) for k in ref]
    return min(s[2] for s in stats), max(s[1] for s in stats)


def test_missing_environment_names_the_setup_script(tmp_path):
    with pytest.raises(ArmEnvError, match="setup_arm.sh"):
        ArmEnv.from_cache(tmp_path / "no-such-cache")


def test_arm_module_imports_without_torch():
    code = ("import sys; sys.modules['torch'] = None; import litedet.convert.verify.arm as a; "
            "assert a.run_bundle_arm and a.arm_parity; print('ok')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_ncnn_under_qemu_reports_fp16_arithmetic(arm_env):
    feats = arm_env.cpu_features()
    assert feats["machine"] == "aarch64"
    assert feats["asimdhp"], f"ncnn under qemu-aarch64 -cpu {arm_env.cpu} has no asimdhp: {feats}"


def test_fp16_arithmetic_on_arm_is_close_to_x86_fp32_and_differs_from_arm_fp32(arm_env, seeded_bundle):
    # a 160x192 crop of the reference input: 3x faster under qemu than the full card, same story
    x = np.ascontiguousarray(_reference_input(seeded_bundle)[:, 48:208, 64:256])
    fp32_bin = seeded_bundle / "reference" / "model.fp32.ncnn.bin"
    x86_32 = Detector.from_bundle(seeded_bundle, threads=1, fp16=False, bin_override=fp32_bin).run_array(x)
    x86_16 = Detector.from_bundle(seeded_bundle, threads=1, fp16=True).run_array(x)
    arm16 = run_bundle_arm(seeded_bundle, {"card": x}, fp16=True, env=arm_env)["card"]
    arm32 = run_bundle_arm(seeded_bundle, {"card": x}, fp16=False, bin_override=fp32_bin, env=arm_env)["card"]

    # the aarch64 build computing in fp32 is the same network as x86 (measured: max rel 9e-6)
    cos32, rel32 = _worst(x86_32, arm32)
    assert cos32 >= 0.99999 and rel32 <= 1e-4, (cos32, rel32)
    # fp16 arithmetic stays close even on untrained weights (measured: cosine 0.944, max rel 0.42)
    cos16, rel16 = _worst(x86_32, arm16)
    assert cos16 >= 0.9 and rel16 <= 0.75, (cos16, rel16)
    # ... and really ran: far further from fp32 than fp16 *storage* alone (x86 "fp16": max rel 1.7e-2)
    _, rel_storage = _worst(x86_32, x86_16)
    assert rel16 > 5 * rel_storage, (rel16, rel_storage)
    assert all(not np.array_equal(arm16[k], arm32[k]) for k in arm16)


def test_official_weights_same_detections_on_arm_fp16(arm_env, reexported_bundle, photos):
    report = arm_parity(reexported_bundle, images=[(n, photos[n]) for n in PHOTOS], env=arm_env,
                        include_reference=False)
    text = format_arm_report(report)
    print(text)
    assert report.environment["asimdhp"]
    assert report.environment["variants"]["arm_fp16"]["opt"]["use_fp16_arithmetic"]
    assert [ip.image for ip in report.images] == list(PHOTOS)
    for ip in report.images:
        assert ip.reference_results, f"{ip.image}: no detection to compare"
        for key in ("arm_fp16_vs_x86_fp32", "arm_fp16_vs_torch"):
            dm = ip.results[key]
            assert (dm.missed, dm.extra, dm.label_flips, dm.borderline) == (0, 0, 0, 0), (ip.image, key, dm)
            assert dm.matched == dm.reference == dm.test, (ip.image, key, dm)
            assert dm.min_iou >= 0.9 and dm.max_score_diff <= 0.02, (ip.image, key, dm)
            worst_cos = min(s.cosine for s in ip.tensors[key])
            worst_rel = max(s.max_rel for s in ip.tensors[key])
            # measured: cosine >= 0.9968, max rel <= 0.16 (the ArmParityThresholds defaults: 0.99 / 0.35)
            assert worst_cos >= 0.99 and worst_rel <= 0.35, (ip.image, key, worst_cos, worst_rel)
    assert report.passed, text


def test_official_ncnn_model_same_detections_on_arm_fp16(arm_env, official_bundle, photos):
    """The upstream ncnn model itself (wrapped, fp32 bin, no torch side) on one photo."""
    report = arm_parity(official_bundle, images=[("coffee", photos["coffee"])], env=arm_env)
    assert [ip.image for ip in report.images] == ["coffee"]
    dm = report.images[0].results["arm_fp16_vs_x86_fp32"]
    assert dm.reference >= 1 and dm.matched == dm.reference == dm.test, dm
    assert dm.min_iou >= 0.9 and dm.max_score_diff <= 0.02, dm
    assert report.passed, format_arm_report(report)


def test_icount_plugin_counts_repeat_exactly(arm_env):
    from litedet.benchmarks.arm.icount import count_insns, python_argv, python_env

    loop = str(arm_env.fp16_loop)
    n1, _, out = count_insns(arm_env, [loop, "1000"])
    n2, _, _ = count_insns(arm_env, [loop, "1000"])
    n3, _, _ = count_insns(arm_env, [loop, "2000"])
    assert "n=1000" in out
    assert n1 == n2 > 0
    # 1000 more loop iterations: a whole number of instructions per iteration (4 with gcc 12 -O2)
    assert n3 > n1 and (n3 - n1) % 1000 == 0, (n1, n3)
    p1, _, _ = count_insns(arm_env, python_argv(arm_env, "-c", "pass"), extra_env=python_env(arm_env))
    p2, _, _ = count_insns(arm_env, python_argv(arm_env, "-c", "pass"), extra_env=python_env(arm_env))
    assert p1 == p2 > 1_000_000
