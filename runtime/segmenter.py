"""Segmentation bundles (postprocess kind ``argmax_mask``): ``Segmenter.segment(image)``.

Preprocessing and inference are :class:`BundleRunner`'s; the argmax and the mapping back to the
original image are the kind's pure functions (``runtime/kinds/argmax_mask.py``)."""

from __future__ import annotations

import numpy as np

from .kinds.argmax_mask import segment_outputs
from .results import SegmentationMask
from .runner import BundleRunner

__all__ = ["Segmenter", "SegmentationMask", "segment_outputs"]


class Segmenter(BundleRunner):
    """A semantic segmentation bundle run by ncnn on the CPU."""

    task = "segmentation"

    def segment_full(self, image: np.ndarray) -> SegmentationMask:
        """The mask record (class ids and names)."""
        return self.run(image)[0]

    def segment(self, image: np.ndarray) -> np.ndarray:
        """(H, W) uint8 class ids in the original image's pixels."""
        return self.segment_full(image).mask

    @property
    def palette(self) -> list[int]:
        return list(self.manifest.postprocess.palette)
