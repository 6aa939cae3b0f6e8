"""Detection bundles (postprocess kind ``gfl``): ``Detector.detect(image)``.

The preprocessing, inference and bundle checks are :class:`BundleRunner`'s;
decoding is the ``gfl`` kind's (``runtime/kinds/gfl.py``)."""

from __future__ import annotations

import numpy as np

from .kinds.gfl import postprocess_outputs
from .results import Detection
from .letterbox import Letterbox
from .runner import BundleRunner, ImageError, as_pixels, load_image, make_net

__all__ = ["Detection", "Detector", "ImageError", "as_pixels", "load_image", "make_net", "postprocess_outputs"]


class Detector(BundleRunner):
    """A NanoDet-style (GFL) detector bundle run by ncnn on the CPU."""

    task = "detection"

    def postprocess(self, outputs: dict[str, np.ndarray], lb: Letterbox) -> list[Detection]:
        return self.kind.decode(self.manifest, outputs, lb)

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Detections in original-image pixels, best first."""
        return self.run(image)
