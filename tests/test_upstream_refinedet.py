"""Acceptance against the RefineDet code users train with: luuuyi/RefineDet.PyTorch (VGG16) and
pengyang1225/resnest-refinedet (ResNeSt-50).

Runs when ``LITEDET_UPSTREAM_REFINEDET`` (and ``LITEDET_UPSTREAM_RESNEST_REFINEDET``) name a
checkout of the repository; skipped otherwise. Their ``models/refinedet.py``, ``layers`` and
``data`` are imported unchanged. For the ResNeSt one two things outside the model are replaced:
its backbone's constructor connects to a Visdom server (a stand-in module says it is connected),
and its RefineDet loads ImageNet weights from a path on its author's disk (the same backbone is
built without them). Each model is built in train mode, given weights (litedet's seeding, loaded
into their module by name, which is the check that the names agree), saved as its training
script saves it (``torch.save(net.state_dict(), ...)``) and converted by litedet; the bundle's
ncnn fp32 outputs match their forward (softmax applied to the two confidences) within 1e-4 of
each output's range on a real photo, their PriorBox equals litedet's priors, and their
decode/center_size on those outputs equals litedet's boxes.
"""

from __future__ import annotations

import os
import sys
import types

import numpy as np
import pytest
import torch

VGG = os.environ.get("LITEDET_UPSTREAM_REFINEDET")
RESNEST = os.environ.get("LITEDET_UPSTREAM_RESNEST_REFINEDET")


def _import_upstream(root: str, stub_visdom: bool):
    """(their models.refinedet module, their layers package), imported from ``root``; their
    top-level names (models, layers, data, resnest) are removed again afterwards."""
    names = ("models", "layers", "data", "resnest", "utils", "visdom")
    saved = {n: m for n, m in sys.modules.items() if n.split(".")[0] in names}
    for n in saved:
        del sys.modules[n]
    if stub_visdom:
        vis = types.ModuleType("visdom")
        vis.Visdom = type("Visdom", (), {"__init__": lambda self, **kw: None, "check_connection": lambda self: True})
        sys.modules["visdom"] = vis
    # their models/ has no __init__.py: a package of that one folder, so that no other "models"
    # on the path (litedet's source tree has one) is searched
    pkg = types.ModuleType("models")
    pkg.__path__ = [os.path.join(root, "models")]
    sys.modules["models"] = pkg
    sys.path.insert(0, root)
    try:
        import layers
        import models.refinedet as refinedet

        return refinedet, layers
    finally:
        sys.path.remove(root)


@pytest.fixture
def restore_modules():
    before = dict(sys.modules)
    yield
    for n in list(sys.modules):
        if n not in before:
            del sys.modules[n]
    sys.modules.update(before)


def _check(arch: str, net: torch.nn.Module, refinedet, layers, size: int, tmp_path, photo) -> None:
    from litedet.convert.pipeline import convert_model
    from litedet.models import create_model
    from litedet.models.refinedet import REFINEDET_SPEC
    from litedet.runtime.bundle import Bundle
    from litedet.runtime.kinds.ssd_refine import center_size, decode_boxes, prior_boxes
    from litedet.runtime.runner import BundleRunner

    from litedet.convert.families import adapter_for
    from litedet.models import model_info

    ours = create_model(arch, num_classes=net.num_classes - 1)
    adapter_for("refinedet").seed(ours, model_info(arch), 0, size)
    missing, unexpected = net.load_state_dict(ours.state_dict(), strict=False)
    missing = [k for k in missing if not k.startswith("Resnet86.")]  # the ResNeSt model's unused copy
    assert not missing, missing[:5]  # every tensor of theirs has its name in ours
    assert all(k.startswith("model.fc.") for k in unexpected) or not unexpected, unexpected[:5]
    net.eval()
    ckpt = tmp_path / "RefineDet.pth"
    torch.save(net.state_dict(), ckpt)  # as train_refinedet.py saves it
    convert_model(arch, tmp_path / "bundle", checkpoint=ckpt, input_size=size, progress=False)
    b = Bundle.open(tmp_path / "bundle")
    r32 = BundleRunner.from_bundle(b, fp16=False, bin_override=b.graph_files(fp32=True)["model"].bin)
    chw, _ = r32.preprocess_array(photo)
    got = r32.run_array(chw)
    with torch.no_grad():
        arm_loc, arm_conf, odm_loc, odm_conf, priors = net(torch.from_numpy(chw)[None])
    theirs = {"arm_loc": arm_loc[0], "arm_conf": torch.softmax(arm_conf[0], -1), "odm_loc": odm_loc[0],
              "odm_conf": torch.softmax(odm_conf[0], -1)}
    for role, t in theirs.items():
        o = got[r32.manifest.outputs_with_role(role)[0].blob].reshape(t.shape)
        assert np.abs(o - t.numpy()).max() / np.abs(t.numpy()).max() < 1e-4, role
    s = REFINEDET_SPEC
    mine = prior_boxes(size, size, list(s.steps), list(s.min_sizes), list(s.aspect_ratios), s.clip)
    assert np.array_equal(priors.numpy(), mine)
    var = [0.1, 0.2]
    refined = layers.box_utils.center_size(layers.box_utils.decode(arm_loc[0], priors, var))
    their_boxes = layers.box_utils.decode(odm_loc[0], refined, var).numpy()
    our_boxes = decode_boxes(odm_loc[0].numpy(), center_size(decode_boxes(arm_loc[0].numpy(), mine, var)), var)
    assert np.allclose(our_boxes, their_boxes, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not VGG, reason="set LITEDET_UPSTREAM_REFINEDET to a luuuyi/RefineDet.PyTorch checkout")
def test_refinedet_pytorch_vgg16_converts_to_the_same_outputs(restore_modules, tmp_path, photos):
    refinedet, layers = _import_upstream(VGG, stub_visdom=False)
    torch.manual_seed(0)
    net = refinedet.build_refinedet("train", 320, 21)
    _check("refinedet_vgg16", net, refinedet, layers, 320, tmp_path, photos["coffee"])


@pytest.mark.skipif(not RESNEST, reason="set LITEDET_UPSTREAM_RESNEST_REFINEDET to a pengyang1225/resnest-refinedet checkout")
def test_resnest_refinedet_converts_to_the_same_outputs(restore_modules, tmp_path, photos):
    refinedet, layers = _import_upstream(RESNEST, stub_visdom=True)
    from resnest import resnest

    refinedet.get_resnest50 = lambda path: resnest.resnest50_REFINEDET()  # its author's weights path, without weights
    torch.manual_seed(0)
    net = refinedet.build_refinedet(320, 2)
    _check("refinedet_resnest50", net, refinedet, layers, 320, tmp_path, photos["coffee"])
