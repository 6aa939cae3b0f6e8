"""Model definitions: torchvision / upstream NanoDet names, sizes, checkpoint loading."""

from __future__ import annotations

import pytest
import torch

from litedet.models import CheckpointError, count_parameters, create_model, list_models, load_checkpoint
from litedet.models.shufflenetv2 import STAGE_OUT_CHANNELS, ShuffleNetV2

# torchvision's published parameter counts (weights meta "num_params")
TORCHVISION_PARAMS = {
    "shufflenet_v2_x0_5": 1_366_792,
    "shufflenet_v2_x1_0": 2_278_604,
    "shufflenet_v2_x1_5": 3_503_624,
    "shufflenet_v2_x2_0": 7_393_996,
}


@pytest.mark.parametrize("name,params", sorted(TORCHVISION_PARAMS.items()))
def test_shufflenet_v2_matches_torchvision_parameter_count(name, params):
    assert count_parameters(create_model(name)) == params


def test_shufflenet_v2_state_dict_uses_torchvision_names():
    sd = create_model("shufflenet_v2_x1_0").state_dict()
    expected = {
        "conv1.0.weight": (24, 3, 3, 3), "conv1.1.running_var": (24,),
        "stage2.0.branch1.0.weight": (24, 1, 3, 3), "stage2.0.branch1.2.weight": (58, 24, 1, 1),
        "stage2.0.branch2.0.weight": (58, 24, 1, 1), "stage2.1.branch2.3.weight": (58, 1, 3, 3),
        "stage3.7.branch2.5.weight": (116, 116, 1, 1), "stage4.3.branch2.6.num_batches_tracked": (),
        "conv5.0.weight": (1024, 464, 1, 1), "fc.weight": (1000, 1024), "fc.bias": (1000,),
    }
    for k, shape in expected.items():
        assert tuple(sd[k].shape) == shape, k
    # stride-1 units have an empty branch1, exactly like torchvision
    assert not any(k.startswith("stage2.1.branch1") for k in sd)
    assert sum(1 for k in sd if k.endswith("num_batches_tracked")) == 56


def test_shufflenet_features_are_strides_8_16_32():
    m = ShuffleNetV2([4, 8, 4], STAGE_OUT_CHANNELS["1.0x"], num_classes=0, with_last_conv=False).eval()
    with torch.no_grad():
        feats = m.forward_features(torch.zeros(1, 3, 320, 256))
    assert [tuple(f.shape[1:]) for f in feats] == [(116, 40, 32), (232, 20, 16), (464, 10, 8)]
    assert m.feature_channels == [116, 232, 464]


def test_shufflenet_rejects_bad_tables():
    with pytest.raises(ValueError, match="3 ints"):
        ShuffleNetV2([4, 8], STAGE_OUT_CHANNELS["1.0x"])
    with pytest.raises(ValueError, match="out_stages"):
        ShuffleNetV2([4, 8, 4], STAGE_OUT_CHANNELS["1.0x"], out_stages=(1, 2))


def test_nanodet_m_has_upstream_names_and_size():
    m = create_model("nanodet_m")
    sd = m.state_dict()
    for k in ("backbone.conv1.0.weight", "backbone.stage4.3.branch2.6.running_mean", "fpn.lateral_convs.2.conv.bias",
              "head.cls_convs.2.1.depthwise.weight", "head.cls_convs.0.0.dwnorm.running_var",
              "head.cls_convs.0.1.pwnorm.weight", "head.gfl_cls.0.weight", "head.gfl_reg.2.bias",
              "head.distribution_project.project"):
        assert k in sd, k
    assert not any(k.startswith("backbone.conv5") or k.startswith("backbone.fc") for k in sd)
    assert tuple(sd["head.gfl_cls.0.weight"].shape) == (80 + 32, 96, 1, 1)
    # NanoDet-m is published as 0.95M parameters
    assert 0.94e6 < count_parameters(m) < 0.97e6
    assert tuple(create_model("nanodet_m_1.5x").state_dict()["fpn.lateral_convs.0.conv.weight"].shape) == (128, 176, 1, 1)


def test_nanodet_deploy_outputs_are_sigmoid_scores_and_raw_distributions():
    m = create_model("nanodet_m").eval()
    with torch.no_grad():
        outs = m.forward_deploy(torch.randn(1, 3, 256, 320))
        cls_raw, dis_raw = m(torch.randn(1, 3, 256, 320))
    assert [tuple(o.shape) for o in outs] == [(1, 1280, 80), (1, 320, 80), (1, 80, 80),
                                                (1, 1280, 32), (1, 320, 32), (1, 80, 32)]
    assert all(0 <= float(o.min()) and float(o.max()) <= 1 for o in outs[:3])
    # row-major flattening: row index = y * W + x
    x = torch.randn(1, 3, 256, 320)
    with torch.no_grad():
        c, _ = m(x)
        o = m.forward_deploy(x)[0]
    torch.testing.assert_close(o[0, 3 * 40 + 7], torch.sigmoid(c[0][0, :, 3, 7]))
    assert m.deploy_output_names()[0] == "cls_pred_stride_8"


def test_unknown_architecture_lists_known_ones():
    with pytest.raises(KeyError) as e:
        create_model("nanodet_xl")
    assert "nanodet_m" in str(e.value) and "shufflenet_v2_x1_0" in str(e.value)
    assert "nanodet_m" in list_models()


# -- checkpoints ---------------------------------------------------------------

def _randomised(name="nanodet_m"):
    m = create_model(name)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_()
    return m


def test_lightning_ckpt_prefers_ema_weights(tmp_path):
    src, ema = _randomised(), _randomised()
    sd = {f"model.{k}": v for k, v in src.state_dict().items()}
    sd.update({f"avg_model.{k}": v for k, v in ema.state_dict().items()})
    path = tmp_path / "nanodet.ckpt"
    torch.save({"state_dict": sd, "epoch": 3}, path)
    m = create_model("nanodet_m")
    rep = load_checkpoint(m, path)
    assert rep.kind == "lightning" and rep.used_ema
    torch.testing.assert_close(m.state_dict()["head.gfl_cls.0.weight"], ema.state_dict()["head.gfl_cls.0.weight"])


def test_plain_pth_with_dataparallel_prefix_loads(tmp_path):
    src = _randomised()
    path = tmp_path / "w.pth"
    torch.save({f"module.{k}": v for k, v in src.state_dict().items() if "distribution_project" not in k}, path)
    m = create_model("nanodet_m")
    load_checkpoint(m, path)
    torch.testing.assert_close(m.state_dict()["backbone.conv1.0.weight"], src.state_dict()["backbone.conv1.0.weight"])


def test_checkpoint_errors_name_missing_unexpected_and_mismatched_keys(tmp_path):
    sd = create_model("nanodet_m").state_dict()
    sd.pop("head.gfl_cls.1.weight")
    sd["head.extra.weight"] = torch.zeros(1)
    sd["fpn.lateral_convs.0.conv.weight"] = torch.zeros(5, 5, 1, 1)
    path = tmp_path / "bad.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(create_model("nanodet_m"), path)
    msg = str(e.value)
    assert "head.gfl_cls.1.weight" in msg and "head.extra.weight" in msg
    assert "fpn.lateral_convs.0.conv.weight" in msg and "(5, 5, 1, 1)" in msg


def test_checkpoint_for_another_width_is_refused(tmp_path):
    path = tmp_path / "m15.pth"
    torch.save(create_model("nanodet_m_1.5x").state_dict(), path)
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_checkpoint(create_model("nanodet_m"), path)


def test_missing_and_corrupt_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(create_model("nanodet_m"), tmp_path / "nope.pth")
    bad = tmp_path / "corrupt.pth"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="is not a PyTorch checkpoint"):
        load_checkpoint(create_model("nanodet_m"), bad)
    import torch

    torch.save({"w": torch.ones(3)}, tmp_path / "ok.pth")
    (tmp_path / "truncated.pth").write_bytes((tmp_path / "ok.pth").read_bytes()[:200])
    with pytest.raises(CheckpointError, match="could not read checkpoint"):
        load_checkpoint(create_model("nanodet_m"), tmp_path / "truncated.pth")
    lonely = tmp_path / "model.param"
    lonely.write_text("7767517\n0 0\n")
    with pytest.raises(CheckpointError, match="model.bin"):
        load_checkpoint(create_model("nanodet_m"), lonely)
