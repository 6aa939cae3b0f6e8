"""Run bundles with ncnn: numpy + ncnn + OpenCV only, never torch."""

from .detector import Detection, Detector, ImageError, load_image
from .manifest import Manifest, ManifestError, load_manifest

__all__ = ["Detection", "Detector", "ImageError", "load_image", "Manifest", "ManifestError", "load_manifest"]
