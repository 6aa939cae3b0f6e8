"""Import weights from an exported ONNX model (e.g. upstream NanoDet's tools/export_onnx.py)
into a PyTorch definition: its Conv nodes, in graph order, are zipped with the model's
convolutions as the ncnn import does (torch.onnx folds BatchNorm into the convs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import nn

from litedet.models.ncnn_import import NcnnImportError, SourceConv, import_conv_weights

__all__ = ["read_onnx_convs", "import_onnx_weights", "onnx_last_conv_out", "onnx_input_size", "architectures_for_convs"]


def read_onnx_convs(path: str | Path) -> list[SourceConv]:
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load(str(path))
    except Exception as e:  # protobuf raises several types for a foreign file
        raise NcnnImportError(f"{path} is not an ONNX model ({type(e).__name__}: {str(e)[:120]})") from None
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    consts = {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in model.graph.node
              if n.op_type == "Constant" and n.attribute and n.attribute[0].type == onnx.AttributeProto.TENSOR}
    tensors = {**consts, **init}
    for node in model.graph.node:  # the exporter shares equal initializers through Identity nodes
        if node.op_type == "Identity" and node.input[0] in tensors:
            tensors[node.output[0]] = tensors[node.input[0]]
    convs = []
    for node in model.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            continue
        if node.op_type != "Conv":
            raise NcnnImportError(f"{Path(path).name}: node {node.name!r} is a {node.op_type}, which the import "
                                  "does not read; supported weight nodes: Conv")
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if any(name and name not in tensors for name in node.input[1:3]):
            raise NcnnImportError(f"{Path(path).name}: the weights of Conv {node.name!r} are not constants")
        w = tensors[node.input[1]].astype(np.float32)
        b = tensors[node.input[2]].astype(np.float32) if len(node.input) > 2 and node.input[2] else None
        kh, kw = w.shape[2], w.shape[3]
        sh, sw = (list(attrs.get("strides", [1, 1])) + [1, 1])[:2]
        groups = int(attrs.get("group", 1))
        convs.append(SourceConv(f"ONNX Conv '{node.name}' out={w.shape[0]} kernel={kh}x{kw} stride={sh}x{sw} "
                                f"groups={groups}", int(w.shape[0]), (kh, kw), (int(sh), int(sw)), groups,
                                w.ravel(), b))
    return convs


def onnx_last_conv_out(path: str | Path) -> int | None:
    convs = read_onnx_convs(path)
    return convs[-1].out if convs else None


def import_onnx_weights(model: nn.Module, path: str | Path, forward=None, example=None) -> dict[str, int]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {path}")
    return import_conv_weights(model, read_onnx_convs(path), path.name, forward, example)


def onnx_input_size(path: str | Path) -> int | None:
    """The side of a static square [1, 3, S, S] input, else None."""
    import onnx

    dims = [d.dim_value for d in onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim]
    return dims[2] if len(dims) == 4 and dims[2] > 0 and dims[2] == dims[3] else None


def architectures_for_convs(convs: list[SourceConv], candidates: list[str], source: str) -> list[str]:
    """The candidate architectures (NanoDets: with the class count of the last conv) these convolutions fit."""
    from litedet.models import create_model

    n = convs[-1].out if convs else 0
    fits = []
    for arch in candidates:
        model = create_model(arch)
        reg = 4 * (model.spec.reg_max + 1) if hasattr(model, "spec") else 0
        if reg and n > reg:
            model = create_model(arch, num_classes=n - reg, class_names=tuple(f"c{i}" for i in range(n - reg)))
        try:
            import_conv_weights(model, convs, source)
        except NcnnImportError:
            continue
        fits.append(arch)
    return fits
