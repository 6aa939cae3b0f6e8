"""`litedet prune`: Torch-Pruning removes channels physically, the output layers stay, the pruned
checkpoint records its architecture and shapes, and convert loads it into a smaller graph."""

from __future__ import annotations

import pytest
import torch

from conftest import REFERENCE, need_reference


def _prune(*argv: str) -> int:
    from litedet.cli import main

    return main(["prune", *argv, "--quiet"])


def test_output_layers_are_the_convs_that_make_the_outputs():
    from litedet.convert.prune import output_layers
    from litedet.models import create_model

    m = create_model("nanodet_m").eval()
    found = output_layers(m, torch.rand(1, 3, 320, 320))
    assert set(map(id, found)) == set(map(id, m.head.gfl_cls))
    sq = create_model("squeezenet1_1").eval()
    (last,) = output_layers(sq, torch.rand(1, 3, 224, 224))
    assert last.out_channels == 1000


def test_a_pruned_squeezenet_converts_to_a_smaller_graph(tmp_path, capsys):
    from litedet.cli import main
    from litedet.ncnn_param import parse_param
    from litedet.runtime.manifest import load_manifest

    out = tmp_path / "p.pth"
    assert _prune("squeezenet1_1", "--ratio", "0.3", "--out", str(out)) == 0
    said = capsys.readouterr().out
    assert "every layer but the outputs" in said and "MACs" in said
    ck = torch.load(out, weights_only=True)
    meta = ck["litedet_pruned"]
    assert meta["architecture"] == "squeezenet1_1" and meta["ratio"] == 0.3 and meta["round_to"] == 8
    rep = meta["report"]
    assert rep["macs_after"] < 0.8 * rep["macs_before"] and rep["params_after"] < rep["params_before"]
    widths = [v[0] for k, v in meta["shapes"].items() if k.endswith("squeeze.weight")]
    assert widths and all(w % 8 == 0 for w in widths)  # ncnn's fp16 pack-8 grid
    # convert rebuilds the smaller modules from the recorded shapes, and verifies ncnn against torch
    assert main(["convert", "squeezenet1_1", "--checkpoint", str(out), "--out", str(tmp_path / "b"), "--quiet"]) == 0
    m = load_manifest(tmp_path / "b")
    assert m.provenance["load_details"]["pruned"]["architecture"] == "squeezenet1_1"
    first_squeeze = next(la for la in parse_param(tmp_path / "b" / m.param) if la.type == "Convolution" and la.p(1) == 1)
    assert first_squeeze.p(0) == widths[0]
    # as another architecture: one line naming the recorded one
    assert main(["convert", "squeezenet1_0", "--checkpoint", str(out), "--out", str(tmp_path / "c"), "--quiet"]) == 2
    assert "pruned squeezenet1_1" in capsys.readouterr().err


@pytest.mark.reference
def test_nanodet_prunes_neck_and_head_and_distils(tmp_path, capsys):
    need_reference(REFERENCE / "imagenet-sample")
    photos = tmp_path / "photos"
    photos.mkdir()
    for p in sorted((REFERENCE / "imagenet-sample").glob("*.JPEG"))[:4]:
        (photos / p.name).symlink_to(p)
    out = tmp_path / "n.pth"
    assert _prune("nanodet_m", "--ratio", "0.5", "--out", str(out), "--distill", str(photos), "--steps", "3") == 0
    said = capsys.readouterr().out
    assert "neck and head" in said and "distilled: 3 steps on 4 images" in said
    meta = torch.load(out, weights_only=True)["litedet_pruned"]
    shapes = meta["shapes"]
    assert shapes["head.cls_convs.0.0.depthwise.weight"][0] < 96  # the head tower lost channels
    assert shapes["backbone.conv1.0.weight"][0] == 24  # the shuffled backbone is whole
    assert shapes["head.gfl_cls.0.weight"][0] == 112  # the outputs are whole
    from litedet.cli import main

    assert main(["convert", "nanodet_m", "--checkpoint", str(out), "--out", str(tmp_path / "b"), "--quiet"]) == 0


def test_bad_input_is_one_line(tmp_path, capsys):
    for ratio in ("0", "1", "-0.2", "1.5"):
        assert _prune("squeezenet1_1", "--ratio", ratio, "--out", str(tmp_path / "p.pth")) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "(0, 1)" in err, err
    assert _prune("squeezenet1_1", "--ratio", "0.3", "--out", str(tmp_path)) == 2
    assert "is a directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert _prune("squeezenet1_1", "--ratio", "0.3", "--out", str(tmp_path / "p.pth"), "--distill",
                  str(tmp_path / "empty")) == 2
    assert "--distill" in capsys.readouterr().err
    assert not (tmp_path / "p.pth").exists() and not list(tmp_path.glob(".p.pth*"))


def test_resize_to_takes_the_checkpoint_sizes():
    from torch import nn

    from litedet.models.pruned import resize_to

    m = nn.Sequential(nn.Conv2d(8, 16, 3), nn.BatchNorm2d(16), nn.Conv2d(16, 16, 3, groups=16), nn.Flatten(),
                      nn.Linear(16, 4))
    small = nn.Sequential(nn.Conv2d(8, 8, 3), nn.BatchNorm2d(8), nn.Conv2d(8, 8, 3, groups=8), nn.Flatten(),
                          nn.Linear(8, 4))
    done = resize_to(m, small.state_dict())
    assert done == ["0", "1", "2", "4"]
    m.load_state_dict(small.state_dict())
    assert m[2].groups == 8 and m[4].in_features == 8
    x = torch.rand(1, 8, 5, 5)
    assert torch.equal(m.eval()(x), small.eval()(x))
