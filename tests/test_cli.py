"""The litedet command as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import pytest

from litedet.cli import main


def _run(*args, block_torch=False):
    pre = "import sys; sys.modules['torch'] = None; " if block_torch else "import sys; "
    code = pre + "from litedet.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True)


def test_detect_json_and_image_without_torch(seeded_bundle, photos, tmp_path):
    img = tmp_path / "astronaut.png"
    cv2.imwrite(str(img), photos["astronaut"])
    r = _run("detect", seeded_bundle, img, "--json", "--out", tmp_path / "vis.jpg", block_torch=True)
    assert r.returncode == 0, r.stderr
    dets = json.loads(r.stdout)
    assert dets and set(dets[0]) == {"x1", "y1", "x2", "y2", "score", "label", "name"}
    assert cv2.imread(str(tmp_path / "vis.jpg")).shape == photos["astronaut"].shape


def test_errors_exit_2_with_a_message(tmp_path, capsys):
    assert main(["convert", "nanodet_xl", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "unknown architecture 'nanodet_xl'" in err and "nanodet_m" in err
    assert main(["convert", "nanodet_m", "--out", str(tmp_path / "b"), "--input-size", "300"]) == 2
    assert "multiple of 32" in capsys.readouterr().err
    assert main(["detect", str(tmp_path), str(tmp_path / "x.jpg")]) == 2
    assert "manifest.json" in capsys.readouterr().err


def test_parity_command_passes_and_writes_reports(seeded_bundle, photos, tmp_path, capsys):
    img = tmp_path / "coffee.jpg"
    cv2.imwrite(str(img), photos["coffee"])
    rc = main(["parity", str(seeded_bundle), "--images", str(img), "--out", str(tmp_path / "rep"), "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "ncnn_fp16" in out and "PASS" in out
    rep = json.loads((tmp_path / "rep" / "parity.json").read_text())
    assert rep["passed"] and [i["image"] for i in rep["images"]] == ["reference", "coffee"]
    assert (tmp_path / "rep" / "parity_coffee.jpg").is_file()
    chart = cv2.imread(str(tmp_path / "rep" / "parity_errors.png"))
    assert chart is not None and chart.shape[1] == 760


def test_parity_exits_nonzero_past_thresholds(seeded_bundle, photos, tmp_path, capsys):
    img = tmp_path / "chelsea.png"
    cv2.imwrite(str(img), photos["chelsea"])
    args = ["parity", str(seeded_bundle), "--images", str(img), "--out", str(tmp_path / "r"), "--quiet"]
    assert main(args + ["--threshold", "fp16_min_cosine=0.9999999"]) == 1
    assert "FAIL" in capsys.readouterr().out
    assert main(args + ["--threshold", "nonsense=1"]) == 2
    assert "fp16_min_cosine" in capsys.readouterr().err


@pytest.mark.reference
def test_wrap_then_detect_official_model(tmp_path, photos, capsys):
    from conftest import NANODET_PARAM, need_reference

    need_reference(NANODET_PARAM)
    assert main(["wrap", str(NANODET_PARAM), "--out", str(tmp_path / "off")]) == 0
    img = tmp_path / "cat.png"
    cv2.imwrite(str(img), photos["chelsea"])
    capsys.readouterr()
    assert main(["detect", str(tmp_path / "off"), str(img)]) == 0
    assert capsys.readouterr().out.startswith("cat")


def test_list_shows_parameter_counts_and_macs(capsys):
    assert main(["list", "nanodet_m", "shufflenet_v2_x1_0"]) == 0
    out = capsys.readouterr().out
    assert "nanodet_m" in out and "2.279M" in out and "144.9M" in out
    assert main(["list", "yolo9000"]) == 2


def test_parity_cpp_option_adds_the_cpp_comparison(seeded_bundle, photos, tmp_path, capsys):
    img = tmp_path / "astronaut.png"
    cv2.imwrite(str(img), photos["astronaut"])
    rc = main(["parity", str(seeded_bundle), "--images", str(img), "--cpp", "--out", str(tmp_path / "r"), "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "C++ vs Python" in out and "identical" in out
    rep = json.loads((tmp_path / "r" / "parity.json").read_text())
    assert all(ip["cpp"]["identical"] for ip in rep["images"])


def test_android_push_writes_assets_from_the_manifest(seeded_bundle, tmp_path, capsys):
    demo = tmp_path / "android_demo"
    (demo / "app" / "src" / "main").mkdir(parents=True)
    assert main(["android", "push", str(seeded_bundle), "--demo", str(demo), "--name", "nd320"]) == 0
    assets = demo / "app" / "src" / "main" / "assets"
    assert sorted(p.name for p in assets.iterdir()) == ["nd320.bin", "nd320.cfg", "nd320.param"]
    cfg = (assets / "nd320.cfg").read_text()
    assert "param=nd320.param" in cfg and "strides=8,16,32" in cfg
    assert main(["android", "push", str(seeded_bundle), "--demo", str(tmp_path / "nope")]) == 2
    assert "not the Android demo project" in capsys.readouterr().err


def test_android_push_refuses_a_modified_bundle(seeded_bundle, tmp_path, capsys):
    import shutil

    b = tmp_path / "b"
    shutil.copytree(seeded_bundle, b)
    (b / "model.ncnn.param").write_text((b / "model.ncnn.param").read_text() + "\n")
    demo = tmp_path / "demo"
    (demo / "app" / "src" / "main").mkdir(parents=True)
    assert main(["android", "push", str(b), "--demo", str(demo)]) == 2
    assert "sha256" in capsys.readouterr().err
    assert not (demo / "app" / "src" / "main" / "assets").exists() or not any((demo / "app/src/main/assets").iterdir())
