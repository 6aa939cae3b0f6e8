"""Acceptance against upstream NanoDet's own code (RangiLyu/nanodet).

Runs when ``LITEDET_UPSTREAM_NANODET`` names a checkout of upstream's repository;
skipped otherwise. Upstream's model files are imported unchanged; only packages
its training and logging utilities import and this environment lacks
(pytorch_lightning, matplotlib, termcolor, ...) are replaced by empty modules,
and torchvision too when it cannot be imported (its ``nms`` is only used by
upstream's post-processing, which is then skipped, never imitated).

For NanoDet-m, NanoDet-Plus-m and NanoDet-Plus-m-1.5x: the state-dict keys and
shapes equal upstream's, the same weights give the same outputs, and a
Lightning-style checkpoint of upstream's model converts with litedet into a
bundle whose ncnn fp32 outputs match upstream's forward within 1e-4 (relative
to the output range) on a real photo. With torchvision importable, upstream's
``get_bboxes`` (clamp, multi-label, NMS 0.6, 100 boxes) and litedet's
``--decode upstream`` give the same boxes, labels and scores.
"""

from __future__ import annotations

import importlib.machinery
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

UPSTREAM = os.environ.get("LITEDET_UPSTREAM_NANODET")
pytestmark = pytest.mark.skipif(not UPSTREAM, reason="set LITEDET_UPSTREAM_NANODET to an upstream NanoDet checkout")

CASES = [("config/legacy_v0.x_configs/nanodet-m.yml", "nanodet_m"),
         ("config/nanodet-plus-m_320.yml", "nanodet_plus_m"),
         ("config/nanodet-plus-m-1.5x_416.yml", "nanodet_plus_m_1.5x")]
# imported by upstream's utilities, not by its model files
_ABSENT = ("pytorch_lightning", "lightning_fabric", "termcolor", "matplotlib", "tabulate", "imagesize",
           "tensorboard", "torchmetrics", "pycocotools", "omegaconf")


class _Empty(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return type(name, (object,), {"__init__": lambda self, *a, **k: None})


class _EmptyFinder:
    def __init__(self, names):
        self.names = names

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.names:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        return _Empty(spec.name)

    def exec_module(self, module):
        module.__path__ = []


def _torchvision_ok() -> bool:
    try:
        from torchvision.ops import nms

        nms(torch.zeros(1, 4), torch.ones(1), 0.5)
        return True
    except Exception:
        return False


@pytest.fixture(scope="module")
def upstream():
    root = Path(UPSTREAM)
    assert (root / "nanodet" / "model" / "arch").is_dir(), f"{root} is not an upstream NanoDet checkout"
    absent = [n for n in _ABSENT if importlib.util.find_spec(n) is None]
    tv = _torchvision_ok()
    if not tv:
        absent.append("torchvision")
    finder = _EmptyFinder(tuple(absent))
    sys.meta_path.insert(0, finder)
    sys.path.insert(0, str(root))
    from nanodet.model.arch import build_model
    from nanodet.util import cfg, load_config

    def build(config: str):
        c = cfg.clone()
        load_config(c, str(root / config))
        c.defrost()
        c.model.arch.backbone.pretrain = False  # never download
        return build_model(c.model).eval(), c

    yield types.SimpleNamespace(build=build, torchvision=tv)
    sys.path.remove(str(root))
    sys.meta_path.remove(finder)


def _seeded(arch):
    from litedet.convert.families import adapter_for
    from litedet.models import create_model, model_info

    m = create_model(arch)
    adapter_for("nanodet").seed(m, model_info(arch), 0, 320)
    return m.eval()


def _flat(cls, dis):
    return torch.cat([torch.cat([c.flatten(2), d.flatten(2)], 1) for c, d in zip(cls, dis)], 2).permute(0, 2, 1)


@pytest.mark.parametrize("config,arch", CASES)
def test_same_state_dict_layout_and_outputs_as_upstream(upstream, config, arch):
    up, _ = upstream.build(config)
    ours = _seeded(arch)
    usd = {k: v for k, v in up.state_dict().items() if not k.startswith(("aux_fpn.", "aux_head."))}
    osd = ours.state_dict()
    assert set(usd) == set(osd)
    assert all(usd[k].shape == osd[k].shape for k in osd)
    up.load_state_dict({**up.state_dict(), **osd})
    x = torch.randn(1, 3, 320, 320, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        u, o = up(x), _flat(*ours(x))
    assert float((u - o).abs().max()) <= 1e-4 * float(u.abs().max())


@pytest.mark.parametrize("config,arch", CASES)
def test_upstream_checkpoint_converts_and_matches_upstream(upstream, config, arch, tmp_path, photos):
    from litedet.convert.pipeline import convert_model
    from litedet.runtime.runner import open_bundle

    up, c = upstream.build(config)
    up.load_state_dict({**up.state_dict(), **_seeded(arch).state_dict()})
    sd = {f"model.{k}": v for k, v in up.state_dict().items()}
    sd.update({f"avg_model.{k}": v for k, v in up.state_dict().items()})
    torch.save({"state_dict": sd, "epoch": 1}, tmp_path / "model_best.ckpt")
    size = int(c.data.val.input_size[0])
    r = convert_model(arch, tmp_path / "b", checkpoint=tmp_path / "model_best.ckpt", input_size=size, progress=False,
                      options={"decode": "upstream", "preprocess": "upstream_stretch"})
    runner = open_bundle(r.bundle, fp16=False, bin_override=r.bundle / r.manifest.reference["fp32_bin"])
    chw, g = runner.preprocess_array(photos["coffee"])
    outs = runner.run_array(chw)
    with torch.no_grad():
        u = up(torch.from_numpy(chw)[None])[0].numpy()  # [N, C + 32] logits, levels concatenated
    m = r.manifest
    n = m.num_classes
    cls = np.concatenate([outs[o.blob].reshape(-1, n) for o in m.outputs if o.role == "cls_scores"])
    dis = np.concatenate([outs[o.blob].reshape(-1, 32) for o in m.outputs if o.role == "dist_logits"])
    ref_cls = 1 / (1 + np.exp(-u[:, :n]))
    assert np.abs(cls - ref_cls).max() <= 1e-4 * np.abs(ref_cls).max()
    assert np.abs(dis - u[:, n:]).max() <= 1e-4 * np.abs(u[:, n:]).max()

    if not upstream.torchvision:
        pytest.skip("torchvision is not importable here: upstream's get_bboxes (its NMS) cannot run")
    from litedet.runtime.kinds.gfl import postprocess_outputs
    from litedet.runtime.letterbox import Letterbox

    with torch.no_grad():
        (boxes_scores, labels), = up.head.get_bboxes(torch.from_numpy(u[None, :, :n]), torch.from_numpy(u[None, :, n:]),
                                                     {"img": torch.from_numpy(chw)[None]})
    h, w = chw.shape[1:]
    ident = Letterbox(w, h, w, h, w, h, 0, 0)  # boxes in network-input pixels, as upstream's
    # upstream's levels, concatenated, split into the bundle's per-stride outputs
    split, start = {}, 0
    for s in m.postprocess.strides:
        k = -(-w // s) * -(-h // s)
        split[m.output("cls_scores", s).blob] = ref_cls[start:start + k]
        split[m.output("dist_logits", s).blob] = u[start:start + k, n:]
        start += k
    dets = postprocess_outputs(m, split, ident)
    ub = boxes_scores.numpy()
    assert len(dets) == len(ub)
    assert [d.label for d in dets] == labels.tolist()
    got = np.array([[d.x1, d.y1, d.x2, d.y2, d.score] for d in dets])
    assert np.abs(got - ub).max() < 1e-3


@pytest.mark.parametrize("config,arch", CASES)
def test_an_onnx_exported_as_upstream_does_wraps_into_a_bundle(upstream, config, arch, tmp_path):
    """tools/export_onnx.py: torch.onnx.export(model, ..., opset 11, input 'data', output 'output'), then onnxsim."""
    import warnings

    import onnx
    import onnxsim

    from litedet.convert.families.nanodet_wrap import wrap_onnx

    up, c = upstream.build(config)
    up.load_state_dict({**up.state_dict(), **_seeded(arch).state_dict()})
    size = int(c.data.val.input_size[0])
    path = tmp_path / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(up, torch.randn(1, 3, size, size), str(path), dynamo=False, keep_initializers_as_inputs=True,
                          opset_version=11, input_names=["data"], output_names=["output"])
    simplified, ok = onnxsim.simplify(onnx.load(str(path)))
    assert ok
    onnx.save(simplified, str(path))
    r = wrap_onnx(path, tmp_path / "b", progress=False)
    assert r.manifest.architecture == arch and r.manifest.resize.target == size
    assert r.manifest.provenance["load_details"]["onnx_max_rel"] < 1e-4
