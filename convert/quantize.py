"""int8 in ncnn's own format, written in Python from ncnn's formats (the PyPI sdist has no
ncnn2table / ncnn2int8): the calibration maths (per-layer activation scales by KL, ACIQ or
min-max; per-output-channel weight scales), the calibration table as ncnn2table writes it, and
the int8 graph as ncnn2int8 writes it: ``8=1`` on each quantised Convolution,
ConvolutionDepthWise and InnerProduct, its weights int8 behind ncnn's tag 0x000D4B38, then its
bias, its weight scales and its input's scale, as ``load_model`` reads them
(layer/convolution.cpp, convolutiondepthwise.cpp, innerproduct.cpp). Pure functions over arrays
and files; ``int8_bundle.py`` runs them on a bundle.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from litedet.ncnn_param import NcnnLayer, parse_param, read_tagged

__all__ = ["METHODS", "QUANTIZED", "LayerWeights", "ActStats", "read_weights", "weight_scales", "kl_scale",
           "kl_scale_from_hist", "aciq_threshold", "activation_scale", "write_int8", "table_text"]

METHODS = ("kl", "aciq", "minmax")
TAG_INT8 = 0x000D4B38
QUANTIZED = ("Convolution", "ConvolutionDepthWise", "InnerProduct")
HIST_BINS = 2048
# layer types that carry no weights in the bin (anything else the walk cannot size is refused)
_WEIGHTLESS = ("Input", "Split", "ReLU", "Pooling", "Concat", "Softmax", "Sigmoid", "Reshape", "Permute", "Slice",
               "ShuffleChannel", "BinaryOp", "Eltwise", "Interp", "Flatten", "Crop", "Dropout", "Clip", "HardSigmoid",
               "HardSwish", "Swish", "Noop", "MemoryData", "UnaryOp", "Padding", "TanH", "ELU", "Mish", "Reduction")
# layers whose weights are raw float32 arrays (no storage tag), kept as they are: type -> floats per channel (0=)
_RAW_PER_CHANNEL = {"BatchNorm": 4}  # slope, mean, variance, bias


@dataclass
class LayerWeights:
    layer: NcnnLayer
    weight: np.ndarray  # float32, flat, in ncnn's order (output channel major)
    bias: np.ndarray | None
    span: tuple[int, int]  # byte range of the layer's weights and bias in the bin they were read from


def read_weights(param: Path, bin_path: Path) -> tuple[list[NcnnLayer], dict[str, LayerWeights]]:
    """Every quantisable layer's weights by layer name (bins in fp32 or fp16 storage); refuses a
    layer type whose weights it cannot size, and a bin that is not the param's."""
    layers = parse_param(param)
    buf = memoryview(Path(bin_path).read_bytes())
    off, out = 0, {}
    for layer in layers:
        if layer.type in QUANTIZED:
            if int(layer.p(8, 0)):
                raise ValueError(f"layer {layer.name} is already int8 (8=1 in {Path(param).name}); quantize an "
                                 "fp16 or fp32 bundle")
            start = off
            w, off = read_tagged(buf, off, int(layer.p(6 if layer.type != "InnerProduct" else 2)),
                                 f"layer {layer.name} ({layer.type})")
            bias = None
            if int(layer.p(5 if layer.type != "InnerProduct" else 1, 0)):
                n = int(layer.p(0))
                bias = np.frombuffer(buf, dtype="<f4", count=n, offset=off).copy()
                off += 4 * n
            out[layer.name] = LayerWeights(layer, w, bias, (start, off))
        elif layer.type in _RAW_PER_CHANNEL:
            off += 4 * _RAW_PER_CHANNEL[layer.type] * int(layer.p(0))
        elif layer.type not in _WEIGHTLESS:
            raise ValueError(f"layer {layer.name} has type {layer.type}; litedet quantize walks graphs of "
                             f"{', '.join(QUANTIZED)} and weightless layers only")
    if off != len(buf):
        raise ValueError(f"{bin_path}: read {off} of {len(buf)} bytes; param and bin do not belong together")
    return layers, out


def _groups(layer: NcnnLayer) -> int:
    """Rows of the weight scales: output channels, or groups of a depthwise convolution."""
    return int(layer.p(7, 1)) if layer.type == "ConvolutionDepthWise" else int(layer.p(0))


def _winograd_6bit(layer: NcnnLayer) -> bool:
    """ncnn's int8 winograd F43 (3x3, stride 1, dilation 1 Convolution) needs 6-bit weights (ncnn2table)."""
    k = (int(layer.p(1, 0)), int(layer.p(11, layer.p(1, 0))))
    s = (int(layer.p(3, 1)), int(layer.p(13, layer.p(3, 1))))
    d = (int(layer.p(2, 1)), int(layer.p(12, layer.p(2, 1))))
    return layer.type == "Convolution" and k == (3, 3) and s == (1, 1) and d == (1, 1)


def aciq_threshold(absmax: float, n: int, bits: int = 8) -> float:
    """ACIQ's clip for a Gaussian of ``n`` samples whose largest magnitude is ``absmax`` (ncnn2table's)."""
    alpha = (0, 1.71063519, 2.15159277, 2.55913646, 2.93620062, 3.28691474, 3.6151146, 3.92403714)[bits - 1]
    gaussian_const = (0.5 * 0.35) * (1 + math.sqrt(math.pi * math.log(4)))
    std = absmax * 2 * gaussian_const / math.sqrt(2 * math.log(max(n, 2)))
    return alpha * std


def weight_scales(lw: LayerWeights, method: str = "kl") -> np.ndarray:
    """Per output channel (per group for depthwise): 127 / max|w| (31 for 6-bit winograd layers),
    or ACIQ's clip for ``method="aciq"``, as ncnn2table computes them."""
    rows = np.abs(lw.weight.reshape(_groups(lw.layer), -1))
    amax = rows.max(axis=1).astype(np.float64)
    bits = 6 if _winograd_6bit(lw.layer) else 8
    top = 31.0 if bits == 6 else 127.0
    if method == "aciq":
        amax = np.array([aciq_threshold(a, rows.shape[1], bits) for a in amax])
    return np.where(amax > 0, top / np.maximum(amax, 1e-30), 1.0).astype(np.float32)


@dataclass
class ActStats:
    """One layer input's statistics over the calibration images."""

    absmax: float = 0.0
    total: int = 0  # values of one image's blob (ACIQ's N)
    hist: np.ndarray | None = None  # HIST_BINS counts of |x| over (0, absmax], zeros left out (KL)

    def add_absmax(self, x: np.ndarray) -> None:
        self.absmax = max(self.absmax, float(np.abs(x).max(initial=0.0)))
        self.total = int(x.size)

    def add_hist(self, x: np.ndarray) -> None:
        a = np.abs(x.ravel())
        a = a[a > 0]
        if self.hist is None:
            self.hist = np.zeros(HIST_BINS, np.float64)
        if self.absmax > 0 and a.size:
            idx = np.minimum((a / self.absmax * HIST_BINS).astype(np.int64), HIST_BINS - 1)
            self.hist += np.bincount(idx, minlength=HIST_BINS)


def activation_scale(stats: ActStats, method: str) -> float:
    """The input scale of one quantised layer from its calibration statistics."""
    if stats.absmax <= 0:
        return 1.0
    if method == "minmax":
        return 127.0 / stats.absmax
    if method == "aciq":
        return 127.0 / min(aciq_threshold(stats.absmax, stats.total), stats.absmax)
    return kl_scale_from_hist(stats.hist, stats.absmax)


def kl_scale(samples: np.ndarray, bins: int = HIST_BINS) -> float:
    """KL calibration of one set of samples (see kl_scale_from_hist)."""
    s = ActStats()
    s.add_absmax(samples)
    s.add_hist(samples)
    return kl_scale_from_hist(s.hist, s.absmax) if s.absmax > 0 else 1.0


def kl_scale_from_hist(hist: np.ndarray, absmax: float, target: int = 128, eps: float = 1e-4) -> float:
    """ncnn2table's KL calibration: for each threshold from 128 bins up, the clipped distribution
    (the tail folded into its last bin) against its 128-level quantisation expanded back; the
    threshold of least KL divergence, as the scale 127 / threshold. One deliberate difference:
    the expansion spreads each level only over the bins that held values (TensorRT's recipe);
    spreading it over empty bins too, as ncnn2table does, made every threshold look costly on
    post-ReLU histograms and clipped far too hard (SqueezeNet v1.1 top-1 0.495 against 0.685)."""
    hist = np.asarray(hist, np.float64)
    bins = len(hist)
    if hist.sum() == 0:
        return 127.0 / absmax
    best, best_t = np.inf, bins
    tail = np.concatenate([np.cumsum(hist[::-1])[::-1], [0.0]])  # tail[t] = sum(hist[t:])
    for t in range(target, bins):
        p = hist[:t].copy()
        p[t - 1] += tail[t]
        q = _quantized_expanded(hist[:t], target)
        p, q = p + eps, q + eps
        p, q = p / p.sum(), q / q.sum()
        kl = float(np.sum(p * np.log(p / q)))
        if kl < best:
            best, best_t = kl, t
    return 127.0 / ((best_t + 0.5) * absmax / bins)


def _quantized_expanded(h: np.ndarray, target: int) -> np.ndarray:
    """``h`` merged into ``target`` equal windows (their mean density), spread back over the bins
    each window covers (fractions at the edges), empty bins left empty."""
    n = len(h)
    w = n / target
    cum = np.concatenate([[0.0], np.cumsum(h)])

    def mass_to(x: np.ndarray) -> np.ndarray:  # the histogram's mass on [0, x)
        f = np.minimum(np.floor(x).astype(np.int64), n - 1)
        return cum[f] + (x - f) * h[f]

    edges = np.arange(target + 1) * w
    dens = np.diff(mass_to(edges)) / w  # per source bin, in each window
    k = np.arange(n, dtype=np.float64)
    j0 = np.minimum((k / w).astype(np.int64), target - 1)
    j1 = np.minimum(((k + 1) / w - 1e-9).astype(np.int64), target - 1)
    ov0 = np.minimum(k + 1, edges[j0 + 1]) - k
    ov1 = np.where(j1 != j0, (k + 1) - edges[j1], 0.0)
    q = dens[j0] * ov0 + dens[j1] * ov1
    return np.where(h > 0, q, 0.0)


def write_int8(param: Path, shipped_bin: Path, fp32: dict[str, LayerWeights], shipped: dict[str, LayerWeights],
               act_scales: dict[str, float], method: str, out_param: Path, out_bin: Path) -> dict[str, np.ndarray]:
    """The int8 param/bin. Layers in ``act_scales`` get ``8=1``, int8 weights from the fp32
    reference, the fp32 bias, their weight scales and input scale; every other layer's bytes are
    copied from the shipped bin unchanged (fp16 storage stays fp16). Returns the weight scales of
    the quantised layers by name."""
    raw = Path(shipped_bin).read_bytes()
    chunks, done, pos = [], {}, 0
    for name, sw in shipped.items():
        chunks.append(raw[pos:sw.span[0]])  # the raw arrays of layers between them (BatchNorm), as they are
        pos = sw.span[1]
        if name not in act_scales:
            chunks.append(raw[sw.span[0]:sw.span[1]])
            continue
        lw = fp32[name]
        ws = weight_scales(lw, method)
        w8 = np.clip(np.round(lw.weight.reshape(len(ws), -1) * ws[:, None]), -127, 127).astype(np.int8).ravel()
        chunks.append(struct.pack("<I", TAG_INT8) + w8.tobytes() + b"\0" * (-w8.size % 4))
        if lw.bias is not None:
            chunks.append(lw.bias.astype("<f4").tobytes())
        chunks.append(ws.astype("<f4").tobytes() + np.float32(act_scales[name]).astype("<f4").tobytes())
        done[name] = ws
    chunks.append(raw[pos:])
    lines = []
    for ln in Path(param).read_text().splitlines():
        tok = ln.split()
        lines.append(ln + " 8=1" if len(tok) > 1 and tok[1] in done else ln)
    Path(out_param).write_text("\n".join(lines) + "\n")
    Path(out_bin).write_bytes(b"".join(chunks))
    return done


def table_text(w_scales: dict[str, np.ndarray], act_scales: dict[str, float]) -> str:
    """The calibration table as ncnn2table writes it: ``NAME_param_0`` and the weight scales of
    each quantised layer, then ``NAME`` and its input's scale, one line each."""
    lines = [f"{n}_param_0 " + " ".join(f"{v:f}" for v in ws) for n, ws in w_scales.items()]
    lines += [f"{n} {act_scales[n]:f}" for n in w_scales]
    return "\n".join(lines) + "\n"
