"""NanoDet-Plus with upstream NanoDet's module names.

Backbone ShuffleNetV2 (as NanoDet-m) -> GhostPAN (1x1 reduce convs, ghost
blocks in the top-down and bottom-up paths, 5x5 depthwise downsampling, one
extra stride-64 level) -> NanoDetPlusHead (per level: two 5x5 depthwise
separable conv modules, then one 1x1 conv to num_classes + 4*(reg_max+1)).
Cell centres are at (x * stride, y * stride): no half-cell offset, as upstream
decodes Plus. Training checkpoints also carry the auxiliary head
(``aux_fpn.*``, ``aux_head.*``, training only): it is ignored at load and
absent from the export; the load report says how many tensors were left.

Module names follow upstream (``fpn.reduce_layers.0.conv.weight``,
``fpn.top_down_blocks.0.blocks.0.ghost1.primary_conv.0.weight``,
``fpn.extra_lvl_in_conv.0.depthwise.weight``, ``head.cls_convs.0.0.depthwise.weight``,
``head.gfl_cls.3.weight``, ``head.distribution_project.project``), so its checkpoints load unchanged.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
from torch import nn

from .nanodet import (COCO_CLASSES, ClassPrior, DepthwiseConvModule, GFLDetector, Integral, NanoDetSpec, _check_spec, deploy_layout,
                      nanodet_backbone)
from .registry import register_model

__all__ = ["GhostPAN", "NanoDetPlusHead", "NanoDetPlus", "nanodet_plus_m", "nanodet_plus_m_1_5x",
           "NANODET_PLUS_M", "NANODET_PLUS_M_1_5X"]


def _leaky() -> nn.Module:
    return nn.LeakyReLU(negative_slope=0.1, inplace=True)


class ConvModule(nn.Module):
    """conv -> BN -> LeakyReLU (upstream's ConvModule with norm_cfg BN: names conv, bn, act)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = _leaky()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class GhostModule(nn.Module):
    """Half the channels from a 1x1 conv, the other half from a cheap 3x3 depthwise conv on them."""

    def __init__(self, inp: int, oup: int, act: bool = True, dw_size: int = 3) -> None:
        super().__init__()
        init_channels = math.ceil(oup / 2)
        self.primary_conv = nn.Sequential(nn.Conv2d(inp, init_channels, 1, bias=False),
                                          nn.BatchNorm2d(init_channels), _leaky() if act else nn.Sequential())
        self.cheap_operation = nn.Sequential(
            nn.Conv2d(init_channels, init_channels, dw_size, 1, dw_size // 2, groups=init_channels, bias=False),
            nn.BatchNorm2d(init_channels), _leaky() if act else nn.Sequential())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.primary_conv(x)
        return torch.cat([x1, self.cheap_operation(x1)], dim=1)


class GhostBottleneck(nn.Module):
    """ghost (act) -> ghost (linear), plus a depthwise-separable shortcut when channels change."""

    def __init__(self, in_chs: int, mid_chs: int, out_chs: int, dw_kernel_size: int = 3) -> None:
        super().__init__()
        self.ghost1 = GhostModule(in_chs, mid_chs, act=True)
        self.ghost2 = GhostModule(mid_chs, out_chs, act=False)
        if in_chs == out_chs:
            self.shortcut = nn.Sequential()
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_chs, in_chs, dw_kernel_size, padding=(dw_kernel_size - 1) // 2, groups=in_chs, bias=False),
                nn.BatchNorm2d(in_chs), nn.Conv2d(in_chs, out_chs, 1, bias=False), nn.BatchNorm2d(out_chs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ghost2(self.ghost1(x)) + self.shortcut(x)

    def residual_branch_norms(self) -> list[nn.BatchNorm2d]:
        """The norms that end the ghost branch (seeded weights damp them; models/init.py)."""
        return [self.ghost2.primary_conv[1], self.ghost2.cheap_operation[1]]


class GhostBlocks(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 5, num_blocks: int = 1) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*(GhostBottleneck(in_channels, out_channels, out_channels, kernel_size)
                                      for _ in range(num_blocks)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class GhostPAN(nn.Module):
    """Path aggregation with ghost blocks (NanoDet-Plus), bilinear x2 upsampling,
    5x5 depthwise stride-2 downsampling and ``num_extra_level`` extra coarser levels."""

    def __init__(self, in_channels: list[int], out_channels: int, kernel_size: int = 5, num_extra_level: int = 1) -> None:
        super().__init__()
        self.in_channels = list(in_channels)
        self.upsample = nn.Upsample(scale_factor=2, mode="bilinear")
        self.reduce_layers = nn.ModuleList(ConvModule(c, out_channels, 1) for c in in_channels)
        n = len(in_channels)
        self.top_down_blocks = nn.ModuleList(GhostBlocks(out_channels * 2, out_channels, kernel_size) for _ in range(n - 1))
        self.downsamples = nn.ModuleList(DepthwiseConvModule(out_channels, out_channels, kernel_size, stride=2)
                                         for _ in range(n - 1))
        self.bottom_up_blocks = nn.ModuleList(GhostBlocks(out_channels * 2, out_channels, kernel_size) for _ in range(n - 1))
        self.extra_lvl_in_conv = nn.ModuleList(DepthwiseConvModule(out_channels, out_channels, kernel_size, stride=2)
                                               for _ in range(num_extra_level))
        self.extra_lvl_out_conv = nn.ModuleList(DepthwiseConvModule(out_channels, out_channels, kernel_size, stride=2)
                                                for _ in range(num_extra_level))

    def forward(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        if len(inputs) != len(self.in_channels):
            raise ValueError(f"GhostPAN expects {len(self.in_channels)} feature maps, got {len(inputs)}")
        inputs = [reduce(x) for x, reduce in zip(inputs, self.reduce_layers)]
        # top-down: upsample the coarser result, concatenate with the finer input, ghost block
        inner = [inputs[-1]]
        for i, idx in enumerate(range(len(inputs) - 1, 0, -1)):
            inner.insert(0, self.top_down_blocks[i](torch.cat([self.upsample(inner[0]), inputs[idx - 1]], 1)))
        # bottom-up: downsample the finer result, concatenate with the coarser top-down one
        outs = [inner[0]]
        for idx in range(len(inputs) - 1):
            outs.append(self.bottom_up_blocks[idx](torch.cat([self.downsamples[idx](outs[-1]), inner[idx + 1]], 1)))
        # extra levels: from the reduced coarsest input and the last output, summed
        for conv_in, conv_out in zip(self.extra_lvl_in_conv, self.extra_lvl_out_conv):
            outs.append(conv_in(inputs[-1]) + conv_out(outs[-1]))
        return outs

    def residual_branch_norms(self) -> list[nn.BatchNorm2d]:
        """The norms that end the two summed branches of each extra level (seeded weights damp them)."""
        return [c.pwnorm for c in (*self.extra_lvl_in_conv, *self.extra_lvl_out_conv)]


class NanoDetPlusHead(ClassPrior, nn.Module):
    """Per level: ``stacked_convs`` 5x5 depthwise-separable conv modules, then one 1x1 conv
    whose channels split into class logits and 4*(reg_max+1) distribution logits."""

    def __init__(self, num_classes: int, input_channel: int, feat_channels: int, stacked_convs: int, kernel_size: int,
                 strides: tuple[int, ...], reg_max: int) -> None:
        super().__init__()
        self.num_classes, self.reg_max, self.strides = num_classes, reg_max, tuple(strides)
        self.cls_convs = nn.ModuleList(
            nn.ModuleList(DepthwiseConvModule(input_channel if i == 0 else feat_channels, feat_channels, kernel_size)
                          for i in range(stacked_convs))
            for _ in self.strides)
        self.gfl_cls = nn.ModuleList(nn.Conv2d(feat_channels, num_classes + 4 * (reg_max + 1), 1) for _ in self.strides)
        self.distribution_project = Integral(reg_max)
        self.reset_class_prior()

    def forward(self, feats: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        cls_scores, bbox_preds = [], []
        for x, convs, gfl_cls in zip(feats, self.cls_convs, self.gfl_cls):
            for conv in convs:
                x = conv(x)
            c, d = torch.split(gfl_cls(x), [self.num_classes, 4 * (self.reg_max + 1)], dim=1)
            cls_scores.append(c)
            bbox_preds.append(d)
        return cls_scores, bbox_preds


class NanoDetPlus(GFLDetector):
    """NanoDet-Plus (inference part: the auxiliary training head is not built)."""

    # the training-only auxiliary head; and head.project, a copy of the bin positions that
    # some upstream versions registered on the head (distribution_project.project holds them)
    ignored_checkpoint_prefixes = ("aux_fpn.", "aux_head.", "head.project")

    def __init__(self, spec: NanoDetSpec, kernel_size: int = 5) -> None:
        super().__init__()
        _check_spec(spec)
        self.spec = spec
        self.backbone = nanodet_backbone(spec)
        extra = len(spec.strides) - len(self.backbone.feature_channels)
        if extra < 0:
            raise ValueError(f"NanoDet-Plus needs at least {len(self.backbone.feature_channels)} strides, got {spec.strides}")
        self.fpn = GhostPAN(self.backbone.feature_channels, spec.fpn_channels, kernel_size, num_extra_level=extra)
        self.head = NanoDetPlusHead(spec.num_classes, spec.fpn_channels, spec.fpn_channels, spec.stacked_convs,
                                    kernel_size, spec.strides, spec.reg_max)


# upstream config/nanodet-plus-m_320.yml and nanodet-plus-m-1.5x_320.yml (416 variants: same weights' shapes)
NANODET_PLUS_M = NanoDetSpec(width="1.0x", fpn_channels=96, strides=(8, 16, 32, 64), center_offset=0.0,
                             class_names=tuple(COCO_CLASSES))
NANODET_PLUS_M_1_5X = replace(NANODET_PLUS_M, width="1.5x", fpn_channels=128)


@register_model("nanodet_plus_m", family="nanodet", task="detection", input_size=320,
                strides=NANODET_PLUS_M.strides, outputs=deploy_layout(NANODET_PLUS_M))
def nanodet_plus_m(**overrides) -> NanoDetPlus:
    """NanoDet-Plus-m: ShuffleNetV2 1.0x, GhostPAN 96, strides 8-64, inputs 320/416."""
    return NanoDetPlus(replace(NANODET_PLUS_M, **overrides))


@register_model("nanodet_plus_m_1.5x", family="nanodet", task="detection", input_size=320,
                strides=NANODET_PLUS_M_1_5X.strides, outputs=deploy_layout(NANODET_PLUS_M_1_5X))
def nanodet_plus_m_1_5x(**overrides) -> NanoDetPlus:
    """NanoDet-Plus-m-1.5x: ShuffleNetV2 1.5x, GhostPAN 128, strides 8-64, inputs 320/416."""
    return NanoDetPlus(replace(NANODET_PLUS_M_1_5X, **overrides))
