"""Build the on-device C++ postprocessing core for this machine and call it through ctypes.

The core (android_demo/app/src/main/cpp/litedet_post.{h,cpp}) is what the Android app runs;
litedet_capi.cpp wraps it in a small C API for desktop tests. This module compiles both
into a shared library (cached by the sources' sha256) and exposes the same calls as the
Python runtime, so Python <-> C++ postprocessing parity is a direct comparison:

```python
from litedet.convert.cpp_core import CppPostprocessor
cpp = CppPostprocessor()                          # builds once into ~/.cache/litedet/cpp
dets = cpp.postprocess(manifest, outputs, lb)     # == runtime.detector.postprocess_outputs
```

The config is handed to C++ as the text of NAME.cfg (``device_config_text``), so the C++
config reader runs on every call, exactly as on the device.

Floating point: compiled with ``-ffp-contract=off`` (no FMA contraction) and never with
``-ffast-math``; see the header for the policy. Needs numpy and a C++17 compiler, not torch.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from litedet.runtime.results import Detection
from litedet.runtime.devconfig import config_keys, device_config_text
from litedet.runtime.manifest import Manifest
from litedet.runtime.letterbox import RESIZE_ALIGNS, Letterbox

__all__ = [
    "CPP_DIR", "SOURCES", "BASE_FLAGS", "CppBuildError", "CppCoreError", "CppConfigError",
    "build_core", "CppPostprocessor",
]

CPP_DIR = Path(__file__).resolve().parents[2] / "android_demo" / "app" / "src" / "main" / "cpp"
SOURCES = ("litedet_post.cpp", "litedet_rpn_psroi.cpp", "litedet_capi.cpp")
HEADERS = ("litedet_kind.h", "litedet_post.h", "litedet_rpn_psroi.h", "litedet_config_reader.h", "litedet_config_keys.h")
# -ffp-contract=off: no a*b+c -> fma contraction (GCC contracts by default, and on aarch64
# that changes roundings); together with float-only arithmetic it keeps C++ equal to numpy.
BASE_FLAGS = ("-O2", "-std=c++17", "-fPIC", "-shared", "-ffp-contract=off")
# flags that would break parity with numpy: refused
_FORBIDDEN_FLAGS = ("-ffast-math", "-Ofast", "-funsafe-math-optimizations", "-ffp-contract=fast",
                    "-ffp-contract=on", "-fassociative-math", "-freciprocal-math", "-ffinite-math-only")
_ABI_VERSION = 4
_ERR_LEN = 4096

# return codes of litedet_capi.cpp
_OK, _EINVAL, _ECONFIG, _ESPACE, _EINTERNAL = range(5)


class CppBuildError(RuntimeError):
    """The C++ core could not be compiled or loaded."""


class CppCoreError(ValueError):
    """The C++ core refused its input (the Python runtime raises ValueError for the same)."""


class CppConfigError(CppCoreError):
    """The C++ config reader refused NAME.cfg (the message names the key)."""


# ---------------------------------------------------------------------------
# build
# ---------------------------------------------------------------------------

def _default_cache_dir() -> Path:
    env = os.environ.get("LITEDET_CACHE")
    return Path(env).expanduser() / "cpp" if env else Path.home() / ".cache" / "litedet" / "cpp"


def _lib_suffix() -> str:
    return ".dylib" if platform.system() == "Darwin" else ".so"


def build_core(cache_dir: str | Path | None = None, cxx: str = "g++", extra_flags: Iterable[str] = ()) -> Path:
    """Compile the core + C API into a shared library and return its path.

    The library is cached in ``cache_dir`` (default ``$LITEDET_CACHE/cpp`` or
    ``~/.cache/litedet/cpp``) under a name derived from the sha256 of the sources, the
    compiler and the flags, so an edit rebuilds and an unchanged tree reuses it. It is
    compiled into a temporary name and renamed into place (never a half-written library).
    """
    extra = tuple(str(f) for f in extra_flags)
    bad = [f for f in extra if f in _FORBIDDEN_FLAGS]
    if bad:
        raise ValueError(f"flags {bad} break float parity with numpy; the core must be built with "
                         f"{' '.join(BASE_FLAGS)} and without fast-math")
    missing = [CPP_DIR / n for n in SOURCES + HEADERS if not (CPP_DIR / n).is_file()]
    if missing:
        raise CppBuildError(f"C++ sources not found: {', '.join(map(str, missing))} "
                            "(they live in android_demo/app/src/main/cpp of a litedet checkout; "
                            "install litedet with 'pip install -e .' from the checkout)")
    compiler = shutil.which(cxx)
    if compiler is None:
        raise CppBuildError(f"C++ compiler {cxx!r} not found on PATH; install g++ (or clang++) or pass cxx=...")

    flags = BASE_FLAGS + extra
    h = hashlib.sha256()
    for n in SOURCES + HEADERS:
        h.update(n.encode() + b"\0" + (CPP_DIR / n).read_bytes() + b"\0")
    h.update(("\0".join((cxx,) + flags)).encode())
    lib_name = f"liblitedet_post-{h.hexdigest()[:20]}{_lib_suffix()}"

    cache = Path(cache_dir).expanduser() if cache_dir is not None else _default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    lib = cache / lib_name
    if lib.is_file():
        return lib

    fd, tmp_name = tempfile.mkstemp(prefix=f".{lib_name}.", suffix=".tmp", dir=cache)
    os.close(fd)
    tmp = Path(tmp_name)
    cmd = [compiler, *flags, "-o", str(tmp), *(str(CPP_DIR / n) for n in SOURCES)]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            tail = (r.stderr or r.stdout).strip()[-4000:]
            raise CppBuildError(f"compiling the C++ core failed (exit {r.returncode}):\n  {' '.join(cmd)}\n{tail}")
        os.replace(tmp, lib)
    finally:
        if tmp.exists():
            tmp.unlink()
    return lib


# ---------------------------------------------------------------------------
# ctypes binding
# ---------------------------------------------------------------------------

class _CDetection(ctypes.Structure):
    _fields_ = [("x1", ctypes.c_float), ("y1", ctypes.c_float), ("x2", ctypes.c_float), ("y2", ctypes.c_float),
                ("score", ctypes.c_float), ("label", ctypes.c_int32)]


class _CLetterbox(ctypes.Structure):
    _fields_ = [(n, ctypes.c_int32) for n in
                ("src_w", "src_h", "resized_w", "resized_h", "in_w", "in_h", "pad_left", "pad_top")]


_F32P = ctypes.POINTER(ctypes.c_float)
_ERR = (ctypes.c_char_p, ctypes.c_size_t)

# typed view of the config dump written by litedet_capi.cpp (types from litedet_config_keys.h)
_PARSE = {"str": str, "int": int, "real": float, "flag": lambda v: v == "1",
          "reals": lambda v: [float(x) for x in v.split(",")], "ints": lambda v: [int(x) for x in v.split(",")],
          "names": lambda v: v.split(","), "labels": lambda v: v.split(",")}


def _f32(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


class CppPostprocessor:
    """The compiled C++ core, with the same calls as the Python runtime."""

    def __init__(self, lib_path: str | Path | None = None) -> None:
        self.lib_path = Path(lib_path) if lib_path is not None else build_core()
        try:
            lib = ctypes.CDLL(str(self.lib_path))
        except OSError as e:
            raise CppBuildError(f"could not load the C++ core {self.lib_path}: {e}") from None
        lib.litedet_abi_version.restype = ctypes.c_int
        lib.litedet_abi_version.argtypes = []
        if lib.litedet_abi_version() != _ABI_VERSION:
            raise CppBuildError(f"{self.lib_path} has C API version {lib.litedet_abi_version()}; "
                                f"this litedet needs {_ABI_VERSION} (rebuild with build_core())")
        lib.litedet_config_dump.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t,
                                            ctypes.POINTER(ctypes.c_size_t), *_ERR]
        lib.litedet_letterbox_geometry.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                                   ctypes.c_int, ctypes.c_int, ctypes.POINTER(_CLetterbox), *_ERR]
        lib.litedet_distribution_to_distance.argtypes = [_F32P, ctypes.c_int, ctypes.c_int, _F32P, *_ERR]
        lib.litedet_nms.argtypes = [_F32P, _F32P, ctypes.POINTER(ctypes.c_int32), ctypes.c_int, ctypes.c_float,
                                    ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_int64),
                                    ctypes.POINTER(ctypes.c_int), *_ERR]
        lib.litedet_postprocess.argtypes = [ctypes.c_char_p, ctypes.POINTER(_CLetterbox), ctypes.c_int,
                                            ctypes.POINTER(_F32P), ctypes.POINTER(_F32P),
                                            ctypes.POINTER(ctypes.c_int32), ctypes.POINTER(ctypes.c_int32),
                                            ctypes.POINTER(_CDetection), ctypes.c_int, ctypes.POINTER(ctypes.c_int),
                                            *_ERR]
        i32, i32p = ctypes.c_int, ctypes.POINTER(ctypes.c_int)
        lib.litedet_make_anchors.argtypes = [i32, i32, i32, _F32P, i32, _F32P, i32, ctypes.c_float, _F32P, *_ERR]
        lib.litedet_decode_boxes.argtypes = [_F32P, _F32P, i32, _F32P, ctypes.c_float, _F32P, *_ERR]
        lib.litedet_proposals.argtypes = [ctypes.c_char_p, _F32P, _F32P, i32, i32, i32, i32, i32, _F32P, _F32P, i32,
                                          i32p, *_ERR]
        lib.litedet_ps_roi_align.argtypes = [_F32P, i32, i32, i32, _F32P, i32, ctypes.c_float, i32, i32, _F32P, *_ERR]
        lib.litedet_rcnn_detections.argtypes = [ctypes.c_char_p, ctypes.POINTER(_CLetterbox), _F32P, i32, _F32P, _F32P,
                                                ctypes.POINTER(_CDetection), i32, i32p, *_ERR]
        for f in ("litedet_config_dump", "litedet_letterbox_geometry", "litedet_distribution_to_distance",
                  "litedet_nms", "litedet_postprocess", "litedet_make_anchors",
                  "litedet_decode_boxes", "litedet_proposals", "litedet_ps_roi_align", "litedet_rcnn_detections"):
            getattr(lib, f).restype = ctypes.c_int
        self._lib = lib

    # -- helpers -------------------------------------------------------------
    @staticmethod
    def _check(rc: int, err: ctypes.Array, what: str) -> None:
        if rc == _OK:
            return
        msg = err.value.decode("utf-8", "replace")
        if rc == _ECONFIG:
            raise CppConfigError(f"C++ config reader: {msg}")
        if rc == _EINVAL:
            raise CppCoreError(f"C++ {what}: {msg}")
        raise RuntimeError(f"C++ {what} failed (code {rc}): {msg}")

    # -- the calls -----------------------------------------------------------
    def parse_config_text(self, text: str, kind: str | None = None) -> dict[str, Any]:
        """Parse NAME.cfg text with the C++ reader of the kind its kind= names (``kind``: the one
        expected, default gfl); returns the parsed config as a typed dict."""
        import re

        kind = kind or "gfl"
        said = re.search(r"^\s*kind\s*=\s*(\S*)\s*$", text, re.M)
        if said and said.group(1) != kind:
            raise CppConfigError(f"config key 'kind' is {said.group(1)!r}; expected {kind!r} configs here")
        raw = text.encode("utf-8")
        size = 1 << 16
        dump = self._lib.litedet_config_dump  # any kind: the core reads the text's kind= (litedet_kind.h)
        for _ in range(2):
            buf = ctypes.create_string_buffer(size)
            needed = ctypes.c_size_t(0)
            err = ctypes.create_string_buffer(_ERR_LEN)
            rc = dump(raw, buf, size, ctypes.byref(needed), err, _ERR_LEN)
            if rc == _ESPACE:
                size = needed.value
                continue
            self._check(rc, err, "parse_config")
            break
        types = dict(config_keys(kind))
        out: dict[str, Any] = {}
        for line in buf.value.decode("utf-8").splitlines():
            key, _, value = line.partition("=")
            if key not in types:  # pragma: no cover - the dump and the table are one macro
                raise RuntimeError(f"unexpected key {key!r} in the C++ config dump")
            out[key] = _PARSE[types[key]](value)
        return out

    def letterbox_geometry(self, src_w: int, src_h: int, target: int, multiple: int, fixed: bool = False,
                           policy: str = "letterbox") -> Letterbox:
        out = _CLetterbox()
        err = ctypes.create_string_buffer(_ERR_LEN)
        code = RESIZE_ALIGNS.index(policy) if policy in RESIZE_ALIGNS else 99  # the C++ enum's order
        rc = self._lib.litedet_letterbox_geometry(int(src_w), int(src_h), int(target), int(multiple), int(bool(fixed)),
                                                  code, ctypes.byref(out), err, _ERR_LEN)
        self._check(rc, err, "letterbox_geometry")
        return Letterbox(*(getattr(out, n) for n, _ in _CLetterbox._fields_))

    def distribution_to_distance(self, logits: np.ndarray, reg_max: int) -> np.ndarray:
        """[K, 4*(reg_max+1)] logits -> [K, 4] (as runtime.postprocess.distribution_to_distance)."""
        x = _f32(logits)
        if x.ndim != 2 or x.shape[1] != 4 * (reg_max + 1):
            raise ValueError(f"logits have shape {x.shape}; expected (K, {4 * (reg_max + 1)}) for reg_max {reg_max}")
        out = np.zeros((x.shape[0], 4), np.float32)
        err = ctypes.create_string_buffer(_ERR_LEN)
        rc = self._lib.litedet_distribution_to_distance(x.ctypes.data_as(_F32P), x.shape[0], int(reg_max),
                                                        out.ctypes.data_as(_F32P), err, _ERR_LEN)
        self._check(rc, err, "distribution_to_distance")
        return out

    def nms(self, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou_threshold: float,
            class_agnostic: bool = False, max_detections: int | None = None) -> np.ndarray:
        """Kept indices in descending score order (as runtime.postprocess.nms)."""
        b, s = _f32(boxes).reshape(-1, 4), _f32(scores).reshape(-1)
        lab = np.ascontiguousarray(labels, dtype=np.int32).reshape(-1)
        n = s.shape[0]
        if b.shape[0] != n or lab.shape[0] != n:
            raise ValueError(f"nms needs as many boxes, scores and labels; got {b.shape[0]}, {n}, {lab.shape[0]}")
        keep = np.zeros(max(n, 1), np.int64)
        count = ctypes.c_int(0)
        err = ctypes.create_string_buffer(_ERR_LEN)
        rc = self._lib.litedet_nms(b.ctypes.data_as(_F32P), s.ctypes.data_as(_F32P),
                                   lab.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)), n,
                                   float(np.float32(iou_threshold)), int(bool(class_agnostic)),
                                   -1 if max_detections is None else int(max_detections),
                                   keep.ctypes.data_as(ctypes.POINTER(ctypes.c_int64)), ctypes.byref(count),
                                   err, _ERR_LEN)
        self._check(rc, err, "nms")
        return keep[:count.value].copy()

    def postprocess(self, manifest: Manifest, outputs: Mapping[str, np.ndarray], lb: Letterbox) -> list[Detection]:
        """Raw per-stride outputs -> detections, exactly as runtime.detector.postprocess_outputs
        (same arguments, same Detection objects), computed by the C++ core."""
        p = manifest.postprocess
        cfg_text = device_config_text(manifest, "m.param", "m.bin").encode("utf-8")
        keep_alive: list[np.ndarray] = []
        rows, strides = [], []
        dist_cols = 4 * (p.reg_max + 1)
        for stride in p.strides:
            cls_o, dis_o = manifest.output("cls_scores", stride), manifest.output("dist_logits", stride)
            scores, dists = np.asarray(outputs[cls_o.blob]), np.asarray(outputs[dis_o.blob])
            scores = _f32(scores.reshape(-1, scores.shape[-1]) if scores.ndim else scores.reshape(-1, 1))
            dists = _f32(dists.reshape(-1, dists.shape[-1]) if dists.ndim else dists.reshape(-1, 1))
            # column counts are checked here: the C++ reads rows x columns from raw pointers
            if scores.shape[1] != manifest.num_classes:
                raise CppCoreError(f"output {cls_o.blob!r} has shape {scores.shape}; stride {stride} needs "
                                   f"{manifest.num_classes} columns (one per class)")
            if dists.shape != (scores.shape[0], dist_cols):
                raise CppCoreError(f"distribution map {dis_o.blob!r} has shape {dists.shape}; expected "
                                   f"({scores.shape[0]}, {dist_cols}) for reg_max {p.reg_max}")
            keep_alive += [scores, dists]
            rows.append(scores.shape[0])
            strides.append(int(stride))
        n = len(p.strides)
        cls_ptrs = (_F32P * n)(*(a.ctypes.data_as(_F32P) for a in keep_alive[0::2]))
        dis_ptrs = (_F32P * n)(*(a.ctypes.data_as(_F32P) for a in keep_alive[1::2]))
        c_rows = (ctypes.c_int32 * n)(*rows)
        c_strides = (ctypes.c_int32 * n)(*strides)
        c_lb = _CLetterbox(*(int(getattr(lb, name)) for name, _ in _CLetterbox._fields_))
        capacity = int(p.max_detections)
        for _ in range(2):
            out = (_CDetection * max(capacity, 1))()
            count = ctypes.c_int(0)
            err = ctypes.create_string_buffer(_ERR_LEN)
            rc = self._lib.litedet_postprocess(cfg_text, ctypes.byref(c_lb), n, cls_ptrs, dis_ptrs, c_rows, c_strides,
                                               out, capacity, ctypes.byref(count), err, _ERR_LEN)
            if rc == _ESPACE:
                capacity = count.value
                continue
            self._check(rc, err, "postprocess")
            break
        del keep_alive
        names = manifest.class_names
        return [Detection(float(d.x1), float(d.y1), float(d.x2), float(d.y2), float(d.score), int(d.label),
                          names[d.label]) for d in out[:count.value]]

    # -- two-stage detectors (rpn_psroi) -------------------------------------
    def make_anchors(self, feat_w: int, feat_h: int, stride: int, sizes, ratios, offset: float) -> np.ndarray:
        """As runtime.kinds.rpn_psroi_ops.make_anchors."""
        sz, ra = _f32(np.asarray(sizes)).reshape(-1), _f32(np.asarray(ratios)).reshape(-1)
        out = np.zeros((feat_w * feat_h * len(sz) * len(ra), 4), np.float32)
        err = ctypes.create_string_buffer(_ERR_LEN)
        rc = self._lib.litedet_make_anchors(feat_w, feat_h, stride, sz.ctypes.data_as(_F32P), len(sz),
                                            ra.ctypes.data_as(_F32P), len(ra), float(np.float32(offset)),
                                            out.ctypes.data_as(_F32P), err, _ERR_LEN)
        self._check(rc, err, "make_anchors")
        return out

    def decode_boxes(self, ref: np.ndarray, deltas: np.ndarray, weights, box_clip: float) -> np.ndarray:
        """As runtime.kinds.rpn_psroi_ops.decode_boxes."""
        r, d, w = _f32(ref).reshape(-1, 4), _f32(deltas).reshape(-1, 4), _f32(np.asarray(weights)).reshape(4)
        if r.shape != d.shape:
            raise ValueError(f"decode_boxes needs as many boxes as deltas; got {r.shape} and {d.shape}")
        out = np.zeros_like(r)
        err = ctypes.create_string_buffer(_ERR_LEN)
        rc = self._lib.litedet_decode_boxes(r.ctypes.data_as(_F32P), d.ctypes.data_as(_F32P), len(r),
                                            w.ctypes.data_as(_F32P), float(np.float32(box_clip)),
                                            out.ctypes.data_as(_F32P), err, _ERR_LEN)
        self._check(rc, err, "decode_boxes")
        return out

    def proposals(self, manifest: Manifest, outputs: Mapping[str, np.ndarray], in_w: int, in_h: int):
        """Stage-1 outputs -> (boxes [K, 4], scores [K]), as runtime.kinds.rpn_psroi.proposals_of."""
        p = manifest.postprocess
        cfg = device_config_text(manifest, "m.param", "m.bin").encode("utf-8")
        fw, fh = -(-in_w // p.stride), -(-in_h // p.stride)
        obj = _f32(outputs[manifest.outputs_with_role("rpn_objectness")[0].blob]).reshape(-1)
        dl = _f32(outputs[manifest.outputs_with_role("rpn_deltas")[0].blob]).reshape(-1)
        a = len(p.anchor_sizes) * len(p.anchor_ratios)
        if obj.size != a * fw * fh or dl.size != 4 * obj.size:
            raise CppCoreError(f"stage-1 maps hold {obj.size} logits and {dl.size} deltas; a {in_w}x{in_h} input "
                               f"needs {a * fw * fh} and {4 * a * fw * fh}")
        cap = int(p.rpn_post_nms_top_n)
        boxes, scores = np.zeros((cap, 4), np.float32), np.zeros(cap, np.float32)
        count = ctypes.c_int(0)
        err = ctypes.create_string_buffer(_ERR_LEN)
        rc = self._lib.litedet_proposals(cfg, obj.ctypes.data_as(_F32P), dl.ctypes.data_as(_F32P), a, fw, fh, in_w,
                                         in_h, boxes.ctypes.data_as(_F32P), scores.ctypes.data_as(_F32P), cap,
                                         ctypes.byref(count), err, _ERR_LEN)
        self._check(rc, err, "proposals")
        return boxes[:count.value].copy(), scores[:count.value].copy()

    def ps_roi_align(self, feat: np.ndarray, rois: np.ndarray, spatial_scale: float, pooled: int,
                     sampling_ratio: int) -> np.ndarray:
        """As runtime.kinds.rpn_psroi_ops.ps_roi_align: feat [C, H, W], rois [K, 4] -> [K, C / P^2, P, P]."""
        f, r = _f32(feat), _f32(rois).reshape(-1, 4)
        c, h, w = f.shape
        if c % (pooled * pooled):
            raise CppCoreError(f"PSRoIAlign input has {c} channels; it needs a multiple of {pooled * pooled}")
        out = np.zeros((len(r), c // (pooled * pooled), pooled, pooled), np.float32)
        err = ctypes.create_string_buffer(_ERR_LEN)
        rc = self._lib.litedet_ps_roi_align(f.ctypes.data_as(_F32P), c, h, w, r.ctypes.data_as(_F32P), len(r),
                                            float(np.float32(spatial_scale)), pooled, sampling_ratio,
                                            out.ctypes.data_as(_F32P), err, _ERR_LEN)
        self._check(rc, err, "ps_roi_align")
        return out

    def rcnn_detections(self, manifest: Manifest, outputs: Mapping[str, np.ndarray], lb: Letterbox) -> list[Detection]:
        """Completed outputs (proposals + the head's) -> detections, as the rpn_psroi kind's decode."""
        from litedet.runtime.kinds.rpn_psroi import PROPOSALS, RCNN_DELTAS, RCNN_SCORES

        cfg = device_config_text(manifest, "m.param", "m.bin").encode("utf-8")
        rois = _f32(outputs[PROPOSALS]).reshape(-1, 4)
        c1 = manifest.num_classes + 1
        d = 4 if manifest.postprocess.class_agnostic_boxes else 4 * c1
        probs, deltas = _f32(outputs[RCNN_SCORES]).reshape(-1, c1), _f32(outputs[RCNN_DELTAS]).reshape(-1, d)
        if not len(probs) == len(deltas) == len(rois):
            raise CppCoreError(f"{len(rois)} proposals but {len(probs)} score rows and {len(deltas)} delta rows")
        c_lb = _CLetterbox(*(int(getattr(lb, name)) for name, _ in _CLetterbox._fields_))
        cap = int(manifest.postprocess.max_detections)
        out = (_CDetection * cap)()
        count = ctypes.c_int(0)
        err = ctypes.create_string_buffer(_ERR_LEN)
        rc = self._lib.litedet_rcnn_detections(cfg, ctypes.byref(c_lb), rois.ctypes.data_as(_F32P), len(rois),
                                               probs.ctypes.data_as(_F32P), deltas.ctypes.data_as(_F32P), out, cap,
                                               ctypes.byref(count), err, _ERR_LEN)
        self._check(rc, err, "rcnn_detections")
        names = manifest.class_names
        return [Detection(float(d.x1), float(d.y1), float(d.x2), float(d.y2), float(d.score), int(d.label),
                          names[d.label]) for d in out[:count.value]]


def two_stage_cpp_match(core: CppPostprocessor, m: Manifest, outputs: Mapping[str, np.ndarray], lb: Letterbox):
    """C++ vs Python on the same ncnn outputs, stage by stage: proposals (from stage 1), PSRoIAlign
    (on Python's proposals) and detections (from the same head outputs). A CppMatch of the
    detections whose ``details`` say how far the glue's tensors are apart."""
    from litedet.runtime.kinds.rpn_psroi import POOLED, PROPOSAL_SCORES, PROPOSALS, postprocess_outputs

    from .compare import cpp_match

    p = m.postprocess
    boxes, scores = core.proposals(m, outputs, lb.in_w, lb.in_h)
    py_boxes, py_scores = outputs[PROPOSALS], outputs[PROPOSAL_SCORES]
    same_props = boxes.shape == py_boxes.shape
    feat = outputs[m.outputs_with_role("psroi_features")[0].blob]
    fh, fw = -(-lb.in_h // p.stride), -(-lb.in_w // p.stride)
    pooled = core.ps_roi_align(np.asarray(feat).reshape(-1, fh, fw), py_boxes, 1.0 / p.stride, p.pooled_size,
                               p.sampling_ratio).reshape(len(py_boxes), -1)
    c = cpp_match(postprocess_outputs(m, dict(outputs), lb), core.rcnn_detections(m, outputs, lb), lb)
    c.details = {
        "proposals_python": int(len(py_boxes)), "proposals_cpp": int(len(boxes)),
        "proposal_box_diff": float(np.abs(boxes - py_boxes).max(initial=0.0)) if same_props else float("inf"),
        "proposal_score_diff": float(np.abs(scores - py_scores).max(initial=0.0)) if same_props else float("inf"),
        "pooled_max_abs": float(np.abs(pooled - outputs[POOLED]).max(initial=0.0)),
    }
    if not same_props or c.details["proposal_box_diff"] > 1e-4 or c.details["pooled_max_abs"] > 1e-4:
        c.identical = False
    return c
