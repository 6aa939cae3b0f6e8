"""NanoDet as its users have it: their own class count, NanoDet's own config file,
NanoDet-Plus, upstream's decoding and preprocessing. The checkpoints here are
written by hand in upstream's layout (Lightning ``.ckpt``: ``state_dict`` with
``model.`` and EMA ``avg_model.`` keys; NanoDet-Plus with its auxiliary head)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from litedet.convert.bundle import ConvertError
from litedet.convert.pipeline import convert_model
from litedet.models import CheckpointError, create_model, load_checkpoint
from litedet.models.profile import profile
from litedet.runtime.manifest import load_manifest

COCO_YML = """
model:
  arch:
    name: {arch_name}
    backbone: {{name: ShuffleNetV2, model_size: 1.0x, out_stages: [2, 3, 4], activation: LeakyReLU}}
    fpn: {{name: {fpn}, in_channels: [116, 232, 464], out_channels: 96}}
    head: {{name: {head}, num_classes: {n}, input_channel: 96, feat_channels: 96, stacked_convs: 2,
           strides: {strides}, reg_max: 7, norm_cfg: {{type: BN}}}}
data:
  val:
    input_size: [{size}, {size}]
    keep_ratio: {keep}
    pipeline:
      normalize: [[103.53, 116.28, 123.675], [57.375, 57.12, 58.395]]
class_names: {names}
"""


def write_yml(path: Path, *, plus=False, n=3, size=416, keep=True, names=("cat", "dog", "bird")) -> Path:
    path.write_text(COCO_YML.format(arch_name="NanoDetPlus" if plus else "OneStageDetector",
                                    fpn="GhostPAN" if plus else "PAN", head="NanoDetPlusHead" if plus else "NanoDetHead",
                                    n=n, strides="[8, 16, 32, 64]" if plus else "[8, 16, 32]", size=size,
                                    keep=str(keep), names=list(names)))
    return path


def lightning_ckpt(path: Path, model: nn.Module, extra: dict | None = None) -> Path:
    """Upstream's Lightning layout: model.* and the EMA copy avg_model.*, plus training extras."""
    sd = {f"model.{k}": v for k, v in model.state_dict().items()}
    sd.update({f"avg_model.{k}": v for k, v in model.state_dict().items()})
    sd.update(extra or {})
    torch.save({"state_dict": sd, "epoch": 7, "global_step": 123, "pytorch-lightning_version": "1.9.0"}, path)
    return path


def seeded(arch: str, **kw) -> nn.Module:
    from litedet.convert.families import adapter_for
    from litedet.models import model_info

    m = create_model(arch, **kw)
    adapter_for("nanodet").seed(m, model_info(arch), 0, 320)
    return m


# -- NanoDet-Plus ------------------------------------------------------------------------------

@pytest.mark.parametrize("arch,params,gflops", [("nanodet_plus_m", 1.17e6, 0.9), ("nanodet_plus_m_1.5x", 2.44e6, 1.75)])
def test_nanodet_plus_matches_upstreams_published_size(arch, params, gflops):
    """Upstream's README: NanoDet-Plus-m 320 1.17M params / 0.9 GFLOPs, -1.5x 2.44M / 1.75G.
    Its parameter counts are of the deploy graph (BatchNorm folded into the convs)."""
    m = create_model(arch)
    bn = sum(p.numel() for mod in m.modules() if isinstance(mod, nn.BatchNorm2d) for p in mod.parameters())
    folded = sum(p.numel() for p in m.parameters()) - bn
    assert round(folded / 1e6, 2) == round(params / 1e6, 2), folded
    macs = profile(m, 320, forward=m.forward_deploy).macs
    assert abs(2 * macs / 1e9 - gflops) < 0.02, 2 * macs / 1e9


def test_nanodet_plus_uses_upstreams_module_names():
    keys = set(create_model("nanodet_plus_m").state_dict())
    for k in ("fpn.reduce_layers.0.conv.weight", "fpn.reduce_layers.0.bn.running_var",
              "fpn.top_down_blocks.0.blocks.0.ghost1.primary_conv.0.weight",
              "fpn.top_down_blocks.1.blocks.0.ghost2.cheap_operation.1.weight",
              "fpn.bottom_up_blocks.1.blocks.0.shortcut.2.weight", "fpn.downsamples.1.depthwise.weight",
              "fpn.extra_lvl_in_conv.0.pwnorm.bias", "fpn.extra_lvl_out_conv.0.pointwise.weight",
              "head.cls_convs.3.1.dwnorm.weight", "head.gfl_cls.3.bias", "head.distribution_project.project", "backbone.stage4.3.branch2.6.running_mean"):
        assert k in keys, k
    out = create_model("nanodet_plus_m").forward_deploy(torch.zeros(1, 3, 416, 416))
    assert [o.shape[1] for o in out[:4]] == [52 * 52, 26 * 26, 13 * 13, 7 * 7]  # stride 64: ceil(416 / 64) = 7


@pytest.fixture(scope="module")
def plus_ckpt(tmp_path_factory) -> Path:
    """A NanoDet-Plus training checkpoint: EMA weights and the auxiliary head's tensors."""
    m = seeded("nanodet_plus_m")
    aux = {"model.aux_fpn.reduce_layers.0.conv.weight": torch.zeros(96, 116, 1, 1),
           "model.aux_head.cls_convs.0.conv.weight": torch.zeros(192, 192, 3, 3),
           "avg_model.aux_fpn.reduce_layers.0.conv.weight": torch.zeros(96, 116, 1, 1),
           "avg_model.aux_head.cls_convs.0.conv.weight": torch.zeros(192, 192, 3, 3)}
    return lightning_ckpt(tmp_path_factory.mktemp("plus") / "model_best.ckpt", m, aux)


def test_the_auxiliary_head_is_ignored_and_reported(plus_ckpt):
    rep = load_checkpoint(create_model("nanodet_plus_m"), plus_ckpt, arch="nanodet_plus_m")
    assert rep.kind == "lightning" and rep.used_ema
    assert rep.details["ignored"] == {"aux_fpn.*": 1, "aux_head.*": 1}


def test_a_plus_checkpoint_given_to_nanodet_m_says_what_it_looks_like(plus_ckpt):
    with pytest.raises(CheckpointError, match="it looks like nanodet_plus_m \\(its keys and shapes fit"):
        load_checkpoint(create_model("nanodet_m"), plus_ckpt, arch="nanodet_m")


@pytest.fixture(scope="module")
def plus_bundle(plus_ckpt, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("plusb") / "bundle"
    convert_model("nanodet_plus_m", out, checkpoint=plus_ckpt, progress=False)
    return out


def test_nanodet_plus_bundle_decodes_as_upstream(plus_bundle):
    m = load_manifest(plus_bundle)
    p = m.postprocess
    assert p.strides == [8, 16, 32, 64] and p.center_offset == 0.0 and p.clamp_to_input
    assert m.resize.pad_multiple == 32 and len(m.outputs) == 8
    assert m.provenance["load_details"]["ignored"] == {"aux_fpn.*": 1, "aux_head.*": 1}


def test_nanodet_plus_parity(plus_bundle, photos):
    from litedet.convert.verify.torch_parity import format_report, run_parity

    rep = run_parity(plus_bundle, images=[(k, photos[k]) for k in ("astronaut", "coffee")], progress=False, cpp=True)
    text = format_report(rep)
    for ip in rep.images:
        dm = ip.results["ncnn_fp32"]
        assert (dm.missed, dm.extra) == (0, 0) and dm.min_iou >= 0.99, text
        assert all(s.cosine >= 0.99999 for s in ip.tensors["ncnn_fp32"]), text
        assert all(s.cosine >= 0.999 for s in ip.tensors["ncnn_fp16"]), text
        assert ip.cpp.identical and ip.cpp.max_box_diff <= 1e-4, text
    assert not [f for f in rep.failures if "ncnn_fp32" in f or "C++" in f], text


# -- the user's own classes ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def three_class_ckpt(tmp_path_factory) -> Path:
    return lightning_ckpt(tmp_path_factory.mktemp("c3") / "model_best.ckpt",
                          seeded("nanodet_m", num_classes=3, class_names=("a", "b", "c")))


def test_the_class_count_is_read_from_the_checkpoint(three_class_ckpt, tmp_path):
    r = convert_model("nanodet_m", tmp_path / "b", checkpoint=three_class_ckpt, input_size=416, progress=False)
    m = r.manifest
    assert m.class_names == ["class_0", "class_1", "class_2"] and m.resize.target == 416
    assert all(o.channels == 3 for o in m.outputs if o.role == "cls_scores")
    assert "3 classes inferred" in m.provenance["inferred"][0]


def test_class_names_that_disagree_with_the_checkpoint_name_both(three_class_ckpt, tmp_path):
    with pytest.raises(ConvertError, match="the checkpoint's head \\(model_best.ckpt\\) has 3, --class-names has 5"):
        convert_model("nanodet_m", tmp_path / "b", checkpoint=three_class_ckpt, class_names=list("abcde"),
                      progress=False)


def test_the_config_sets_architecture_classes_size_and_preprocessing(three_class_ckpt, tmp_path):
    cfg = write_yml(tmp_path / "nanodet-m-3cls.yml")
    r = convert_model(None, tmp_path / "b", checkpoint=three_class_ckpt, config=cfg, progress=False)
    m = r.manifest
    assert (m.architecture, m.resize.target, m.class_names) == ("nanodet_m", 416, ["cat", "dog", "bird"])
    assert (m.resize.policy, m.resize.pad_normalized, m.resize.pad_value) == ("letterbox_top_left", True, 0.0)
    assert m.provenance["config"]["sha256"] and m.provenance["deploy_options"]["preprocess"] == "upstream_keep_ratio"


def test_a_plus_config_without_keep_ratio_stretches(plus_ckpt, tmp_path):
    cfg = write_yml(tmp_path / "plus.yml", plus=True, n=80, size=320, keep=False,
                    names=create_model("nanodet_plus_m").spec.class_names)
    r = convert_model(None, tmp_path / "b", checkpoint=plus_ckpt, config=cfg, options={"decode": "upstream"},
                      progress=False)
    m = r.manifest
    assert m.architecture == "nanodet_plus_m" and (m.resize.policy, m.resize.pad_mode) == ("stretch", "fixed")
    p = m.postprocess
    assert (p.multi_label, p.score_threshold, p.nms_threshold, p.max_detections) == (True, 0.05, 0.6, 100)


@pytest.mark.parametrize("edit,match", [
    (lambda s: s.replace("name: ShuffleNetV2", "name: MobileNetV2"), "backbone.name is 'MobileNetV2'"),
    (lambda s: s.replace("out_channels: 96", "out_channels: 64"), "fpn.out_channels is 64; nanodet_m has 96"),
    (lambda s: s.replace("[416, 416]", "[416, 320]"), "litedet converts square inputs"),
])
def test_config_errors_name_the_field(tmp_path, edit, match):
    from litedet.models.nanodet_config import ConfigError, read_nanodet_config

    cfg = write_yml(tmp_path / "c.yml")
    cfg.write_text(edit(cfg.read_text()))
    with pytest.raises(ConfigError, match=match):
        read_nanodet_config(cfg)


def test_a_config_and_an_architecture_that_disagree(tmp_path):
    with pytest.raises(ConvertError, match="describes nanodet_m, but nanodet_plus_m was asked for"):
        convert_model("nanodet_plus_m", tmp_path / "b", config=write_yml(tmp_path / "c.yml"), progress=False)


def test_litedet_run_with_a_users_config_and_checkpoint(three_class_ckpt, tmp_path):
    cfg = write_yml(tmp_path / "nanodet-m-3cls.yml")
    r = subprocess.run([sys.executable, "-m", "litedet.cli", "run", "--config", str(cfg), "--checkpoint",
                        str(three_class_ckpt), "--out", str(tmp_path / "out"), "--quiet"],
                       capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert "Traceback" not in r.stderr, r.stderr
    m = json.loads((tmp_path / "out" / "bundle" / "manifest.json").read_text())
    assert m["class_names"] == ["cat", "dog", "bird"] and m["resize"]["target"] == 416
    assert (tmp_path / "out" / "android_assets").is_dir() and "parity" in r.stdout


# -- models users already exported ----------------------------------------------------------------

class UpstreamOnnxLayout(nn.Module):
    """upstream NanoDet's export layout (its head's _forward_onnx): per level
    cat(sigmoid(cls), dist) flattened, levels concatenated: [1, N, classes + 32]."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        cls, dis = self.model(x)
        return torch.cat([torch.cat([c.sigmoid(), d], 1).flatten(2) for c, d in zip(cls, dis)], 2).permute(0, 2, 1)


def export_upstream_onnx(model, path: Path, size: int = 320) -> Path:
    import warnings

    import onnx
    import onnxsim

    from litedet.convert.export import _channel_shuffle_symbolic

    # our ShuffleNetV2 uses nn.ChannelShuffle; upstream's writes the same reshape/transpose by hand
    torch.onnx.register_custom_op_symbolic("aten::channel_shuffle", _channel_shuffle_symbolic, 9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(UpstreamOnnxLayout(model.eval()), torch.randn(1, 3, size, size), str(path), dynamo=False,
                          opset_version=11, input_names=["data"], output_names=["output"])
    simplified, ok = onnxsim.simplify(onnx.load(str(path)))
    assert ok
    onnx.save(simplified, str(path))
    return path


@pytest.fixture(scope="module")
def plus_onnx(tmp_path_factory) -> Path:
    return export_upstream_onnx(seeded("nanodet_plus_m"), tmp_path_factory.mktemp("onnx") / "nanodet-plus-m.onnx")


def test_wrap_an_upstream_onnx_export(plus_onnx, tmp_path, photos):
    from litedet.cli import main
    from litedet.convert.verify.torch_parity import format_report, run_parity

    assert main(["wrap", str(plus_onnx), "--out", str(tmp_path / "b"), "--quiet"]) == 0
    m = load_manifest(tmp_path / "b")
    assert m.architecture == "nanodet_plus_m" and m.resize.target == 320  # found from the graph
    d = m.provenance["load_details"]
    assert m.provenance["weights"] == "onnx" and d["convolutions"] == 110 and d["onnx_max_rel"] < 1e-4
    rep = run_parity(tmp_path / "b", images=[("coffee", photos["coffee"])], progress=False)
    assert not [f for f in rep.failures if "ncnn_fp32" in f], format_report(rep)


def test_a_custom_class_onnx_export_of_nanodet_m(tmp_path):
    onnx_path = export_upstream_onnx(seeded("nanodet_m", num_classes=3, class_names=("a", "b", "c")),
                                     tmp_path / "mine.onnx", size=416)
    (tmp_path / "names.txt").write_text("apple\npear\nplum\n")
    from litedet.convert.families.nanodet_wrap import wrap_onnx

    r = wrap_onnx(onnx_path, tmp_path / "b", class_names=["apple", "pear", "plum"], progress=False)
    m = r.manifest
    assert (m.architecture, m.resize.target, m.class_names) == ("nanodet_m", 416, ["apple", "pear", "plum"])


def test_an_onnx_of_another_network_is_refused(tmp_path):
    onnx_path = tmp_path / "squeeze.onnx"
    with torch.no_grad():
        torch.onnx.export(create_model("squeezenet1_1").eval(), torch.randn(1, 3, 224, 224), str(onnx_path),
                          dynamo=False, opset_version=11)
    from litedet.convert.families.nanodet_wrap import wrap_onnx

    with pytest.raises(ConvertError, match="fits no registered NanoDet"):
        wrap_onnx(onnx_path, tmp_path / "b", progress=False)
    with pytest.raises(Exception, match="is not a NanoDet graph"):
        convert_model("nanodet_m", tmp_path / "c", checkpoint=onnx_path, progress=False)


def test_an_ncnn_model_made_from_the_onnx_wraps_too(plus_onnx, tmp_path):
    """As upstream's ncnn demos do: ONNX -> ncnn (one concatenated 'output' blob, not the legacy six)."""
    from litedet.cli import main
    from litedet.convert.export import run_pnnx

    res = run_pnnx(plus_onnx, tmp_path, (1, 3, 320, 320), None, fp16=True, stem="plus")
    assert main(["wrap", str(res.param), "--out", str(tmp_path / "b"), "--quiet"]) == 0
    m = load_manifest(tmp_path / "b")
    assert m.architecture == "nanodet_plus_m" and m.provenance["weights"] == "ncnn"
    assert m.provenance["load_details"]["convolutions"] == 110


def test_an_older_six_output_onnx_export_wraps(tmp_path):
    """Older upstream exports: cls_pred_stride_{8,16,32} (sigmoid applied) and dis_pred_stride_{8,16,32}."""
    import warnings

    from litedet.convert.export import DeployWrapper, _channel_shuffle_symbolic
    from litedet.convert.families.nanodet_wrap import wrap_exported

    torch.onnx.register_custom_op_symbolic("aten::channel_shuffle", _channel_shuffle_symbolic, 9)
    m = seeded("nanodet_m")
    path = tmp_path / "nanodet-m.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(DeployWrapper(m), torch.randn(1, 3, 320, 320), str(path), dynamo=False, opset_version=11,
                          input_names=["input.1"], output_names=m.deploy_output_names())
    r = wrap_exported(path, tmp_path / "b", progress=False)
    assert r.manifest.architecture == "nanodet_m"
    assert r.manifest.provenance["load_details"]["onnx_max_rel"] < 1e-4
