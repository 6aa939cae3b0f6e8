"""What of the Android demo can be checked without an SDK: its pure C++ helpers
(built and run with g++), the JNI table, and that model constants come from the config."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT

DEMO = ROOT / "android_demo"
CPP = DEMO / "app" / "src" / "main" / "cpp"


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not installed")
def test_host_helpers_build_and_pass():
    r = subprocess.run(["bash", str(DEMO / "host_tests" / "run.sh")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"\b0 failed\b", r.stdout), r.stdout


def test_every_java_native_method_has_a_jni_definition():
    java = (DEMO / "app/src/main/java/com/litedet/demo/LiteDetNcnn.java").read_text()
    natives = re.findall(r"public native \S+ (\w+)\(", java)
    assert len(natives) == 7
    jni = (CPP / "litedet_jni.cpp").read_text()
    for name in natives:
        assert f"Java_com_litedet_demo_LiteDetNcnn_{name}(" in jni, name


def test_no_model_constants_in_the_app_code():
    """Blob names, class names, strides and thresholds come from NAME.cfg only."""
    code = "\n".join(p.read_text() for p in [*CPP.glob("litedet_jni.cpp"), *CPP.glob("litedet_ncnn.*"), *CPP.glob("litedet_*_ncnn.cpp"),
                                             *(DEMO / "app/src/main/java").rglob("*.java")])
    for needle in ("cls_pred_stride", "dis_pred_stride", '"person"', '"in0"', '"out0"', "103.53", "0.017429"):
        assert needle not in code, needle


def test_cmake_builds_the_core_without_fp_contraction():
    cmake = (CPP / "CMakeLists.txt").read_text()
    assert "LITEDET_CORE_SOURCES" in cmake and "-ffp-contract=off" in cmake
    assert "(_ncnn|_capi|litedet_jni)" in cmake  # the rule of cpp_core.core_sources
    assert "litedet_capi.cpp" not in cmake  # the ctypes test API is desktop-only


NCNN_SRC = Path(os.environ.get("LITEDET_NCNN_SRC", Path.home() / ".cache" / "litedet" / "ncnn-src"))


def _ncnn_headers() -> list[str]:
    """-I flags for the real ncnn headers (scripts/setup_ncnn_src.sh); fails under CI when missing."""
    src = sorted(NCNN_SRC.glob("ncnn-*/src"))
    if not (NCNN_SRC / "ok").is_file() or not src:
        msg = f"the ncnn C++ source is not set up in {NCNN_SRC}: run bash scripts/setup_ncnn_src.sh"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return [f"-I{src[-1]}", f"-I{NCNN_SRC / 'build-headers' / 'src'}", f"-I{CPP}"]


def test_demo_ncnn_code_compiles_against_the_real_ncnn_api():
    """The app's ncnn half (gfl and two-stage paths) against ncnn's own headers, warnings as errors
    (litedet_cpp, its desktop driver, is built and run by tests/test_litedet_cpp.py)."""
    for src in [CPP / "litedet_ncnn.cpp", *sorted(CPP.glob("litedet_*_ncnn.cpp"))]:
        r = subprocess.run(["g++", "-std=c++17", "-fsyntax-only", "-Wall", "-Wextra", "-Werror", *_ncnn_headers(),
                            str(src)], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, f"{src.name}: {r.stderr[-4000:]}"


def test_demo_loads_every_graph_the_config_names():
    """Two-stage configs name two graphs: the JNI loader and the desktop driver loop over them."""
    for path in (CPP / "litedet_jni.cpp", DEMO / "host_tests" / "litedet_cpp.cpp"):
        code = path.read_text()
        assert "graph_count()" in code and ("net(i)" in code or "net(g)" in code), path
        assert "det_.config().param" not in code and "cfg.param" not in code, path
