"""ShuffleNetV2 (Ma et al., 2018) with torchvision's state-dict names.

The stage table is the architecture: ``_STAGE_OUT`` below holds the paper's
channel counts for every width, and the repeats are ``[4, 8, 4]``. Parameter
names are torchvision's (``conv1.0.weight``, ``stage2.0.branch1.0.weight``,
``conv5.0.weight``, ``fc.weight``), which are also NanoDet's, so torchvision
ImageNet weights and NanoDet checkpoints load without renaming.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .common import global_pool
from .registry import register_model

__all__ = [
    "ShuffleNetV2",
    "InvertedResidual",
    "shufflenet_v2_x0_5",
    "shufflenet_v2_x1_0",
    "shufflenet_v2_x1_5",
    "shufflenet_v2_x2_0",
    "snet49",
    "snet146",
    "snet535",
    "STAGE_REPEATS",
    "STAGE_OUT_CHANNELS",
]

STAGE_REPEATS = [4, 8, 4]
# width -> [conv1, stage2, stage3, stage4, conv5] (paper, Table 5)
STAGE_OUT_CHANNELS = {
    "0.5x": [24, 48, 96, 192, 1024],
    "1.0x": [24, 116, 232, 464, 1024],
    "1.5x": [24, 176, 352, 704, 1024],
    "2.0x": [24, 244, 488, 976, 2048],
}


def _act(kind: str) -> nn.Module:
    if kind == "relu":
        return nn.ReLU(inplace=True)
    if kind == "leaky_relu":
        # NanoDet's act_layers("LeakyReLU") uses slope 0.1, not PyTorch's 0.01.
        return nn.LeakyReLU(negative_slope=0.1, inplace=True)
    raise ValueError(f"unknown activation {kind!r}; expected 'relu' or 'leaky_relu'")


def _dw(i: int, o: int, k: int, s: int, p: int) -> nn.Conv2d:
    return nn.Conv2d(i, o, k, s, p, bias=False, groups=i)


class InvertedResidual(nn.Module):
    """The ShuffleNetV2 unit: split/concat when stride 1, two branches when stride 2."""

    def __init__(self, inp: int, oup: int, stride: int, activation: str = "relu", kernel_size: int = 3) -> None:
        super().__init__()
        if not 1 <= stride <= 3:
            raise ValueError(f"illegal stride value {stride}; expected 1, 2 or 3")
        self.stride = stride
        # A module (not view/transpose/view): pnnx maps nn.ChannelShuffle to one
        # ncnn ShuffleChannel even when the input size is dynamic, and it has no
        # parameters, so torchvision's state-dict names are unchanged.
        self.shuffle = nn.ChannelShuffle(2)
        branch_features = oup // 2
        if stride == 1 and inp != branch_features << 1:
            raise ValueError(
                f"a stride-1 unit needs inp == 2 * (oup // 2); got inp={inp}, oup={oup}"
            )
        pad = kernel_size // 2
        if stride > 1:
            self.branch1 = nn.Sequential(
                _dw(inp, inp, kernel_size, stride, pad),
                nn.BatchNorm2d(inp),
                nn.Conv2d(inp, branch_features, 1, 1, 0, bias=False),
                nn.BatchNorm2d(branch_features),
                _act(activation),
            )
        else:
            self.branch1 = nn.Sequential()
        self.branch2 = nn.Sequential(
            nn.Conv2d(inp if stride > 1 else branch_features, branch_features, 1, 1, 0, bias=False),
            nn.BatchNorm2d(branch_features),
            _act(activation),
            _dw(branch_features, branch_features, kernel_size, stride, pad),
            nn.BatchNorm2d(branch_features),
            nn.Conv2d(branch_features, branch_features, 1, 1, 0, bias=False),
            nn.BatchNorm2d(branch_features),
            _act(activation),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return self.shuffle(out)


class ShuffleNetV2(nn.Module):
    """ShuffleNetV2 classifier / backbone.

    ``out_stages`` selects which stages ``forward_features`` returns (2, 3, 4 are
    strides 8, 16, 32). ``with_last_conv=False`` drops conv5 (as NanoDet does);
    ``num_classes=0`` drops the classifier.
    """

    def __init__(
        self,
        stages_repeats: list[int],
        stages_out_channels: list[int],
        num_classes: int = 1000,
        activation: str = "relu",
        with_last_conv: bool = True,
        out_stages: tuple[int, ...] = (2, 3, 4),
        kernel_size: int = 3,
        block: Callable[..., nn.Module] = InvertedResidual,
    ) -> None:
        super().__init__()
        if len(stages_repeats) != 3:
            raise ValueError(f"expected stages_repeats as a list of 3 ints, got {stages_repeats}")
        if len(stages_out_channels) not in (4, 5):
            raise ValueError(f"expected stages_out_channels as 4 ints (no conv5) or 5 ints, got {stages_out_channels}")
        if len(stages_out_channels) == 4 and with_last_conv:
            raise ValueError("a 4-entry channel table has no conv5: pass with_last_conv=False")
        if not set(out_stages) <= {2, 3, 4}:
            raise ValueError(f"out_stages must be drawn from (2, 3, 4), got {out_stages}")
        self.stage_out_channels = list(stages_out_channels)
        self.out_stages = tuple(out_stages)
        self.with_last_conv = with_last_conv

        input_channels = 3
        output_channels = stages_out_channels[0]
        self.conv1 = nn.Sequential(
            nn.Conv2d(input_channels, output_channels, 3, 2, 1, bias=False),
            nn.BatchNorm2d(output_channels),
            _act(activation),
        )
        input_channels = output_channels
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

        for name, repeats, output_channels in zip(
            ("stage2", "stage3", "stage4"), stages_repeats, stages_out_channels[1:4]
        ):
            seq = [block(input_channels, output_channels, 2, activation, kernel_size)]
            seq += [block(output_channels, output_channels, 1, activation, kernel_size) for _ in range(repeats - 1)]
            setattr(self, name, nn.Sequential(*seq))
            input_channels = output_channels

        if with_last_conv:
            output_channels = stages_out_channels[-1]
            self.conv5 = nn.Sequential(
                nn.Conv2d(input_channels, output_channels, 1, 1, 0, bias=False),
                nn.BatchNorm2d(output_channels),
                _act(activation),
            )
        self.num_classes = num_classes
        if num_classes > 0:
            self.fc = nn.Linear(stages_out_channels[4] if with_last_conv else stages_out_channels[3], num_classes)

    @property
    def feature_channels(self) -> list[int]:
        """Channels of the maps ``forward_features`` returns, in stage order."""
        chans = {2: self.stage_out_channels[1], 3: self.stage_out_channels[2], 4: self.stage_out_channels[3]}
        if self.with_last_conv and len(self.stage_out_channels) == 5:
            chans[4] = self.stage_out_channels[4]
        return [chans[s] for s in self.out_stages]

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Stage 2/3/4 feature maps (strides 8/16/32) selected by ``out_stages``."""
        x = self.maxpool(self.conv1(x))
        outs = []
        for i in (2, 3, 4):
            x = getattr(self, f"stage{i}")(x)
            if i == 4 and self.with_last_conv:
                x = self.conv5(x)
            if i in self.out_stages:
                outs.append(x)
        return outs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.num_classes <= 0:
            raise RuntimeError("this ShuffleNetV2 has no classifier (num_classes=0); use forward_features")
        x = self.maxpool(self.conv1(x))
        x = self.stage4(self.stage3(self.stage2(x)))
        if self.with_last_conv:
            x = self.conv5(x)
        return self.fc(global_pool(x))


# ThunderNet's SNet (Qin et al., 2019): ShuffleNetV2 units with 5x5 depthwise
# convs; SNet49 keeps conv5 (512), SNet146/535 replace it with nothing.
SNET_CHANNELS = {
    "snet49": [24, 60, 120, 240, 512],
    "snet146": [24, 132, 264, 528],
    "snet535": [48, 248, 496, 992],
}


def _snet(name: str, **kwargs) -> ShuffleNetV2:
    table = SNET_CHANNELS[name]
    return ShuffleNetV2(STAGE_REPEATS, table, kernel_size=5, with_last_conv=len(table) == 5, **kwargs)


@register_model("snet49", family="classifier", task="classification", input_size=224,
                paper_macs=49_000_000)
def snet49(**kwargs) -> ShuffleNetV2:
    return _snet("snet49", **kwargs)


@register_model("snet146", family="classifier", task="classification", input_size=224,
                paper_macs=146_000_000)
def snet146(**kwargs) -> ShuffleNetV2:
    return _snet("snet146", **kwargs)


@register_model("snet535", family="classifier", task="classification", input_size=224,
                paper_macs=535_000_000)
def snet535(**kwargs) -> ShuffleNetV2:
    return _snet("snet535", **kwargs)


def _shufflenetv2(width: str, **kwargs) -> ShuffleNetV2:
    return ShuffleNetV2(STAGE_REPEATS, STAGE_OUT_CHANNELS[width], **kwargs)


@register_model("shufflenet_v2_x0_5", family="classifier", task="classification", input_size=224,
                paper_macs=41_000_000)
def shufflenet_v2_x0_5(**kwargs) -> ShuffleNetV2:
    return _shufflenetv2("0.5x", **kwargs)


@register_model("shufflenet_v2_x1_0", family="classifier", task="classification", input_size=224,
                paper_macs=146_000_000)
def shufflenet_v2_x1_0(**kwargs) -> ShuffleNetV2:
    return _shufflenetv2("1.0x", **kwargs)


@register_model("shufflenet_v2_x1_5", family="classifier", task="classification", input_size=224,
                paper_macs=299_000_000)
def shufflenet_v2_x1_5(**kwargs) -> ShuffleNetV2:
    return _shufflenetv2("1.5x", **kwargs)


@register_model("shufflenet_v2_x2_0", family="classifier", task="classification", input_size=224,
                paper_macs=591_000_000)
def shufflenet_v2_x2_0(**kwargs) -> ShuffleNetV2:
    return _shufflenetv2("2.0x", **kwargs)
