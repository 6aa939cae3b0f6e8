"""ResNet-18/50 (He et al., 2016) with torchvision's names, and ResNeSt-50
(Zhang et al., 2020) with the upstream ResNeSt code's names: radix 2,
cardinality 1, bottleneck width 64, deep stem of width 32, average-pool
downsampling in the shortcut (avg_down) and before the 3x3 (avd), and
split attention with the radix softmax."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import global_pool
from .registry import register_model

__all__ = ["ResNet", "resnet18", "resnet50", "resnest50", "SplAtConv2d"]


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def residual_branch_norms(self) -> list[nn.BatchNorm2d]:
        return [self.bn2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """torchvision's bottleneck (stride on the 3x3)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def residual_branch_norms(self) -> list[nn.BatchNorm2d]:
        return [self.bn3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class SplAtConv2d(nn.Module):
    """Split attention: a grouped conv makes ``radix`` splits, their sum is
    pooled, two 1x1 convs give per-split channel weights, a softmax across the
    radix dimension normalises them, and the splits are summed with those weights."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1, radix: int = 2, reduction_factor: int = 4) -> None:
        super().__init__()
        inter = max(in_channels * radix // reduction_factor, 32)
        self.radix = radix
        self.channels = channels
        self.conv = nn.Conv2d(in_channels, channels * radix, 3, stride, 1, groups=radix, bias=False)
        self.bn0 = nn.BatchNorm2d(channels * radix)
        self.relu = nn.ReLU(inplace=True)
        self.fc1 = nn.Conv2d(channels, inter, 1)
        self.bn1 = nn.BatchNorm2d(inter)
        self.fc2 = nn.Conv2d(inter, channels * radix, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn0(self.conv(x)))
        splits = torch.split(x, self.channels, dim=1)
        gap = splits[0]
        for s in splits[1:]:
            gap = gap + s
        gap = F.adaptive_avg_pool2d(gap, 1)  # independent of the traced size
        atten = self.fc2(self.relu(self.bn1(self.fc1(gap))))
        # rSoftMax (cardinality 1): [B, radix*C, 1, 1] -> [B, radix, C] -> softmax over radix.
        # No batch-dependent reshape: the batch is kept symbolic with -1 on the channel side.
        atten = F.softmax(atten.view(atten.size(0), self.radix, self.channels), dim=1)
        out = splits[0] * atten[:, 0].unsqueeze(-1).unsqueeze(-1)
        for r in range(1, self.radix):
            out = out + splits[r] * atten[:, r].unsqueeze(-1).unsqueeze(-1)
        return out


class ResNeStBottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 radix: int = 2, avd: bool = True, is_first: bool = False) -> None:
        super().__init__()
        width = planes  # bottleneck_width 64, cardinality 1
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.avd = avd and (stride > 1 or is_first)
        if self.avd:
            self.avd_layer = nn.AvgPool2d(3, stride, padding=1)
            stride = 1
        self.conv2 = SplAtConv2d(width, width, stride, radix)
        self.conv3 = nn.Conv2d(width, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def residual_branch_norms(self) -> list[nn.BatchNorm2d]:
        return [self.bn3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.conv2(self.relu(self.bn1(self.conv1(x))))
        if self.avd:
            out = self.avd_layer(out)
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    def __init__(self, block: type[nn.Module], layers: list[int], num_classes: int = 1000, resnest: bool = False) -> None:
        super().__init__()
        self.resnest = resnest
        if resnest:
            stem = 32
            self.conv1 = nn.Sequential(
                nn.Conv2d(3, stem, 3, 2, 1, bias=False), nn.BatchNorm2d(stem), nn.ReLU(inplace=True),
                nn.Conv2d(stem, stem, 3, 1, 1, bias=False), nn.BatchNorm2d(stem), nn.ReLU(inplace=True),
                nn.Conv2d(stem, stem * 2, 3, 1, 1, bias=False))
        else:
            self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.inplanes = 64
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0], 1)
        self.layer2 = self._make_layer(block, 128, layers[1], 2)
        self.layer3 = self._make_layer(block, 256, layers[2], 2)
        self.layer4 = self._make_layer(block, 512, layers[3], 2)
        self.num_classes = num_classes
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        self._stage_channels = (128 * block.expansion, 256 * block.expansion, 512 * block.expansion)

    def _make_layer(self, block, planes: int, blocks: int, stride: int) -> nn.Sequential:
        out = planes * block.expansion
        downsample = None
        if stride != 1 or self.inplanes != out:
            if self.resnest:  # avg_down: pool, then a stride-1 1x1 conv
                downsample = nn.Sequential(
                    nn.AvgPool2d(kernel_size=stride, stride=stride, ceil_mode=True, count_include_pad=False),
                    nn.Conv2d(self.inplanes, out, 1, 1, bias=False), nn.BatchNorm2d(out))
            else:
                downsample = nn.Sequential(nn.Conv2d(self.inplanes, out, 1, stride, bias=False), nn.BatchNorm2d(out))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = out
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    @property
    def feature_channels(self) -> list[int]:
        return list(self._stage_channels)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x)))))
        c3 = self.layer2(x)
        c4 = self.layer3(c3)
        return [c3, c4, self.layer4(c4)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(global_pool(self.forward_features(x)[-1]))


@register_model("resnet18", family="classifier", task="classification", input_size=224,
                paper_macs=1800_000_000)
def resnet18(**kw) -> ResNet:
    return ResNet(BasicBlock, [2, 2, 2, 2], **kw)


@register_model("resnet50", family="classifier", task="classification", input_size=224,
                paper_macs=3800_000_000)
def resnet50(**kw) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 6, 3], **kw)


@register_model("resnest50", family="classifier", task="classification", input_size=224)
def resnest50(**kw) -> ResNet:
    return ResNet(ResNeStBottleneck, [3, 4, 6, 3], resnest=True, **kw)
