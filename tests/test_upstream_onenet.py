"""Acceptance against PeizeSun/OneNet's own head (``projects/OneNet/onenet/head.py`` and
``deconv.py``), the no-DCN configuration users deploy (``configs/onenet.res18.nodcn.yaml``).

Runs when ``LITEDET_UPSTREAM_ONENET`` names a checkout of its repository; skipped otherwise. The
two files are imported unchanged; detectron2 and fvcore are not installed, so the few names they
import are stand-ins: detectron2's ``Conv2d`` (a torch Conv2d that takes ``norm`` and
``activation``, unused here), ``c2_msra_fill`` (an init the loaded weights overwrite), and names the
no-DCN head never calls. The backbone is litedet's detectron2-named ResNet-18 (detectron2's own
is not in OneNet's repository). Their head is given litedet's seeded weights by name (the names
must agree, strict), saved as detectron2 saves a checkpoint (``{"model": state_dict}``), converted,
and the bundle's ncnn fp32 outputs match their head's sigmoid scores and boxes (location -/+
ltrb) within 1e-4 of the range on a real photo; the kind's top-k is the top-k of their scores.
"""

from __future__ import annotations

import os
import sys
import types

import numpy as np
import pytest
import torch

UPSTREAM = os.environ.get("LITEDET_UPSTREAM_ONENET")
pytestmark = pytest.mark.skipif(not UPSTREAM, reason="set LITEDET_UPSTREAM_ONENET to a PeizeSun/OneNet checkout")


def _stubs() -> dict[str, types.ModuleType]:
    class Conv2d(torch.nn.Conv2d):  # detectron2.layers.Conv2d without norm / activation
        def __init__(self, *args, norm=None, activation=None, **kwargs):
            super().__init__(*args, **kwargs)

    def unused(*a, **k):
        raise AssertionError("the no-DCN CenterNet head does not call this")

    mods = {name: types.ModuleType(name) for name in (
        "detectron2", "detectron2.layers", "detectron2.modeling", "detectron2.modeling.anchor_generator",
        "detectron2.structures", "fvcore", "fvcore.nn", "fvcore.nn.weight_init")}
    mods["detectron2.layers"].Conv2d = Conv2d
    mods["detectron2.layers"].DeformConv = mods["detectron2.layers"].ModulatedDeformConv = unused
    mods["detectron2.modeling.anchor_generator"].build_anchor_generator = unused
    mods["detectron2.structures"].Boxes = unused
    mods["fvcore.nn.weight_init"].c2_msra_fill = lambda m: torch.nn.init.kaiming_normal_(m.weight, mode="fan_out")
    mods["fvcore.nn"].weight_init = mods["fvcore.nn.weight_init"]
    return mods


@pytest.fixture
def upstream_head():
    before = dict(sys.modules)
    sys.modules.update(_stubs())
    pkg = types.ModuleType("onenet")  # the two files only: onenet/__init__.py imports all of detectron2
    pkg.__path__ = [os.path.join(UPSTREAM, "projects", "OneNet", "onenet")]
    sys.modules["onenet"] = pkg
    try:
        from onenet.head import Head

        yield Head
    finally:
        for n in list(sys.modules):
            if n not in before:
                del sys.modules[n]


def test_onenet_head_converts_to_the_same_scores_and_boxes(upstream_head, tmp_path, photos):
    from types import SimpleNamespace as NS

    from litedet.convert.families import adapter_for
    from litedet.convert.pipeline import convert_model
    from litedet.models import create_model, model_info
    from litedet.runtime.bundle import Bundle
    from litedet.runtime.kinds.topk import top_scores
    from litedet.runtime.runner import BundleRunner

    cfg = NS(MODEL=NS(OneNet=NS(NUM_CLASSES=80, DECONV_CHANNEL=(512, 256, 128, 64), ACTIVATION="relu", PRIOR_PROB=0.01,
                                DECONV_KERNEL=[4, 4, 4], MODULATE_DEFORM=True, DCN=False,
                                IN_FEATURES=["res2", "res3", "res4", "res5"])))
    shapes = {n: NS(channels=c) for n, c in zip(("res2", "res3", "res4", "res5"), (64, 128, 256, 512))}
    head = upstream_head(cfg, backbone_shape=shapes)
    ours = create_model("onenet_resnet18")
    adapter_for("onenet").seed(ours, model_info("onenet_resnet18"), 0, 256)
    head.load_state_dict({k[len("head."):]: v for k, v in ours.state_dict().items() if k.startswith("head.")})
    head.eval()
    sd = {**{k: v for k, v in ours.state_dict().items() if k.startswith("backbone.")},
          **{f"head.{k}": v for k, v in head.state_dict().items()}}
    ckpt = tmp_path / "model_final.pth"
    torch.save({"model": sd, "iteration": 270000}, ckpt)  # as detectron2's Checkpointer saves it
    convert_model("onenet_resnet18", tmp_path / "bundle", checkpoint=ckpt, input_size=256, progress=False)
    b = Bundle.open(tmp_path / "bundle")
    r32 = BundleRunner.from_bundle(b, fp16=False, bin_override=b.graph_files(fp32=True)["model"].bin)
    chw, geom = r32.preprocess_array(photos["coffee"])
    got = r32.run_array(chw)
    ours.eval()
    with torch.no_grad():
        feats = ours.backbone(torch.from_numpy(chw)[None])
        logits, boxes, _, _, _ = head(feats)
    m = r32.manifest
    scores = got[m.outputs_with_role("scores")[0].blob].reshape(logits.shape[1:])
    theirs = torch.sigmoid(logits)[0].numpy()
    assert np.abs(scores - theirs).max() < 1e-4
    cands = r32.kind.decode(m, got, geom)  # our boxes, from our ltrb and locations
    from litedet.runtime.kinds.topk import topk_candidates

    c = topk_candidates(m, got, geom.in_w, geom.in_h)
    hw = theirs.shape[1] * theirs.shape[2]
    idx = top_scores(theirs, m.postprocess.max_detections, m.postprocess.score_threshold)
    their_boxes = boxes[0].reshape(4, -1).numpy()[:, idx % hw].T
    assert len(cands) == len(idx) > 0 and c.labels.tolist() == (idx // hw).tolist()
    assert np.abs(c.boxes - their_boxes).max() / np.abs(their_boxes).max() < 1e-4
    # their inference: top-k per class, then top-k of those: the same pairs as one top-k over all
    k = m.postprocess.max_detections
    flat = torch.sigmoid(logits)[0].flatten(1)
    per_class, inds = torch.topk(flat, k=k)
    best, pos = torch.topk(per_class.reshape(-1), k=k)
    pairs = {(int(p) // k, int(inds.reshape(-1)[p])) for p, s in zip(pos, best) if s > m.postprocess.score_threshold}
    assert pairs == {(int(i) // hw, int(i) % hw) for i in idx}
