"""Draw detections on an image (OpenCV only)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .results import Detection

__all__ = ["draw_detections", "drawable", "save_image"]


def drawable(text: str) -> str:
    """``text`` as OpenCV's Hershey fonts can draw it: printable ASCII, others as '?'."""
    return "".join(c if " " <= c <= "~" else "?" for c in text)


def save_image(path: str | Path, image: np.ndarray) -> Path:
    """Encode by the file's extension and write through a temp file and a rename."""
    from litedet.atomic import write_bytes

    ext = Path(path).suffix.lower()
    try:
        ok, buf = cv2.imencode(ext, image)
    except cv2.error:
        ok = False
    if not ok:
        raise ValueError(f"cannot write {path} as an image: use an extension OpenCV encodes (.jpg, .png, .bmp, ...)")
    return write_bytes(path, buf.tobytes())


def _color(label: int) -> tuple[int, int, int]:
    rng = np.random.RandomState(label * 7919 + 1)
    return tuple(int(c) for c in rng.randint(64, 256, size=3))


def draw_detections(image: np.ndarray, dets: list[Detection]) -> np.ndarray:
    """A BGR copy of ``image`` with boxes, names and scores."""
    vis = _bgr(image)
    for d in dets:
        c = _color(d.label)
        p1, p2 = (int(round(d.x1)), int(round(d.y1))), (int(round(d.x2)), int(round(d.y2)))
        cv2.rectangle(vis, p1, p2, c, 2)
        text = drawable(f"{d.name} {d.score * 100:.1f}%")
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        y = max(p1[1], th + base)
        cv2.rectangle(vis, (p1[0], y - th - base), (p1[0] + tw, y), c, -1)
        cv2.putText(vis, text, (p1[0], y - base), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return vis


def _bgr(image: np.ndarray) -> np.ndarray:
    """A BGR copy of a gray, BGR or BGRA image."""
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR) if image.shape[2] == 4 else image.copy()


def palette_bgr(palette_rgb: list[int] | np.ndarray) -> np.ndarray:
    """A flat R, G, B list (the manifest's ``postprocess.palette``) -> a [classes, 3] BGR uint8 table."""
    return np.asarray(palette_rgb, np.uint8).reshape(-1, 3)[:, ::-1].copy()


def draw_mask(image: np.ndarray, mask: np.ndarray, palette_rgb: list[int] | np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """A BGR copy of ``image`` with each pixel blended with its class colour (weight ``alpha``)."""
    vis = _bgr(image)
    if mask.shape != vis.shape[:2]:
        raise ValueError(f"mask is {mask.shape[1]}x{mask.shape[0]}; the image is {vis.shape[1]}x{vis.shape[0]}")
    colours = palette_bgr(palette_rgb)[mask]
    return cv2.addWeighted(vis, 1.0 - alpha, colours, alpha, 0.0)


def draw_mask_disagreement(image: np.ndarray, reference: np.ndarray, test: np.ndarray,
                           palette_rgb: list[int] | np.ndarray) -> np.ndarray:
    """The reference mask's overlay with every pixel where ``test`` differs painted pure red."""
    vis = draw_mask(image, reference, palette_rgb)
    vis[reference != test] = (0, 0, 255)
    return vis
