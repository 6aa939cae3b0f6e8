"""``litedet wrap``: NanoDet models users already have, as bundles. NanoDet's own code, so the
shared bundle writer (``convert/bundle.py``) and the CLI know no family.

- ncnn files with the legacy per-stride outputs (``cls_pred_stride_{s}`` with sigmoid,
  ``dis_pred_stride_{s}``): wrapped as they are (no PyTorch side);
- exports (an ONNX from upstream's tools/export_onnx.py, or ncnn made from one): their weights
  imported into litedet's definition, which is then converted (so parity works)."""

from __future__ import annotations

import shutil
from pathlib import Path

from litedet.runtime.manifest import Manifest, sha256_file

from ..bundle import (BIN_NAME, PARAM_NAME, ConvertError, assemble_manifest, atomic_bundle_dir, check_destination,
                      check_input_size, now_utc, tool_versions)

__all__ = ["is_legacy_ncnn", "wrap_ncnn_model", "wrap_exported", "wrap_onnx"]


def is_legacy_ncnn(param: Path) -> bool:
    """An ncnn model with the legacy per-stride outputs (wrapped as it is); a param that cannot be
    read counts as one, so wrap_ncnn_model names the problem."""
    from litedet.ncnn_param import NcnnImportError, parse_param

    try:
        blobs = {b for layer in parse_param(param) for b in layer.outputs}
    except (NcnnImportError, OSError, ValueError):
        return True
    return any(b.startswith("cls_pred_stride_") for b in blobs)


def wrap_ncnn_model(param: str | Path, bin_path: str | Path, out: str | Path, arch: str = "nanodet_m",
                    input_size: int | None = None, force: bool = False, score_threshold: float | None = None,
                    options: dict | None = None) -> Manifest:
    """Make a bundle from an existing NanoDet ncnn model with legacy per-stride
    outputs (``cls_pred_stride_{s}`` with sigmoid, ``dis_pred_stride_{s}``).
    ``input_size`` defaults to the architecture's (the model registry's)."""
    from litedet.models import create_model, model_info
    from litedet.ncnn_param import first_weight_storage, parse_param

    from .base import GraphIO
    from .nanodet import gfl_deploy_spec

    param, bin_path = Path(param), Path(bin_path)
    size_given = input_size is not None
    for p in (param, bin_path):
        if not p.is_file():
            raise ConvertError(f"ncnn model file not found: {p}")
    info = model_info(arch)
    if info.family != "nanodet":
        raise ConvertError(f"wrap makes bundles from NanoDet ncnn models; {arch} is a {info.family!r} model "
                           "(convert it from its checkpoint with 'litedet convert')")
    input_size = info.input_size if input_size is None else input_size
    check_input_size(input_size)
    check_destination(out, force)
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
                                 list(spec.class_names), options)
        if score_threshold is not None:
            deploy.postprocess.score_threshold = score_threshold
        m = assemble_manifest(arch, input_size, deploy, first_weight_storage(bin_path) == "fp16",
                              sha256_file(tmp / PARAM_NAME), sha256_file(tmp / BIN_NAME))
        m.provenance = {"weights": "ncnn-wrapped", "source_checkpoint": str(param.resolve()),
                        "source_sha256": sha256_file(param) + ":" + sha256_file(bin_path), "route": "wrap",
                        "tools": tool_versions(), "created": now_utc(),
                        # every NanoDet export: BGR, upstream's mean/norm; the size as the graph or --input-size says
                        "preprocessing": {k: "family convention" for k in ("pixel_format", "mean", "norm", "resize")}
                        | {"input_size": "flags" if size_given else "architecture default"}}
        m.validate().write(tmp / "manifest.json")
    return m


def wrap_exported(path: str | Path, out: str | Path, arch: str | None = None, config: str | Path | None = None,
                  input_size: int | None = None, force: bool = False, class_names: list[str] | None = None,
                  options: dict | None = None, progress: bool = True):
    """An exported NanoDet (an ONNX from upstream's tools/export_onnx.py, or an ncnn param/bin made
    from one, as in upstream's ncnn demos) -> a bundle: its weights are imported into litedet's
    definition (an ONNX is also checked against onnxruntime on itself), which is then converted, so
    the bundle has its PyTorch reference and parity works."""
    from litedet.models import list_models, model_info
    from litedet.models.ncnn_import import NcnnImportError, _ncnn_convs

    from ..onnx_import import architectures_for_convs, onnx_input_size, read_onnx_convs
    from ..pipeline import convert_model

    path = Path(path)
    is_onnx = path.suffix.lower() == ".onnx"
    if not path.is_file():
        raise ConvertError(f"{'ONNX' if is_onnx else 'ncnn'} model not found: {path}")
    if arch is None and config is None:
        nanodets = [a for a in list_models() if model_info(a).family == "nanodet"]
        try:
            convs = read_onnx_convs(path) if is_onnx else _ncnn_convs(path, path.with_suffix(".bin"))
        except (NcnnImportError, FileNotFoundError) as e:
            raise ConvertError(str(e)) from None
        fits = architectures_for_convs(convs, nanodets, path.name)
        if len(fits) != 1:
            raise ConvertError(f"{path.name} fits {', '.join(fits) if fits else 'no registered NanoDet'}; "
                               f"name the architecture with --arch or --config")
        arch = fits[0]
    if input_size is None and config is None and is_onnx:
        input_size = onnx_input_size(path)
    return convert_model(arch, out, checkpoint=path, input_size=input_size, force=force, class_names=class_names,
                         config=config, options=options, progress=progress)


wrap_onnx = wrap_exported
