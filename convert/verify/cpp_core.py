"""Build the on-device C++ core for this machine and call it through ctypes.

The core (android_demo/app/src/main/cpp: litedet_boxes, litedet_letterbox and one file per
postprocess kind, litedet_gfl, litedet_rpn_psroi, ...) is what the Android app runs; its C API
(litedet_capi.cpp for the shared calls, litedet_<kind>_capi.cpp for a kind's steps) is for
desktop tests. This module compiles them into a shared library (cached by the sources' sha256)
and exposes the shared calls; each kind's calls are its binding (``core.kind("gfl")``, defined
in ``cpp_<kind>.py`` beside this file), with the same names and arguments as the Python kind,
so Python <-> C++ parity is a direct comparison:

```python
from litedet.convert.verify.cpp_core import CppCore
core = CppCore()                                          # builds once into ~/.cache/litedet/cpp
dets = core.kind("gfl").postprocess(manifest, outputs, lb)  # == runtime.kinds.gfl.postprocess_outputs
```

The config is handed to C++ as the text of NAME.cfg (``device_config_text``), so the C++
config reader runs on every call, exactly as on the device.

Floating point: compiled with ``-ffp-contract=off`` (no FMA contraction) and never with
``-ffast-math``; see litedet_boxes.h for the policy. Needs numpy and a C++17 compiler, not torch.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from litedet.registry import Registry
from litedet.runtime.devconfig import config_keys
from litedet.runtime.letterbox import RESIZE_ALIGNS, Letterbox
from litedet.runtime.results import Detection

__all__ = [
    "CPP_DIR", "SOURCES", "BASE_FLAGS", "CppBuildError", "CppCoreError", "CppConfigError",
    "build_core", "core_sources", "CppCore", "CppKind", "register_cpp_kind",
]

CPP_DIR = Path(__file__).resolve().parents[2] / "android_demo" / "app" / "src" / "main" / "cpp"
# the files of the app's C++ that are not the core (ncnn, JNI) or not C++ of the app (the C API)
_NOT_CORE = ("litedet_ncnn.cpp", "litedet_jni.cpp")


def core_sources(cpp_dir: Path = CPP_DIR) -> list[str]:
    """The core's .cpp files (no ncnn): every litedet_*.cpp but the runner, the JNI glue, a kind's
    ncnn half (*_ncnn.cpp) and the C API (*_capi.cpp): CMakeLists.txt's LITEDET_CORE_SOURCES rule,
    so a new kind's core file is found, never listed."""
    return sorted(p.name for p in cpp_dir.glob("litedet_*.cpp")
                  if p.name not in _NOT_CORE and not p.name.endswith(("_ncnn.cpp", "_capi.cpp")))


def capi_sources(cpp_dir: Path = CPP_DIR) -> list[str]:
    """The C API: the shared calls and every kind's (litedet_*_capi.cpp)."""
    return ["litedet_capi.cpp"] + sorted(p.name for p in cpp_dir.glob("litedet_*_capi.cpp"))


SOURCES = tuple(core_sources() + capi_sources())
HEADERS = tuple(sorted(p.name for p in CPP_DIR.glob("litedet_*.h") if p.name != "litedet_ncnn.h"))
# -ffp-contract=off: no a*b+c -> fma contraction (GCC contracts by default, and on aarch64
# that changes roundings); together with float-only arithmetic it keeps C++ equal to numpy.
BASE_FLAGS = ("-O2", "-std=c++17", "-fPIC", "-shared", "-ffp-contract=off")
# flags that would break parity with numpy: refused
_FORBIDDEN_FLAGS = ("-ffast-math", "-Ofast", "-funsafe-math-optimizations", "-ffp-contract=fast",
                    "-ffp-contract=on", "-fassociative-math", "-freciprocal-math", "-ffinite-math-only")
_ABI_VERSION = 6
ERR_LEN = 4096

# return codes of litedet_capi.cpp
OK, EINVAL, ECONFIG, ESPACE, EINTERNAL = range(5)


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
    missing = [CPP_DIR / n for n in SOURCES + HEADERS if not (CPP_DIR / n).is_file()] or \
        ([] if SOURCES else [CPP_DIR / "litedet_*.cpp"])
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
    lib_name = f"liblitedet_core-{h.hexdigest()[:20]}{_lib_suffix()}"

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

class CDetection(ctypes.Structure):
    _fields_ = [("x1", ctypes.c_float), ("y1", ctypes.c_float), ("x2", ctypes.c_float), ("y2", ctypes.c_float),
                ("score", ctypes.c_float), ("label", ctypes.c_int32)]


class CLetterbox(ctypes.Structure):
    _fields_ = [(n, ctypes.c_int32) for n in
                ("src_w", "src_h", "resized_w", "resized_h", "in_w", "in_h", "pad_left", "pad_top")]


F32P = ctypes.POINTER(ctypes.c_float)
ERR = (ctypes.c_char_p, ctypes.c_size_t)

# typed view of the config dump written by litedet_capi.cpp (types from litedet_config_keys.h)
_PARSE = {"str": str, "int": int, "real": float, "flag": lambda v: v == "1",
          "reals": lambda v: [float(x) for x in v.split(",")], "ints": lambda v: [int(x) for x in v.split(",")],
          "names": lambda v: v.split(","), "labels": lambda v: v.split(",")}


def f32(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


def bind(lib: ctypes.CDLL, name: str, argtypes: list) -> None:
    """Declare one C API function (every one returns an int code)."""
    f = getattr(lib, name)
    f.argtypes, f.restype = argtypes, ctypes.c_int


class CppCore:
    """The compiled C++ core: the calls every kind shares (config dump, letterbox geometry, NMS)
    and, through ``kind(name)``, each kind's own steps."""

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
        bind(lib, "litedet_config_dump", [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t,
                                          ctypes.POINTER(ctypes.c_size_t), *ERR])
        bind(lib, "litedet_letterbox_geometry", [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                                 ctypes.c_int, ctypes.c_int, ctypes.POINTER(CLetterbox), *ERR])
        bind(lib, "litedet_nms", [F32P, F32P, ctypes.POINTER(ctypes.c_int32), ctypes.c_int, ctypes.c_float,
                                  ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_int64),
                                  ctypes.POINTER(ctypes.c_int), *ERR])
        self._lib = lib
        self._kinds: dict[str, "CppKind"] = {}

    def kind(self, name: str) -> "CppKind":
        """The binding of a postprocess kind's C++ steps (``cpp_<kind>.py``)."""
        if name not in self._kinds:
            self._kinds[name] = cpp_kind(name)(self)
        return self._kinds[name]

    # -- helpers -------------------------------------------------------------
    @staticmethod
    def check(rc: int, err: ctypes.Array, what: str) -> None:
        if rc == OK:
            return
        msg = err.value.decode("utf-8", "replace")
        if rc == ECONFIG:
            raise CppConfigError(f"C++ config reader: {msg}")
        if rc == EINVAL:
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
            err = ctypes.create_string_buffer(ERR_LEN)
            rc = dump(raw, buf, size, ctypes.byref(needed), err, ERR_LEN)
            if rc == ESPACE:
                size = needed.value
                continue
            self.check(rc, err, "parse_config")
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
        out = CLetterbox()
        err = ctypes.create_string_buffer(ERR_LEN)
        code = RESIZE_ALIGNS.index(policy) if policy in RESIZE_ALIGNS else 99  # the C++ enum's order
        rc = self._lib.litedet_letterbox_geometry(int(src_w), int(src_h), int(target), int(multiple), int(bool(fixed)),
                                                  code, ctypes.byref(out), err, ERR_LEN)
        self.check(rc, err, "letterbox_geometry")
        return Letterbox(*(getattr(out, n) for n, _ in CLetterbox._fields_))

    def nms(self, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou_threshold: float,
            class_agnostic: bool = False, max_detections: int | None = None) -> np.ndarray:
        """Kept indices in descending score order (as runtime.postprocess.nms)."""
        b, s = f32(boxes).reshape(-1, 4), f32(scores).reshape(-1)
        lab = np.ascontiguousarray(labels, dtype=np.int32).reshape(-1)
        n = s.shape[0]
        if b.shape[0] != n or lab.shape[0] != n:
            raise ValueError(f"nms needs as many boxes, scores and labels; got {b.shape[0]}, {n}, {lab.shape[0]}")
        keep = np.zeros(max(n, 1), np.int64)
        count = ctypes.c_int(0)
        err = ctypes.create_string_buffer(ERR_LEN)
        rc = self._lib.litedet_nms(b.ctypes.data_as(F32P), s.ctypes.data_as(F32P),
                                   lab.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)), n,
                                   float(np.float32(iou_threshold)), int(bool(class_agnostic)),
                                   -1 if max_detections is None else int(max_detections),
                                   keep.ctypes.data_as(ctypes.POINTER(ctypes.c_int64)), ctypes.byref(count),
                                   err, ERR_LEN)
        self.check(rc, err, "nms")
        return keep[:count.value].copy()


# -- kinds ---------------------------------------------------------------------
class CppKind:
    """The ctypes binding of one postprocess kind's C API (its litedet_<kind>_capi.cpp): a
    subclass binds its functions in ``__init__`` and mirrors the Python kind's steps by name."""

    def __init__(self, core: CppCore) -> None:
        self.core, self._lib = core, core._lib

    def check(self, rc: int, err: ctypes.Array, what: str) -> None:
        self.core.check(rc, err, what)


_CPP_KINDS: Registry[type] = Registry("C++ core kind")


def register_cpp_kind(name: str, cls: type) -> type:
    """Register the binding of a kind's C++ steps under the kind's name."""
    return _CPP_KINDS.add(name, cls)


unregister_cpp_kind = _CPP_KINDS.remove


def cpp_kind(name: str) -> type:
    """The binding class of a kind: registered, or found as the module ``cpp_<kind>.py`` beside
    this one (imported on first use, so a kind's binding is a file, never a line here)."""
    if name not in _CPP_KINDS.names():
        module = f"{__package__}.cpp_{name}"
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
    return _CPP_KINDS.get(name)


def call_detections(kind: "CppKind", fn, args: tuple, capacity: int, names: list[str], what: str) -> list[Detection]:
    """``fn(*args, out, capacity, &count, err, err_len)`` (a kind's C call that writes detections)
    with a buffer of ``capacity``, once more with the count it asks for when that is too small."""
    capacity = max(int(capacity), 1)
    for _ in range(2):
        out = (CDetection * capacity)()
        count = ctypes.c_int(0)
        err = ctypes.create_string_buffer(ERR_LEN)
        rc = fn(*args, out, capacity, ctypes.byref(count), err, ERR_LEN)
        if rc == ESPACE:
            capacity = count.value
            continue
        kind.check(rc, err, what)
        return detections_of(out, count.value, names)
    raise RuntimeError(f"C++ {what}: the detection count changed between two calls")


def detections_of(out, count: int, names: list[str]) -> list[Detection]:
    """The C detections the core wrote -> runtime Detection records."""
    return [Detection(float(d.x1), float(d.y1), float(d.x2), float(d.y2), float(d.score), int(d.label),
                      names[d.label]) for d in out[:count]]

