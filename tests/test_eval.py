"""`litedet eval` and stated preprocessing: real accuracy on the reference photos (trained
SqueezeNet v1.1 with real ImageNet labels, trained NanoDet-m in agreement mode), the metrics on
their own, the ARM backend under qemu, and bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import NANODET_BIN, NANODET_PARAM, REFERENCE, converted, need_reference

from litedet.cli import main
from litedet.runtime.results import Classification, Detection

SQUEEZE = REFERENCE / "squeezenet-v1.1" / "squeezenet_v1.1.param"
SYNSETS = REFERENCE / "squeezenet-v1.1" / "synset_words.txt"
PHOTOS = REFERENCE / "imagenet-sample"
# ncnn's SqueezeNet v1.1 as its assets were trained (the reference README)
SQUEEZE_FLAGS = ["--pixel-order", "bgr", "--mean", "104,117,123", "--norm", "1,1,1", "--input-size", "227",
                 "--resize", "stretch"]


@pytest.fixture(scope="module")
def squeeze_bundle(tmp_path_factory) -> Path:
    need_reference(SQUEEZE, SYNSETS, PHOTOS)
    out = tmp_path_factory.mktemp("sq") / "b"
    assert main(["convert", "squeezenet1_1", "--checkpoint", str(SQUEEZE), "--out", str(out), "--quiet",
                 *SQUEEZE_FLAGS]) == 0
    return out


@pytest.fixture(scope="module")
def nanodet_bundle(tmp_path_factory) -> Path:
    need_reference(NANODET_PARAM, NANODET_BIN, PHOTOS)
    return converted(tmp_path_factory, "nanodet_m", "nd", checkpoint=NANODET_PARAM)


# -- preprocessing is stated ---------------------------------------------------------
def test_a_graph_checkpoint_without_preprocessing_is_refused(tmp_path, capsys):
    need_reference(SQUEEZE)
    assert main(["convert", "squeezenet1_1", "--checkpoint", str(SQUEEZE), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not record how its inputs were preprocessed" in err[0]
    assert "--pixel-order, --mean, --norm" in err[0] and not (tmp_path / "b").exists()


def test_stated_preprocessing_reaches_the_raw_models_accuracy(squeeze_bundle, tmp_path):
    """With the flags, the bundle classifies the 400 photos as the raw ncnn model does (top-1 0.688,
    top-5 0.880 measured on it with the ncnn wheel): within 0.01."""
    from litedet.runtime.manifest import load_manifest

    m = load_manifest(squeeze_bundle)
    assert (m.input.pixel_format, m.input.mean, m.input.norm) == ("bgr", [104.0, 117.0, 123.0], [1.0, 1.0, 1.0])
    assert m.resize.target == 227 and m.resize.policy == "stretch"
    assert set(m.provenance["preprocessing"].values()) == {"flags"}
    out = tmp_path / "ev"
    assert main(["eval", str(squeeze_bundle), "--images", str(PHOTOS), "--labels", "synset", str(SYNSETS),
                 "--backends", "ncnn-fp32,ncnn-fp16", "--out", str(out), "--quiet"]) == 0
    rep = json.loads((out / "eval.json").read_text())
    for k in ("ncnn-fp32", "ncnn-fp16"):
        rec = rep["backends"][k]
        assert rec["images"] == rec["labelled"] == 400
        assert abs(rec["top1"] - 0.688) <= 0.01 and abs(rec["top5"] - 0.880) <= 0.01, rec
    assert rep["backends"]["ncnn-fp16"]["agreement_top1"] >= 0.98
    assert cv2.imread(str(out / "eval.png")) is not None and "| ncnn-fp16 | 400 |" in (out / "eval.md").read_text()


def test_torch_backend_is_the_imported_weights(squeeze_bundle, tmp_path):
    """The torch reference of an imported classifier is our squeezenet1_1 with the imported weights:
    it agrees with ncnn on the photos (the first 40)."""
    out = tmp_path / "ev"
    assert main(["eval", str(squeeze_bundle), "--images", str(PHOTOS), "--labels", "synset", str(SYNSETS),
                 "--limit", "40", "--out", str(out), "--quiet"]) == 0
    rep = json.loads((out / "eval.json").read_text())
    assert rep["against"] == "torch" and set(rep["backends"]) == {"torch", "ncnn-fp32", "ncnn-fp16"}
    assert rep["backends"]["ncnn-fp32"]["agreement_top1"] == 1.0
    assert rep["backends"]["torch"]["top1"] == rep["backends"]["ncnn-fp32"]["top1"]


def test_stated_values_that_contradict_the_config_are_refused(tmp_path, capsys):
    from test_nanodet_users import write_yml

    cfg = write_yml(tmp_path / "m.yml")
    assert main(["convert", "--config", str(cfg), "--out", str(tmp_path / "b"), "--mean", "0,0,0", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--mean 0,0,0 contradicts m.yml, which says 103.53,116.28,123.675" in err and not (tmp_path / "b").exists()


@pytest.mark.parametrize("flags, msg", [
    (["--mean", "1,2"], "--mean '1,2': expected three numbers"),
    (["--std", "0,1,1"], "--std '0,1,1': expected three positive numbers"),
    (["--norm", "1,1,1", "--std", "1,1,1"], "--norm and --std say the same thing"),
    (["--mean", "nan,1,1"], "expected three numbers"),
])
def test_bad_preprocessing_flags_give_one_line(flags, msg, tmp_path, capsys):
    assert main(["convert", "squeezenet1_1", "--out", str(tmp_path / "b"), "--quiet", *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and msg in err[0], err


def test_resize_is_stated_for_every_task(tmp_path, capsys, photos):
    from litedet.runtime.classifier import Classifier

    assert main(["convert", "nanodet_m", "--resize", "center_crop", "--out", str(tmp_path / "d"), "--quiet"]) == 2
    assert "a detection model's results could not be mapped back" in capsys.readouterr().err
    assert main(["convert", "shufflenet_v2_x0_5", "--resize", "letterbox", "--input-size", "160", "--out",
                 str(tmp_path / "c"), "--quiet"]) == 0
    clf = Classifier.from_bundle(tmp_path / "c")
    assert clf.manifest.resize.policy == "letterbox" and clf.manifest.provenance["preprocessing"]["resize"] == "flags"
    mat, g = clf.preprocess(photos["coffee"])  # 600x400: the long side to 160, the aspect kept
    assert (mat.w, mat.h) == (160, 106) and len(clf.classify(photos["coffee"])) == 5


def test_sources_of_defaults_are_recorded(tmp_path):
    from litedet.convert.pipeline import convert_model

    r = convert_model("shufflenet_v2_x0_5", tmp_path / "b", progress=False)
    assert r.manifest.provenance["preprocessing"] == {
        "pixel_format": "architecture default", "mean": "architecture default", "norm": "architecture default",
        "resize": "architecture default", "input_size": "architecture default"}


# -- eval on detectors ----------------------------------------------------------------
def test_detector_agreement_on_real_photos(nanodet_bundle, tmp_path):
    out = tmp_path / "ev"
    assert main(["eval", str(nanodet_bundle), "--images", str(PHOTOS), "--limit", "30", "--out", str(out),
                 "--quiet"]) == 0
    rep = json.loads((out / "eval.json").read_text())
    assert rep["decode"] == {"score_threshold": 0.05, "multi_label": True, "max_detections": 100}
    assert rep["labels"].startswith("agreement (score >= 0.3), reference torch")
    b = rep["backends"]
    assert b["torch"]["AP"] == 1.0 and b["torch"]["images"] == 30  # the reference against itself
    assert b["ncnn-fp32"]["AP"] >= 0.99 and b["ncnn-fp16"]["AP"] >= 0.95, b
    assert b["ncnn-fp16"]["per_class"]  # per class, for the classes that lose most
    assert "decoded as upstream evaluates" in (out / "eval.md").read_text()


def test_wrapped_model_is_evaluated_against_ncnn_fp32(official_bundle, tmp_path, capsys):
    need_reference(PHOTOS)
    out = tmp_path / "ev"
    assert main(["eval", str(official_bundle), "--images", str(PHOTOS), "--limit", "10", "--out", str(out),
                 "--quiet"]) == 2
    assert "has no PyTorch side" in capsys.readouterr().err
    assert main(["eval", str(official_bundle), "--images", str(PHOTOS), "--limit", "10", "--backends",
                 "ncnn-fp32,ncnn-fp16", "--out", str(out), "--quiet"]) == 0
    rep = json.loads((out / "eval.json").read_text())
    assert rep["against"] == "ncnn-fp32" and rep["backends"]["ncnn-fp32"]["AP"] == 1.0


@pytest.mark.arm
def test_arm_fp16_backend_under_qemu(arm_env, nanodet_bundle, tmp_path):
    """The aarch64 ncnn under qemu with fp16 arithmetic on the first images; the report says how many."""
    from litedet.convert.verify.evaluate import evaluate

    r = evaluate(nanodet_bundle, PHOTOS, backends=["ncnn-fp32", "arm-fp32", "arm-fp16"], against="ncnn-fp32",
                 arm_images=2, limit=6, progress=False, arm_env=arm_env)
    assert r.backends["ncnn-fp32"]["images"] == 6 and r.backends["arm-fp16"]["images"] == 2
    assert r.backends["arm-fp16"]["AP"] > 0.5 and "fp16 arithmetic" in r.backends["arm-fp16"]["note"]
    assert r.backends["arm-fp32"]["AP"] > 0.99  # the control: the same fp32 program as x86
    assert r.backends["arm-fp16"]["reference_same_images"]["AP"] == 1.0  # the reference on the same 2 images


# -- the metrics on their own ---------------------------------------------------------
def _dets(rng, n=6):
    out = []
    for i in range(n):
        x, y = rng.uniform(0, 200, 2)
        w, h = rng.uniform(20, 120, 2)
        out.append(Detection(float(x), float(y), float(x + w), float(y + h), float(rng.uniform(0.3, 1)), i % 3, f"c{i % 3}"))
    return out


def test_coco_map_is_one_for_the_reference_and_drops_for_moved_or_missing_boxes():
    from litedet.convert.verify.metrics import coco_gt_from_results, coco_map

    rng = np.random.default_rng(0)
    ref = {f"im{i}.jpg": _dets(rng) for i in range(8)}
    sizes = {n: [400, 300] for n in ref}
    gt = coco_gt_from_results(ref, sizes, ["c0", "c1", "c2"], 0.3)
    assert coco_map(gt, ref)["AP"] == pytest.approx(1.0)
    moved = {n: [Detection(d.x1 + 15, d.y1, d.x2 + 15, d.y2, d.score, d.label, d.name) for d in v]
             for n, v in ref.items()}
    half = {n: v[: len(v) // 2] for n, v in ref.items()}
    m_moved, m_half = coco_map(gt, moved), coco_map(gt, half)
    assert m_moved["AP"] < 0.9 and m_moved["AP50"] > m_moved["AP"]
    assert 0.3 < m_half["AP"] < 0.8 and set(m_half["per_class"]) == {"c0", "c1", "c2"}
    assert coco_map(gt, {n: [] for n in ref})["AP"] == 0.0
    sub = dict(list(ref.items())[:3])  # a backend that saw fewer images is scored on those
    assert coco_map(gt, sub)["images"] == 3 and coco_map(gt, sub)["AP"] == pytest.approx(1.0)


def test_topk_metrics():
    from litedet.convert.verify.metrics import ClassLabels, topk_metrics

    def c(*labels):
        return [Classification(label, f"k{label}", 1.0 - 0.1 * i) for i, label in enumerate(labels)]

    ref = {"a": c(1, 2, 3, 4, 5), "b": c(7, 8, 9, 10, 11)}
    got = {"a": c(1, 2, 3, 4, 6), "b": c(8, 7, 9, 10, 11)}
    labels = ClassLabels({"a": 1, "b": 9}, [f"k{i}" for i in range(20)])
    m = topk_metrics(got, labels, ref)
    assert m["top1"] == 0.5 and m["top5"] == 1.0 and m["wrong"] == ["b"]
    assert m["agreement_top1"] == 0.5 and m["agreement_top5"] == pytest.approx((4 / 5 + 1) / 2)


# -- bad input ------------------------------------------------------------------------
def test_bad_eval_input_gives_one_line(squeeze_bundle, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "n01440764_x.jpg").write_bytes(b"not a jpeg")
    other = tmp_path / "other"
    other.mkdir()
    cv2.imwrite(str(other / "cat.png"), np.zeros((40, 40, 3), np.uint8))
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"images": [{"id": 1, "file_name": "x.jpg"}], "annotations": [], "categories": []}))
    cases = [
        (["--images", str(empty)], "holds no images"),
        (["--images", str(tmp_path / "nope")], "not a directory"),
        (["--images", str(broken), "--backends", "ncnn-fp16"], "could not decode"),
        (["--images", str(other), "--labels", "synset", str(SYNSETS)], "these labels match none of the images"),
        (["--images", str(other), "--labels", "coco", str(ann)], "a classification bundle is scored with --labels synset"),
        (["--images", str(other), "--backends", "arm-fp16", "--arm-images", "0"], "--arm-images 0"),
        (["--images", str(other), "--backends", "ncnn-fp16", "--against", "torch"], "--against torch"),
        (["--images", str(other), "--backends", "cuda"], "expected some of torch"),
        (["--images", str(other), "--labels", "imagenet", str(SYNSETS)], "--labels 'imagenet'"),
    ]
    for args, msg in cases:
        out = tmp_path / "o"
        assert main(["eval", str(squeeze_bundle), *args, "--out", str(out), "--quiet"]) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and msg in err[0], (args, err)
        assert not out.exists(), args  # nothing written half


def test_coco_annotations_for_other_images_are_refused(nanodet_bundle, tmp_path, capsys):
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"images": [{"id": 1, "file_name": "elsewhere.jpg"}], "annotations": [],
                               "categories": [{"id": 1, "name": "person"}]}))
    assert main(["eval", str(nanodet_bundle), "--images", str(PHOTOS), "--limit", "3", "--labels", "coco", str(ann),
                 "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "annotates none of the images" in capsys.readouterr().err


# -- on a phone (the adb stand-in runs the real static aarch64 litedet_cpp under qemu) ---------
@pytest.fixture
def phone(tmp_path, monkeypatch):
    from test_bench import FIXTURES

    d = tmp_path / "phone"
    d.mkdir()
    (d / "devices").write_text("List of devices attached\nAAA device model:Pixel_7\n")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "adb").symlink_to(FIXTURES / "fake_adb.sh")
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_ADB_DIR", str(d))
    return d


@pytest.mark.arm
def test_eval_on_a_phone_runs_the_apps_cpp_reference_image_first(arm_env, phone, nanodet_bundle, tmp_path):
    from conftest import need_ncnn_lib

    need_ncnn_lib("aarch64")
    out = tmp_path / "ev"
    assert main(["eval", str(nanodet_bundle), "--images", str(PHOTOS), "--limit", "3", "--backends",
                 "ncnn-fp32,arm-fp16", "--adb", "--arm-images", "3", "--out", str(out), "--quiet"]) == 0
    rep = json.loads((out / "eval.json").read_text())
    arm = rep["backends"]["arm-fp16"]
    assert arm["images"] == 3 and arm["AP"] > 0.5 and "Pixel 7" in arm["note"] and not rep["partial"]
    ref = arm["device_reference"]  # the bundle's reference image on the phone against torch's stored outputs
    assert ref["reference"] > 0 and ref["matched"] >= 0.8 * ref["reference"] and ref["mean_iou"] > 0.9
    log = (phone / "log").read_text()
    assert log.index("reference.png") < log.index("img0")  # the reference image first
    assert "on the device, the bundle's reference image against torch" in (out / "eval.md").read_text()


@pytest.mark.arm
def test_a_phone_that_goes_away_keeps_the_images_done(arm_env, phone, tmp_path_factory, tmp_path, monkeypatch,
                                                      capsys):
    from conftest import need_ncnn_lib

    import litedet.benchmarks.remote_eval as remote_eval

    need_ncnn_lib("aarch64")
    need_reference(PHOTOS)
    bundle = converted(tmp_path_factory, "nanodet_m", "nd96", input_size=96)
    monkeypatch.setattr(remote_eval, "CHUNK", 1)
    (phone / "gone_after_cpp").write_text("2")  # the reference image, one photo, then gone
    out = tmp_path / "ev"
    assert main(["eval", str(bundle), "--images", str(PHOTOS), "--limit", "3", "--backends", "ncnn-fp32,arm-fp16",
                 "--adb", "--arm-images", "3", "--out", str(out), "--quiet"]) == 1
    assert "PARTIAL results (stopped on AAA: adb shell on AAA failed" in capsys.readouterr().err
    rep = json.loads((out / "eval.json").read_text())
    assert rep["partial"] and rep["backends"]["arm-fp16"]["images"] == 1 and rep["backends"]["ncnn-fp32"]["images"] == 3


def test_eval_adb_says_what_is_wrong_with_the_phone_before_any_work(phone, nanodet_bundle, tmp_path, capsys):
    args = ["eval", str(nanodet_bundle), "--images", str(PHOTOS), "--backends", "arm-fp16", "--adb", "--out",
            str(tmp_path / "o"), "--quiet"]
    for devices, msg in (("", "no device connected"), ("AAA unauthorized", "device AAA is unauthorized"),
                         ("AAA device\nBBB device", "2 devices connected (AAA, BBB): choose one with --serial")):
        (phone / "devices").write_text(f"List of devices attached\n{devices}\n")
        assert main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and msg in err[0], err
        assert not (tmp_path / "o").exists()
    assert "push" not in (phone / "log").read_text() if (phone / "log").exists() else True


def test_eval_adb_refuses_what_the_phone_cannot_run(squeeze_bundle, tmp_path, capsys):
    args = ["eval", str(squeeze_bundle), "--images", str(PHOTOS), "--out", str(tmp_path / "o"), "--quiet", "--adb"]
    assert main(args) == 2
    assert "add them to --backends" in capsys.readouterr().err
    assert main(args + ["--backends", "arm-fp16"]) == 2
    assert "this bundle is 'softmax_topk': evaluate it under qemu" in capsys.readouterr().err


@pytest.mark.arm
def test_parity_on_a_phone(arm_env, phone, nanodet_bundle, tmp_path, capsys):
    """parity --adb: the reference image against torch's stored outputs, then a photo against torch."""
    from conftest import need_ncnn_lib

    need_ncnn_lib("aarch64")
    photo = tmp_path / "p.jpg"
    photo.write_bytes(sorted(PHOTOS.glob("*.JPEG"))[0].read_bytes())
    out = tmp_path / "par"
    rc = main(["parity", str(nanodet_bundle), "--images", str(photo), "--adb", "--out", str(out), "--quiet"])
    text = capsys.readouterr().out
    rep = json.loads((out / "adb" / "adb_parity.json").read_text())
    assert [r["image"] for r in rep["rows"]] == ["reference (torch's stored outputs)", "p"]
    assert rep["device"]["model"] == "Pixel 7" and "parity on the phone Pixel 7 (AAA)" in text
    assert rc == (0 if rep["passed"] else 1) and rep["passed"], text


def test_real_coco_annotations_are_matched_by_file_and_category_name(nanodet_bundle, tmp_path):
    """--labels coco: images by file name, categories by name (COCO's 'traffic light' is our
    'traffic_light'), ids as COCO numbers them (not 0..79); boxes written from torch's detections
    score torch 1.0 and a backend that lost boxes less."""
    from litedet.convert.verify.evaluate import list_images, run_backends

    imgs = list_images(PHOTOS, 12)
    runs, sizes = run_backends(nanodet_bundle, imgs, ["torch"], progress=False)
    from litedet.datasets import COCO_CLASSES

    cats = [{"id": 100 + i, "name": n.replace("_", " ")} for i, n in enumerate(COCO_CLASSES)]
    anns = []
    for i, im in enumerate(imgs):
        for d in runs["torch"].results[im.name]:
            if d.score >= 0.3:
                anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 100 + d.label, "iscrowd": 0,
                             "bbox": [d.x1, d.y1, d.x2 - d.x1, d.y2 - d.y1], "area": (d.x2 - d.x1) * (d.y2 - d.y1)})
    assert anns
    ann = tmp_path / "instances.json"
    ann.write_text(json.dumps({"images": [{"id": i + 1, "file_name": im.name, "width": sizes[im.name][0],
                                           "height": sizes[im.name][1]} for i, im in enumerate(imgs)],
                               "annotations": anns, "categories": cats}))
    out = tmp_path / "ev"
    assert main(["eval", str(nanodet_bundle), "--images", str(PHOTOS), "--limit", "12", "--labels", "coco", str(ann),
                 "--backends", "torch,ncnn-fp16", "--out", str(out), "--quiet"]) == 0
    rep = json.loads((out / "eval.json").read_text())
    assert rep["labels"] == "annotations instances.json"
    assert rep["backends"]["torch"]["AP"] == pytest.approx(1.0) and rep["backends"]["ncnn-fp16"]["AP"] > 0.9
