"""The real photos parity and the main job use: scikit-image's astronaut, chelsea,
coffee and the left motorcycle image, as BGR uint8.

scikit-image comes with the ``photos`` extra (``pip install 'litedet[photos]'``);
without it this returns no photos and callers fall back to the reference card.
No torch, no ncnn: runtime-side tools and benchmarks can use it too."""

from __future__ import annotations

import numpy as np

__all__ = ["PHOTO_NAMES", "default_images"]

PHOTO_NAMES = ("astronaut", "chelsea", "coffee", "motorcycle_left")


def default_images() -> list[tuple[str, np.ndarray]]:
    """[(name, BGR image)] for PHOTO_NAMES, or [] when scikit-image is not installed."""
    try:
        import skimage.data as data
    except ImportError:
        return []
    out = []
    for name in PHOTO_NAMES[:3]:
        out.append((name, np.ascontiguousarray(getattr(data, name)()[:, :, ::-1])))
    left, _, _ = data.stereo_motorcycle()
    out.append(("motorcycle_left", np.ascontiguousarray(left[:, :, ::-1])))
    return out
