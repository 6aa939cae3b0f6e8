"""`pip install litedet` is the runtime side only: a fresh venv, offline, from the local
wheel cache (scripts/setup_wheels.sh), runs `litedet detect` and `litedet assets` on a
bundle, and `litedet convert` says which extra to install instead of a traceback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WHEELS = Path(os.environ.get("LITEDET_WHEELS", Path.home() / ".cache" / "litedet" / "wheels"))
SOURCES = ("litedet", "models", "convert", "runtime", "benchmarks", "pyproject.toml", "README.md")


def test_runtime_dependencies_are_numpy_ncnn_opencv_only():
    import tomllib

    proj = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert sorted(d.split("==")[0] for d in proj["dependencies"]) == ["ncnn", "numpy", "opencv-python-headless"]
    conv = " ".join(proj["optional-dependencies"]["convert"])
    assert all(p in conv for p in ("torch==", "pnnx==", "onnx==", "onnxsim==", "onnxruntime=="))
    assert proj["optional-dependencies"]["photos"] == ["scikit-image==0.26.0"]


@pytest.fixture(scope="module")
def runtime_venv(tmp_path_factory) -> Path:
    if not any(WHEELS.glob("ncnn-*.whl")):
        msg = f"no local wheel cache in {WHEELS}; run `bash scripts/setup_wheels.sh`"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    d = tmp_path_factory.mktemp("runtime-only")
    src = d / "src"
    src.mkdir()
    for name in SOURCES:  # a copy: building writes build/ and *.egg-info beside the sources
        p = ROOT / name
        if p.is_dir():
            shutil.copytree(p, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy(p, src / name)
    venv = d / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PIP_CONSTRAINT", None)
    proc = subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "--no-index", "--find-links", str(WHEELS),
                           str(src)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return venv


def _run(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(venv / "bin" / "litedet"), *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=300)


def test_the_runtime_install_has_no_conversion_side(runtime_venv, tmp_path):
    for mod in ("torch", "pnnx", "onnx", "skimage"):
        r = subprocess.run([str(runtime_venv / "bin" / "python"), "-c", f"import {mod}"], capture_output=True,
                           text=True, cwd=tmp_path)
        assert r.returncode != 0, f"{mod} is installed in the runtime-only venv"


def test_runtime_install_detects_and_writes_assets(runtime_venv, seeded_bundle, photos, tmp_path):
    import cv2

    img = tmp_path / "coffee.png"
    cv2.imwrite(str(img), photos["coffee"])
    r = _run(runtime_venv, "detect", str(seeded_bundle), str(img), "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    dets = json.loads(r.stdout)
    from litedet.runtime.detector import Detector

    want = Detector.from_bundle(seeded_bundle).detect(photos["coffee"])
    assert len(dets) == len(want) and [d["label"] for d in dets] == [d.label for d in want]
    r = _run(runtime_venv, "assets", str(seeded_bundle), str(tmp_path / "assets"), "--name", "nd", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "center_offset=0.5" in (tmp_path / "assets" / "nd.cfg").read_text()


@pytest.mark.parametrize("args", [["convert", "nanodet_m", "--out", "b"], ["list"], ["parity", "BUNDLE"]])
def test_convert_side_commands_name_the_extra(runtime_venv, seeded_bundle, tmp_path, args):
    args = [str(seeded_bundle) if a == "BUNDLE" else a for a in args]
    r = _run(runtime_venv, *args, cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "pip install 'litedet[convert]'" in r.stderr, r.stderr
    assert not (tmp_path / "b").exists()
