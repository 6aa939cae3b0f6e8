"""ThunderNet and Light-Head R-CNN end to end: models, checkpoints, the two-graph bundle,
detect / parity / android push through the CLI, the device config, and bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from litedet.models import create_model, list_models, model_info
from litedet.runtime.manifest import load_manifest
from litedet.runtime.runner import open_bundle

from test_hostile import edited_bundle, litedet, refused, snapshot, stale

ARCHS = ["thundernet_snet49", "thundernet_snet146", "thundernet_snet535",
         "lighthead_rcnn_resnet18", "lighthead_rcnn_resnet50", "lighthead_rcnn_snet146"]


@pytest.fixture(scope="module")
def image(tmp_path_factory, photos) -> Path:
    p = tmp_path_factory.mktemp("img") / "astronaut.png"
    cv2.imwrite(str(p), photos["astronaut"])
    return p


# -- models ----------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ARCHS)
def test_models_follow_the_papers(arch):
    info = model_info(arch)
    assert info.family == "two_stage" and info.task == "detection" and arch in list_models()
    m = create_model(arch).eval()
    s = m.spec
    thunder = arch.startswith("thundernet")
    assert (s.num_anchors, s.psroi_channels) == ((25, 245) if thunder else (15, 490))
    assert (s.rpn_pre_nms_top_n, s.rpn_post_nms_top_n) == ((2000, 200) if thunder else (6000, 1000))
    size = info.input_size
    with torch.no_grad():
        obj, deltas, feat = m(torch.zeros(1, 3, size, size))
        scores, boxes = m.head(torch.zeros(1, 3, s.psroi_channels))
    f = size // 16
    assert obj.shape == (1, s.num_anchors, f, f) and deltas.shape == (1, 4 * s.num_anchors, f, f)
    assert feat.shape == (1, s.psroi_channels, f, f)
    assert scores.shape == (1, 3, 81) and boxes.shape == (1, 3, 4 if thunder else 324)  # class-agnostic boxes
    torch.testing.assert_close(scores.sum(-1), torch.ones(1, 3))  # softmax in the graph
    # the deployed head (1x1 convs over [1, F, N, 1]) is the same matrix product as the Linear head
    x = torch.randn(1, 5, s.psroi_channels)
    with torch.no_grad():
        a, b = m.head(x)
        c, d = m.rcnn.forward_columns(x.permute(0, 2, 1)[..., None])
    torch.testing.assert_close(c[0, :, :, 0].T, a[0], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(d[0, :, :, 0].T, b[0], rtol=1e-4, atol=1e-5)
    assert m.rcnn.fc.out_features == (1024 if thunder else 2048)
    if thunder:  # CEM 1x1 convs on C4, C5, global C5; SAM on the RPN feature; 5x5 depthwise RPN
        assert set(m.cem) == {"c4", "c5", "glb"} and m.rpn.dw[0].kernel_size == (5, 5)
        assert m.rpn.dw[0].groups == 245 and m.sam[0].out_channels == 245
    else:  # large separable conv k = 15 to 10 x 7 x 7
        assert m.lsc.col_max.kernel_size == (15, 1) and m.lsc.row_max.kernel_size == (1, 15)
        assert m.lsc.col_max.out_channels == (256 if arch.endswith("resnet50") else 64)


def test_dilated_stage_keeps_the_backbone_state_dict():
    """Light-Head's stride-16 C5 changes strides and dilations, never parameter names or shapes."""
    from litedet.models.resnet import resnet18

    plain = {k: v.shape for k, v in resnet18().state_dict().items() if not k.startswith("fc.")}
    lh = {k[len("backbone."):]: v.shape for k, v in create_model("lighthead_rcnn_resnet18").state_dict().items()
          if k.startswith("backbone.")}
    assert lh == plain


def test_checkpoint_class_count_and_errors(tmp_path):
    """A user's checkpoint with 3 classes converts without editing anything; a wrong file says why."""
    from litedet.convert.bundle import ConvertError
    from litedet.convert.pipeline import convert_model

    m = create_model("thundernet_snet49", num_classes=3)
    ckpt = tmp_path / "mine.pth"
    torch.save({"state_dict": m.state_dict(), "epoch": 12}, ckpt)
    r = convert_model("thundernet_snet49", tmp_path / "b", checkpoint=ckpt, progress=False,
                      class_names=["cat", "dog", "bird"])
    mf = load_manifest(tmp_path / "b")
    assert mf.class_names == ["cat", "dog", "bird"] and mf.provenance["source_sha256"]
    assert mf.postprocess.head.in_features == 245 and r.verify
    with pytest.raises(ConvertError, match="class counts disagree"):
        convert_model("thundernet_snet49", tmp_path / "c", checkpoint=ckpt, progress=False, class_names=["a", "b"])
    bad = tmp_path / "nanodet.pth"
    torch.save(create_model("nanodet_m").state_dict(), bad)
    with pytest.raises(Exception, match="nanodet"):  # "looks like nanodet_m", from the key check
        convert_model("thundernet_snet49", tmp_path / "d", checkpoint=bad, progress=False)
    assert not (tmp_path / "c").exists() and not (tmp_path / "d").exists()


# -- the bundle ------------------------------------------------------------------------------

def test_bundle_holds_two_verified_graphs(thundernet_bundle):
    m = load_manifest(thundernet_bundle)
    p = m.postprocess
    assert m.postprocess.kind == "rpn_psroi" and m.task == "detection"
    assert [o.role for o in m.outputs] == ["rpn_objectness", "rpn_deltas", "psroi_features"]
    for f in (m.param, m.bin, p.head.param, p.head.bin, p.head.fp32_bin):
        assert (thundernet_bundle / f).is_file(), f
    assert set(m.reference["verify_fp32"]) >= {"rcnn_scores", "rcnn_deltas"}  # the head verified on real RoIs
    assert min(v["cosine"] for v in m.reference["verify_fp32"].values()) > 0.9999
    head_param = (thundernet_bundle / p.head.param).read_text()
    # the head takes any number of RoIs in one extract
    from litedet.runtime.kinds.rpn_psroi import head_input

    r = open_bundle(thundernet_bundle)
    assert "Convolution" in head_param and "Gemm" not in head_param  # the fcs as 1x1 convolutions
    for n in (1, 7, 300):
        out = r.run_graph("head", head_input(np.random.default_rng(n).normal(size=(n, 245)).astype(np.float32)))
        assert out[p.head.scores_blob].reshape(81, n).sum(0) == pytest.approx(np.ones(n), abs=1e-3)
        assert out[p.head.deltas_blob].size == 4 * n  # ThunderNet: class-agnostic boxes


def test_detect_cli_json_and_image(thundernet_bundle, image, tmp_path):
    r = litedet("detect", thundernet_bundle, image, "--json", "--out", tmp_path / "vis.jpg")
    assert r.returncode == 0, r.stderr
    dets = json.loads(r.stdout)
    assert 5 < len(dets) <= 100 and {"x1", "y1", "x2", "y2", "score", "label", "name"} <= set(dets[0])
    assert all(d["score"] > 0.05 for d in dets)
    assert all(0 <= d["x1"] <= d["x2"] <= 512 and 0 <= d["y1"] <= d["y2"] <= 512 for d in dets)
    assert cv2.imread(str(tmp_path / "vis.jpg")).shape == (512, 512, 3)


def test_parity_cli_with_cpp(thundernet_bundle, tmp_path):
    """torch vs ncnn per stage and end to end, and the C++ glue vs Python: litedet parity --cpp."""
    r = litedet("parity", thundernet_bundle, "--cpp", "--out", tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    rep = json.loads((tmp_path / "parity.json").read_text())
    assert rep["passed"] and rep["kind"] == "rpn_psroi"
    for ip in rep["images"]:
        roles = {s["blob"]: s["role"] for s in ip["tensors"]["ncnn_fp16"]}
        assert {"pooled", "rcnn_scores", "rcnn_deltas"} <= set(roles)  # the head on torch's own RoIs
        fp32 = ip["results"]["ncnn_fp32"]
        assert fp32["proposals_matched"] == fp32["proposals_reference"] == 200
        assert fp32["same_rois"]["missed"] == fp32["same_rois"]["extra"] == 0
        assert ip["cpp"]["identical"] and ip["cpp"]["details"]["pooled_max_abs"] == 0.0
    assert "same RoIs" in (tmp_path / "parity.txt").read_text()
    assert (tmp_path / "parity_astronaut.jpg").is_file() and (tmp_path / "parity_errors.png").is_file()


def test_parity_catches_a_wrong_anchor_convention(thundernet_bundle, tmp_path):
    """Anchors centred half a cell off (Detectron's convention on torchvision-trained weights)
    must fail parity, not pass it: the check is real."""
    bad = edited_bundle(thundernet_bundle, tmp_path / "b", lambda d: d["postprocess"].update(anchor_offset=0.5))
    from litedet.convert.verify.torch_parity import run_parity

    rep = run_parity(bad, progress=False)
    assert rep.passed  # torch and ncnn decode with the same (wrong) manifest: they agree ...
    # ... but the detections move: the manifest is what the C++ core and the phone read
    good, moved = open_bundle(thundernet_bundle), open_bundle(bad, verify=False)
    img = cv2.imread(str(thundernet_bundle / "reference" / "image.png"))
    a, b = good.run(img), moved.run(img)
    assert [(d.x1, d.y1) for d in a[:5]] != [(d.x1, d.y1) for d in b[:5]]


def test_empty_proposal_set_gives_no_detections(thundernet_bundle, tmp_path, image):
    """Nothing above the RPN's score threshold: an empty list from Python, C++ and the CLI."""
    from litedet.convert.verify.cpp_core import CppCore

    b = edited_bundle(thundernet_bundle, tmp_path / "b", lambda d: d["postprocess"].update(rpn_score_threshold=1.0))
    r = open_bundle(b)
    img = cv2.imread(str(image))
    mat, g = r.preprocess(img)
    out = r.run_mat(mat)
    assert len(out["proposals"]) == 0 and out["rcnn_scores"].shape == (0, 81) and out["rcnn_deltas"].shape == (0, 4)
    assert r.postprocess(out, g) == []
    core = CppCore()
    boxes, _ = core.kind("rpn_psroi").proposals(r.manifest, out, g.in_w, g.in_h)
    assert len(boxes) == 0 and core.kind("rpn_psroi").rcnn_detections(r.manifest, out, g) == []
    res = litedet("detect", b, image, "--json")
    assert res.returncode == 0 and json.loads(res.stdout) == []


def test_light_head_converts_and_passes_parity(tmp_path):
    from litedet.convert.pipeline import convert_model
    from litedet.convert.verify.torch_parity import run_parity

    convert_model("lighthead_rcnn_resnet18", tmp_path / "lh", progress=False)
    m = load_manifest(tmp_path / "lh")
    assert m.postprocess.psroi_groups == 10 and m.postprocess.head.in_features == 490
    assert m.postprocess.rpn_pre_nms_top_n == 6000 and m.postprocess.rpn_post_nms_top_n == 1000
    rep = run_parity(tmp_path / "lh", images=[], progress=False, cpp=True)
    assert rep.passed, rep.failures
    assert rep.images[0].cpp.identical


# -- the device --------------------------------------------------------------------------------

def test_android_push_writes_both_graphs_and_a_config_cpp_reads(thundernet_bundle, tmp_path):
    from litedet.convert.verify.cpp_core import CppCore
    from litedet.runtime.devconfig import config_keys

    demo = tmp_path / "demo"
    (demo / "app" / "src" / "main").mkdir(parents=True)
    r = litedet("android", "push", thundernet_bundle, "--demo", demo, "--name", "thunder")
    assert r.returncode == 0, r.stderr
    assets = demo / "app" / "src" / "main" / "assets"
    assert sorted(p.name for p in assets.iterdir()) == ["thunder.bin", "thunder.cfg", "thunder.head.bin",
                                                        "thunder.head.param", "thunder.param"]
    m = load_manifest(thundernet_bundle)
    assert (assets / "thunder.head.bin").read_bytes() == (thundernet_bundle / m.postprocess.head.bin).read_bytes()
    text = (assets / "thunder.cfg").read_text()
    parsed = CppCore().parse_config_text(text, "rpn_psroi")
    assert list(parsed) == [k for k, _ in config_keys("rpn_psroi")]
    p = m.postprocess
    assert parsed["kind"] == "rpn_psroi" and parsed["head_param"] == "thunder.head.param"
    assert parsed["anchor_ratios"] == pytest.approx(p.anchor_ratios) and parsed["rpn_pre_nms_top_n"] == 2000
    assert parsed["class_names"] == m.class_names and parsed["box_clip"] == pytest.approx(p.box_clip)
    # the NanoDet reader refuses it by its kind, naming the key
    with pytest.raises(ValueError, match="kind"):
        CppCore().parse_config_text(text, "gfl")
    n = len(m.class_names)
    with pytest.raises(ValueError, match=f"'class_names' has {n} names but 'num_classes' is {n + 1}"):
        CppCore().parse_config_text(text.replace(f"num_classes={n}\n", f"num_classes={n + 1}\n"), "rpn_psroi")


def test_cpp_config_reader_names_a_bad_key(thundernet_bundle):
    from litedet.convert.verify.cpp_core import CppConfigError, CppCore
    from litedet.runtime.devconfig import device_config_text

    text = device_config_text(load_manifest(thundernet_bundle), "a.param", "a.bin")
    core = CppCore()
    for old, new, key in (("rpn_box_weights=1.0,1.0,1.0,1.0", "rpn_box_weights=1.0,1.0", "rpn_box_weights"),
                          ("pooled_size=7", "pooled_size=0", "pooled_size"),
                          ("head_bin=m.head.bin\n", "", "head_bin")):
        assert old in text, old
        with pytest.raises(CppConfigError, match=key):
            core.parse_config_text(text.replace(old, new), "rpn_psroi")


# -- bad input ---------------------------------------------------------------------------------

@pytest.mark.parametrize("edit,needle", [
    (lambda d: d["postprocess"]["head"].update(in_features=250), "in_features"),
    (lambda d: d["postprocess"].update(psroi_groups=4), "psroi_groups"),
    (lambda d: d["postprocess"]["head"].update(scores_blob="out7"), "out7"),
    (lambda d: d["postprocess"]["head"].update(bin_sha256="0" * 64), "modified"),
    (lambda d: d["postprocess"]["head"].update(param="../model.ncnn.param"), "inside the bundle"),
    (lambda d: d["postprocess"]["head"].pop("deltas_blob"), "postprocess.head.deltas_blob"),
    (lambda d: d["postprocess"].update(anchor_ratios=[0.5, 1.0]), "anchor_ratios need 10"),
])
def test_graphs_that_disagree_with_the_manifest_are_refused(thundernet_bundle, tmp_path, image, edit, needle):
    b = edited_bundle(thundernet_bundle, tmp_path / "b", edit)
    before = snapshot(b)
    refused(litedet("detect", b, image), needle)
    assert snapshot(b) == before


def test_missing_head_graph_is_refused(thundernet_bundle, tmp_path, image):
    b = tmp_path / "b"
    shutil.copytree(thundernet_bundle, b)
    (b / "head.ncnn.bin").unlink()
    refused(litedet("detect", b, image), "head.ncnn.bin")


def test_outputs_of_another_input_size_are_refused(thundernet_bundle):
    from litedet.runtime.kinds.rpn_psroi import proposals_of

    r = open_bundle(thundernet_bundle)
    out = r.run_stage1_array(np.zeros((3, 256, 320), np.float32))
    with pytest.raises(ValueError, match="320x320 input at stride 16 needs"):
        proposals_of(r.manifest, out, 320, 320)


def test_head_scores_that_are_not_probabilities_are_refused(thundernet_bundle):
    """A head exported without its softmax (or with it twice removed) is caught, not squashed."""
    from litedet.runtime.kinds.rpn_psroi import complete_outputs

    r = open_bundle(thundernet_bundle)
    out = r.run_stage1_array(np.zeros((3, 320, 320), np.float32))
    m = r.manifest

    def logits_head(name, x):  # a head graph without its softmax
        got = r.run_graph(name, x)
        return {**got, m.postprocess.head.scores_blob: np.log(got[m.postprocess.head.scores_blob]) * 3}

    with pytest.raises(ValueError, match="softmax"):
        complete_outputs(m, out, 320, 320, logits_head)


def test_convert_refuses_a_bad_size_and_leaves_nothing(tmp_path):
    r = litedet("convert", "thundernet_snet49", "--out", tmp_path / "b", "--input-size", "300")
    refused(r, "multiple of 32")
    assert not (tmp_path / "b").exists() and not stale(tmp_path)
