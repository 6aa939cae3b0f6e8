"""The ctypes binding of the 'argmax_mask' kind's C++ steps (litedet_argmax_mask_capi.cpp over
litedet_argmax_mask.cpp): segmentation's argmax and mapping back, with the names of
runtime/kinds/argmax_mask.py."""

from __future__ import annotations

import ctypes
from typing import Mapping

import numpy as np

from litedet.runtime.devconfig import device_config_text
from litedet.runtime.letterbox import Letterbox
from litedet.runtime.manifest import Manifest

from .cpp_core import ERR, ERR_LEN, F32P, CLetterbox, CppKind, bind, f32, register_cpp_kind

U8P = ctypes.POINTER(ctypes.c_uint8)


class ArgmaxMaskCpp(CppKind):
    def __init__(self, core) -> None:
        super().__init__(core)
        bind(self._lib, "litedet_segment", [ctypes.c_char_p, ctypes.POINTER(CLetterbox), F32P, ctypes.c_int,
                                            ctypes.c_int, ctypes.c_int, U8P, ctypes.c_size_t, *ERR])
        bind(self._lib, "litedet_upsample_argmax", [F32P, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                                    ctypes.c_int, U8P, *ERR])

    def upsample_argmax(self, logits: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
        """As runtime.kinds.argmax_mask.upsample_argmax."""
        x = f32(logits)
        if x.ndim != 3:
            raise ValueError(f"logits have shape {x.shape}; expected (C, h, w)")
        out = np.zeros((out_h, out_w), np.uint8)
        err = ctypes.create_string_buffer(ERR_LEN)
        rc = self._lib.litedet_upsample_argmax(x.ctypes.data_as(F32P), *x.shape, int(out_h), int(out_w),
                                               out.ctypes.data_as(U8P), err, ERR_LEN)
        self.check(rc, err, "upsample_argmax")
        return out

    def segment(self, manifest: Manifest, outputs: Mapping[str, np.ndarray], lb: Letterbox) -> np.ndarray:
        """Raw outputs -> the (src_h, src_w) mask, as runtime.kinds.argmax_mask.segment_outputs, by the C++ core."""
        cfg_text = device_config_text(manifest, "m.param", "m.bin").encode("utf-8")
        (o,) = manifest.outputs_with_role("logits")
        x = f32(outputs[o.blob])
        x = x[0] if x.ndim == 4 else x
        if x.ndim != 3:
            raise ValueError(f"output {o.blob!r} has shape {x.shape}; expected (C, h, w)")
        out = np.zeros((lb.src_h, lb.src_w), np.uint8)
        c_lb = CLetterbox(*(int(getattr(lb, name)) for name, _ in CLetterbox._fields_))
        err = ctypes.create_string_buffer(ERR_LEN)
        rc = self._lib.litedet_segment(cfg_text, ctypes.byref(c_lb), x.ctypes.data_as(F32P), *x.shape,
                                       out.ctypes.data_as(U8P), out.size, err, ERR_LEN)
        self.check(rc, err, "segment")
        return out


register_cpp_kind("argmax_mask", ArgmaxMaskCpp)
