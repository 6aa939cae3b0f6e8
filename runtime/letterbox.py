"""Letterbox and centre-crop geometry: how an image becomes the network input and how boxes in
network-input pixels go back to the image. Pure numpy, float32, mirrored by the C++ core
(``letterbox_geometry`` and ``map_box_back`` in android_demo/app/src/main/cpp/litedet_post.h)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Letterbox", "RESIZE_ALIGNS", "letterbox_geometry", "map_boxes_back", "CenterCrop", "center_crop_geometry"]


@dataclass(frozen=True)
class Letterbox:
    """How an image was resized and padded into the network input."""

    src_w: int
    src_h: int
    resized_w: int
    resized_h: int
    in_w: int
    in_h: int
    pad_left: int
    pad_top: int

    @property
    def pad_right(self) -> int:
        return self.in_w - self.resized_w - self.pad_left

    @property
    def pad_bottom(self) -> int:
        return self.in_h - self.resized_h - self.pad_top

    @property
    def input_size(self) -> list[int]:
        """[w, h] of the network input."""
        return [self.in_w, self.in_h]

RESIZE_ALIGNS = ("letterbox", "letterbox_top_left", "stretch", "stretch_multiple")

def letterbox_geometry(src_w: int, src_h: int, target: int, multiple: int, fixed: bool = False,
                       policy: str = "letterbox") -> Letterbox:
    """How an image becomes the network input, in exact integer arithmetic (so C++
    and Python agree bit for bit).

    ``letterbox``: long side to ``target``, short side floored (at least 1 pixel),
    then centred padding to a multiple of ``multiple`` (or to ``target`` x ``target``
    when ``fixed``). ``letterbox_top_left``: the same resize, padded at the right
    and bottom only (upstream NanoDet's val pipeline with keep_ratio). ``stretch``:
    both sides to ``target``, aspect not kept (keep_ratio False); no padding. ``stretch_multiple``
    (segmentation, CoinCheung/BiSeNet's demos): the image's own size, its long side first brought
    down to ``target`` when larger (short side floored), then each side rounded UP to a multiple
    of ``multiple`` and the image stretched to that; no padding (a 2048x1024 frame at target 1024
    becomes the 1024x512 input of its ncnn demo; at target 2048, its python demo's input)."""
    if src_w <= 0 or src_h <= 0:
        raise ValueError(f"image size must be positive, got {src_w}x{src_h}")
    if target <= 0 or multiple <= 0 or target % multiple:
        raise ValueError(f"target {target} must be a positive multiple of {multiple}")
    if policy not in RESIZE_ALIGNS:
        raise ValueError(f"resize policy {policy!r} is not one of {RESIZE_ALIGNS}")
    if policy == "stretch":
        return Letterbox(src_w, src_h, target, target, target, target, 0, 0)
    if policy == "stretch_multiple":
        long = max(src_w, src_h)
        w, h = (src_w, src_h) if long <= target else (max(1, src_w * target // long), max(1, src_h * target // long))
        in_w, in_h = -(-w // multiple) * multiple, -(-h // multiple) * multiple
        return Letterbox(src_w, src_h, in_w, in_h, in_w, in_h, 0, 0)
    if src_w >= src_h:
        w, h = target, max(1, src_h * target // src_w)
    else:
        w, h = max(1, src_w * target // src_h), target
    if fixed:
        in_w = in_h = target
    else:
        in_w = -(-w // multiple) * multiple
        in_h = -(-h // multiple) * multiple
    if policy == "letterbox_top_left":
        return Letterbox(src_w, src_h, w, h, in_w, in_h, 0, 0)
    return Letterbox(src_w, src_h, w, h, in_w, in_h, (in_w - w) // 2, (in_h - h) // 2)

def map_boxes_back(boxes: np.ndarray, lb: Letterbox) -> np.ndarray:
    """Network-input pixels -> original-image pixels, clipped to [0, W] x [0, H].

    Uses the per-axis scale actually applied (resized/src); the short side was
    floored to an integer, so one shared scale would shift boxes slightly."""
    sx = np.float32(lb.resized_w) / np.float32(lb.src_w)
    sy = np.float32(lb.resized_h) / np.float32(lb.src_h)
    out = np.empty_like(boxes, dtype=np.float32)
    out[:, 0] = (boxes[:, 0] - np.float32(lb.pad_left)) / sx
    out[:, 2] = (boxes[:, 2] - np.float32(lb.pad_left)) / sx
    out[:, 1] = (boxes[:, 1] - np.float32(lb.pad_top)) / sy
    out[:, 3] = (boxes[:, 3] - np.float32(lb.pad_top)) / sy
    np.clip(out[:, 0::2], 0, np.float32(lb.src_w), out=out[:, 0::2])
    np.clip(out[:, 1::2], 0, np.float32(lb.src_h), out=out[:, 1::2])
    return out

@dataclass(frozen=True)
class CenterCrop:
    """The source-image square that becomes the ``target`` x ``target`` input."""

    src_w: int
    src_h: int
    roi_x: int
    roi_y: int
    roi_size: int
    target: int

    @property
    def input_size(self) -> list[int]:
        """[w, h] of the network input."""
        return [self.target, self.target]

def center_crop_geometry(src_w: int, src_h: int, target: int, crop_fraction: float = 0.875) -> CenterCrop:
    """ImageNet evaluation crop: the centred square of side floor(short * fraction)
    (at least 1 pixel), resized to target x target."""
    if src_w <= 0 or src_h <= 0:
        raise ValueError(f"image size must be positive, got {src_w}x{src_h}")
    if target <= 0 or not 0.0 < crop_fraction <= 1.0:
        raise ValueError(f"target must be positive and crop_fraction in (0, 1], got {target}, {crop_fraction}")
    side = max(1, int(min(src_w, src_h) * crop_fraction))
    return CenterCrop(src_w, src_h, (src_w - side) // 2, (src_h - side) // 2, side, target)
