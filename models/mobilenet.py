"""MobileNet V1 (Howard et al., 2017), V2 (Sandler et al., 2018) and V3 (Howard
et al., 2019). V2 and V3 use torchvision's state-dict names
(``features.0.0.weight``, ``features.1.conv.0.0.weight``, ``classifier.3.weight``)
so torchvision checkpoints load unchanged; V1 has no torchvision model and
uses the same ``features`` / ``classifier`` layout.

``forward_features`` returns the stride 8/16/32 maps for detectors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import FeatureStages, global_pool
from .registry import register_model

__all__ = ["MobileNetV1", "MobileNetV2", "MobileNetV3", "mobilenet_v1", "mobilenet_v1_0_75", "mobilenet_v1_0_5",
           "mobilenet_v2", "mobilenet_v2_0_75", "mobilenet_v2_0_5", "mobilenet_v3_large", "mobilenet_v3_small",
           "make_divisible"]


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """torchvision's _make_divisible: round channels to a multiple of 8, never below 90%."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class ConvBNAct(nn.Sequential):
    """torchvision's Conv2dNormActivation: 0 conv, 1 bn, 2 activation."""

    def __init__(self, inp: int, oup: int, k: int = 3, s: int = 1, groups: int = 1,
                 act: type[nn.Module] | None = nn.ReLU6) -> None:
        layers: list[nn.Module] = [nn.Conv2d(inp, oup, k, s, (k - 1) // 2, groups=groups, bias=False),
                                   nn.BatchNorm2d(oup)]
        if act is not None:
            layers.append(act(inplace=True))
        super().__init__(*layers)
        self.out_channels = oup


# -- V1 ------------------------------------------------------------------------

# (out channels, stride) of the 13 depthwise-separable blocks, paper Table 1
_V1_BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1), (512, 1),
              (512, 1), (1024, 2), (1024, 1)]


class MobileNetV1(FeatureStages, nn.Module):
    def __init__(self, width_mult: float = 1.0, num_classes: int = 1000) -> None:
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"width_mult must be positive, got {width_mult}")
        c = lambda ch: max(8, int(ch * width_mult))  # noqa: E731 - the paper scales channels linearly
        layers: list[nn.Module] = [ConvBNAct(3, c(32), 3, 2, act=nn.ReLU)]
        inp = c(32)
        for out, s in _V1_BLOCKS:
            layers.append(nn.Sequential(ConvBNAct(inp, inp, 3, s, groups=inp, act=nn.ReLU),
                                        ConvBNAct(inp, c(out), 1, 1, act=nn.ReLU)))
            inp = c(out)
        self.features = nn.Sequential(*layers)
        self._stage_ends = (5, 11, 13)
        self._stage_channels = (c(256), c(512), c(1024))
        self.num_classes = num_classes
        self.classifier = nn.Sequential(nn.Dropout(0.001), nn.Linear(inp, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(global_pool(self.features(x)))


# -- V2 ------------------------------------------------------------------------

class InvertedResidual(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride should be 1 or 2, got {stride}")
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNAct(inp, hidden, 1))
        layers += [ConvBNAct(hidden, hidden, 3, stride, groups=hidden),
                   nn.Conv2d(hidden, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup)]
        self.conv = nn.Sequential(*layers)
        self.out_channels = oup

    def residual_branch_norms(self) -> list[nn.BatchNorm2d]:
        return [self.conv[-1]] if self.use_res_connect else []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


# t (expansion), c (channels), n (repeats), s (stride): paper Table 2
_V2_SETTING = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1], [6, 160, 3, 2], [6, 320, 1, 1]]


class MobileNetV2(FeatureStages, nn.Module):
    def __init__(self, width_mult: float = 1.0, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        inp = make_divisible(32 * width_mult)
        last = make_divisible(1280 * max(1.0, width_mult))
        layers: list[nn.Module] = [ConvBNAct(3, inp, 3, 2)]
        for t, c, n, s in _V2_SETTING:
            oup = make_divisible(c * width_mult)
            for i in range(n):
                layers.append(InvertedResidual(inp, oup, s if i == 0 else 1, t))
                inp = oup
        layers.append(ConvBNAct(inp, last, 1))
        self.features = nn.Sequential(*layers)
        # stride 8 after block 6 (32 ch), 16 after block 13 (96 ch), 32 after the last conv
        self._stage_ends = (6, 13, 18)
        self._stage_channels = (make_divisible(32 * width_mult), make_divisible(96 * width_mult), last)
        self.num_classes = num_classes
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(global_pool(self.features(x)))


# -- V3 ------------------------------------------------------------------------

class SqueezeExcitation(nn.Module):
    """torchvision.ops.SqueezeExcitation names: fc1, fc2 (1x1 convs)."""

    def __init__(self, inp: int, squeeze: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(inp, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, inp, 1)
        self.activation = nn.ReLU()
        self.scale_activation = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        return x * self.scale_activation(self.fc2(self.activation(self.fc1(s))))


class V3Block(nn.Module):
    def __init__(self, inp: int, k: int, exp: int, out: int, se: bool, act: str, stride: int) -> None:
        super().__init__()
        self.use_res_connect = stride == 1 and inp == out
        Act = nn.Hardswish if act == "HS" else nn.ReLU
        layers: list[nn.Module] = []
        if exp != inp:
            layers.append(ConvBNAct(inp, exp, 1, act=Act))
        layers.append(ConvBNAct(exp, exp, k, stride, groups=exp, act=Act))
        if se:
            layers.append(SqueezeExcitation(exp, make_divisible(exp // 4)))
        layers.append(ConvBNAct(exp, out, 1, act=None))
        self.block = nn.Sequential(*layers)
        self.out_channels = out

    def residual_branch_norms(self) -> list[nn.BatchNorm2d]:
        return [self.block[-1][1]] if self.use_res_connect else []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.use_res_connect else self.block(x)


# kernel, expanded, out, SE, activation, stride: paper Tables 1 and 2
_V3_LARGE = [(3, 16, 16, False, "RE", 1), (3, 64, 24, False, "RE", 2), (3, 72, 24, False, "RE", 1),
             (5, 72, 40, True, "RE", 2), (5, 120, 40, True, "RE", 1), (5, 120, 40, True, "RE", 1),
             (3, 240, 80, False, "HS", 2), (3, 200, 80, False, "HS", 1), (3, 184, 80, False, "HS", 1),
             (3, 184, 80, False, "HS", 1), (3, 480, 112, True, "HS", 1), (3, 672, 112, True, "HS", 1),
             (5, 672, 160, True, "HS", 2), (5, 960, 160, True, "HS", 1), (5, 960, 160, True, "HS", 1)]
_V3_SMALL = [(3, 16, 16, True, "RE", 2), (3, 72, 24, False, "RE", 2), (3, 88, 24, False, "RE", 1),
             (5, 96, 40, True, "HS", 2), (5, 240, 40, True, "HS", 1), (5, 240, 40, True, "HS", 1),
             (5, 120, 48, True, "HS", 1), (5, 144, 48, True, "HS", 1), (5, 288, 96, True, "HS", 2),
             (5, 576, 96, True, "HS", 1), (5, 576, 96, True, "HS", 1)]


class MobileNetV3(FeatureStages, nn.Module):
    def __init__(self, setting: list[tuple], last_channel: int, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        layers: list[nn.Module] = [ConvBNAct(3, 16, 3, 2, act=nn.Hardswish)]
        inp, stride, ends, chans = 16, 2, [], []
        for k, exp, out, se, act, s in setting:
            if s == 2 and stride >= 8:  # the previous block ended the stride 8 or 16 stage
                ends.append(len(layers) - 1)
                chans.append(inp)
            stride *= s
            layers.append(V3Block(inp, k, exp, out, se, act, s))
            inp = out
        last_conv = 6 * inp
        layers.append(ConvBNAct(inp, last_conv, 1, act=nn.Hardswish))
        ends.append(len(layers) - 1)
        chans.append(last_conv)
        self.features = nn.Sequential(*layers)
        self._stage_ends = tuple(ends)
        self._stage_channels = tuple(chans)
        self.num_classes = num_classes
        self.classifier = nn.Sequential(nn.Linear(last_conv, last_channel), nn.Hardswish(inplace=True),
                                        nn.Dropout(dropout, inplace=True), nn.Linear(last_channel, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(global_pool(self.features(x)))


@register_model("mobilenet_v1", family="classifier", task="classification", input_size=224,
                paper_macs=569_000_000)
def mobilenet_v1(**kw) -> MobileNetV1:
    return MobileNetV1(1.0, **kw)


@register_model("mobilenet_v1_0.75", family="classifier", task="classification", input_size=224,
                paper_macs=325_000_000)
def mobilenet_v1_0_75(**kw) -> MobileNetV1:
    return MobileNetV1(0.75, **kw)


@register_model("mobilenet_v1_0.5", family="classifier", task="classification", input_size=224,
                paper_macs=149_000_000)
def mobilenet_v1_0_5(**kw) -> MobileNetV1:
    return MobileNetV1(0.5, **kw)


@register_model("mobilenet_v2", family="classifier", task="classification", input_size=224,
                paper_macs=300_000_000)
def mobilenet_v2(**kw) -> MobileNetV2:
    return MobileNetV2(1.0, **kw)


@register_model("mobilenet_v2_0.75", family="classifier", task="classification", input_size=224)
def mobilenet_v2_0_75(**kw) -> MobileNetV2:
    return MobileNetV2(0.75, **kw)


@register_model("mobilenet_v2_0.5", family="classifier", task="classification", input_size=224)
def mobilenet_v2_0_5(**kw) -> MobileNetV2:
    return MobileNetV2(0.5, **kw)


@register_model("mobilenet_v3_large", family="classifier", task="classification", input_size=224,
                paper_macs=219_000_000)
def mobilenet_v3_large(**kw) -> MobileNetV3:
    return MobileNetV3(_V3_LARGE, 1280, **kw)


@register_model("mobilenet_v3_small", family="classifier", task="classification", input_size=224,
                paper_macs=56_000_000)
def mobilenet_v3_small(**kw) -> MobileNetV3:
    return MobileNetV3(_V3_SMALL, 1024, **kw)
