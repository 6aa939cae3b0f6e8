"""Read ncnn's text ``.param`` files and tagged ``.bin`` weight blobs (numpy only).

The one param parser of the project: the weight import (``models/ncnn_import.py``),
pnnx's result checks, ``litedet wrap`` and the reference-graph benchmarks all
use it, so it must not need torch.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["NcnnLayer", "NcnnImportError", "parse_param", "first_weight_storage", "read_tagged"]

_MAGIC = 7767517
_TAG_FP16 = 0x01306B47
_TAG_INT8 = 0x000D4B38
_TAG_FP32 = 0x0002C056
class NcnnImportError(ValueError):
    """The ncnn model cannot be read, or imported into the given PyTorch definition."""


@dataclass
class NcnnLayer:
    type: str
    name: str
    inputs: list[str]
    outputs: list[str]
    params: dict[int, object] = field(default_factory=dict)

    def p(self, key: int, default: object = 0) -> object:
        return self.params.get(key, default)


def _num(tok: str) -> int | float | str:
    """An int or float; anything else (pnnx's quoted shape expressions such as
    ``"*(0h,0w),80"``) stays a string."""
    try:
        return float(tok) if any(ch in tok for ch in ".eE") else int(tok)
    except ValueError:
        return tok.strip('"')


def _parse_layer(ln: str, path: Path, lineno: int) -> NcnnLayer:
    """One layer line; anything malformed (counts, key=value pairs, non-finite or huge numbers,
    names ncnn cannot hold) is an NcnnImportError naming the line."""
    def bad(why: str) -> NcnnImportError:
        return NcnnImportError(f"{path}: line {lineno} ({ln[:60]!r}{'...' if len(ln) > 60 else ''}) {why}")

    tok = ln.split()
    try:
        ltype, name, nin, nout = tok[0], tok[1], int(tok[2]), int(tok[3])
    except (IndexError, ValueError):
        raise bad("is not '<type> <name> <inputs> <outputs> ...'") from None
    if not (0 <= nin <= 256 and 0 <= nout <= 256) or len(tok) < 4 + nin + nout:
        raise bad(f"lists {nin} inputs and {nout} outputs, which its blobs do not fit")
    if any(len(t) > 255 or not t.isascii() for t in tok[:4 + nin + nout]):
        raise bad("has a name ncnn cannot hold (ASCII, at most 255 characters)")
    params: dict[int, object] = {}
    for kv in tok[4 + nin + nout:]:
        k, eq, v = kv.partition("=")
        try:
            key = int(k)
        except ValueError:
            raise bad(f"has the parameter {kv[:40]!r}; expected KEY=VALUE with an integer key") from None
        vals = v.split(",") if key <= -23300 else [v]
        if not eq or not v or not -23400 < key < 64:
            raise bad(f"has the parameter {kv[:40]!r}; expected KEY=VALUE with a key ncnn reads")
        nums = [_num(t) for t in vals]
        if any(isinstance(x, float) and not math.isfinite(x) or isinstance(x, int) and abs(x) > 1 << 31 for x in nums):
            raise bad(f"has the parameter {kv[:40]!r}, a number ncnn cannot hold")
        if key <= -23300:  # array of parameter id (-key - 23300): count,v0,v1,...
            if not isinstance(nums[0], int) or nums[0] != len(nums) - 1:
                raise bad(f"has the array {kv[:40]!r} whose count is not its length")
            params[-key - 23300] = nums[1:]
        else:
            params[key] = nums[0]
    return NcnnLayer(ltype, name, tok[4:4 + nin], tok[4 + nin:4 + nin + nout], params)


def parse_param(path: str | Path) -> list[NcnnLayer]:
    """Parse a text ncnn .param file into layers (arrays keep their base key)."""
    path = Path(path)
    lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    if not lines or lines[0] != str(_MAGIC):
        raise NcnnImportError(f"{path}: not a text ncnn param file (first line must be {_MAGIC})")
    try:
        n_layers, _n_blobs = (int(t) for t in lines[1].split())
    except (IndexError, ValueError) as e:
        raise NcnnImportError(f"{path}: line 2 must be '<layer count> <blob count>'") from e
    layers = [_parse_layer(ln, path, i + 3) for i, ln in enumerate(lines[2:])]
    if len(layers) < n_layers:
        raise NcnnImportError(f"{path}: header says {n_layers} layers but only {len(layers)} were found (truncated?)")
    # ncnn reads exactly the declared count and ignores lines after it (ncnn's own benchmark
    # nanodet_m.param declares 179 of its 180 layers); so do we
    return layers[:n_layers]


def read_tagged(buf: memoryview, off: int, count: int, where: str) -> tuple[np.ndarray, int]:
    """Read weight data the way ncnn's ModelBin::load(w, type=0) does."""
    if off + 4 > len(buf):
        raise NcnnImportError(f"bin ends before the weights of {where}")
    (tag,) = struct.unpack_from("<I", buf, off)
    off += 4
    size = count * (2 if tag == _TAG_FP16 else 1 if tag == _TAG_INT8 else 4)
    if off + size > len(buf):
        raise NcnnImportError(f"bin ends before the weights of {where} end ({count} values)")
    if tag == _TAG_FP16:
        nbytes = count * 2
        arr = np.frombuffer(buf, dtype="<f2", count=count, offset=off).astype(np.float32)
        off += (nbytes + 3) // 4 * 4  # fp16 data is padded to 4-byte alignment
    elif tag in (0, _TAG_FP32):
        arr = np.frombuffer(buf, dtype="<f4", count=count, offset=off).copy()
        off += count * 4
    elif tag == _TAG_INT8:
        raise NcnnImportError(f"{where}: int8-quantised weights cannot be imported; export fp16 or fp32")
    else:
        raise NcnnImportError(f"{where}: unknown weight storage tag 0x{tag:08x} (expected fp16 or fp32)")
    return arr, off


def first_weight_storage(bin_path: str | Path) -> str:
    """'fp16' when the bin's first weight blob carries ncnn's fp16 tag, else 'fp32'."""
    with open(bin_path, "rb") as f:
        head = f.read(4)
    return "fp16" if len(head) == 4 and struct.unpack("<I", head)[0] == _TAG_FP16 else "fp32"
