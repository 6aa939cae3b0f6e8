"""Write bundles atomically: convert a model, or wrap an existing ncnn model.

A bundle is built in a temp directory beside the destination and renamed into
place only after it has been verified, so a failure at any step leaves an
existing bundle untouched and never leaves a half bundle behind.
"""

from __future__ import annotations

import datetime as _dt
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from litedet.runtime.manifest import (InputSpec, Manifest, OutputSpec, PostprocessSpec, ResizeSpec, sha256_file)

__all__ = ["ConvertError", "ConvertResult", "convert_model", "wrap_ncnn_model", "atomic_bundle_dir",
           "reference_image", "tool_versions"]

PARAM_NAME, BIN_NAME = "model.ncnn.param", "model.ncnn.bin"
REF_DIR = "reference"
# convert refuses a bundle whose fp32 ncnn outputs drift further than this from torch
VERIFY_MIN_COSINE = 0.9999


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


def _detection_manifest(spec, arch: str, input_size: int, input_blob: str, output_blobs: list[str],
                        dynamic: bool, fp16: bool, param_sha: str, bin_sha: str) -> Manifest:
    strides = list(spec.strides)
    n = len(strides)
    if len(output_blobs) != 2 * n:
        raise ConvertError(f"converted graph has {len(output_blobs)} outputs; {arch} needs {2 * n}")
    chans = 4 * (spec.reg_max + 1)
    outputs = [OutputSpec(b, "cls_scores", s, spec.num_classes, "sigmoid") for b, s in zip(output_blobs[:n], strides)]
    outputs += [OutputSpec(b, "dist_logits", s, chans) for b, s in zip(output_blobs[n:], strides)]
    return Manifest(
        architecture=arch, variant=f"{arch}-{input_size}", task="detection",
        param=PARAM_NAME, bin=BIN_NAME, param_sha256=param_sha, bin_sha256=bin_sha,
        weight_storage="fp16" if fp16 else "fp32",
        input=InputSpec(input_blob, "bgr", list(spec.mean_bgr), [1.0 / s for s in spec.std_bgr]),
        resize=ResizeSpec(target=input_size, pad_multiple=max(strides),
                          pad_mode="stride_multiple" if dynamic else "fixed", pad_value=0.0),
        outputs=outputs,
        postprocess=PostprocessSpec(kind="gfl", strides=strides, reg_max=spec.reg_max,
                                    center_offset=spec.center_offset),
        class_names=list(spec.class_names),
    ).validate()


IMAGENET_MEAN_RGB = (123.675, 116.28, 103.53)
IMAGENET_STD_RGB = (58.395, 57.12, 57.375)


def _calibration_batch(mean, std, size: int, rgb: bool = False):
    """The reference card, a flipped copy and two crops, normalised, as a batch."""
    import cv2
    import torch

    img = reference_image()
    if rgb:
        img = img[:, :, ::-1]
    views = [img, img[:, ::-1], img[40:300, 60:400], img[::-1, 100:]]
    mean, std = np.array(mean, np.float32), np.array(std, np.float32)
    arr = [(cv2.resize(np.ascontiguousarray(v), (size, size)).astype(np.float32) - mean) / std for v in views]
    return torch.from_numpy(np.stack(arr).transpose(0, 3, 1, 2).copy())


def _seeded_nanodet(model, seed: int, size: int, logit_std: float = 1.0) -> None:
    """Untrained but well-behaved weights for the built-in default: random convs,
    BatchNorm statistics calibrated on the reference card, class logits scaled to
    ``logit_std`` around upstream's 0.01 prior, so a few dozen cells pass the
    score threshold (as with a trained model) instead of every one or none."""
    import torch

    from litedet.models.init import seeded_random_weights

    batch = _calibration_batch(model.spec.mean_bgr, model.spec.std_bgr, size)
    seeded_random_weights(model, seed, batch)
    head = model.head
    with torch.no_grad():
        for conv in head.gfl_cls:
            conv.bias.zero_()
        cls_logits, _ = model.eval()(batch)
        std = float(torch.cat([c.flatten() for c in cls_logits]).std())
        for conv in head.gfl_cls:
            conv.weight[: head.num_classes] *= logit_std / std
    head.reset_class_prior()


def _classification_manifest(arch: str, input_size: int, input_blob: str, output_blobs: list[str], fp16: bool,
                             class_names: list[str], param_sha: str, bin_sha: str) -> Manifest:
    if len(output_blobs) != 1:
        raise ConvertError(f"converted classifier has {len(output_blobs)} outputs; expected one (the logits)")
    return Manifest(
        architecture=arch, variant=f"{arch}-{input_size}", task="classification",
        param=PARAM_NAME, bin=BIN_NAME, param_sha256=param_sha, bin_sha256=bin_sha,
        weight_storage="fp16" if fp16 else "fp32",
        # torchvision's ImageNet recipe: RGB, mean/std in 0..255 units, resize 256 + centre crop 224
        input=InputSpec(input_blob, "rgb", list(IMAGENET_MEAN_RGB), [1.0 / s for s in IMAGENET_STD_RGB]),
        resize=ResizeSpec(target=input_size, pad_multiple=1, policy="center_crop", crop_fraction=0.875),
        outputs=[OutputSpec(output_blobs[0], "logits", 0, len(class_names))],
        postprocess=PostprocessSpec(kind="softmax_topk", top_k=5),
        class_names=list(class_names),
    ).validate()


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    den = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / den) if den > 0 else float(np.array_equal(a, b))


def convert_model(arch: str, out: str | Path, checkpoint: str | Path | None = None, input_size: int | None = None,
                  fp32: bool = False, route: str = "pnnx", force: bool = False, seed: int = 0,
                  progress: bool = True, class_names: list[str] | None = None,
                  model_kwargs: dict | None = None) -> ConvertResult:
    """Checkpoint -> verified bundle directory (see DESIGN.md for its contents).

    ``input_size`` defaults to the architecture's (320 for NanoDet-m, 224 for
    the ImageNet backbones); ``class_names`` names a classifier's outputs
    (default ``class_0`` ... ``class_999``: no ImageNet label list ships here)."""
    import torch
    from tqdm import tqdm

    from litedet.models import create_model, load_checkpoint, model_info
    from litedet.runtime.classifier import Classifier
    from litedet.runtime.detector import Detector

    from .export import export_onnx, run_pnnx, trace_deploy

    out = Path(out)
    info = model_info(arch)  # raises naming the known architectures
    task = info["task"]
    input_size = info["input_size"] if input_size is None else input_size
    if route not in ("pnnx", "onnx"):
        raise ConvertError(f"unknown route {route!r}; expected 'pnnx' or 'onnx'")
    if input_size <= 0 or input_size % 32:
        raise ConvertError(f"input size {input_size} is not a multiple of 32 (the largest stride); try "
                           f"{max(32, input_size // 32 * 32)} or {(input_size // 32 + 1) * 32}")
    if out.exists() and not force:
        raise ConvertError(f"{out} already exists; pass --force to replace it")
    model = create_model(arch, **(model_kwargs or {}))
    if task == "classification":
        class_names = list(class_names) if class_names else [f"class_{i}" for i in range(model.num_classes)]
        if len(class_names) != model.num_classes:
            raise ConvertError(f"{len(class_names)} class names given; {arch} has {model.num_classes} outputs")
    timings: dict[str, float] = {}
    steps = tqdm(total=6, desc=f"convert {arch}", disable=not progress, leave=False)

    def step(name: str, t0: float) -> float:
        timings[name] = round(time.perf_counter() - t0, 3)
        steps.update(1)
        steps.set_postfix_str(name)
        return time.perf_counter()

    t = t_start = time.perf_counter()
    if checkpoint is None:
        if task == "detection":
            _seeded_nanodet(model, seed, input_size)
        else:
            from litedet.models.init import seeded_random_weights

            seeded_random_weights(model, seed, _calibration_batch(IMAGENET_MEAN_RGB, IMAGENET_STD_RGB, input_size, rgb=True))
        provenance = {"weights": "seeded-random", "seed": seed, "source_checkpoint": None, "source_sha256": None,
                      "note": f"UNTRAINED: seeded random weights (seed {seed}, Kaiming convs, BatchNorm statistics "
                              "calibrated on the reference card); outputs exercise every layer for parity but mean nothing"}
    else:
        rep = load_checkpoint(model, checkpoint)
        provenance = {"weights": rep.kind, "source_checkpoint": str(Path(checkpoint).resolve()),
                      "source_sha256": rep.sha256, "used_ema": rep.used_ema, "load_details": rep.details}
    model.eval()
    t = step("load", t)

    shape = (1, 3, input_size, input_size)
    # second shape for pnnx: BOTH sides differ from the first, else pnnx keeps the
    # unchanged side as a constant (a landscape-only second shape bakes the width
    # into the head's Reshape and portrait inputs come out with the wrong rows)
    big = max(model.spec.strides) if task == "detection" else 32
    shape2 = (1, 3, max(big, input_size - 2 * big), max(big, input_size - big))
    out_names = model.deploy_output_names() if task == "detection" else ["logits"]
    with atomic_bundle_dir(out, force) as tmp:
        work = tmp / ".work"
        work.mkdir()
        (tmp / REF_DIR).mkdir()
        example = torch.rand(shape, generator=torch.Generator().manual_seed(seed))
        ts = trace_deploy(model, example)
        ts_path = tmp / REF_DIR / "model.torchscript.pt"
        ts.save(str(ts_path))
        t = step("trace", t)

        if route == "pnnx":
            src, s2 = ts_path, shape2
        else:
            src = export_onnx(model, example, work / "model.onnx", out_names)
            s2 = None
        res = run_pnnx(src, work, shape, s2, fp16=not fp32)
        ref_bin = None
        if not fp32:  # an fp32 bin of the same graph, so parity separates conversion error from fp16 rounding
            res32 = run_pnnx(src, work, shape, s2, fp16=False, stem="model_fp32")
            if res32.param.read_text() != res.param.read_text():
                raise ConvertError("pnnx wrote different graphs for fp16 and fp32 weights; cannot keep an fp32 reference")
            ref_bin = f"{REF_DIR}/model.fp32.ncnn.bin"
            shutil.copyfile(res32.bin, tmp / ref_bin)
        shutil.copyfile(res.param, tmp / PARAM_NAME)
        shutil.copyfile(res.bin, tmp / BIN_NAME)
        t = step("pnnx", t)

        shas = sha256_file(tmp / PARAM_NAME), sha256_file(tmp / BIN_NAME)
        if task == "detection":
            manifest = _detection_manifest(model.spec, arch, input_size, res.input_name, res.output_names,
                                           res.dynamic_shape, not fp32, *shas)
        else:
            manifest = _classification_manifest(arch, input_size, res.input_name, res.output_names, not fp32,
                                                class_names, *shas)
        manifest.provenance = {**provenance, "route": route, "tools": tool_versions(),
                               "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                               "deploy_outputs": dict(zip(res.output_names, out_names))}
        manifest.write(tmp / "manifest.json")

        # reference: a fixed image, its preprocessed tensor, torch's outputs for it
        img = reference_image()
        import cv2

        cv2.imwrite(str(tmp / REF_DIR / "image.png"), img)
        runner = Detector if task == "detection" else Classifier
        det32 = runner.from_bundle(tmp, fp16=False, bin_override=tmp / (ref_bin or BIN_NAME))
        chw, _ = det32.preprocess_array(img)
        with torch.no_grad():
            touts = ts(torch.from_numpy(chw)[None])
        tref = {name: o[0].numpy() for name, o in zip(res.output_names, touts)}
        np.save(tmp / REF_DIR / "input.npy", chw)
        np.savez(tmp / REF_DIR / "outputs.npz", **tref)
        t = step("reference", t)

        n32 = det32.run_array(chw)
        verify = {}
        for name, ref in tref.items():
            got = n32[name].reshape(ref.shape)
            verify[name] = {"max_abs": float(np.abs(got - ref).max()), "cosine": _cosine(got, ref)}
        if res.dynamic_shape and task == "detection":  # every output must follow the input in both directions
            for w, h in ((input_size, input_size - 2 * big), (input_size - 2 * big, input_size)):
                outs = det32.run_array(np.zeros((3, h, w), np.float32))
                for o in manifest.outputs:
                    rows = outs[o.blob].reshape(-1, o.channels).shape[0]
                    if rows != (w // o.stride) * (h // o.stride):
                        raise ConvertError(f"converted graph is not shape-agnostic: output {o.blob} has {rows} rows for a "
                                           f"{w}x{h} input, expected {(w // o.stride) * (h // o.stride)}")
        worst = min(verify.items(), key=lambda kv: kv[1]["cosine"])
        if worst[1]["cosine"] < VERIFY_MIN_COSINE:
            raise ConvertError(f"converted model does not reproduce torch: output {worst[0]} has cosine "
                               f"{worst[1]['cosine']:.6f} (< {VERIFY_MIN_COSINE}) on the reference input")
        t = step("verify", t)

        manifest.reference = {"image": f"{REF_DIR}/image.png", "input": f"{REF_DIR}/input.npy",
                              "outputs": f"{REF_DIR}/outputs.npz", "torchscript": f"{REF_DIR}/model.torchscript.pt",
                              "fp32_bin": ref_bin, "verify_fp32": verify}
        manifest.write(tmp / "manifest.json")
        shutil.rmtree(work)
        timings["total"] = round(time.perf_counter() - t_start, 3)
        step("write", t)
    steps.close()
    return ConvertResult(out, manifest, timings, verify)


def wrap_ncnn_model(param: str | Path, bin_path: str | Path, out: str | Path, arch: str = "nanodet_m",
                    input_size: int = 320, force: bool = False, score_threshold: float | None = None) -> Manifest:
    """Make a bundle from an existing NanoDet ncnn model with legacy per-stride
    outputs (``cls_pred_stride_{s}`` with sigmoid, ``dis_pred_stride_{s}``)."""
    from litedet.models import create_model
    from litedet.models.ncnn_import import first_weight_storage, parse_param

    param, bin_path = Path(param), Path(bin_path)
    for p in (param, bin_path):
        if not p.is_file():
            raise ConvertError(f"ncnn model file not found: {p}")
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
        m = _detection_manifest(spec, arch, input_size, inputs[0], cls_b + dis_b, not fixed,
                                first_weight_storage(bin_path) == "fp16", sha256_file(tmp / PARAM_NAME), sha256_file(tmp / BIN_NAME))
        if score_threshold is not None:
            m.postprocess.score_threshold = score_threshold
        m.provenance = {"weights": "ncnn-wrapped", "source_checkpoint": str(param.resolve()),
                        "source_sha256": sha256_file(param) + ":" + sha256_file(bin_path), "route": "wrap",
                        "tools": tool_versions(),
                        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        m.validate().write(tmp / "manifest.json")
    return m
