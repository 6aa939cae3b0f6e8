"""NanoDet-m (legacy v0.x head) with upstream NanoDet's module names.

Backbone ShuffleNetV2 without conv5 (LeakyReLU 0.1) -> PAN (1x1 laterals, then
bilinear top-down x2 and bottom-up x0.5 sums, no extra convs) -> NanoDetHead
(per-level, shared cls/reg: ``stacked_convs`` depthwise-separable conv modules
then one 1x1 conv whose channels split into class logits and 4*(reg_max+1)
distribution logits).

Module names follow NanoDet (``backbone.stage2.0.branch1.0.weight``,
``fpn.lateral_convs.0.conv.weight``, ``head.cls_convs.0.0.depthwise.weight``,
``head.gfl_cls.0.weight``, ``head.gfl_reg.0.weight``,
``head.distribution_project.project``), so NanoDet training checkpoints load
without renaming.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from litedet.datasets import COCO_CLASSES, NANODET_MEAN_BGR, NANODET_STD_BGR

from .registry import register_model
from .shufflenetv2 import STAGE_OUT_CHANNELS, STAGE_REPEATS, ShuffleNetV2

__all__ = ["ClassPrior", "GFLDetector", "NanoDet", "NanoDetSpec", "nanodet_backbone", "DepthwiseConvModule", "Integral", "nanodet_m", "nanodet_m_1_5x", "COCO_CLASSES", "NANODET_M", "NANODET_M_1_5X",
           "deploy_layout"]



@dataclass(frozen=True)
class NanoDetSpec:
    """Everything about a NanoDet variant that preprocessing and decoding need."""

    width: str = "1.0x"
    fpn_channels: int = 96
    stacked_convs: int = 2
    reg_max: int = 7
    strides: tuple[int, ...] = (8, 16, 32)
    num_classes: int = 80
    input_sizes: tuple[int, ...] = (320, 416)
    # NanoDet normalises BGR pixels with these (config: normalize).
    mean_bgr: tuple[float, float, float] = NANODET_MEAN_BGR
    std_bgr: tuple[float, float, float] = NANODET_STD_BGR
    # Legacy NanoDet-m places a cell's centre at (x + 0.5) * stride.
    center_offset: float = 0.5
    class_names: tuple[str, ...] = field(default_factory=lambda: tuple(COCO_CLASSES))


class ConvModule(nn.Module):
    """1x1 lateral conv of NanoDet's FPN: conv with bias, no norm, no activation."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class DepthwiseConvModule(nn.Module):
    """depthwise -> BN -> act -> pointwise -> BN -> act (NanoDet's order)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(
            in_channels, in_channels, kernel_size, stride=stride, padding=kernel_size // 2, groups=in_channels,
            bias=False,
        )
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.dwnorm = nn.BatchNorm2d(in_channels)
        self.pwnorm = nn.BatchNorm2d(out_channels)
        self.act = nn.LeakyReLU(negative_slope=0.1, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.dwnorm(self.depthwise(x)))
        return self.act(self.pwnorm(self.pointwise(x)))


class PAN(nn.Module):
    """Path aggregation with interpolation only (legacy NanoDet PAN)."""

    def __init__(self, in_channels: list[int], out_channels: int) -> None:
        super().__init__()
        self.in_channels = list(in_channels)
        self.lateral_convs = nn.ModuleList(ConvModule(c, out_channels, 1) for c in in_channels)

    def forward(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        if len(inputs) != len(self.in_channels):
            raise ValueError(f"PAN expects {len(self.in_channels)} feature maps, got {len(inputs)}")
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, inputs)]
        # top-down: each finer level gets the bilinear x2 upsampled coarser one
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(
                laterals[i], scale_factor=2.0, mode="bilinear", align_corners=False
            )
        # bottom-up: each coarser level gets the bilinear x0.5 downsampled finer one
        outs = list(laterals)
        for i in range(len(outs) - 1):
            outs[i + 1] = outs[i + 1] + F.interpolate(
                outs[i], scale_factor=0.5, mode="bilinear", align_corners=False
            )
        return outs


class Integral(nn.Module):
    """Holds the bin positions 0..reg_max (a buffer upstream checkpoints carry)."""

    def __init__(self, reg_max: int) -> None:
        super().__init__()
        self.reg_max = reg_max
        self.register_buffer("project", torch.linspace(0, reg_max, reg_max + 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.softmax(x.reshape(-1, self.reg_max + 1), dim=1)
        return F.linear(x, self.project.type_as(x)).reshape(-1, 4)


class ClassPrior:
    """For heads whose ``gfl_cls`` convs output num_classes logits, then the distributions."""

    gfl_cls: nn.ModuleList
    num_classes: int

    def reset_class_prior(self, prior: float = 0.01) -> None:
        """Class logits start at logit(prior) (upstream: -4.595, score 0.01), distribution biases at 0."""
        import math

        with torch.no_grad():
            for cls in self.gfl_cls:
                cls.bias[: self.num_classes].fill_(math.log(prior / (1 - prior)))
                cls.bias[self.num_classes:].zero_()


class NanoDetHead(ClassPrior, nn.Module):
    """Legacy NanoDet head with share_cls_reg=True."""

    def __init__(self, num_classes: int, in_channels: int, feat_channels: int, stacked_convs: int,
                 reg_max: int, strides: tuple[int, ...]) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.reg_max = reg_max
        self.strides = tuple(strides)
        self.cls_convs = nn.ModuleList()
        self.reg_convs = nn.ModuleList()
        for _ in self.strides:
            convs = nn.ModuleList(
                DepthwiseConvModule(in_channels if i == 0 else feat_channels, feat_channels)
                for i in range(stacked_convs)
            )
            self.cls_convs.append(convs)
            self.reg_convs.append(nn.ModuleList())  # empty: cls and reg share the tower
        n_out = num_classes + 4 * (reg_max + 1)
        self.gfl_cls = nn.ModuleList(nn.Conv2d(feat_channels, n_out, 1) for _ in self.strides)
        # Unused with shared cls/reg, but upstream builds it, so checkpoints carry it.
        self.gfl_reg = nn.ModuleList(nn.Conv2d(feat_channels, 4 * (reg_max + 1), 1) for _ in self.strides)
        self.distribution_project = Integral(reg_max)
        self.init_weights()

    def init_weights(self) -> None:
        for m in self.cls_convs.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
        for cls, reg in zip(self.gfl_cls, self.gfl_reg):
            nn.init.normal_(cls.weight, std=0.01)
            nn.init.normal_(reg.weight, std=0.01)
            nn.init.zeros_(reg.bias)
        self.reset_class_prior()

    def forward_level(self, x: torch.Tensor, level: int) -> tuple[torch.Tensor, torch.Tensor]:
        for conv in self.cls_convs[level]:
            x = conv(x)
        feat = self.gfl_cls[level](x)
        cls_logits, dist_logits = torch.split(feat, [self.num_classes, 4 * (self.reg_max + 1)], dim=1)
        return cls_logits, dist_logits

    def forward(self, feats: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        cls_scores, bbox_preds = [], []
        for level, x in enumerate(feats):
            c, d = self.forward_level(x, level)
            cls_scores.append(c)
            bbox_preds.append(d)
        return cls_scores, bbox_preds


class GFLDetector(nn.Module):
    """NanoDet-style detector: backbone -> fpn -> head giving per-level class logits
    and distribution logits. ``forward`` returns the raw per-level maps
    (training/eval); ``forward_deploy`` the exported layout the manifest describes."""

    spec: NanoDetSpec
    # checkpoint entries that belong to training only (loaded nowhere, reported)
    ignored_checkpoint_prefixes: tuple[str, ...] = ()

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        return self.head(self.fpn(self.backbone.forward_features(x)))

    def forward_deploy(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Outputs, in order: class scores per stride (sigmoid applied here,
        once; [B, H*W, num_classes]), then distribution logits per stride (raw;
        [B, H*W, 4*(reg_max+1)], bins of l, t, r, b in that order). Rows run
        over the feature map row-major (index = y * W + x)."""
        cls_scores, bbox_preds = self.forward(x)
        scores = [torch.sigmoid(c).flatten(2).permute(0, 2, 1) for c in cls_scores]
        dists = [d.flatten(2).permute(0, 2, 1) for d in bbox_preds]
        return (*scores, *dists)

    def deploy_output_names(self) -> list[str]:
        return [f"cls_pred_stride_{s}" for s in self.spec.strides] + [
            f"dis_pred_stride_{s}" for s in self.spec.strides
        ]


def _check_spec(spec: NanoDetSpec) -> None:
    if spec.width not in STAGE_OUT_CHANNELS:
        raise ValueError(f"unknown ShuffleNetV2 width {spec.width!r}; expected one of {sorted(STAGE_OUT_CHANNELS)}")
    if len(spec.class_names) != spec.num_classes:
        raise ValueError(f"{len(spec.class_names)} class names for num_classes={spec.num_classes}")


def nanodet_backbone(spec: NanoDetSpec) -> ShuffleNetV2:
    """NanoDet's ShuffleNetV2: LeakyReLU 0.1, no conv5, stride 8/16/32 outputs."""
    return ShuffleNetV2(STAGE_REPEATS, STAGE_OUT_CHANNELS[spec.width], num_classes=0,
                        activation="leaky_relu", with_last_conv=False, out_stages=(2, 3, 4))


class NanoDet(GFLDetector):
    """NanoDet-m (legacy head)."""

    def __init__(self, spec: NanoDetSpec) -> None:
        super().__init__()
        _check_spec(spec)
        self.spec = spec
        self.backbone = nanodet_backbone(spec)
        self.fpn = PAN(self.backbone.feature_channels, spec.fpn_channels)
        self.head = NanoDetHead(spec.num_classes, spec.fpn_channels, spec.fpn_channels,
                                spec.stacked_convs, spec.reg_max, spec.strides)


NANODET_M = NanoDetSpec(width="1.0x", fpn_channels=96)
NANODET_M_1_5X = NanoDetSpec(width="1.5x", fpn_channels=128)


def deploy_layout(spec: NanoDetSpec) -> tuple[tuple[str, int], ...]:
    """``forward_deploy``'s outputs as (role, stride): scores per stride, then distributions per stride."""
    return tuple(("cls_scores", s) for s in spec.strides) + tuple(("dist_logits", s) for s in spec.strides)


@register_model("nanodet_m", family="nanodet", task="detection", input_size=320, strides=NANODET_M.strides,
                outputs=deploy_layout(NANODET_M))
def nanodet_m(**overrides) -> NanoDet:
    """NanoDet-m: ShuffleNetV2 1.0x, PAN 96, 80 COCO classes, inputs 320/416."""
    return NanoDet(replace(NANODET_M, **overrides))


@register_model("nanodet_m_1.5x", family="nanodet", task="detection", input_size=416, strides=NANODET_M_1_5X.strides,
                outputs=deploy_layout(NANODET_M_1_5X))
def nanodet_m_1_5x(**overrides) -> NanoDet:
    """NanoDet-m-1.5x: ShuffleNetV2 1.5x, PAN 128 (upstream nanodet-m-1.5x-416.yml)."""
    return NanoDet(replace(NANODET_M_1_5X, **overrides))
