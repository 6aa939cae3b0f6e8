"""ShuffleNetV1 (Zhang et al., 2018) with the state-dict names of Megvii's
official ShuffleNet-Series code (``first_conv``, ``features.N.branch_main_1``,
``classifier``), whose released weights therefore load unchanged.

Stride-2 units concatenate a 3x3 average-pooled shortcut with the main branch;
the first 1x1 conv of stage 2 is not grouped (its input has only 24 channels).
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from .common import FeatureStages, global_pool
from .registry import register_model

__all__ = ["ShuffleNetV1", "shufflenet_v1"]

STAGE_REPEATS = [4, 8, 4]
# (groups, width) -> [stem, stage2, stage3, stage4] (paper Table 1, Megvii's widths)
STAGE_OUT_CHANNELS = {
    (3, "0.5x"): [12, 120, 240, 480], (3, "1.0x"): [24, 240, 480, 960],
    (3, "1.5x"): [24, 360, 720, 1440], (3, "2.0x"): [48, 480, 960, 1920],
    (8, "0.5x"): [16, 192, 384, 768], (8, "1.0x"): [24, 384, 768, 1536],
    (8, "1.5x"): [24, 576, 1152, 2304], (8, "2.0x"): [48, 768, 1536, 3072],
}


class ShuffleV1Block(nn.Module):
    def __init__(self, inp: int, oup: int, group: int, first_group: bool, mid_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.group = group
        outputs = oup - inp if stride == 2 else oup
        self.branch_main_1 = nn.Sequential(
            nn.Conv2d(inp, mid_channels, 1, 1, 0, groups=1 if first_group else group, bias=False),
            nn.BatchNorm2d(mid_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid_channels, mid_channels, 3, stride, 1, groups=mid_channels, bias=False),
            nn.BatchNorm2d(mid_channels),
        )
        self.branch_main_2 = nn.Sequential(
            nn.Conv2d(mid_channels, outputs, 1, 1, 0, groups=group, bias=False),
            nn.BatchNorm2d(outputs),
        )
        # Megvii's shuffle views channels as (C/g, g) and transposes: the inverse of
        # nn.ChannelShuffle(g), i.e. nn.ChannelShuffle(C/g). Kept so their weights work;
        # pnnx turns it into one ncnn ShuffleChannel either way.
        self.shuffle = nn.ChannelShuffle(mid_channels // group) if group > 1 else nn.Identity()
        if stride == 2:
            self.branch_proj = nn.AvgPool2d(kernel_size=3, stride=2, padding=1)

    def residual_branch_norms(self) -> list[nn.BatchNorm2d]:
        return [self.branch_main_2[1]] if self.stride == 1 else []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branch_main_2(self.shuffle(self.branch_main_1(x)))
        if self.stride == 1:
            return F.relu(out + x)
        return torch.cat((self.branch_proj(x), F.relu(out)), 1)


class ShuffleNetV1(FeatureStages, nn.Module):
    def __init__(self, group: int = 3, width: str = "1.0x", num_classes: int = 1000, bottleneck: str = "output") -> None:
        """``bottleneck="output"`` (Megvii, default): every unit's bottleneck is a
        quarter of the stage's output channels. ``"branch"`` (the original Caffe
        model, and ncnn's benchmark graph): stride-2 units use a quarter of the
        main branch's channels, (out - in) / 4."""
        super().__init__()
        if bottleneck not in ("output", "branch"):
            raise ValueError(f"bottleneck must be 'output' or 'branch', got {bottleneck!r}")
        if (group, width) not in STAGE_OUT_CHANNELS:
            raise ValueError(f"no ShuffleNetV1 with groups={group}, width={width!r}; "
                             f"known: {sorted(STAGE_OUT_CHANNELS)}")
        chans = STAGE_OUT_CHANNELS[(group, width)]
        inp = chans[0]
        self.first_conv = nn.Sequential(nn.Conv2d(3, inp, 3, 2, 1, bias=False), nn.BatchNorm2d(inp), nn.ReLU(inplace=True))
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        blocks, ends = [], []
        for stage, repeats in enumerate(STAGE_REPEATS):
            oup = chans[stage + 1]
            for i in range(repeats):
                stride = 2 if i == 0 else 1
                mid = (oup - inp) // 4 if bottleneck == "branch" and stride == 2 else oup // 4
                blocks.append(ShuffleV1Block(inp, oup, group, stage == 0 and i == 0, mid, stride))
                inp = oup
            ends.append(len(blocks) - 1)
        self.features = nn.Sequential(*blocks)
        self._stage_ends = tuple(ends)
        self._stage_channels = tuple(chans[1:])
        self.num_classes = num_classes
        self.classifier = nn.Sequential(nn.Linear(chans[-1], num_classes, bias=False))

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self.first_conv(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(global_pool(self.features(self._stem(x))))


def shufflenet_v1(group: int = 3, width: str = "1.0x", **kw) -> ShuffleNetV1:
    return ShuffleNetV1(group, width, **kw)


# the paper's complexity (its MFLOPs are multiply-adds) of the g=3 models; g=8 is
# within a few % of it by design, but the paper lists g=3 only beyond 1x
_PAPER_MMACS = {"0.5x": 38, "1.0x": 140, "1.5x": 292, "2.0x": 524}
# Megvii's names: shufflenet_v1_g{3,8}_x{0_5,1_0,1_5,2_0}
for _g in (3, 8):
    for _w in ("0.5x", "1.0x", "1.5x", "2.0x"):
        register_model(f"shufflenet_v1_g{_g}_x{_w[:-1].replace('.', '_')}", family="classifier",
                       task="classification", input_size=224,
                       paper_macs=_PAPER_MMACS[_w] * 1_000_000 if _g == 3 else None)(partial(shufflenet_v1, _g, _w))
