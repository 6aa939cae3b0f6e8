"""What of the Android demo can be checked without an SDK: its pure C++ helpers
(built and run with g++), the JNI table, and that model constants come from the config."""

from __future__ import annotations

import re
import shutil
import subprocess

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
    code = "\n".join(p.read_text() for p in [*CPP.glob("litedet_jni.cpp"), *CPP.glob("litedet_ncnn.*"),
                                             *(DEMO / "app/src/main/java").rglob("*.java")])
    for needle in ("cls_pred_stride", "dis_pred_stride", '"person"', '"in0"', '"out0"', "103.53", "0.017429"):
        assert needle not in code, needle


def test_cmake_builds_the_core_without_fp_contraction():
    cmake = (CPP / "CMakeLists.txt").read_text()
    assert "litedet_post.cpp" in cmake and "-ffp-contract=off" in cmake
    assert "litedet_capi.cpp" not in cmake  # the ctypes test API is desktop-only
