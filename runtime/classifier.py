"""Classification bundles (postprocess kind ``softmax_topk``): ``Classifier.classify(image)``.

ImageNet-style centre crop with ncnn's own pixel call (``BundleRunner``),
softmax and top-k in numpy (``runtime/kinds/softmax_topk.py``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .kinds.softmax_topk import classify_outputs
from .results import Classification
from .runner import BundleRunner

__all__ = ["Classification", "Classifier", "classify_outputs"]


class Classifier(BundleRunner):
    task = "classification"

    @property
    def output(self):
        (o,) = self.manifest.outputs_with_role("logits")
        return o

    def run_mat(self, mat) -> dict[str, np.ndarray]:
        return {k: v.reshape(-1) for k, v in super().run_mat(mat).items()}

    def postprocess(self, outputs: dict[str, np.ndarray], k: int | None = None, geometry: Any = None) -> list[Classification]:
        return classify_outputs(self.manifest, outputs, geometry, k)

    def classify(self, image: np.ndarray, top: int | None = None) -> list[Classification]:
        mat, g = self.preprocess(image)
        return self.postprocess(self.run_mat(mat), top, g)
