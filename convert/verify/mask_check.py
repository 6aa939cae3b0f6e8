"""How parity compares two segmentation results (postprocess kind ``argmax_mask``).

Masks are compared at the network input's size, where the argmax is taken (before the nearest
mapping back to the image, which only repeats pixels): pixel agreement, the mIoU of the tested
mask against the reference mask over the classes either one holds (classes with fewer than
MIN_CLASS_PIXELS pixels in both are reported, not averaged), the classes that disagree most, and
how many of the disagreeing pixels were near-ties in the reference (its top-two logit margin
below NEAR_TIE). A disagreement needs the two sides' logits to cross, so a small logit error flips
only near-ties; a conversion bug flips everything.

Thresholds (``MASK_LIMITS``), by the precision a comparison tests:
fp32 (the same network): agreement >= 0.9995, mIoU >= 0.99;
fp16 (storage on x86, arithmetic on ARM): agreement >= 0.98, mIoU >= 0.9 (seeded DFANet-B at 256x192:
98.6-99.6 % and 0.96-0.98 on x86, every disagreeing pixel a near-tie on a class border);
int8: agreement >= 0.9, mIoU >= 0.75;
ARM fp16 arithmetic (qemu-aarch64): agreement >= 0.85, mIoU >= 0.5, and ARM int8 >= 0.8 / 0.4. fp16
ARITHMETIC moves seeded logits far more than fp16 storage: seeded DFANet-B at 256x192 gives logit
cosine 0.994-0.998 and 87.6-96.4 % agreement, mIoU 0.65-0.79 (its random BatchNorm network spreads
the class logits little, so many pixels are near-ties); a broken graph agrees on ~1/classes of the
pixels. Trained weights have wide margins: these limits catch garbage, the numbers are reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from litedet.runtime.kinds.argmax_mask import upsample_bilinear

from .checks import ResultCheck, seeded_note
from .compare import CppMatch

__all__ = ["MaskCheck", "MaskMatch", "mask_match", "upsampled_logits", "MASK_LIMITS", "precision_of_key"]

MIN_CLASS_PIXELS = 64
NEAR_TIE = 0.1  # reference logit margin (top-1 minus the tested side's class) counted as a near-tie
# (min agreement, min mIoU) by what a comparison tests
MASK_LIMITS = {"fp32": (0.9995, 0.99), "fp16": (0.98, 0.9), "int8": (0.9, 0.75),
               "arm_fp16": (0.85, 0.5), "arm_int8": (0.8, 0.4)}


def precision_of_key(key: str) -> str:
    """What a comparison key tests (its side before '_vs_'): ncnn_fp32 / arm_fp32_vs_* -> fp32,
    ncnn_fp16 -> fp16, ncnn_int8 -> int8, arm_fp16_vs_* -> arm_fp16, arm_int8_vs_* -> arm_int8."""
    tested = key.split("_vs_")[0]
    p = "int8" if "int8" in tested else ("fp32" if "fp32" in tested else "fp16")
    return f"arm_{p}" if tested.startswith("arm") and p != "fp32" else p


def upsampled_logits(m, outputs: dict[str, np.ndarray], in_w: int, in_h: int) -> np.ndarray:
    """[C, in_h, in_w] float32 logits as the kind takes its argmax over them (bilinear upsample of
    head-stride logits, or the graph's own)."""
    (o,) = m.outputs_with_role("logits")
    x = np.asarray(outputs[o.blob], np.float32)
    x = x[0] if x.ndim == 4 else x
    return upsample_bilinear(x, in_h, in_w) if m.postprocess.upsample == "runtime" else x


@dataclass
class MaskMatch:
    pixels: int
    agreement: float  # fraction of pixels with the same class
    miou: float  # of the tested mask against the reference, over classes with >= MIN_CLASS_PIXELS
    disagreeing: int
    near_ties: int  # disagreeing pixels whose reference margin was below NEAR_TIE
    worst: list[tuple[str, float]] = field(default_factory=list)  # the 3 lowest class IoUs
    classes: int = 0  # classes in the mIoU


def mask_match(ref_logits: np.ndarray, ref: np.ndarray, test: np.ndarray, names: list[str]) -> MaskMatch:
    """Compare two [H, W] label maps; ``ref_logits`` [C, H, W] gives the reference margins."""
    diff = ref != test
    n = int(diff.sum())
    near = 0
    if n:
        ys, xs = np.nonzero(diff)
        margin = ref_logits[ref[ys, xs], ys, xs] - ref_logits[test[ys, xs], ys, xs]
        near = int((margin < NEAR_TIE).sum())
    c = len(names)
    inter = np.bincount(ref[~diff].reshape(-1), minlength=c)[:c]
    a = np.bincount(ref.reshape(-1), minlength=c)[:c]
    b = np.bincount(test.reshape(-1), minlength=c)[:c]
    union = a + b - inter
    used = union >= MIN_CLASS_PIXELS
    ious = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    order = [int(i) for i in np.argsort(ious, kind="stable") if used[i]][:3]
    return MaskMatch(int(ref.size), 1.0 - n / max(ref.size, 1), float(ious[used].mean()) if used.any() else 1.0, n, near,
                     [(names[i], float(ious[i])) for i in order], int(used.sum()))


class MaskCheck(ResultCheck):
    has_cpp = True
    header = f"{'agree %':>9} {'mIoU':>7} {'diff px':>8} {'ties':>6}  worst classes (IoU)"

    def judge_tensors(self, fp16: bool) -> bool:
        # fp32 must be the same network; reduced precision is judged by the masks
        return not fp16

    def compare(self, m, name, key, ref_out, test_out, ref_res, test_res, stats, lim, same=None):
        (o,) = m.outputs_with_role("logits")
        x = np.asarray(ref_out[o.blob])
        s = m.postprocess.head_stride
        in_h, in_w = x.shape[-2] * s, x.shape[-1] * s
        rl, tl = upsampled_logits(m, ref_out, in_w, in_h), upsampled_logits(m, test_out, in_w, in_h)
        mm = mask_match(rl, np.argmax(rl, axis=0), np.argmax(tl, axis=0), m.class_names)
        agree, miou = MASK_LIMITS[precision_of_key(key)]
        why = []
        if mm.agreement < agree:
            why.append(f"pixel agreement {100 * mm.agreement:.3f} % < {100 * agree:g} %")
        if mm.miou < miou:
            why.append(f"mIoU {mm.miou:.4f} < {miou:g} (worst: {', '.join(f'{n} {v:.3f}' for n, v in mm.worst)})")
        return mm, (f"{name}: {key} masks differ: " + "; ".join(why)) if why else None

    def limits_text(self, lim) -> str:
        return "masks (pixel agreement, mIoU): " + ", ".join(
            f"{k.replace('_', ' ')} >= {100 * a:g} %, {i:g}" for k, (a, i) in MASK_LIMITS.items() if k.startswith("arm"))

    def row(self, mm: MaskMatch) -> str:
        worst = ", ".join(f"{n} {v:.3f}" for n, v in mm.worst) or "-"
        return f"{100 * mm.agreement:>9.4f} {mm.miou:>7.4f} {mm.disagreeing:>8} {mm.near_ties:>6}  {worst}"

    def notes(self, m, any_results):
        return seeded_note(m, "logit and mask parity are meaningful; the masks are regions of the seeded "
                              "network's response, not real classes") + [
            "masks compared at the network input's size; ties: disagreeing pixels whose reference top-two margin "
            f"was below {NEAR_TIE}; mIoU over classes with at least {MIN_CLASS_PIXELS} pixels in either mask; "
            "limits by precision (agreement, mIoU): " +
            ", ".join(f"{k} ({100 * a:g} %, {i:g})" for k, (a, i) in MASK_LIMITS.items())]

    def draw(self, image, ref_res, test_res, path: Path) -> None:
        from litedet.datasets import palette_rgb
        from litedet.runtime.visualize import draw_mask_disagreement, save_image

        ref, test = ref_res[0], test_res[0]
        pal = [c for rgb in palette_rgb(len(ref.class_names)) for c in rgb]
        save_image(path, draw_mask_disagreement(image, ref.mask, test.mask, pal))

    def cpp(self, core, m, outputs, geometry):
        from litedet.runtime.kinds.argmax_mask import segment_outputs

        py = segment_outputs(m, outputs, geometry)[0].mask
        cc = core.kind(m.postprocess.kind).segment(m, outputs, geometry)
        same = py.shape == cc.shape and bool((py == cc).all())
        differing = int((py != cc).sum()) if py.shape == cc.shape else int(py.size)
        c = CppMatch(int(py.size), int(cc.size), same, 0.0, 0.0, {"differing_pixels": differing})
        return c, (None if same else f"C++ mask differs from Python's in {differing} pixels")
