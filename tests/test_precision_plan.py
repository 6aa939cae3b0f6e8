"""The ARM precision plan: per-layer guest instructions under qemu, fp32 islands where fp16 costs
more, measured again; ThunderNet-SNet49's 5x5 depthwise layers on channel counts off ncnn's fp16
grid are the case it exists for."""

from __future__ import annotations

import json

import numpy as np
import pytest

from litedet.benchmarks.arm.plan import PlanError, choose_layers, island_param

PARAM = """7767517
4 4
Input data 0 1 data 0=8 1=8 2=30
ConvolutionDepthWise dw 1 1 data a 0=30 1=5 4=2 5=1 6=750 7=30
Convolution pw 1 1 a b 0=16 1=1 5=1 6=480
ReLU relu 1 1 b out
"""


def test_an_island_is_a_dropout_cast_and_a_featmask():
    text = island_param(PARAM, ["dw"])
    lines = text.splitlines()
    assert lines[1] == "5 5"
    assert lines[3] == "Dropout dw_fp32in 1 1 data data_fp32in"
    assert lines[4].split()[:5] == ["ConvolutionDepthWise", "dw", "1", "1", "data_fp32in"]
    assert lines[4].endswith(" 31=3") and lines[5:] == PARAM.splitlines()[4:]
    two = island_param(PARAM.replace("4 4\n", "5 5\n") + "Concat cat 2 1 a out c\n", ["cat"]).splitlines()
    assert two[1] == "7 7" and two[-3:] == ["Dropout cat_fp32in 1 1 a a_fp32in", "Dropout cat_fp32in1 1 1 out out_fp32in1",
                                           "Concat cat 2 1 a_fp32in out_fp32in1 c 31=3"]
    with pytest.raises(PlanError, match="planned before"):
        island_param(text, ["dw"])
    with pytest.raises(PlanError, match="no layer 'nope'"):
        island_param(PARAM, ["nope"])


def test_an_island_changes_no_number_on_x86(tmp_path):
    import ncnn

    rng = np.random.default_rng(0)
    w = rng.standard_normal(750 + 30 + 480 + 16).astype(np.float32)
    (tmp_path / "m.bin").write_bytes(np.concatenate([[0], w[:750], w[750:780], [0], w[780:]]).astype(np.float32)
                                     .view(np.uint32).astype("<u4").tobytes())
    x = rng.standard_normal((30, 8, 8)).astype(np.float32)
    outs = []
    for name, text in (("a", PARAM), ("b", island_param(PARAM, ["dw"]))):
        (tmp_path / f"{name}.param").write_text(text)
        net = ncnn.Net()
        assert net.load_param(str(tmp_path / f"{name}.param")) == 0 and net.load_model(str(tmp_path / "m.bin")) == 0
        with net.create_extractor() as ex:
            ex.input("data", ncnn.Mat(x).clone())  # clone: the Dropout in front works in place
            outs.append(np.array(ex.extract("out")[1]).copy())
    assert outs[0].shape == (16, 8, 8) and np.array_equal(outs[0], outs[1])


def test_choose_layers_takes_the_ones_fp16_makes_dearer():
    fp32 = [{"name": "a", "insns": 1000}, {"name": "b", "insns": 600_000}, {"name": "c", "insns": 100}]
    fp16 = [{"name": "a", "insns": 900}, {"name": "b", "insns": 13_000_000}, {"name": "c", "insns": 10_000}]
    assert choose_layers(fp32, fp16) == ["b"]  # c's loss is below what an island's casts cost
    with pytest.raises(PlanError, match="different layers"):
        choose_layers(fp32, fp16[:2])


@pytest.mark.arm
def test_thundernet_plan_is_cheaper_than_fp16_and_fp32_and_keeps_arm_parity(arm_env, thundernet_bundle, photos,
                                                                             tmp_path):
    from litedet.benchmarks.arm.plan import plan_bundle
    from litedet.convert.verify.arm import arm_parity
    from litedet.runtime import open_bundle
    from litedet.runtime.manifest import load_manifest

    out = tmp_path / "planned"
    m, why = plan_bundle(thundernet_bundle, out, env=arm_env, progress=False)
    p = m.precision_plan
    assert p is not None and p.cpu == "cortex-a76" and "fp32" in why
    # SNet49's 5x5 depthwise branches on 30 channels and the RPN's on 245: off the fp16 grid
    dw = {la.split()[1] for la in (thundernet_bundle / m.param).read_text().splitlines()
          if la.startswith("ConvolutionDepthWise") and " 1=5 " in la and (" 0=30 " in la or " 0=245 " in la)}
    assert dw and dw <= set(p.fp32_layers)
    assert p.insns_planned < 0.6 * p.insns_fp16 and p.insns_planned < p.insns_fp32
    assert load_manifest(out).precision_plan == p
    assert json.loads((out / "manifest.json").read_text())["reference"]["uniform_param"] == p.uniform_param
    # x86 fp32: the islands are no-ops
    chw = np.load(thundernet_bundle / "reference" / "input.npy")
    a = open_bundle(thundernet_bundle, fp16=False).run_array(chw)
    b = open_bundle(out, fp16=False).run_array(chw)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    # ARM fp16 arithmetic with the islands: the same results as x86 fp32 (the garbage an uncast
    # featmask gives would fail here)
    rep = arm_parity(out, [("astronaut", photos["astronaut"])], env=arm_env, progress=False)
    assert rep.passed, rep.failures
