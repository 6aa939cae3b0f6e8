"""Shared fixtures: reference data (fails under CI when missing), bundles, real photos."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "reference"
NANODET_PARAM = REFERENCE / "nanodet-m" / "nanodet-m.param"
NANODET_BIN = REFERENCE / "nanodet-m" / "nanodet-m.bin"
NANODET416_PARAM = REFERENCE / "nanodet-m" / "nanodet-m-416.param"


def unavailable(msg: str) -> NoReturn:
    """A test's data or environment is missing: skip locally, fail when CI is set (CI sets up everything)."""
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


def need_reference(*paths: Path) -> None:
    """Skip locally when ../shared/reference is absent; fail when CI is set."""
    missing = [p for p in (paths or (REFERENCE,)) if not p.exists()]
    if missing:
        unavailable(f"reference data missing: {', '.join(map(str, missing))} (expected ../shared/reference beside "
                    "the repo)")


def need_ncnn_lib(arch: str) -> None:
    """The ncnn C++ library of scripts/setup_ncnn_lib.sh for ``arch`` (litedet_cpp links it)."""
    from litedet.benchmarks.cpp import CppError, ncnn_layers

    try:
        ncnn_layers(arch)
    except CppError as e:
        unavailable(str(e))


def converted(tmp_path_factory, arch: str, folder: str, **kw) -> Path:
    """``arch`` converted (seeded weights unless ``checkpoint``) into a fresh folder/bundle."""
    from litedet.convert.pipeline import convert_model

    out = tmp_path_factory.mktemp(folder) / "bundle"
    convert_model(arch, out, progress=False, **kw)
    return out


@pytest.fixture(scope="session")
def photos() -> dict[str, np.ndarray]:
    """scikit-image's real photos, BGR uint8."""
    import skimage.data as data

    out = {n: np.ascontiguousarray(getattr(data, n)()[:, :, ::-1]) for n in ("astronaut", "chelsea", "coffee")}
    out["motorcycle_left"] = np.ascontiguousarray(data.stereo_motorcycle()[0][:, :, ::-1])
    return out


@pytest.fixture(scope="session")
def seeded_bundle(tmp_path_factory) -> Path:
    """NanoDet-m with seeded random weights, converted once per session."""
    return converted(tmp_path_factory, "nanodet_m", "seeded")


@pytest.fixture(scope="session")
def official_bundle(tmp_path_factory) -> Path:
    """The official ncnn NanoDet-m, wrapped as a bundle (legacy per-stride outputs)."""
    need_reference(NANODET_PARAM, NANODET_BIN)
    from litedet.convert.families.nanodet_wrap import wrap_ncnn_model

    out = tmp_path_factory.mktemp("official") / "bundle"
    wrap_ncnn_model(NANODET_PARAM, NANODET_BIN, out)
    return out


@pytest.fixture(scope="session")
def reexported_bundle(tmp_path_factory) -> Path:
    """Official weights imported into our PyTorch NanoDet-m, re-exported as fp16."""
    need_reference(NANODET_PARAM, NANODET_BIN)
    return converted(tmp_path_factory, "nanodet_m", "reexported", checkpoint=NANODET_PARAM)


@pytest.fixture(scope="session")
def int8_bundle(tmp_path_factory, reexported_bundle) -> Path:
    """The official NanoDet-m weights quantised to int8 (min-max, every 20th reference photo)."""
    from litedet.convert.int8_bundle import quantize_bundle

    photos = REFERENCE / "imagenet-sample"
    need_reference(photos)
    root = tmp_path_factory.mktemp("int8")
    calib = root / "calib"
    calib.mkdir()
    for p in sorted(photos.glob("*.JPEG"))[::20]:
        (calib / p.name).symlink_to(p)
    quantize_bundle(reexported_bundle, calib, root / "bundle", method="minmax", progress=False)
    return root / "bundle"


@pytest.fixture(scope="session")
def thundernet_bundle(tmp_path_factory) -> Path:
    """ThunderNet-SNet49 with seeded random weights: two graphs, converted once per session."""
    return converted(tmp_path_factory, "thundernet_snet49", "thundernet")


@pytest.fixture(scope="session")
def arm_env():
    """The qemu-aarch64 environment of scripts/setup_arm.sh; skip locally when missing, fail under CI.
    (Session scope, listed first: a missing environment skips before any bundle is converted.)"""
    from litedet.convert.verify.arm import ArmEnv, ArmEnvError

    try:
        return ArmEnv.from_cache()
    except ArmEnvError as e:
        unavailable(str(e))


@pytest.fixture(scope="session")
def oracle():
    """torchvision's ops in their own venv (scripts/setup_oracle.sh); fails under CI when missing."""
    from oracle import ORACLE_DIR, Oracle, oracle_available

    if not oracle_available():
        unavailable(f"the torchvision oracle is not set up in {ORACLE_DIR}: run bash scripts/setup_oracle.sh")
    o = Oracle()
    yield o
    o.close()
