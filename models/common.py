"""Pieces shared by the backbone families."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FeatureStages", "global_pool"]


def global_pool(x: torch.Tensor) -> torch.Tensor:
    """Global average pool to [B, C]. adaptive_avg_pool2d(1) does not depend on
    the traced input size and pnnx maps it to one ncnn global Pooling layer
    (x.mean((2, 3)) becomes a slower generic Reduction)."""
    return F.adaptive_avg_pool2d(x, 1).flatten(1)


class FeatureStages:
    """Mixin for backbones whose body is one ``features`` Sequential:
    ``_stage_ends`` are the indices after which the map has stride 8, 16 and 32,
    ``_stage_channels`` their channels; ``_stem`` runs before ``features``."""

    features: nn.Sequential
    _stage_ends: tuple[int, ...]
    _stage_channels: tuple[int, ...]

    @property
    def feature_channels(self) -> list[int]:
        return list(self._stage_channels)

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self._stem(x)
        outs = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self._stage_ends:
                outs.append(x)
            if i >= self._stage_ends[-1]:
                break
        return outs
