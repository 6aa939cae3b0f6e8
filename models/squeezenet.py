"""SqueezeNet 1.0 / 1.1 (Iandola et al., 2016) with torchvision's names
(``features.3.squeeze.weight``, ``classifier.1.weight``); max pooling uses
ceil mode, as the original Caffe model and torchvision do."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import FeatureStages, global_pool
from .registry import register_model

__all__ = ["SqueezeNet", "squeezenet1_0", "squeezenet1_1"]


class Fire(nn.Module):
    def __init__(self, inplanes: int, squeeze: int, e1: int, e3: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(inplanes, squeeze, 1)
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(squeeze, e1, 1)
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze, e3, 3, padding=1)
        self.expand3x3_activation = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.squeeze_activation(self.squeeze(x))
        return torch.cat([self.expand1x1_activation(self.expand1x1(x)), self.expand3x3_activation(self.expand3x3(x))], 1)


def _pool() -> nn.MaxPool2d:
    return nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)


class SqueezeNet(FeatureStages, nn.Module):
    """``forward_features`` returns the maps after the 2nd and 3rd max pool
    (strides 8 and 16: SqueezeNet has no stride-32 stage) and a parameter-free
    3x3/2 max pool of the last one as the stride-32 map."""

    def __init__(self, version: str = "1_0", num_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__()
        if version == "1_0":
            self.features = nn.Sequential(
                nn.Conv2d(3, 96, kernel_size=7, stride=2), nn.ReLU(inplace=True), _pool(),
                Fire(96, 16, 64, 64), Fire(128, 16, 64, 64), Fire(128, 32, 128, 128), _pool(),
                Fire(256, 32, 128, 128), Fire(256, 48, 192, 192), Fire(384, 48, 192, 192), Fire(384, 64, 256, 256),
                _pool(), Fire(512, 64, 256, 256))
            self._stage_ends, self._stage_channels = (10, 12), (512, 512)
        elif version == "1_1":
            self.features = nn.Sequential(
                nn.Conv2d(3, 64, kernel_size=3, stride=2), nn.ReLU(inplace=True), _pool(),
                Fire(64, 16, 64, 64), Fire(128, 16, 64, 64), _pool(),
                Fire(128, 32, 128, 128), Fire(256, 32, 128, 128), _pool(),
                Fire(256, 48, 192, 192), Fire(384, 48, 192, 192), Fire(384, 64, 256, 256), Fire(512, 64, 256, 256))
            self._stage_ends, self._stage_channels = (7, 12), (256, 512)
        else:
            raise ValueError(f"unsupported SqueezeNet version {version!r}: 1_0 or 1_1 expected")
        self.num_classes = num_classes
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Conv2d(512, num_classes, kernel_size=1),
                                        nn.ReLU(inplace=True))

    @property
    def feature_channels(self) -> list[int]:
        return [*self._stage_channels, self._stage_channels[-1]]

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        s8, s16 = super().forward_features(x)
        return [s8, s16, F.max_pool2d(s16, 3, 2, ceil_mode=True)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return global_pool(self.classifier(self.features(x)))


@register_model("squeezenet1_0", family="classifier", task="classification", input_size=224)
def squeezenet1_0(**kw) -> SqueezeNet:
    return SqueezeNet("1_0", **kw)


@register_model("squeezenet1_1", family="classifier", task="classification", input_size=224)
def squeezenet1_1(**kw) -> SqueezeNet:
    return SqueezeNet("1_1", **kw)
