"""Import weights from an existing ncnn model (param + bin) into a PyTorch model.

ncnn stores layers in execution order and, for converted models, has
BatchNorm folded into the preceding convolution. We run the PyTorch model once
with hooks to get its convolutions in execution order, pair each with the
BatchNorm that consumes its output (if any), and zip that list against the
ncnn Convolution / ConvolutionDepthWise layers. Each pair is checked (kind,
kernel, stride, groups, channels, weight count) and any mismatch is an error
naming both layers. A folded conv is loaded as ``conv.weight = W`` and its BN
as the identity plus ``bias``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from litedet.ncnn_param import NcnnImportError, NcnnLayer, first_weight_storage, parse_param, read_tagged

__all__ = ["NcnnLayer", "NcnnImportError", "parse_param", "first_weight_storage", "read_conv_weights",
           "import_ncnn_weights", "import_conv_weights", "SourceConv"]

_CONV_TYPES = ("Convolution", "ConvolutionDepthWise")
# Layer types that carry no weights in the bin; anything else with weights is refused.
_WEIGHTLESS = {
    "Input", "Split", "Concat", "Slice", "Pooling", "ShuffleChannel", "Interp", "BinaryOp",
    "Sigmoid", "Reshape", "Permute", "ReLU", "Clip", "HardSwish", "HardSigmoid", "Softmax",
    "Flatten", "Crop", "Eltwise", "Dropout", "Noop", "Swish", "TanH", "Padding", "UnaryOp",
    "Reduction", "Squeeze", "ExpandDims", "Pooling3D", "Mish", "ELU", "GELU",
}


def read_conv_weights(param: str | Path, bin_path: str | Path) -> list[tuple[NcnnLayer, np.ndarray, np.ndarray | None]]:
    """(layer, weight, bias) for every convolution, in file order."""
    layers = parse_param(param)
    buf = memoryview(Path(bin_path).read_bytes())
    off = 0
    out = []
    for layer in layers:
        if layer.type in _CONV_TYPES:
            if layer.p(8, 0):
                raise NcnnImportError(f"layer {layer.name}: int8 convolution cannot be imported")
            where = f"layer {layer.name} ({layer.type})"
            w, off = read_tagged(buf, off, int(layer.p(6)), where)
            bias = None
            if layer.p(5, 0):
                n = int(layer.p(0))
                if off + 4 * n > len(buf):
                    raise NcnnImportError(f"bin ends before the bias of {where}")
                bias = np.frombuffer(buf, dtype="<f4", count=n, offset=off).copy()
                off += 4 * n
            out.append((layer, w, bias))
        elif layer.type not in _WEIGHTLESS:
            raise NcnnImportError(
                f"layer {layer.name} has type {layer.type}, which import does not read; "
                f"supported weight layers: {', '.join(_CONV_TYPES)}"
            )
    if off != len(buf):
        raise NcnnImportError(
            f"{bin_path}: read {off} bytes of weights but the file has {len(buf)}; param and bin do not belong together"
        )
    return out


@dataclass
class _TorchConv:
    name: str
    conv: nn.Conv2d
    bn: nn.BatchNorm2d | None
    bn_name: str | None


def _torch_convs_in_order(model: nn.Module, forward, example: torch.Tensor) -> list[_TorchConv]:
    names = {m: n for n, m in model.named_modules()}
    events: list[tuple[nn.Module, int, int]] = []  # (module, id(input), id(output))
    hooks = []

    def hook(mod, inp, outp):
        events.append((mod, id(inp[0]), id(outp)))

    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.BatchNorm2d)):
            hooks.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            forward(example)
    finally:
        for h in hooks:
            h.remove()
    convs: list[_TorchConv] = []
    for i, (mod, _, out_id) in enumerate(events):
        if not isinstance(mod, nn.Conv2d):
            continue
        bn = None
        if i + 1 < len(events) and isinstance(events[i + 1][0], nn.BatchNorm2d) and events[i + 1][1] == out_id:
            bn = events[i + 1][0]
        convs.append(_TorchConv(names[mod], mod, bn, names.get(bn) if bn is not None else None))
    seen, unique = set(), []
    for c in convs:  # a module executed twice (weight sharing) is one set of weights
        if c.conv not in seen:
            seen.add(c.conv)
            unique.append(c)
    return unique


def _describe_ncnn(layer: NcnnLayer) -> str:
    kw = int(layer.p(1))
    kh = int(layer.p(11, kw))
    sw = int(layer.p(3, 1))
    sh = int(layer.p(13, sw))
    groups = int(layer.p(7, 1)) if layer.type == "ConvolutionDepthWise" else 1
    return f"{layer.type} '{layer.name}' out={layer.p(0)} kernel={kh}x{kw} stride={sh}x{sw} groups={groups}"


@dataclass
class SourceConv:
    """One convolution of an exported graph (ncnn or ONNX), BatchNorm already folded in."""

    describe: str  # for messages: type, name, shape
    out: int
    kernel: tuple[int, int]  # (kh, kw)
    stride: tuple[int, int]  # (sh, sw)
    groups: int
    w: np.ndarray  # flat float32
    b: np.ndarray | None


def _ncnn_convs(param: Path, bin_path: Path) -> list[SourceConv]:
    out = []
    for layer, w, b in read_conv_weights(param, bin_path):
        kw = int(layer.p(1))
        sw = int(layer.p(3, 1))
        groups = int(layer.p(7, 1)) if layer.type == "ConvolutionDepthWise" else 1
        out.append(SourceConv(f"ncnn {_describe_ncnn(layer)}", int(layer.p(0)), (int(layer.p(11, kw)), kw),
                              (int(layer.p(13, sw)), sw), groups, w, b))
    return out


def import_ncnn_weights(model: nn.Module, param: str | Path, bin_path: str | Path,
                        forward=None, example: torch.Tensor | None = None) -> dict[str, int]:
    """Load an ncnn model's weights into ``model`` in place (see import_conv_weights)."""
    param, bin_path = Path(param), Path(bin_path)
    for p in (param, bin_path):
        if not p.is_file():
            raise FileNotFoundError(f"ncnn model file not found: {p}")
    return import_conv_weights(model, _ncnn_convs(param, bin_path), param.name, forward, example)


def import_conv_weights(model: nn.Module, convs: list[SourceConv], source: str, forward=None,
                        example: torch.Tensor | None = None) -> dict[str, int]:
    """Zip an exported graph's convolutions (file order) with the model's (execution order).

    ``forward`` (default ``model.forward_deploy`` or ``model``) is run once on
    ``example`` (default a 1x3x320x320 zero tensor) to record conv order. Each
    pair is checked (out channels, kernel, stride, groups, weight count); a
    folded conv becomes ``conv.weight = W`` and its BatchNorm the identity plus
    ``bias``. Returns counts for the report."""
    if forward is None:
        forward = getattr(model, "forward_deploy", model)
    if example is None:
        example = torch.zeros(1, 3, 320, 320)
    was_training = model.training
    model.eval()
    torch_convs = _torch_convs_in_order(model, forward, example)
    if len(convs) != len(torch_convs):
        name = type(model).__name__
        raise NcnnImportError(
            f"{source} is not a {name} graph: it has {len(convs)} convolution layers, {name} runs "
            f"{len(torch_convs)} (the exported model is another architecture)"
        )
    folded = 0
    with torch.no_grad():
        for idx, (sc, tc) in enumerate(zip(convs, torch_convs)):
            conv = tc.conv
            expect = (sc.out, sc.kernel, sc.stride, sc.groups, sc.w.size)
            got = (conv.out_channels, tuple(conv.kernel_size), tuple(conv.stride), conv.groups, conv.weight.numel())
            if expect != got:
                raise NcnnImportError(
                    f"convolution #{idx}: {sc.describe} ({sc.w.size} weights) does not match "
                    f"PyTorch '{tc.name}' out={got[0]} kernel={got[1][0]}x{got[1][1]} "
                    f"stride={got[2][0]}x{got[2][1]} groups={got[3]} ({got[4]} weights)"
                )
            conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(sc.w, np.float32)).reshape(conv.weight.shape))
            b = sc.b
            bias = torch.from_numpy(np.ascontiguousarray(b, np.float32)) if b is not None else torch.zeros(conv.out_channels)
            if conv.bias is not None:
                conv.bias.copy_(bias)
            elif tc.bn is not None:
                bn = tc.bn
                # identity BN that adds the folded bias: (x - 0) / sqrt((1 - eps) + eps) * 1 + bias
                bn.running_mean.zero_()
                bn.running_var.fill_(1.0 - bn.eps)
                bn.weight.fill_(1.0)
                bn.bias.copy_(bias)
                folded += 1
            elif b is not None and np.any(b != 0):
                raise NcnnImportError(
                    f"{sc.describe} has a bias but PyTorch '{tc.name}' has neither a bias nor a BatchNorm"
                )
    model.train(was_training)
    return {"convolutions": len(convs), "batchnorms_as_bias": folded}
