"""Acceptance against CoinCheung/BiSeNet's own model files (the implementation most users train
BiSeNet with).

Runs when ``LITEDET_UPSTREAM_BISENET`` names a checkout of its repository; skipped otherwise. Its
``lib/models/bisenetv1.py`` and ``bisenetv2.py`` are imported unchanged; the only thing replaced
is ``torch.utils.model_zoo.load_url``, which its constructors call to download ImageNet weights
(tests touch no network): it returns no weights, so the models keep their own init, then get
random BatchNorm statistics; and torchvision, which ``bisenetv1.py`` imports but never uses, is an
empty module when this environment has none (its PyPI wheels need a CUDA torch). Each model is built in train mode (with its auxiliary heads), saved
as its training script saves it (``torch.save(net.state_dict(), 'model_final.pth')``), converted
by litedet (the auxiliary heads counted and left out), and the bundle's ncnn fp32 logits match
CoinCheung's eval forward within 1e-4 of the logits' range on a real photo.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch

UPSTREAM = os.environ.get("LITEDET_UPSTREAM_BISENET")
pytestmark = pytest.mark.skipif(not UPSTREAM, reason="set LITEDET_UPSTREAM_BISENET to a CoinCheung/BiSeNet checkout")


@pytest.fixture(scope="module")
def upstream_models():
    import importlib.util
    import types

    import torch.utils.model_zoo as model_zoo

    if importlib.util.find_spec("torchvision") is None:
        sys.modules.setdefault("torchvision", types.ModuleType("torchvision"))
    saved = model_zoo.load_url
    model_zoo.load_url = lambda *a, **k: {}  # no downloads: the models keep their own init
    sys.path.insert(0, UPSTREAM)
    try:
        from lib.models.bisenetv1 import BiSeNetV1
        from lib.models.bisenetv2 import BiSeNetV2

        yield {"bisenet_v1": BiSeNetV1, "bisenet_v2": BiSeNetV2}
    finally:
        model_zoo.load_url = saved
        sys.path.remove(UPSTREAM)


@pytest.mark.parametrize("arch", ["bisenet_v1", "bisenet_v2"])
def test_coincheung_checkpoint_converts_to_the_same_logits(arch, upstream_models, tmp_path, photos):
    from litedet.convert.pipeline import convert_model
    from litedet.runtime.bundle import Bundle
    from litedet.runtime.runner import BundleRunner

    torch.manual_seed(0)
    net = upstream_models[arch](19, aux_mode="train")
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
    ckpt = tmp_path / "model_final.pth"
    torch.save(net.state_dict(), ckpt)  # as tools/train_amp.py saves it
    convert_model(arch, tmp_path / "bundle", checkpoint=ckpt, input_size=256, progress=False)
    b = Bundle.open(tmp_path / "bundle")
    r32 = BundleRunner.from_bundle(b, fp16=False, bin_override=b.graph_files(fp32=True)["model"].bin)
    chw, _ = r32.preprocess_array(photos["coffee"])
    (ours,) = r32.run_array(chw).values()
    eval_net = upstream_models[arch](19, aux_mode="eval")
    eval_net.load_state_dict(torch.load(ckpt), strict=False)  # eval mode has no auxiliary heads
    eval_net.eval()
    with torch.no_grad():
        theirs = eval_net(torch.from_numpy(chw)[None])[0][0].numpy()
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() / np.abs(theirs).max() < 1e-4
