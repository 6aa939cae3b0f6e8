"""RefineDet (kind ssd_refine) and OneNet (kind topk): the models and their checkpoint names, the
pure maths against brute force (hypothesis: priors, the two-step decode, the top-k, the
minimum-cost matcher), the C++ core against the Python kinds, the bundles end to end (parity
torch / C++ / ARM, detect, eval, litedet_cpp, the device config) and bad input."""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import converted, need_ncnn_lib
from litedet.runtime.kinds.ssd_refine import center_size, decode_boxes, encode_boxes, prior_boxes
from litedet.runtime.kinds.topk import place_boxes, top_scores

LITEDET = [sys.executable, "-m", "litedet.cli"]


# -- priors and the two-step decode ------------------------------------------------------------
def upstream_priors(size: int, steps, min_sizes, ratios, clip: bool) -> np.ndarray:
    """RefineDet.PyTorch's PriorBox.forward for a square input, loop for loop."""
    mean = []
    for k, _ in enumerate(steps):
        f = size // steps[k]
        for i, j in itertools.product(range(f), repeat=2):
            f_k = size / steps[k]
            cx, cy = (j + 0.5) / f_k, (i + 0.5) / f_k
            s_k = min_sizes[k] / size
            mean += [cx, cy, s_k, s_k]
            for ar in ratios:
                mean += [cx, cy, s_k * math.sqrt(ar), s_k / math.sqrt(ar)]
                mean += [cx, cy, s_k / math.sqrt(ar), s_k * math.sqrt(ar)]
    out = np.array(mean, np.float32).reshape(-1, 4)
    return np.clip(out, 0, 1) if clip else out


@settings(max_examples=30, deadline=None)
@given(size=st.sampled_from([64, 128, 320, 512]), clip=st.booleans(),
       ratios=st.sampled_from([[2.0], [2.0, 3.0], []]), scale=st.sampled_from([0.5, 1.0, 1.7]))
def test_priors_are_upstreams(size, clip, ratios, scale):
    steps, mins = [8, 16, 32, 64], [32 * scale, 64 * scale, 128 * scale, 256 * scale]
    got = prior_boxes(size, size, steps, mins, ratios, clip)
    # sizes are read as float32 (as the device config holds them): upstream's own are exact
    want = upstream_priors(size, steps, [float(np.float32(m)) for m in mins], ratios, clip)
    assert got.dtype == np.float32 and np.array_equal(got, want)


def test_priors_of_refinedet320_and_a_non_square_input():
    p = prior_boxes(320, 320, [8, 16, 32, 64], [32, 64, 128, 256], [2.0], True)
    assert p.shape == ((40 * 40 + 20 * 20 + 10 * 10 + 5 * 5) * 3, 4) == (6375, 4)
    assert np.allclose(p[0], [0.5 / 40, 0.5 / 40, 0.1, 0.1]) and p[:, 2:].max() == 1.0  # 256 * sqrt(2) / 320 clipped
    q = prior_boxes(256, 128, [8, 16], [32, 64], [], False)
    assert q.shape == (32 * 16 + 16 * 8, 4)
    assert np.allclose(q[1], [1.5 / 32, 0.5 / 16, 32 / 256, 32 / 128])  # the second cell of the first row


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2 ** 16), n=st.integers(1, 50))
def test_decode_inverts_encode(seed, n):
    rng = np.random.default_rng(seed)
    priors = np.concatenate([rng.uniform(0.05, 0.95, (n, 2)), rng.uniform(0.05, 0.6, (n, 2))], 1).astype(np.float32)
    loc = rng.uniform(-2, 2, (n, 4)).astype(np.float32)
    boxes = decode_boxes(loc, priors, [0.1, 0.2])
    assert (boxes[:, 2:] > boxes[:, :2]).all()
    assert np.allclose(encode_boxes(boxes, priors, [0.1, 0.2]), loc, atol=2e-3)
    # the refinement step: the decoded corners back to centres are the box the ODM decodes on
    c = center_size(boxes)
    assert np.allclose(decode_boxes(np.zeros_like(loc), c, [0.1, 0.2]), boxes, atol=1e-6)


# -- top-k -------------------------------------------------------------------------------------
@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2 ** 16), c=st.integers(1, 5), hw=st.integers(1, 30), k=st.integers(1, 40),
       thr=st.sampled_from([0.0, 0.3, 0.7]), levels=st.sampled_from([4, 16, 1000]))
def test_top_scores_is_the_brute_force_top_k(seed, c, hw, k, thr, levels):
    s = (np.random.default_rng(seed).integers(0, levels, (c, hw)) / (levels - 1 or 1)).astype(np.float32)  # ties
    got = top_scores(s, k, thr)
    flat = s.reshape(-1)
    want = sorted((-float(flat[i]), i) for i in range(flat.size) if flat[i] > np.float32(thr))[:k]
    assert got.tolist() == [i for _, i in want]


def test_place_boxes_puts_locations_at_x4_plus_2():
    ltrb = np.zeros((4, 6), np.float32)
    ltrb[:, 4] = [1, 2, 3, 4]
    b = place_boxes(ltrb, np.array([0, 4]), feat_w=3, stride=4, center_offset=0.5)
    assert b.tolist() == [[2, 2, 2, 2], [6 - 1, 6 - 2, 6 + 3, 6 + 4]]  # cell 4 = (x 1, y 1): (6, 6)


# -- the minimum-cost matcher ------------------------------------------------------------------
def brute_cost(prob: float, box, gt, w: float, h: float) -> float:
    a, g = 0.25, 2.0
    neg = (1 - a) * prob ** g * -math.log(1 - prob + 1e-8)
    pos = a * (1 - prob) ** g * -math.log(prob + 1e-8)
    l1 = sum(abs(p / s - q / s) for p, q, s in zip(box, gt, (w, h, w, h)))
    ix = max(0.0, min(box[2], gt[2]) - max(box[0], gt[0]))
    iy = max(0.0, min(box[3], gt[3]) - max(box[1], gt[1]))
    inter = ix * iy
    union = (box[2] - box[0]) * (box[3] - box[1]) + (gt[2] - gt[0]) * (gt[3] - gt[1]) - inter
    enc = (max(box[2], gt[2]) - min(box[0], gt[0])) * (max(box[3], gt[3]) - min(box[1], gt[1]))
    giou = inter / union - (enc - union) / enc
    return 5 * l1 + 2 * (pos - neg) - 2 * giou


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2 ** 16), c=st.integers(1, 4), h=st.integers(1, 4), w=st.integers(1, 4), g=st.integers(0, 4))
def test_min_cost_match_is_the_brute_force_argmin(seed, c, h, w, g):
    import torch

    from litedet.models.onenet import min_cost_match

    rng = np.random.default_rng(seed)
    logits = torch.from_numpy(rng.normal(0, 2, (c, h, w))).double()
    xy = rng.uniform(0, 60, (2, h, w))
    boxes = torch.from_numpy(np.concatenate([xy, xy + rng.uniform(1, 40, (2, h, w))]))
    gxy = rng.uniform(0, 60, (g, 2))
    gt = torch.from_numpy(np.concatenate([gxy, gxy + rng.uniform(1, 40, (g, 2))], 1))
    labels = torch.from_numpy(rng.integers(0, c, g))
    src, tgt = min_cost_match(logits, boxes, labels, gt, 100.0, 80.0)
    assert tgt.tolist() == list(range(g)) and len(src) == g
    prob = 1 / (1 + np.exp(-logits.numpy().reshape(c, -1)))
    bx = boxes.numpy().reshape(4, -1).T
    for j in range(g):
        costs = [brute_cost(prob[labels[j], i], bx[i], gt[j].tolist(), 100.0, 80.0) for i in range(h * w)]
        assert costs[int(src[j])] <= min(costs) + 1e-9


# -- the models and their checkpoint names -----------------------------------------------------
@pytest.mark.parametrize("arch,keys", [
    ("refinedet_vgg16", ["vgg.0.weight", "vgg.33.weight", "conv4_3_L2Norm.weight", "conv5_3_L2Norm.weight",
                         "extras.1.weight", "arm_loc.3.weight", "arm_conf.0.bias", "odm_loc.2.weight",
                         "odm_conf.3.weight", "tcb0.9.weight", "tcb1.2.weight", "tcb2.10.weight"]),
    ("refinedet_resnest50", ["model.conv1.0.weight", "model.layer4.2.conv2.fc2.weight", "conv4_3_L2Norm.weight",
                             "tcb0.6.weight", "odm_conf.3.bias"]),
    ("onenet_resnet18", ["backbone.stem.conv1.weight", "backbone.stem.conv1.norm.running_var",
                         "backbone.res3.0.shortcut.norm.weight", "backbone.res5.1.conv2.weight",
                         "head.deconv.deconv1.conv.weight", "head.deconv.deconv3.up_sample.weight",
                         "head.deconv.deconv2.up_bn.running_mean", "head.deconv.lateral_conv3.weight",
                         "head.deconv.output_conv.bias", "head.feat1.weight", "head.cls_score.bias", "head.ltrb_pred.weight"]),
    ("onenet_resnet50", ["backbone.res2.0.shortcut.weight", "backbone.res4.5.conv3.norm.bias",
                         "head.deconv.deconv1.conv.weight"]),
])
def test_state_dict_names_are_upstreams(arch, keys):
    from litedet.models import create_model

    sd = create_model(arch).state_dict()
    assert set(keys) <= set(sd), sorted(set(keys) - set(sd))


def test_shapes_and_one_softmax_or_sigmoid():
    import torch

    from litedet.models import create_model

    rd = create_model("refinedet_vgg16", num_classes=3).eval()
    with torch.no_grad():
        train = rd(torch.zeros(1, 3, 128, 128))
        dep = rd.forward_deploy(torch.zeros(1, 3, 128, 128))
    n = (16 * 16 + 8 * 8 + 4 * 4 + 2 * 2) * 3
    assert [tuple(t.shape) for t in train] == [(1, n, 4), (1, n, 2), (1, n, 4), (1, n, 4)]
    assert torch.allclose(dep[3], torch.softmax(train[3], -1)) and torch.allclose(dep[3].sum(-1), torch.ones(1, n))
    assert rd.odm_conf[0].out_channels == 3 * 4  # background + 3 classes per anchor
    on = create_model("onenet_resnet18", num_classes=5).eval()
    with torch.no_grad():
        logits, boxes = on(torch.zeros(1, 3, 96, 64))
        scores, ltrb = on.forward_deploy(torch.zeros(1, 3, 96, 64))
    assert logits.shape == (1, 5, 24, 16) and boxes.shape == (1, 4, 24, 16)
    assert torch.allclose(scores, torch.sigmoid(logits)) and (ltrb >= 0).all()
    assert boxes[0, 0, 0, 1] == 6 - ltrb[0, 0, 0, 1] and boxes[0, 3, 2, 0] == 10 + ltrb[0, 3, 2, 0]  # x*4+2


def test_resnest_refinedet_checkpoint_loads_with_its_unused_backbone_copy(tmp_path):
    """pengyang1225's model keeps a second copy of the backbone (Resnet86.*, never run) beside the
    one it runs (model.*): it loads, the copy is counted as ignored, and "model." is not stripped."""
    import torch

    from litedet.models import create_model, load_checkpoint

    m = create_model("refinedet_resnest50")
    sd = m.state_dict()
    sd.update({"Resnet86.4.0.conv1.weight": torch.zeros(64, 64, 1, 1)})
    torch.save(sd, tmp_path / "rd.pth")
    fresh = create_model("refinedet_resnest50")
    rep = load_checkpoint(fresh, tmp_path / "rd.pth", arch="refinedet_resnest50")
    assert torch.equal(fresh.model.conv1[0].weight, m.model.conv1[0].weight)
    assert rep.details["ignored"] == {"Resnet86.*": 1}


# -- bundles -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rd_bundle(tmp_path_factory) -> Path:
    """RefineDet-VGG16 (seeded) at 128: four levels of 16, 8, 4 and 2 cells."""
    return converted(tmp_path_factory, "refinedet_vgg16", "rd", input_size=128)


@pytest.fixture(scope="module")
def rs_bundle(tmp_path_factory) -> Path:
    return converted(tmp_path_factory, "refinedet_resnest50", "rs", input_size=128)


@pytest.fixture(scope="module")
def on_bundle(tmp_path_factory) -> Path:
    """OneNet-R18 (seeded) at 128: a 32 x 32 map (or 32 x 24 on a landscape photo)."""
    return converted(tmp_path_factory, "onenet_resnet18", "on", input_size=128)


@pytest.fixture(scope="module")
def bundles(rd_bundle, rs_bundle, on_bundle) -> dict[str, Path]:
    return {"refinedet_vgg16": rd_bundle, "refinedet_resnest50": rs_bundle, "onenet_resnet18": on_bundle}


def test_manifests_carry_the_decoding(bundles):
    from litedet.runtime.manifest import load_manifest

    rd = load_manifest(bundles["refinedet_vgg16"])
    p = rd.postprocess
    assert (rd.postprocess.kind, p.steps, p.min_sizes, p.aspect_ratios, p.variances) == \
        ("ssd_refine", [8, 16, 32, 64], [32.0, 64.0, 128.0, 256.0], [2.0], [0.1, 0.2])
    assert (p.objectness_threshold, p.score_threshold, p.nms_threshold, p.pre_nms_top_k, p.max_detections) == \
        (0.01, 0.01, 0.45, 1000, 200)
    assert (rd.input.pixel_format, rd.input.mean, rd.resize.policy, rd.resize.pad_mode) == \
        ("bgr", [104.0, 117.0, 123.0], "stretch", "fixed")
    assert rd.class_names[:2] == ["aeroplane", "bicycle"] and len(rd.class_names) == 20
    assert load_manifest(bundles["refinedet_resnest50"]).class_names == ["class_0"]  # its configs: 1 class + background
    on = load_manifest(bundles["onenet_resnet18"])
    assert (on.postprocess.kind, on.postprocess.stride, on.postprocess.center_offset, on.postprocess.nms_threshold,
            on.postprocess.max_detections) == ("topk", 4, 0.5, 1.0, 100)
    assert (on.input.pixel_format, on.resize.policy, on.resize.pad_normalized) == ("rgb", "letterbox_top_left", True)
    assert on.outputs_with_role("scores")[0].activation == "sigmoid" and on.class_names[0] == "person"


@pytest.mark.parametrize("name", ["refinedet_vgg16", "refinedet_resnest50", "onenet_resnet18"])
def test_parity_torch_ncnn_and_the_cpp_core(bundles, photos, name, tmp_path):
    from litedet.convert.verify.torch_parity import run_parity

    imgs = [(n, photos[n]) for n in ("astronaut", "coffee", "motorcycle_left")]
    rep = run_parity(bundles[name], imgs, out_dir=tmp_path, progress=False, cpp=True)
    assert rep.passed, rep.failures
    dets = [ip.results["ncnn_fp16"].reference for ip in rep.images]
    assert sum(dets) > 0  # the seeded heads give detections: parity of results is not vacuous
    assert all(ip.cpp is not None and ip.cpp.identical for ip in rep.images)


def test_cpp_steps_equal_the_python_kinds(rd_bundle, on_bundle):
    from litedet.convert.verify.cpp_core import CppCore
    from litedet.runtime.manifest import load_manifest

    need = CppCore()
    rd = load_manifest(rd_bundle)
    sr = need.kind("ssd_refine")
    for w, h in ((128, 128), (320, 320), (512, 256)):
        p = prior_boxes(w, h, rd.postprocess.steps, rd.postprocess.min_sizes, rd.postprocess.aspect_ratios, True)
        assert np.array_equal(sr.prior_boxes(rd, w, h), p)
    rng = np.random.default_rng(0)
    loc = rng.uniform(-2, 2, (500, 4)).astype(np.float32)
    pri = np.concatenate([rng.uniform(0.1, 0.9, (500, 2)), rng.uniform(0.05, 0.5, (500, 2))], 1).astype(np.float32)
    assert np.allclose(sr.decode_boxes(loc, pri, [0.1, 0.2]), decode_boxes(loc, pri, [0.1, 0.2]), rtol=1e-6, atol=1e-7)
    tk = need.kind("topk")
    s = (rng.integers(0, 20, (7, 300)) / 19).astype(np.float32)  # many ties
    for k, thr in ((5, 0.5), (100, 0.0), (10_000, 0.9)):
        assert tk.top_scores(s, k, thr).tolist() == top_scores(s, k, thr).tolist()


def test_cpp_decodes_tied_topk_outputs_like_python(on_bundle):
    """Scores with many exact ties and optional NMS: the C++ detections are Python's, in order."""
    from litedet.convert.verify.cpp_core import CppCore
    from litedet.runtime.kinds.topk import topk_outputs
    from litedet.runtime.letterbox import letterbox_geometry
    from litedet.runtime.manifest import load_manifest

    m = load_manifest(on_bundle)
    lb = letterbox_geometry(200, 150, 128, 32, policy="letterbox_top_left")
    fh, fw = -(-lb.in_h // 4), -(-lb.in_w // 4)
    rng = np.random.default_rng(1)
    out = {m.outputs_with_role("scores")[0].blob: (rng.integers(0, 10, (80, fh, fw)) / 9).astype(np.float32),
           m.outputs_with_role("ltrb")[0].blob: rng.uniform(0, 30, (4, fh, fw)).astype(np.float32)}
    for nms_thr in (1.0, 0.5):
        mm = dataclasses.replace(m, postprocess=dataclasses.replace(m.postprocess, nms_threshold=nms_thr))
        py, cc = topk_outputs(mm, out, lb), CppCore().kind("topk").postprocess(mm, out, lb)
        assert len(py) == len(cc) and (nms_thr < 1 or len(py) == 100)
        assert [(d.label, d.score) for d in py] == [(d.label, d.score) for d in cc]
        assert max(abs(a.x1 - b.x1) + abs(a.y2 - b.y2) for a, b in zip(py, cc)) < 1e-4


def test_arm_parity_with_the_fp32_control(arm_env, on_bundle, photos, tmp_path):
    """OneNet on emulated ARM (fp16 arithmetic) against x86 fp32 and torch; the ARM fp32 control
    is the same program as x86 fp32: the same detections."""
    from litedet.convert.verify.arm import arm_parity

    rep = arm_parity(on_bundle, [("coffee", photos["coffee"])], tmp_path, env=arm_env, arm_fp32=True,
                     include_reference=False)
    ip = rep.images[0]
    control = ip.results["arm_fp32_vs_x86_fp32"]
    assert control.reference > 0 and control.missed == control.extra == 0 and control.max_score_diff < 1e-4
    fp16 = ip.results["arm_fp16_vs_x86_fp32"]
    # seeded weights under fp16 arithmetic (measured: cosine 0.9996, scores within 0.04): no box lost
    assert fp16.missed == fp16.extra == 0 and fp16.min_iou > 0.9 and fp16.max_score_diff < 0.1
    cos = min(t.cosine for t in ip.tensors["arm_fp16_vs_x86_fp32"])
    assert cos > 0.999


def test_detect_cli_and_a_detection_image(rd_bundle, on_bundle, photos, tmp_path):
    import json

    img = tmp_path / "coffee.png"
    cv2.imwrite(str(img), photos["coffee"])
    for b in (rd_bundle, on_bundle):
        r = subprocess.run(LITEDET + ["detect", str(b), str(img), "--json", "--out", str(tmp_path / "o.jpg")],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        dets = json.loads(r.stdout)
        assert isinstance(dets, (list, dict)) and (tmp_path / "o.jpg").is_file()


def test_eval_agreement(on_bundle, photos, tmp_path):
    from litedet.convert.verify.evaluate import evaluate

    (tmp_path / "img").mkdir()
    for n in ("coffee", "astronaut", "chelsea"):
        cv2.imwrite(str(tmp_path / "img" / f"{n}.png"), photos[n])
    r = evaluate(on_bundle, tmp_path / "img", backends=["torch", "ncnn-fp32", "ncnn-fp16"], progress=False)
    assert r.backends["ncnn-fp32"]["AP"] > 0.99 and r.backends["ncnn-fp16"]["AP"] > 0.9


def _cpp_dets(binary: Path, bundle: Path, pngs: list[Path], tmp: Path, qemu=None) -> list[dict]:
    from litedet.benchmarks.cpp import run_cpp
    from litedet.runtime.devconfig import export_device_assets

    export_device_assets(bundle, tmp / "assets", name="model")
    return run_cpp(binary, ["detect", str(tmp / "assets"), *map(str, pngs)], qemu=qemu)


def test_litedet_cpp_detects_like_python_on_x86_and_aarch64(arm_env, rd_bundle, on_bundle, photos, tmp_path):
    from litedet.benchmarks.cpp import build_litedet_cpp
    from litedet.convert.verify.compare import match_detections
    from litedet.runtime.results import Detection
    from litedet.runtime.runner import open_bundle

    need_ncnn_lib("x86_64")
    need_ncnn_lib("aarch64")
    pngs = []
    for n in ("coffee", "astronaut"):
        pngs.append(tmp_path / f"{n}.png")
        cv2.imwrite(str(pngs[-1]), photos[n])
    x86, arm = build_litedet_cpp("x86_64"), build_litedet_cpp("aarch64")
    for name, b in (("rd", rd_bundle), ("on", on_bundle)):
        runner = open_bundle(b)
        runs = [(_cpp_dets(x86, b, pngs, tmp_path / f"{name}x86"), 0.99, 0.01)]
        if name == "on":  # OneNet is cheap enough to emulate
            runs.append((_cpp_dets(arm, b, pngs, tmp_path / f"{name}arm", [str(arm_env.qemu), "-cpu", "cortex-a76"]),
                         0.9, 0.1))
        for out, min_iou, max_score in runs:
            found = 0
            for png, got in zip(pngs, out):
                want = runner.run(cv2.imread(str(png)))
                have = [Detection(*row[:5], int(row[5]), want[0].name if want else "") for row in got["detections"]]
                have = [dataclasses.replace(d, name=runner.manifest.class_names[d.label]) for d in have]
                mt = match_detections(want, have, 0.5, runner.manifest.postprocess.score_threshold, 0.02,
                                      runner.manifest.postprocess.max_detections)
                assert mt.missed == mt.extra == 0, (name, png.name, mt)
                assert mt.min_iou >= min_iou and mt.max_score_diff <= max_score, (name, png.name, mt)
                found += mt.reference
            assert found > 0, name  # not vacuous


def test_device_config_round_trips_through_the_cpp_parser(bundles):
    from litedet.convert.verify.cpp_core import CppCore
    from litedet.runtime.devconfig import device_config_text
    from litedet.runtime.manifest import load_manifest

    core = CppCore()
    for b in bundles.values():
        m = load_manifest(b)
        dumped = core.parse_config_text(device_config_text(m, "m.param", "m.bin"), m.postprocess.kind)
        assert dumped["kind"] == m.postprocess.kind and dumped["max_detections"] == m.postprocess.max_detections
        text = device_config_text(m, "m.param", "m.bin")
        one_more = re.sub(r"^num_classes=(\d+)$", lambda g: f"num_classes={int(g[1]) + 1}", text, flags=re.M)
        assert one_more != text
        with pytest.raises(ValueError, match="'class_names' has .* names but 'num_classes' is"):
            core.parse_config_text(one_more, m.postprocess.kind)


# -- bad input ---------------------------------------------------------------------------------
def test_a_refinedet_checkpoint_given_to_onenet_names_both(tmp_path):
    import torch

    from litedet.models import create_model

    torch.save(create_model("refinedet_vgg16").state_dict(), tmp_path / "rd.pth")
    r = subprocess.run(LITEDET + ["convert", "onenet_resnet18", "--checkpoint", str(tmp_path / "rd.pth"), "--out",
                                  str(tmp_path / "b")], capture_output=True, text=True, timeout=600)
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "onenet_resnet18" in r.stderr and "refinedet_vgg16" in r.stderr
    assert not (tmp_path / "b").exists()


def test_checkpoint_class_count_and_disagreeing_names(tmp_path):
    import torch

    from litedet.convert.pipeline import convert_model
    from litedet.models import create_model
    from litedet.runtime.manifest import load_manifest

    torch.save(create_model("refinedet_vgg16", num_classes=2).state_dict(), tmp_path / "rd2.pth")
    with pytest.raises(ValueError, match=r"class counts disagree: the checkpoint's odm_conf.0.weight .* has 2, "
                                         r"--class-names has 3"):
        convert_model("refinedet_vgg16", tmp_path / "x", checkpoint=tmp_path / "rd2.pth", input_size=64,
                      class_names=["a", "b", "c"], progress=False)
    convert_model("refinedet_vgg16", tmp_path / "b", checkpoint=tmp_path / "rd2.pth", input_size=64,
                  class_names=["cat", "dog"], progress=False)
    m = load_manifest(tmp_path / "b")
    assert m.class_names == ["cat", "dog"] and m.outputs_with_role("odm_conf")[0].channels == 3


def test_a_prior_count_that_does_not_match_the_graph_names_both(rd_bundle, photos):
    from litedet.runtime.kinds import BundleError
    from litedet.runtime.runner import open_bundle

    r = open_bundle(rd_bundle)
    mat, g = r.preprocess(photos["coffee"])
    out = r.run_mat(mat)
    m = r.manifest
    wrong = dataclasses.replace(m, postprocess=dataclasses.replace(m.postprocess, steps=[8, 16, 32], min_sizes=[32, 64, 128]))
    with pytest.raises(BundleError, match=r"has shape \(1020, 4\); the priors of this input are 1008"):
        r.kind.decode(wrong, out, g)
    from litedet.convert.verify.cpp_core import CppCoreError, CppCore

    with pytest.raises(CppCoreError, match="the outputs have 1020 rows; the priors of a 128x128 input are 1008"):
        CppCore().kind("ssd_refine").postprocess(wrong, out, g)


def test_raw_logits_are_refused(on_bundle, photos):
    from litedet.runtime.kinds import BundleError
    from litedet.runtime.runner import open_bundle

    r = open_bundle(on_bundle)
    mat, g = r.preprocess(photos["coffee"])
    out = r.run_mat(mat)
    blob = r.manifest.outputs_with_role("scores")[0].blob
    out[blob] = out[blob] * 4 - 2
    with pytest.raises(BundleError, match="sigmoid"):
        r.kind.decode(r.manifest, out, g)


def test_quantize_refuses_transposed_convolutions_in_one_line(on_bundle, tmp_path):
    (tmp_path / "cal").mkdir()
    r = subprocess.run(LITEDET + ["quantize", str(on_bundle), "--calib", str(tmp_path / "cal"), "--out",
                                  str(tmp_path / "q")], capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1 and "Deconvolution" in r.stderr, r.stderr
    assert not (tmp_path / "q").exists()


def test_android_push_writes_both_kinds_assets(rd_bundle, on_bundle, tmp_path):
    from litedet.cli import main

    demo = tmp_path / "android_demo"
    (demo / "app" / "src" / "main").mkdir(parents=True)
    for name, b in (("refinedet", rd_bundle), ("onenet", on_bundle)):
        assert main(["android", "push", str(b), "--demo", str(demo), "--name", name]) == 0
    assets = demo / "app" / "src" / "main" / "assets"
    assert sorted(p.name for p in assets.iterdir()) == ["onenet.bin", "onenet.cfg", "onenet.param", "refinedet.bin",
                                                        "refinedet.cfg", "refinedet.param"]
    rd, on = (assets / "refinedet.cfg").read_text(), (assets / "onenet.cfg").read_text()
    assert "kind=ssd_refine" in rd and "steps=8,16,32,64" in rd and "variances=0.1,0.2" in rd
    assert "kind=topk" in on and "stride=4" in on and "nms_threshold=1" in on
