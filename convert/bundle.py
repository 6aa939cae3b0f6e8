"""Write bundles atomically (the pipeline's and ``wrap``'s), and wrap an existing ncnn model.

A bundle is built in a temp directory beside the destination and renamed into
place only after it has been verified, so a failure at any step leaves an
existing bundle untouched and never leaves a half bundle behind.
"""

from __future__ import annotations

import datetime as _dt
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from litedet.runtime.manifest import Manifest, sha256_file

__all__ = ["ConvertError", "ConvertResult", "wrap_ncnn_model", "atomic_bundle_dir", "assemble_manifest",
           "reference_image", "tool_versions", "PARAM_NAME", "BIN_NAME", "REF_DIR"]

PARAM_NAME, BIN_NAME = "model.ncnn.param", "model.ncnn.bin"
REF_DIR = "reference"


class ConvertError(ValueError):
    """Conversion input or result is wrong; the message says what and what would be right."""


@dataclass
class ConvertResult:
    bundle: Path
    manifest: Manifest
    timings: dict[str, float] = field(default_factory=dict)
    verify: dict[str, dict[str, float]] = field(default_factory=dict)


def tool_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("torch", "pnnx", "ncnn", "onnx", "onnxsim", "numpy", "litedet"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


@contextmanager
def atomic_bundle_dir(out: Path, force: bool) -> Iterator[Path]:
    """Yield a temp dir; on success it replaces ``out`` (only with ``force`` if it exists)."""
    out = Path(out)
    if out.exists() and not force:
        raise ConvertError(f"{out} already exists; pass --force to replace it (the old bundle is kept until the new one is complete)")
    if out.exists() and not out.is_dir():
        raise ConvertError(f"{out} exists and is not a directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; a bundle is an ordinary directory
    try:
        yield tmp
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            old.rmdir()
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def reference_image(width: int = 480, height: int = 352, seed: int = 0) -> np.ndarray:
    """A fixed, non-square BGR test card (gradients, blocks, stripes, noise):
    deterministic everywhere, textured roughly like a photo, and its size is
    not a stride multiple so padding is exercised."""
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([x / width * 255, y / height * 255, (x + y) / (width + height) * 255], axis=2)
    for _ in range(40):
        x0, y0 = rng.randint(0, width - 20), rng.randint(0, height - 20)
        w, h = rng.randint(10, width // 3), rng.randint(10, height // 3)
        img[y0:y0 + h, x0:x0 + w] = rng.randint(0, 256, size=3)
    for _ in range(6):  # stripes of several periods and orientations
        period, angle = rng.uniform(4, 24), rng.uniform(0, np.pi)
        x0, y0 = rng.randint(0, width - 60), rng.randint(0, height - 60)
        w, h = rng.randint(40, width // 3), rng.randint(40, height // 3)
        phase = (np.cos(angle) * x + np.sin(angle) * y) * 2 * np.pi / period
        img[y0:y0 + h, x0:x0 + w] = (127 + 120 * np.sin(phase[y0:y0 + h, x0:x0 + w]))[..., None]
    img += rng.normal(0, 16, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def assemble_manifest(arch: str, input_size: int, deploy, fp16: bool, param_sha: str, bin_sha: str) -> Manifest:
    """The family's DeploySpec plus the bundle's files and hashes, validated."""
    return Manifest(
        architecture=arch, variant=f"{arch}-{input_size}", task=deploy.task,
        param=PARAM_NAME, bin=BIN_NAME, param_sha256=param_sha, bin_sha256=bin_sha,
        weight_storage="fp16" if fp16 else "fp32", input=deploy.input, resize=deploy.resize,
        outputs=deploy.outputs, postprocess=deploy.postprocess, class_names=deploy.class_names,
    ).validate()


def now_utc() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def wrap_ncnn_model(param: str | Path, bin_path: str | Path, out: str | Path, arch: str = "nanodet_m",
                    input_size: int | None = None, force: bool = False, score_threshold: float | None = None) -> Manifest:
    """Make a bundle from an existing NanoDet ncnn model with legacy per-stride
    outputs (``cls_pred_stride_{s}`` with sigmoid, ``dis_pred_stride_{s}``).
    ``input_size`` defaults to the architecture's (the model registry's)."""
    from litedet.models import create_model, model_info
    from litedet.ncnn_param import first_weight_storage, parse_param

    from .families import GraphIO
    from .families.nanodet import gfl_deploy_spec

    param, bin_path = Path(param), Path(bin_path)
    for p in (param, bin_path):
        if not p.is_file():
            raise ConvertError(f"ncnn model file not found: {p}")
    info = model_info(arch)
    if info.family != "nanodet":
        raise ConvertError(f"wrap makes bundles from NanoDet ncnn models; {arch} is a {info.family!r} model "
                           "(convert it from its checkpoint with 'litedet convert')")
    input_size = info.input_size if input_size is None else input_size
    spec = create_model(arch).spec
    layers = parse_param(param)
    inputs = [layer.name for layer in layers if layer.type == "Input"]
    blobs = {b for layer in layers for b in layer.inputs + layer.outputs}
    cls_b = [f"cls_pred_stride_{s}" for s in spec.strides]
    dis_b = [f"dis_pred_stride_{s}" for s in spec.strides]
    missing = [b for b in cls_b + dis_b if b not in blobs]
    if len(inputs) != 1 or missing:
        raise ConvertError(f"{param.name} is not a legacy NanoDet ncnn model: expected one Input and blobs "
                           f"{cls_b + dis_b}; missing {missing}, inputs {inputs}")
    # a Reshape with a fixed first dimension means the graph only runs at one size
    fixed = any(layer.type == "Reshape" and isinstance(layer.p(0, -1), int) and layer.p(0, -1) > 0 for layer in layers)
    with atomic_bundle_dir(Path(out), force) as tmp:
        shutil.copyfile(param, tmp / PARAM_NAME)
        shutil.copyfile(bin_path, tmp / BIN_NAME)
        deploy = gfl_deploy_spec(spec, arch, input_size, GraphIO(inputs[0], cls_b + dis_b, not fixed),
                                 list(spec.class_names))
        if score_threshold is not None:
            deploy.postprocess.score_threshold = score_threshold
        m = assemble_manifest(arch, input_size, deploy, first_weight_storage(bin_path) == "fp16",
                              sha256_file(tmp / PARAM_NAME), sha256_file(tmp / BIN_NAME))
        m.provenance = {"weights": "ncnn-wrapped", "source_checkpoint": str(param.resolve()),
                        "source_sha256": sha256_file(param) + ":" + sha256_file(bin_path), "route": "wrap",
                        "tools": tool_versions(), "created": now_utc()}
        m.validate().write(tmp / "manifest.json")
    return m
