"""Two-stage detectors for phones: ThunderNet (Qin et al., 2019) and Light-Head R-CNN
(Li et al., 2017), as two deployable graphs.

Stage 1 (``forward``): backbone -> the family's thin feature map at stride 16 ->
RPN objectness logits [A, H, W] and box deltas [4A, H, W] (torchvision's layout),
and the position-sensitive map [groups * 7 * 7, H, W] that PSRoIAlign reads.
Stage 2 (``head``): pooled RoIs [N, groups * 7 * 7] as rows -> softmax class
scores [N, C + 1] (background first) and box deltas [N, 4] (class-agnostic, ThunderNet)
or [N, 4 (C + 1)] (class-specific, Light-Head). Deployed as 1x1 convolutions over
[groups * 7 * 7, N, 1] (``RCNNHead.forward_columns``): the same matrix product.
Proposals and PSRoIAlign between them run in the runtime (``runtime/kinds/rpn_psroi_ops.py``),
as torchvision computes them.

ThunderNet: SNet backbone; Context Enhancement Module (1x1 convs to 245 = 5 x 7 x 7
on C4, on C5 then 2x nearest-upsampled, and on the global average of C5, summed);
compressed RPN (5x5 depthwise + BN + ReLU, 1x1 to 256 + ReLU, 25 anchors); Spatial
Attention Module (F_CEM * sigmoid(BN(1x1(F_RPN)))); R-CNN: one 1024-d fc.

Light-Head R-CNN: ResNet / SNet backbone with the last stage dilated (stride 16,
as the paper's atrous C5), RPN on C4 (3x3 to 256, 15 anchors), large separable
convolution on C5 (k x 1 -> 1 x k and 1 x k -> k x 1, summed, to 490 = 10 x 7 x 7),
R-CNN: one 2048-d fc.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .registry import register_model
from .resnet import resnet18, resnet50
from .shufflenetv2 import snet49, snet146, snet535

__all__ = ["TwoStageSpec", "TwoStageDetector", "HeadDeploy", "ThunderNet", "LightHeadRCNN", "dilate_last_stage",
           "THUNDERNET_SPEC", "LIGHTHEAD_SPEC"]

OUTPUTS = (("rpn_objectness", 16), ("rpn_deltas", 16), ("psroi_features", 16))


@dataclass(frozen=True)
class TwoStageSpec:
    """What the detector was trained with, read into the manifest (no constant written twice)."""

    anchor_sizes: tuple[float, ...]
    anchor_ratios: tuple[float, ...]  # h / w
    rpn_pre_nms_top_n: int
    rpn_post_nms_top_n: int
    psroi_groups: int
    pooled_size: int = 7
    stride: int = 16
    anchor_offset: float = 0.0  # torchvision's AnchorGenerator: anchors centred on the cell's corner
    rpn_box_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)
    rcnn_box_weights: tuple[float, ...] = (10.0, 10.0, 5.0, 5.0)  # stds 0.1, 0.1, 0.2, 0.2
    rpn_nms_threshold: float = 0.7
    rpn_min_size: float = 1e-3
    rpn_score_threshold: float = 0.0
    sampling_ratio: int = 2
    score_threshold: float = 0.05
    nms_threshold: float = 0.5
    max_detections: int = 100
    min_size: float = 1e-2
    box_clip: float = math.log(1000.0 / 16)  # torchvision's bbox_xform_clip
    # one box per RoI for every class (ThunderNet: with it its 262 MFLOPs add up) or one per class
    class_agnostic_boxes: bool = True

    @property
    def num_anchors(self) -> int:
        return len(self.anchor_sizes) * len(self.anchor_ratios)

    @property
    def psroi_channels(self) -> int:
        return self.psroi_groups * self.pooled_size ** 2


THUNDERNET_SPEC = TwoStageSpec(anchor_sizes=(32.0, 64.0, 128.0, 256.0, 512.0),
                               anchor_ratios=(0.5, 0.75, 1.0, 4.0 / 3.0, 2.0),
                               rpn_pre_nms_top_n=2000, rpn_post_nms_top_n=200, psroi_groups=5)
LIGHTHEAD_SPEC = TwoStageSpec(anchor_sizes=(32.0, 64.0, 128.0, 256.0, 512.0), anchor_ratios=(0.5, 1.0, 2.0),
                              rpn_pre_nms_top_n=6000, rpn_post_nms_top_n=1000, psroi_groups=10,
                              class_agnostic_boxes=False)


def _conv_bn_relu(cin: int, cout: int, k: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, 1, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class RCNNHead(nn.Module):
    """One fc on the pooled RoIs, then class and box fcs. Rows are RoIs: [..., N, F] -> [..., N, C+1]
    softmax scores and [..., N, 4] (class-agnostic) or [..., N, 4(C+1)] box deltas."""

    def __init__(self, in_features: int, hidden: int, num_classes: int, class_agnostic_boxes: bool = True) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, hidden)
        self.cls_score = nn.Linear(hidden, num_classes + 1)
        self.bbox_pred = nn.Linear(hidden, 4 if class_agnostic_boxes else 4 * (num_classes + 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.relu(self.fc(x))
        return torch.softmax(self.cls_score(h), dim=-1), self.bbox_pred(h)

    def forward_columns(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The same head on [1, F, N, 1] (RoIs along the height): each fc is a 1x1 convolution
        with the Linear's own weights, which ncnn runs 7x faster than a Gemm on [N, F] rows
        (5.2 vs 36 ms for ThunderNet's head on 200 RoIs, one x86 thread)."""
        def fc(layer: nn.Linear, t: torch.Tensor) -> torch.Tensor:
            return F.conv2d(t, layer.weight[:, :, None, None], layer.bias)

        h = F.relu(fc(self.fc, x))
        return torch.softmax(fc(self.cls_score, h), dim=1), fc(self.bbox_pred, h)


class TwoStageDetector(nn.Module):
    """Common part: ``forward`` is stage 1, ``head`` stage 2, ``spec`` the decoding constants."""

    spec: TwoStageSpec
    rcnn: RCNNHead
    num_classes: int

    def head(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.rcnn(pooled)

    def forward_deploy(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self(x)


class HeadDeploy(nn.Module):
    """Stage 2 alone, for tracing: ``forward_deploy`` is the detector's R-CNN head."""

    def __init__(self, model: TwoStageDetector) -> None:
        super().__init__()
        self.rcnn = model.rcnn  # only the head's weights go into its TorchScript

    def forward_deploy(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.rcnn.forward_columns(x)


class ThunderNet(TwoStageDetector):
    def __init__(self, backbone: str = "snet49", num_classes: int = 80, spec: TwoStageSpec = THUNDERNET_SPEC,
                 rpn_channels: int = 256, hidden: int = 1024) -> None:
        super().__init__()
        builders = {"snet49": snet49, "snet146": snet146, "snet535": snet535}
        if backbone not in builders:
            raise ValueError(f"ThunderNet backbone {backbone!r}; expected one of {sorted(builders)}")
        self.spec, self.num_classes, self.backbone_name = spec, num_classes, backbone
        self.backbone = builders[backbone](num_classes=0, out_stages=(3, 4))
        c4, c5 = self.backbone.feature_channels
        cem = spec.psroi_channels  # alpha * p * p = 5 * 7 * 7
        self.cem = nn.ModuleDict({"c4": nn.Conv2d(c4, cem, 1), "c5": nn.Conv2d(c5, cem, 1),
                                  "glb": nn.Conv2d(c5, cem, 1)})
        self.rpn = nn.Module()
        self.rpn.dw = _conv_bn_relu(cem, cem, 5, groups=cem)
        self.rpn.conv = nn.Sequential(nn.Conv2d(cem, rpn_channels, 1), nn.ReLU(inplace=True))
        self.rpn.cls_logits = nn.Conv2d(rpn_channels, spec.num_anchors, 1)
        self.rpn.bbox_pred = nn.Conv2d(rpn_channels, 4 * spec.num_anchors, 1)
        self.sam = nn.Sequential(nn.Conv2d(rpn_channels, cem, 1, bias=False), nn.BatchNorm2d(cem))
        self.rcnn = RCNNHead(cem, hidden, num_classes, spec.class_agnostic_boxes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c4, c5 = self.backbone.forward_features(x)
        glb = F.adaptive_avg_pool2d(c5, 1)
        # the 1x1 conv before the nearest upsampling: the same values (each output pixel is the conv
        # of one C5 pixel either way), a quarter of the work
        f_cem = (self.cem["c4"](c4) + F.interpolate(self.cem["c5"](c5), scale_factor=2.0, mode="nearest")
                 + self.cem["glb"](glb))
        f_rpn = self.rpn.conv(self.rpn.dw(f_cem))
        f_sam = f_cem * torch.sigmoid(self.sam(f_rpn))
        return self.rpn.cls_logits(f_rpn), self.rpn.bbox_pred(f_rpn), f_sam


def dilate_last_stage(stage: nn.Module) -> None:
    """Output stride 32 -> 16 with the receptive field kept: the stride-2 convs of the last
    stage run at stride 1 and its other k > 1 convs at dilation 2 (torchvision's
    replace_stride_with_dilation). Weights and state-dict names are unchanged."""
    for m in stage.modules():
        if isinstance(m, nn.Conv2d):
            if m.stride != (1, 1):
                m.stride = (1, 1)
            elif m.kernel_size[0] > 1:
                m.dilation = (2, 2)
                m.padding = (m.kernel_size[0] // 2 * 2, m.kernel_size[1] // 2 * 2)
        elif isinstance(m, nn.MaxPool2d | nn.AvgPool2d) and m.stride not in (1, (1, 1)):
            raise ValueError("a pooling layer with stride in the last stage cannot be dilated")


class LargeSeparableConv(nn.Module):
    """k x 1 -> 1 x k and 1 x k -> k x 1, summed (Light-Head's thin feature map)."""

    def __init__(self, cin: int, cmid: int, cout: int, k: int = 15) -> None:
        super().__init__()
        p = k // 2
        self.col_max = nn.Conv2d(cin, cmid, (k, 1), padding=(p, 0))
        self.row_max = nn.Conv2d(cmid, cout, (1, k), padding=(0, p))
        self.row = nn.Conv2d(cin, cmid, (1, k), padding=(0, p))
        self.col = nn.Conv2d(cmid, cout, (k, 1), padding=(p, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.row_max(self.col_max(x)) + self.col(self.row(x)))


class LightHeadRCNN(TwoStageDetector):
    def __init__(self, backbone: str = "resnet18", num_classes: int = 80, spec: TwoStageSpec = LIGHTHEAD_SPEC,
                 cmid: int | None = None, k: int = 15, rpn_channels: int = 256, hidden: int = 2048) -> None:
        super().__init__()
        builders = {"resnet18": resnet18, "resnet50": resnet50, "snet146": snet146}
        if backbone not in builders:
            raise ValueError(f"Light-Head R-CNN backbone {backbone!r}; expected one of {sorted(builders)}")
        self.spec, self.num_classes, self.backbone_name = spec, num_classes, backbone
        if backbone.startswith("snet"):
            self.backbone = builders[backbone](num_classes=0, out_stages=(3, 4))
            dilate_last_stage(self.backbone.stage4)
        else:
            self.backbone = builders[backbone](num_classes=1)
            del self.backbone.fc
            dilate_last_stage(self.backbone.layer4)
        c4, c5 = self.backbone.feature_channels[-2:]
        cmid = cmid or (256 if backbone == "resnet50" else 64)  # the paper's L (large) and S (small) heads
        self.rpn = nn.Module()
        self.rpn.conv = nn.Sequential(nn.Conv2d(c4, rpn_channels, 3, padding=1), nn.ReLU(inplace=True))
        self.rpn.cls_logits = nn.Conv2d(rpn_channels, spec.num_anchors, 1)
        self.rpn.bbox_pred = nn.Conv2d(rpn_channels, 4 * spec.num_anchors, 1)
        self.lsc = LargeSeparableConv(c5, cmid, spec.psroi_channels, k)
        self.rcnn = RCNNHead(spec.psroi_channels, hidden, num_classes, spec.class_agnostic_boxes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c4, c5 = self.backbone.forward_features(x)[-2:]
        f_rpn = self.rpn.conv(c4)
        return self.rpn.cls_logits(f_rpn), self.rpn.bbox_pred(f_rpn), self.lsc(c5)


def _register(name: str, cls: type, backbone: str, input_size: int, paper_mmacs: int | None = None) -> None:
    def build(**kw) -> TwoStageDetector:
        return cls(backbone=backbone, **kw)

    build.__name__ = name
    build.__doc__ = f"{cls.__name__} on {backbone} at {input_size}x{input_size}."
    register_model(name, family="two_stage", task="detection", input_size=input_size, strides=(16, 32),
                   outputs=OUTPUTS, paper_macs=paper_mmacs * 1_000_000 if paper_mmacs else None)(build)


# the ThunderNet paper's detector complexity at 320 (its MFLOPs are multiply-adds)
for _b, _mmacs in (("snet49", 262), ("snet146", 473), ("snet535", 1300)):
    _register(f"thundernet_{_b}", ThunderNet, _b, 320, _mmacs)
for _b in ("resnet18", "resnet50", "snet146"):
    _register(f"lighthead_rcnn_{_b}", LightHeadRCNN, _b, 512)
