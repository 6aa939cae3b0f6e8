"""Bundles: contents, atomic writes, refusal of bad input, pnnx failures."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from litedet.convert.bundle import ConvertError, atomic_bundle_dir
from litedet.convert.pipeline import convert_model
from litedet.convert.export import PnnxError, run_pnnx, unconverted_ops
from litedet.convert.verify.compare import DetectionMatch, match_detections
from litedet.runtime.results import Detection
from litedet.runtime.manifest import load_manifest, sha256_file


def test_bundle_has_the_contract_files_and_manifest(seeded_bundle):
    m = load_manifest(seeded_bundle)
    for f in ("model.ncnn.param", "model.ncnn.bin", "manifest.json", "reference/model.torchscript.pt",
              "reference/input.npy", "reference/outputs.npz", "reference/image.png", "reference/model.fp32.ncnn.bin"):
        assert (seeded_bundle / f).is_file(), f
    assert m.param_sha256 == sha256_file(seeded_bundle / "model.ncnn.param")
    assert m.bin_sha256 == sha256_file(seeded_bundle / "model.ncnn.bin")
    assert m.weight_storage == "fp16"
    # fp16 bin is about half the fp32 reference bin
    ratio = (seeded_bundle / "model.ncnn.bin").stat().st_size / (seeded_bundle / "reference/model.fp32.ncnn.bin").stat().st_size
    assert 0.45 < ratio < 0.55
    assert m.input.pixel_format == "bgr" and m.resize.pad_mode == "stride_multiple" and m.resize.pad_multiple == 32
    assert m.postprocess.center_offset == 0.5 and m.postprocess.reg_max == 7 and m.postprocess.strides == [8, 16, 32]
    assert [o.role for o in m.outputs] == ["cls_scores"] * 3 + ["dist_logits"] * 3
    assert all(o.activation == "sigmoid" for o in m.outputs[:3])
    assert m.provenance["weights"] == "seeded-random" and "UNTRAINED" in m.provenance["note"]
    assert {"torch", "pnnx", "ncnn"} <= set(m.provenance["tools"])
    assert max(v["max_abs"] for v in m.reference["verify_fp32"].values()) < 1e-3
    assert not any(p.name.startswith(".") for p in seeded_bundle.parent.iterdir())  # no temp dirs left


def test_graph_is_shape_agnostic_and_fused(seeded_bundle):
    text = (seeded_bundle / "model.ncnn.param").read_text()
    types = [ln.split()[0] for ln in text.splitlines()[2:]]
    assert types.count("ShuffleChannel") == 16  # channel shuffle fused, as in the official graph
    assert types.count("Convolution") == 48 and types.count("ConvolutionDepthWise") == 25
    assert "0=1600" not in text  # no reshape baked to the 320x320 trace size


def test_reference_outputs_reproduce_without_torch(seeded_bundle):
    from litedet.runtime.detector import Detector

    det = Detector.from_bundle(seeded_bundle, fp16=False, bin_override=seeded_bundle / "reference/model.fp32.ncnn.bin")
    chw = np.load(seeded_bundle / "reference/input.npy")
    ref = np.load(seeded_bundle / "reference/outputs.npz")
    out = det.run_array(chw)
    for k in ref.files:
        np.testing.assert_allclose(out[k].reshape(ref[k].shape), ref[k], atol=1e-3)


def test_existing_bundle_is_refused_without_force(seeded_bundle):
    with pytest.raises(ConvertError, match="--force"):
        convert_model("nanodet_m", seeded_bundle, progress=False)


def test_failed_conversion_leaves_existing_bundle_untouched(tmp_path, seeded_bundle, monkeypatch):
    dest = tmp_path / "b"
    shutil.copytree(seeded_bundle, dest)
    before = {p.name: sha256_file(p) for p in dest.iterdir() if p.is_file()}

    def boom(*a, **k):
        raise PnnxError("simulated pnnx crash")

    monkeypatch.setattr("litedet.convert.export.run_pnnx", boom)
    with pytest.raises(PnnxError, match="simulated"):
        convert_model("nanodet_m", dest, force=True, progress=False)
    assert {p.name: sha256_file(p) for p in dest.iterdir() if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]  # temp dir cleaned up


def test_force_replaces_a_bundle_atomically(tmp_path):
    dest = tmp_path / "b"
    dest.mkdir()
    (dest / "manifest.json").write_text('{"format": "litedet-bundle"}')  # --force replaces bundles only
    (dest / "old.txt").write_text("old")
    with atomic_bundle_dir(dest, force=True, verify=None) as tmp:
        (tmp / "new.txt").write_text("new")
        assert (dest / "old.txt").exists()  # untouched until the new one is complete
    assert sorted(p.name for p in dest.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


@pytest.mark.parametrize("size", [300, 0, -32, 321])
def test_input_size_must_be_a_multiple_of_32(tmp_path, size):
    with pytest.raises(ConvertError, match="multiple of 32"):
        convert_model("nanodet_m", tmp_path / "b", input_size=size, progress=False)


def test_unknown_architecture_is_refused_naming_the_known_ones(tmp_path):
    with pytest.raises(KeyError, match="nanodet_m"):
        convert_model("yolo_v99", tmp_path / "b", progress=False)
    assert not (tmp_path / "b").exists()


def test_fp32_bundle_at_416(tmp_path):
    r = convert_model("nanodet_m", tmp_path / "b", input_size=416, fp32=True, progress=False)
    m = r.manifest
    assert m.weight_storage == "fp32" and m.resize.target == 416 and m.reference["fp32_bin"] is None
    assert r.timings["total"] > 0


def test_unconverted_ops_are_named(tmp_path):
    p = tmp_path / "x.param"
    p.write_text("7767517\n3 3\nInput in0 0 1 in0\naten::channel_shuffle op_1 1 1 in0 a\npnnx.Expression e 1 1 a out0\n")
    assert unconverted_ops(p) == ["aten::channel_shuffle (op_1)", "pnnx.Expression (e)"]


def test_pnnx_failure_shows_its_log(tmp_path):
    bad = tmp_path / "garbage.pt"
    bad.write_bytes(b"not torchscript")
    with pytest.raises(PnnxError) as e:
        run_pnnx(bad, tmp_path, (1, 3, 32, 32), None, fp16=True)
    assert "pnnx failed on garbage.pt" in str(e.value) and "last lines of its log" in str(e.value)


# -- detection matching used by parity -----------------------------------------

def _d(x1, y1, x2, y2, s, label=0):
    return Detection(x1, y1, x2, y2, s, label, str(label))


def test_matching_counts_matched_missed_extra():
    ref = [_d(0, 0, 10, 10, 0.9), _d(20, 20, 30, 30, 0.8, 1), _d(50, 50, 60, 60, 0.7)]
    test = [_d(0, 0, 10, 11, 0.89), _d(20, 20, 30, 30, 0.8, 2), _d(80, 80, 90, 90, 0.9)]
    m = match_detections(ref, test, score_threshold=0.35, borderline_margin=0.02)
    assert (m.matched, m.missed, m.extra, m.label_flips) == (1, 1, 1, 1)
    assert abs(m.min_iou - 10 / 11) < 1e-9 and abs(m.max_score_diff - 0.01) < 1e-9


def test_matching_treats_threshold_and_max_det_flips_as_borderline():
    ref = [_d(0, 0, 10, 10, 0.9), _d(50, 50, 60, 60, 0.36)]
    m = match_detections(ref, [_d(0, 0, 10, 10, 0.9)], score_threshold=0.35, borderline_margin=0.02)
    assert (m.missed, m.borderline) == (0, 1)
    full = [_d(i * 20, 0, i * 20 + 10, 10, 0.9 - i * 0.01) for i in range(5)]
    m = match_detections(full, full[:4] + [_d(500, 0, 510, 10, 0.855)], max_detections=5, borderline_margin=0.02)
    assert (m.missed, m.extra, m.borderline) == (0, 0, 2)
    assert isinstance(match_detections([], []), DetectionMatch)


def test_weights_import_back_from_our_own_pnnx_bundle(seeded_bundle):
    """pnnx's param files (quoted Reshape expressions, fused activations) parse, and
    the imported model reproduces the bundle's reference outputs (fp32 reference bin)."""
    import torch

    from litedet.models import create_model
    from litedet.models.ncnn_import import import_ncnn_weights

    m = create_model("nanodet_m").eval()
    rep = import_ncnn_weights(m, seeded_bundle / "model.ncnn.param", seeded_bundle / "reference/model.fp32.ncnn.bin")
    assert rep["convolutions"] == 73
    x = torch.from_numpy(np.load(seeded_bundle / "reference/input.npy"))[None]
    ref = np.load(seeded_bundle / "reference/outputs.npz")
    with torch.no_grad():
        outs = m.forward_deploy(x)
    for blob, o in zip(sorted(ref.files, key=lambda b: int(b[3:])), outs):
        np.testing.assert_allclose(o[0].numpy(), ref[blob], atol=1e-3)
