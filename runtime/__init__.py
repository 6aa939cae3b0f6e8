"""Run bundles with ncnn: numpy + ncnn + OpenCV only, never torch.

``runner`` loads and runs any bundle, ``kinds/`` holds the postprocess kinds
the manifest chooses from, ``postprocess`` the pure maths they use,
``manifest`` the strict bundle contract, ``devconfig`` the device config
generated from it, ``visualize`` drawing; ``Detector``, ``Classifier`` and ``Segmenter``
are the typed front doors of the three tasks."""

from .bundle import Bundle, GraphFile
from .detector import Detection, Detector, ImageError, load_image
from .manifest import Manifest, ManifestError, load_manifest
from .runner import BundleRunner, open_bundle
from .segmenter import SegmentationMask, Segmenter

__all__ = ["Bundle", "GraphFile", "Detection", "Detector", "ImageError", "load_image", "Manifest", "ManifestError", "load_manifest",
           "BundleRunner", "open_bundle", "Segmenter", "SegmentationMask"]
