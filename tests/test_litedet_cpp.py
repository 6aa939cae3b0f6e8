"""litedet_cpp: the app's C++ pipeline (litedet_ncnn.cpp + the C++ core) linked against the real
ncnn library built from PyPI's sdist (scripts/setup_ncnn_lib.sh), on x86 and on aarch64 under
qemu (fp16 arithmetic). Its detections must equal the Python runtime's on real photos; its
bench output must be a litedet bench record."""

from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import pytest

from conftest import need_ncnn_lib
from litedet.benchmarks.cpp import CppError, build_litedet_cpp, cpp_record, ncnn_layers, run_cpp
from litedet.benchmarks.schema import Record
from litedet.convert.verify.compare import match_detections
from litedet.ncnn_param import parse_param
from litedet.runtime import open_bundle
from litedet.runtime.results import Detection
from litedet.runtime.devconfig import export_device_assets
from litedet.runtime.manifest import load_manifest


@pytest.fixture(scope="module")
def cpp_x86() -> Path:
    need_ncnn_lib("x86_64")
    return build_litedet_cpp("x86_64")


@pytest.fixture(scope="module")
def cpp_arm() -> Path:
    need_ncnn_lib("aarch64")
    return build_litedet_cpp("aarch64")


def _assets(bundle: Path, tmp: Path) -> Path:
    out = tmp / "assets"
    export_device_assets(bundle, out, name="model")
    return out


def _pngs(photos: dict, tmp: Path, names=("astronaut", "chelsea", "coffee", "motorcycle_left")) -> list[Path]:
    # PNG: lossless, so ncnn's stb_image and OpenCV read the same pixels (their JPEG decoders differ)
    out = []
    for n in names:
        p = tmp / f"{n}.png"
        cv2.imwrite(str(p), photos[n])
        out.append(p)
    return out


def _dets(rows: list) -> list[Detection]:
    return [Detection(x1, y1, x2, y2, s, int(lab), str(int(lab))) for x1, y1, x2, y2, s, lab in rows]


def _compare(bundle: Path, pngs: list[Path], cpp_out: list[dict], min_iou: float, max_score: float) -> list[str]:
    m = load_manifest(bundle)
    runner = open_bundle(bundle, threads=1, fp16=True)
    problems = []
    assert [Path(o["image"]).name for o in cpp_out] == [p.name for p in pngs]
    for png, got in zip(pngs, cpp_out):
        img = cv2.imread(str(png), cv2.IMREAD_COLOR)
        want = [Detection(d.x1, d.y1, d.x2, d.y2, d.score, d.label, str(d.label)) for d in runner.run(img)]
        mt = match_detections(want, _dets(got["detections"]), match_iou=0.5, score_threshold=m.postprocess.score_threshold,
                              borderline_margin=0.02, max_detections=m.postprocess.max_detections,
                              nms_iou=m.postprocess.nms_threshold)
        if mt.missed or mt.extra or (mt.matched and (mt.min_iou < min_iou or mt.max_score_diff > max_score)):
            problems.append(f"{png.name}: {mt}")
        assert got["width"] == img.shape[1] and got["height"] == img.shape[0]
    return problems


def test_ncnn_build_has_every_layer_our_bundles_use(reexported_bundle, thundernet_bundle):
    need_ncnn_lib("x86_64")
    need_ncnn_lib("aarch64")
    for arch in ("x86_64", "aarch64"):
        built = ncnn_layers(arch)
        assert {"Convolution", "ConvolutionDepthWise", "Packing", "Cast"} <= built
        for b in (reexported_bundle, thundernet_bundle):
            m = load_manifest(b)
            for _, rel, _ in m.graph_files():
                if rel.endswith(".param"):
                    used = {layer.type for layer in parse_param(b / rel)}
                    assert used <= built, f"{arch} ncnn lacks {sorted(used - built)} used by {b / rel}"


def _odd_sizes(photos: dict, tmp: Path) -> list[Path]:
    """Odd sizes and orientations, as a centre crop of a camera frame can be."""
    base = photos["motorcycle_left"]
    out = []
    for name, img in (("crop", base[:517, :333]), ("portrait", cv2.resize(base, (301, 517))),
                      ("landscape", cv2.resize(base, (517, 301))), ("tiny", cv2.resize(base, (20, 9)))):
        p = tmp / f"{name}.png"
        cv2.imwrite(str(p), img)
        out.append(p)
    return out


def test_litedet_cpp_compiles_without_warnings():
    need_ncnn_lib("x86_64")
    from litedet.benchmarks.cpp import CPP, MAIN, ncnn_lib_dir

    r = subprocess.run(["g++", "-std=c++17", "-fsyntax-only", "-Wall", "-Wextra", "-Werror", f"-I{CPP}",
                        f"-I{ncnn_lib_dir('x86_64') / 'install' / 'include' / 'ncnn'}", str(MAIN)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]


def test_x86_detections_equal_the_python_runtime(cpp_x86, reexported_bundle, thundernet_bundle, photos, tmp_path):
    pngs = _pngs(photos, tmp_path) + _odd_sizes(photos, tmp_path)
    for name, bundle in (("nanodet", reexported_bundle), ("thundernet", thundernet_bundle)):
        out = run_cpp(cpp_x86, ["detect", str(_assets(bundle, tmp_path / name)), *map(str, pngs)])
        assert len(out) == len(pngs)
        assert sum(len(o["detections"]) for o in out) > 0
        # the same ncnn source and kernels family on both sides: boxes to 1e-3 of IoU
        assert _compare(bundle, pngs, out, min_iou=0.99, max_score=0.01) == []


def test_aarch64_fp16_detections_match_under_qemu(arm_env, cpp_arm, reexported_bundle, photos, tmp_path):
    qemu = [str(arm_env.qemu), "-cpu", "cortex-a76"]
    pngs = _pngs(photos, tmp_path, ("astronaut", "coffee"))
    out = run_cpp(cpp_arm, ["detect", str(_assets(reexported_bundle, tmp_path)), *map(str, pngs)], qemu=qemu)
    # ARM fp16 arithmetic vs x86 (fp32 arithmetic): the ARM-parity bounds of the official weights
    assert _compare(reexported_bundle, pngs, out, min_iou=0.9, max_score=0.02) == []


@pytest.mark.arm
def test_int8_detections_equal_the_python_runtime_on_x86_and_match_on_arm(cpp_x86, cpp_arm, arm_env, int8_bundle,
                                                                         photos, tmp_path):
    assets = _assets(int8_bundle, tmp_path / "int8")
    assert "precision=int8" in (assets / "model.cfg").read_text()
    pngs = _pngs(photos, tmp_path)
    out = run_cpp(cpp_x86, ["detect", str(assets), *map(str, pngs)])
    assert sum(len(o["detections"]) for o in out) > 0
    assert _compare(int8_bundle, pngs, out, min_iou=0.99, max_score=0.01) == []  # the same int8 kernels
    # aarch64 (qemu): ARM's int8 kernels and fp16 arithmetic for the float layers, against x86 Python
    arm = run_cpp(cpp_arm, ["detect", str(assets), *map(str, pngs[:2])],
                  qemu=[str(arm_env.qemu), "-cpu", "cortex-a76"])
    assert _compare(int8_bundle, pngs[:2], arm, min_iou=0.85, max_score=0.05) == []
    bench = run_cpp(cpp_x86, ["bench", str(assets), str(pngs[0]), "--runs", "2", "--warmup", "1"])
    assert bench[0]["precision"] == "int8"


def test_bench_prints_a_litedet_bench_record(cpp_x86, thundernet_bundle, photos, tmp_path):
    (png,) = _pngs(photos, tmp_path, ("chelsea",))
    raw = run_cpp(cpp_x86, ["bench", str(_assets(thundernet_bundle, tmp_path)), str(png), "--runs", "3",
                            "--warmup", "1", "--fp32"])
    assert len(raw) == 1 and raw[0]["schema"] == "litedet-bench/1"
    rec = Record.from_dict(cpp_record(raw[0], "desktop"))
    assert (rec.runtime, rec.precision, rec.threads, rec.input) == ("litedet_cpp", "fp32", 1, [3, 224, 320])
    assert rec.latency_ms["runs"] == 3 and set(rec.stages_ms) == {"pre", "inference", "glue", "post"}
    assert all(rec.stages_ms[k]["median"] > 0 for k in ("pre", "inference", "glue"))
    assert 1e6 < rec.peak_rss_bytes < 2e9


def test_errors_are_one_line(cpp_x86, thundernet_bundle, photos, tmp_path):
    (png,) = _pngs(photos, tmp_path, ("chelsea",))
    with pytest.raises(CppError, match="is a litedet bundle, not device assets: write them with `litedet assets"):
        run_cpp(cpp_x86, ["detect", str(thundernet_bundle), str(png)])
    assets = _assets(thundernet_bundle, tmp_path)
    with pytest.raises(CppError, match="not a readable JPEG/PNG/BMP/PPM image"):
        run_cpp(cpp_x86, ["detect", str(assets), str(tmp_path / "missing.png")])
    (tmp_path / "assets" / "model.cfg").rename(tmp_path / "assets" / "a.cfg")
    (tmp_path / "assets" / "b.cfg").write_text((tmp_path / "assets" / "a.cfg").read_text())
    with pytest.raises(CppError, match="holds 2 configs"):
        run_cpp(cpp_x86, ["detect", str(assets), str(png)])
    p = subprocess.run([str(cpp_x86), "bench", str(assets / "a.cfg"), str(png), "--runs", "0"], capture_output=True,
                       text=True)
    assert p.returncode == 2 and "--runs needs a whole number >= 1" in p.stderr
    p = subprocess.run([str(cpp_x86)], capture_output=True, text=True)
    assert p.returncode == 2 and "usage: litedet_cpp detect" in p.stderr
    p = subprocess.run([str(cpp_x86), "serve", str(assets / "a.cfg"), str(png)], input="run\nstop\n",
                       capture_output=True, text=True)
    lines = p.stdout.splitlines()
    assert p.returncode == 2 and "unknown command 'stop' (expected run)" in p.stderr
    assert lines[0].startswith('{"ready": "thundernet_snet49"}') and '"glue": ' in lines[1]
