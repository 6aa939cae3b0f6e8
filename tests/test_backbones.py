"""The backbone zoo: published sizes, upstream names, uniform features, and
every network converted to an fp16 bundle that passes parity and classifies."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from litedet.convert.pipeline import convert_model
from litedet.convert.verify.torch_parity import run_parity
from litedet.models import create_model, list_models, model_info
from litedet.models.profile import profile
from litedet.runtime.classifier import Classifier
from litedet.runtime.kinds.softmax_topk import softmax, top_k
from litedet.runtime.letterbox import center_crop_geometry

BACKBONES = [n for n in list_models() if model_info(n).task == "classification"]

# (params, MMACs at 224) as published: torchvision's weight metadata for torchvision
# models (exact params), the papers' tables for the rest (MACs within tolerance)
PUBLISHED = {
    "shufflenet_v2_x1_0": (2_278_604, 146), "shufflenet_v2_x0_5": (1_366_792, 41),
    "shufflenet_v2_x1_5": (3_503_624, 299), "shufflenet_v2_x2_0": (7_393_996, 591),
    "mobilenet_v2": (3_504_872, 300), "mobilenet_v3_large": (5_483_032, 219), "mobilenet_v3_small": (2_542_856, 56),
    "squeezenet1_0": (1_248_424, 819), "squeezenet1_1": (1_235_496, 349),
    "resnet18": (11_689_512, 1814), "resnet50": (25_557_032, 4089),
    "mobilenet_v1": (4_200_000, 569), "mobilenet_v1_0.75": (2_600_000, 325), "mobilenet_v1_0.5": (1_300_000, 149),
    "shufflenet_v1_g3_x1_0": (1_900_000, 140), "shufflenet_v1_g8_x1_0": (2_400_000, 140),
    "resnest50": (27_500_000, 5390), "snet49": (None, 49), "snet535": (None, 535),
}
EXACT_PARAMS = {"shufflenet_v2_x1_0", "shufflenet_v2_x0_5", "shufflenet_v2_x1_5", "shufflenet_v2_x2_0", "mobilenet_v2",
                "mobilenet_v3_large", "mobilenet_v3_small", "squeezenet1_0", "squeezenet1_1", "resnet18", "resnet50"}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_size_matches_published_figures(name):
    params, mmacs = PUBLISHED[name]
    p = profile(create_model(name), 224)
    if params is not None:
        if name in EXACT_PARAMS:
            assert p.params == params
        else:  # papers round to 0.1M
            assert abs(p.params - params) <= 0.06e6, p.params
    assert abs(p.macs / 1e6 - mmacs) / mmacs < 0.05, p.macs / 1e6


def test_snet146_flops_follow_its_own_table():
    # ThunderNet names SNet146 for 146 MFLOPs, but its published table (24/132/264/528,
    # no conv5, 5x5 depthwise) gives 161M counted exactly as SNet49 -> 51M and SNet535 -> 535M
    assert 155 < profile(create_model("snet146"), 224).macs / 1e6 < 165


# keys and shapes as in torchvision / upstream ResNeSt / Megvii ShuffleNet-Series
UPSTREAM_KEYS = {
    "mobilenet_v2": {"features.0.0.weight": (32, 3, 3, 3), "features.1.conv.0.0.weight": (32, 1, 3, 3),
                     "features.1.conv.1.weight": (16, 32, 1, 1), "features.2.conv.0.1.running_mean": (96,),
                     "features.18.0.weight": (1280, 320, 1, 1), "classifier.1.weight": (1000, 1280)},
    "mobilenet_v3_large": {"features.4.block.2.fc1.weight": (24, 72, 1, 1), "features.4.block.2.fc2.bias": (72,),
                           "features.16.0.weight": (960, 160, 1, 1), "classifier.0.weight": (1280, 960),
                           "classifier.3.weight": (1000, 1280)},
    "mobilenet_v3_small": {"features.1.block.1.fc1.weight": (8, 16, 1, 1), "features.12.0.weight": (576, 96, 1, 1),
                           "classifier.0.weight": (1024, 576)},
    "squeezenet1_1": {"features.3.squeeze.weight": (16, 64, 1, 1), "features.12.expand3x3.weight": (256, 64, 3, 3),
                      "classifier.1.weight": (1000, 512, 1, 1)},
    "squeezenet1_0": {"features.0.weight": (96, 3, 7, 7), "features.12.expand1x1.bias": (256,)},
    "resnet50": {"conv1.weight": (64, 3, 7, 7), "layer1.0.downsample.0.weight": (256, 64, 1, 1),
                 "layer4.2.bn3.running_var": (2048,), "fc.weight": (1000, 2048)},
    "resnet18": {"layer2.0.downsample.1.weight": (128,), "layer4.1.conv2.weight": (512, 512, 3, 3)},
    "resnest50": {"conv1.0.weight": (32, 3, 3, 3), "conv1.6.weight": (64, 32, 3, 3), "bn1.weight": (64,),
                  "layer1.0.conv2.conv.weight": (128, 32, 3, 3), "layer1.0.conv2.bn0.weight": (128,),
                  "layer1.0.conv2.fc1.weight": (32, 64, 1, 1), "layer2.0.conv2.fc1.weight": (64, 128, 1, 1),
                  "layer2.0.conv2.fc2.weight": (256, 64, 1, 1), "layer2.0.downsample.1.weight": (512, 256, 1, 1),
                  "layer1.0.downsample.1.weight": (256, 64, 1, 1), "fc.weight": (1000, 2048)},
    "shufflenet_v1_g3_x1_0": {"first_conv.0.weight": (24, 3, 3, 3), "features.0.branch_main_1.0.weight": (60, 24, 1, 1),
                              "features.1.branch_main_1.0.weight": (60, 80, 1, 1),
                              "features.0.branch_main_2.0.weight": (216, 20, 1, 1), "classifier.0.weight": (1000, 960)},
    "snet49": {"conv1.0.weight": (24, 3, 3, 3), "stage2.0.branch1.0.weight": (24, 1, 5, 5), "conv5.0.weight": (512, 240, 1, 1)},
    "snet535": {"conv1.0.weight": (48, 3, 3, 3), "stage4.3.branch2.3.weight": (496, 1, 5, 5), "fc.weight": (1000, 992)},
}


@pytest.mark.parametrize("name", sorted(UPSTREAM_KEYS))
def test_state_dict_names_follow_upstream(name):
    sd = create_model(name).state_dict()
    for k, shape in UPSTREAM_KEYS[name].items():
        assert k in sd, k
        assert tuple(sd[k].shape) == shape, k


@pytest.mark.parametrize("name", ["shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5",
                                  "shufflenet_v2_x2_0", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small",
                                  "squeezenet1_0", "squeezenet1_1", "resnet18", "resnet50"])
def test_torchvision_state_dict_loads_unchanged(oracle, name):
    """torchvision's own model (in the oracle venv: it does not import beside torch 2.13.0): its
    state dict loads into ours strictly, and both give the same logits."""
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    sd, want = oracle.call("tv_classifier", name=name, x=x.numpy())
    ours = create_model(name).eval()
    ours.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), torch.from_numpy(want), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", BACKBONES)
def test_features_are_strides_8_16_32(name):
    m = create_model(name).eval()
    with torch.no_grad():
        feats = m.forward_features(torch.zeros(1, 3, 320, 256))
    assert [f.shape[1] for f in feats] == m.feature_channels
    sizes = [tuple(f.shape[2:]) for f in feats]
    if name.startswith("squeezenet"):  # no padding in its stem: floor/ceil sizes, still halving
        assert sizes[0][0] in (39, 40) and sizes[1][0] in (19, 20) and sizes[2][0] in (9, 10)
    else:
        assert sizes == [(40, 32), (20, 16), (10, 8)]


def test_center_crop_geometry_is_the_imagenet_recipe():
    g = center_crop_geometry(640, 480, 224)
    assert (g.roi_size, g.roi_x, g.roi_y) == (420, 110, 30)  # 480 * 0.875, centred
    g = center_crop_geometry(3, 1000, 224)
    assert g.roi_size == 2 and g.roi_x == 0
    with pytest.raises(ValueError):
        center_crop_geometry(0, 5, 224)
    p = softmax(np.array([1.0, 3.0, 3.0, -1.0]))
    assert abs(p.sum() - 1) < 1e-6 and list(top_k(p, 3)) == [1, 2, 0]


# -- every network: convert, parity, classify ------------------------------------

@pytest.fixture(scope="module")
def two_photos(photos):
    return [(k, photos[k]) for k in ("chelsea", "motorcycle_left")]


@pytest.mark.slow
@pytest.mark.parametrize("name", BACKBONES)
def test_every_backbone_converts_passes_parity_and_classifies(name, tmp_path, two_photos):
    r = convert_model(name, tmp_path / name, progress=False)
    m = r.manifest
    assert m.task == "classification" and m.weight_storage == "fp16" and m.input.pixel_format == "rgb"
    assert m.resize.policy == "center_crop" and m.outputs[0].channels == 1000
    rep = run_parity(r.bundle, images=two_photos, progress=False)
    assert rep.passed, rep.failures
    fp32 = [ip.tensors["ncnn_fp32"][0] for ip in rep.images]
    assert min(s.cosine for s in fp32) > 0.99999
    assert all(ip.results["ncnn_fp16"].top1_agrees or ip.results["ncnn_fp16"].explained for ip in rep.images)
    clf = Classifier.from_bundle(r.bundle)
    res = clf.classify(two_photos[0][1], top=5)
    assert len(res) == 5 and res[0].prob >= res[-1].prob and sum(c.prob for c in res) <= 1.0 + 1e-6
    assert res[0].name == f"class_{res[0].label}"
    text = (r.bundle / "model.ncnn.param").read_text()
    assert "Reduction" not in text  # global pooling became ncnn's global Pooling
    if name.startswith(("shufflenet", "snet")):
        assert text.count("ShuffleChannel") >= 15  # channel shuffle fused, never reshape/permute


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "shufflenet_v1_g3_x0_5", "squeezenet1_1", "resnet18"])
def test_onnx_route_works_for_each_family(name, tmp_path, two_photos):
    r = convert_model(name, tmp_path / name, route="onnx", progress=False)
    assert run_parity(r.bundle, images=two_photos[:1], progress=False).passed


def test_one_bundle_serves_other_input_sizes(tmp_path):
    """Global pooling does not depend on the traced size, so logits at 160x192 match torch."""
    r = convert_model("mobilenet_v3_small", tmp_path / "b", fp32=True, progress=False)
    clf = Classifier.from_bundle(r.bundle, fp16=False)
    x = np.random.RandomState(0).randn(3, 160, 192).astype(np.float32)
    ts = torch.jit.load(str(r.bundle / "reference/model.torchscript.pt"))
    with torch.no_grad():
        ref = ts(torch.from_numpy(x)[None])[0][0].numpy()
    np.testing.assert_allclose(clf.run_array(x)[clf.output.blob], ref, atol=1e-3)


def test_class_names_file_and_cli_classify(tmp_path, photos, capsys):
    import cv2

    from litedet.cli import main

    names = tmp_path / "names.txt"
    names.write_text("\n".join(f"thing {i}" for i in range(1000)))
    assert main(["convert", "squeezenet1_1", "--out", str(tmp_path / "b"), "--class-names", str(names), "--quiet"]) == 0
    img = tmp_path / "cat.png"
    cv2.imwrite(str(img), photos["chelsea"])
    capsys.readouterr()
    assert main(["classify", str(tmp_path / "b"), str(img), "--top", "3", "--json"]) == 0
    import json

    out = json.loads(capsys.readouterr().out)
    assert len(out) == 3 and out[0]["name"].startswith("thing ")
    names.write_text("a\nb\n")
    assert main(["convert", "squeezenet1_1", "--out", str(tmp_path / "c"), "--class-names", str(names)]) == 2
