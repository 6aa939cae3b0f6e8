"""The torch-free runtime: preprocessing like the device, image shapes, bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from litedet.runtime.detector import Detector, ImageError, load_image, postprocess_outputs
from litedet.runtime.devconfig import device_config_text, export_device_assets
from litedet.runtime.manifest import ManifestError, load_manifest

BLOCK_TORCH = "import sys; sys.modules['torch'] = None\n"


def test_runtime_imports_and_runs_without_torch(seeded_bundle):
    code = BLOCK_TORCH + (
        "import numpy as np\n"
        "from litedet.runtime.detector import Detector\n"
        "import litedet.runtime.visualize, litedet.runtime.devconfig\n"
        f"det = Detector.from_bundle({str(seeded_bundle)!r})\n"
        "img = np.random.RandomState(0).randint(0, 255, (240, 320, 3)).astype(np.uint8)\n"
        "det.detect(img)\n"
        "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


@pytest.fixture(scope="module")
def det(seeded_bundle):
    return Detector.from_bundle(seeded_bundle)


@pytest.mark.parametrize("h,w", [(240, 320), (320, 240), (300, 300), (7, 5), (3, 1000), (1000, 3), (1, 1), (2400, 3600)])
def test_any_orientation_and_size_gives_boxes_inside_the_image(det, photos, h, w):
    img = cv2.resize(photos["coffee"], (w, h), interpolation=cv2.INTER_AREA)
    mat, lb = det.preprocess(img)
    assert (mat.w, mat.h, mat.c) == (lb.in_w, lb.in_h, 3)
    assert lb.in_w % 32 == 0 and lb.in_h % 32 == 0 and max(lb.resized_w, lb.resized_h) == 320
    assert (lb.resized_w >= lb.resized_h) == (w >= h)  # width and height never swapped
    for d in det.detect(img):
        assert 0 <= d.x1 <= d.x2 <= w and 0 <= d.y1 <= d.y2 <= h
        assert 0.35 < d.score <= 1.0


def test_gray_and_bgra_images_match_their_bgr_equivalent(det, photos):
    bgr = photos["chelsea"]
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    a, _ = det.preprocess_array(gray)
    b, _ = det.preprocess_array(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))
    np.testing.assert_array_equal(a, b)
    c, _ = det.preprocess_array(cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA))
    d, _ = det.preprocess_array(bgr)
    np.testing.assert_array_equal(c, d)


def test_preprocessing_is_letterbox_then_normalise(det, photos):
    """ncnn's calls agree with an independent OpenCV letterbox (bilinear resize
    differs by rounding only), and padding is raw 0 before mean/norm."""
    img = photos["motorcycle_left"]  # 741x500 -> 320x215, padded to 320x224
    chw, lb = det.preprocess_array(img)
    assert (lb.resized_w, lb.resized_h, lb.in_w, lb.in_h, lb.pad_left, lb.pad_top) == (320, 215, 320, 224, 0, 4)
    m = det.manifest.input
    ref = cv2.resize(img, (lb.resized_w, lb.resized_h), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    ref = ((ref - np.array(m.mean, np.float32)) * np.array(m.norm, np.float32)).transpose(2, 0, 1)
    inner = chw[:, lb.pad_top:lb.pad_top + lb.resized_h, lb.pad_left:lb.pad_left + lb.resized_w]
    assert np.abs(inner - ref).mean() < 0.05
    np.testing.assert_allclose(chw[:, 0, 0], -np.array(m.mean) * np.array(m.norm), rtol=1e-5)


@pytest.mark.parametrize("bad", [np.zeros((0, 10, 3), np.uint8), np.zeros((10, 10, 2), np.uint8),
                                 np.zeros((10, 10, 3), np.float32), "not an array"])
def test_bad_images_are_clear_errors(det, bad):
    with pytest.raises(ImageError):
        det.detect(bad)


def test_unreadable_image_file_is_a_clear_error(tmp_path):
    p = tmp_path / "x.jpg"
    p.write_bytes(b"nope")
    with pytest.raises(ImageError, match="could not decode"):
        load_image(p)
    with pytest.raises(ImageError, match="not found"):
        load_image(tmp_path / "missing.png")


def test_tampered_bundle_is_refused(seeded_bundle, tmp_path):
    b = tmp_path / "b"
    shutil.copytree(seeded_bundle, b)
    with open(b / "model.ncnn.bin", "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01")
    with pytest.raises(ManifestError, match="sha256"):
        Detector.from_bundle(b)
    with pytest.raises(ManifestError, match="sha256"):
        export_device_assets(b, tmp_path / "assets")


def _edit_manifest(src, dst, fn):
    shutil.copytree(src, dst)
    d = json.loads((dst / "manifest.json").read_text())
    fn(d)
    (dst / "manifest.json").write_text(json.dumps(d))


def test_manifest_errors_name_the_field(seeded_bundle, tmp_path):
    _edit_manifest(seeded_bundle, tmp_path / "a", lambda d: d.pop("postprocess"))
    with pytest.raises(ManifestError, match="postprocess"):
        load_manifest(tmp_path / "a")
    _edit_manifest(seeded_bundle, tmp_path / "b", lambda d: d["outputs"][0].update(blob="nope"))
    with pytest.raises(ManifestError, match="'nope'.*not an output"):
        Detector.from_bundle(tmp_path / "b")
    _edit_manifest(seeded_bundle, tmp_path / "c", lambda d: d["postprocess"].update(reg_max=16))
    with pytest.raises(ManifestError, match="reg_max 16 needs"):
        load_manifest(tmp_path / "c")
    _edit_manifest(seeded_bundle, tmp_path / "d", lambda d: d["outputs"][0].update(activation="none"))
    with pytest.raises(ManifestError, match="sigmoid"):
        load_manifest(tmp_path / "d")
    _edit_manifest(seeded_bundle, tmp_path / "e", lambda d: d.update(version=99))
    with pytest.raises(ManifestError, match="version 99"):
        load_manifest(tmp_path / "e")
    with pytest.raises(ManifestError, match="no manifest.json"):
        load_manifest(tmp_path)


def test_raw_logits_are_refused_not_squashed_twice(det, photos):
    mat, lb = det.preprocess(photos["astronaut"])
    outs = det.run_mat(mat)
    blob = det.manifest.outputs[0].blob
    outs[blob] = np.log(outs[blob] / (1 - outs[blob]))  # undo the sigmoid: logits
    with pytest.raises(ValueError, match="sigmoid"):
        postprocess_outputs(det.manifest, outs, lb)


def test_fp16_and_fp32_runtime_agree_on_scores(seeded_bundle, photos):
    a = Detector.from_bundle(seeded_bundle, fp16=True)
    b = Detector.from_bundle(seeded_bundle, fp16=False)
    mat, _ = a.preprocess(photos["chelsea"])
    oa, ob = a.run_mat(mat), b.run_mat(mat)
    cls = a.manifest.outputs[0].blob
    assert np.abs(oa[cls] - ob[cls]).max() < 0.05


def test_device_config_comes_from_the_manifest(seeded_bundle, tmp_path):
    files = export_device_assets(seeded_bundle, tmp_path, "nd")
    assert [f.name for f in files] == ["nd.param", "nd.bin", "nd.cfg"]
    cfg = dict(ln.split("=", 1) for ln in files[2].read_text().splitlines() if ln and not ln.startswith("#"))
    m = load_manifest(seeded_bundle)
    assert cfg["input_blob"] == m.input.blob and cfg["target_size"] == "320" and cfg["strides"] == "8,16,32"
    assert cfg["cls_blobs"].split(",") == [o.blob for o in m.outputs[:3]]
    assert cfg["class_names"].split(",") == m.class_names and cfg["center_offset"] == "0.5"
    assert (tmp_path / "nd.bin").read_bytes() == (seeded_bundle / "model.ncnn.bin").read_bytes()
    m.class_names[0] = "a,b"
    with pytest.raises(ManifestError, match="comma"):
        device_config_text(m, "x.param", "x.bin")
