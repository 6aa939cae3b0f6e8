"""RefineDet (Zhang et al., CVPR 2018) with a VGG16 or a ResNeSt-50 backbone, with the state-dict
names of the PyTorch code users train with: luuuyi/RefineDet.PyTorch (VGG16: ``vgg.*``) and
pengyang1225/resnest-refinedet (ResNeSt-50: ``model.*``; its unused copy of the backbone,
``Resnet86.*``, loads and is left out).

Four source maps at strides 8, 16, 32, 64 (VGG: conv4_3 and conv5_3 L2-normalised, fc7, one extra
stage; ResNeSt: layer2 and layer3 L2-normalised, layer4, one extra stage). The anchor refinement
module (ARM: ``arm_loc``, ``arm_conf``) gives each of 3 anchors per cell a binary objectness and
coarse offsets; the transfer connection blocks (``tcb0``: conv-relu-conv, ``tcb1``: a 2x transposed
conv of the level above, summed, ``tcb2``: relu-conv-relu) feed the object detection module
(ODM: ``odm_loc``, ``odm_conf``), which classifies (background first) and regresses from the
refined anchors. Decoding (refine, filter by objectness, decode, NMS) is the runtime's
(``runtime/kinds/ssd_refine.py``); the deploy graph applies the two softmaxes, once.

``num_classes`` counts foreground classes; the checkpoint's ODM has ``num_classes + 1`` scores per
anchor (upstream's ``num_classes`` includes the background: 21 for VOC, 2 in the ResNeSt configs).
Upstream's 512 config lists TCB inputs that do not fit ResNeSt-50 ([512, 512, 1024, 512]); the
ResNeSt model here has the channels its backbone gives at both sizes ([512, 1024, 2048, 512]).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .registry import register_model
from .resnet import resnest50

__all__ = ["RefineDetSpec", "REFINEDET_SPEC", "RefineDet", "L2Norm", "refinedet_vgg16", "refinedet_resnest50",
           "REFINEDET_OUTPUTS"]

REFINEDET_OUTPUTS = (("arm_loc", 0), ("arm_conf", 0), ("odm_loc", 0), ("odm_conf", 0))


@dataclass(frozen=True)
class RefineDetSpec:
    """The priors and the decoding upstream trains and tests with (data/config.py voc_refinedet,
    Detect_RefineDet(num_classes, size, 0, 1000, 0.01, 0.45, 0.01, ...)); read into the manifest."""

    steps: tuple[int, ...] = (8, 16, 32, 64)
    min_sizes: tuple[float, ...] = (32.0, 64.0, 128.0, 256.0)  # at 320 and at 512 alike, as upstream's configs
    aspect_ratios: tuple[float, ...] = (2.0,)  # 1 is always there; each ratio r adds r and 1/r
    variances: tuple[float, float] = (0.1, 0.2)
    clip: bool = True  # the priors' (cx, cy, w, h) clamped to [0, 1], as upstream's PriorBox
    objectness_threshold: float = 0.01  # anchors whose ARM objectness is <= this are dropped
    score_threshold: float = 0.01
    nms_threshold: float = 0.45
    pre_nms_top_k: int = 1000  # per class
    max_detections: int = 200
    mean_bgr: tuple[float, float, float] = (104.0, 117.0, 123.0)  # upstream's MEANS; no std

    @property
    def anchors_per_cell(self) -> int:
        return 1 + 2 * len(self.aspect_ratios)


REFINEDET_SPEC = RefineDetSpec()
TCB_CHANNELS = 256


class L2Norm(nn.Module):
    """Per-pixel L2 normalisation over channels, times a learned per-channel scale (SSD's conv4_3
    norm). F.normalize divides by max(norm, eps) where upstream divides by norm + 1e-10: the same
    float32 result wherever the norm exceeds 1e-3. It becomes ncnn's Normalize layer, which sums the
    squares in fp32 (the squares of VGG's conv4_3 overflow fp16)."""

    def __init__(self, channels: int, scale: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, p=2.0, dim=1, eps=1e-10) * self.weight.view(1, -1, 1, 1)


def vgg16_layers() -> list[nn.Module]:
    """luuuyi's vgg(base['320'], 3): conv1_1 .. conv5_3 (ceil-mode pool after conv3_3), pool5,
    conv6 (3x3, dilation 3) and conv7 (1x1), each conv followed by its ReLU: indices 0..34."""
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "C", 512, 512, 512, "M", 512, 512, 512]
    layers: list[nn.Module] = []
    cin = 3
    for v in cfg:
        if v in ("M", "C"):
            layers.append(nn.MaxPool2d(2, 2, ceil_mode=v == "C"))
        else:
            layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=True)]
            cin = v
    layers += [nn.MaxPool2d(2, 2), nn.Conv2d(512, 1024, 3, padding=3, dilation=3), nn.ReLU(inplace=True),
               nn.Conv2d(1024, 1024, 1), nn.ReLU(inplace=True)]
    return layers


class RefineDet(nn.Module):
    """RefineDet over a backbone's three source maps (subclasses: ``backbone_sources``)."""

    ignored_checkpoint_prefixes: tuple[str, ...] = ()
    input_multiple = 64  # the extra stage's stride: the four levels then tile the input exactly

    def __init__(self, source_channels: tuple[int, int, int], num_classes: int,
                 spec: RefineDetSpec = REFINEDET_SPEC) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1 (foreground classes), got {num_classes}")
        self.num_classes, self.spec = num_classes, spec
        a = spec.anchors_per_cell
        c3, c4, c5 = source_channels
        self.conv4_3_L2Norm = L2Norm(c3, 10.0)
        self.conv5_3_L2Norm = L2Norm(c4, 8.0)
        self.extras = nn.ModuleList([nn.Conv2d(c5, 256, 1), nn.Conv2d(256, 512, 3, stride=2, padding=1)])
        level_channels = (c3, c4, c5, 512)
        self.arm_loc = nn.ModuleList([nn.Conv2d(c, a * 4, 3, padding=1) for c in level_channels])
        self.arm_conf = nn.ModuleList([nn.Conv2d(c, a * 2, 3, padding=1) for c in level_channels])
        self.odm_loc = nn.ModuleList([nn.Conv2d(TCB_CHANNELS, a * 4, 3, padding=1) for _ in level_channels])
        self.odm_conf = nn.ModuleList([nn.Conv2d(TCB_CHANNELS, a * (num_classes + 1), 3, padding=1)
                                       for _ in level_channels])
        t = TCB_CHANNELS
        self.tcb0 = nn.ModuleList([m for c in level_channels
                                   for m in (nn.Conv2d(c, t, 3, padding=1), nn.ReLU(inplace=True),
                                             nn.Conv2d(t, t, 3, padding=1))])
        self.tcb1 = nn.ModuleList([nn.ConvTranspose2d(t, t, 2, 2) for _ in level_channels[:-1]])
        self.tcb2 = nn.ModuleList([m for _ in level_channels
                                   for m in (nn.ReLU(inplace=True), nn.Conv2d(t, t, 3, padding=1), nn.ReLU(inplace=True))])

    def backbone_sources(self, x: torch.Tensor) -> list[torch.Tensor]:
        raise TypeError(f"{type(self).__name__} must define backbone_sources")

    def sources(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The four source maps, strides 8, 16, 32, 64."""
        s3, s4, s5 = self.backbone_sources(x)
        x = F.relu(self.extras[0](s5))
        x = F.relu(self.extras[1](x))
        return [s3, s4, s5, x]

    def _tcb(self, sources: list[torch.Tensor]) -> list[torch.Tensor]:
        """Top-down: level k = tcb2(tcb0(source k) + tcb1(level k+1)), as upstream indexes them."""
        n = len(sources)
        out: list[torch.Tensor] = []
        p = None
        for k, s in enumerate(reversed(sources)):
            level = n - 1 - k
            for i in range(3):
                s = self.tcb0[level * 3 + i](s)
            if p is not None:
                s = s + self.tcb1[level](p)
            for i in range(3):
                s = self.tcb2[level * 3 + i](s)
            p = s
            out.append(s)
        return out[::-1]

    @staticmethod
    def _flat(maps: list[torch.Tensor], cols: int) -> torch.Tensor:
        """Per level [B, A * cols, H, W] -> [B, sum(H * W * A), cols], cell-major then anchor."""
        return torch.cat([m.permute(0, 2, 3, 1).reshape(m.shape[0], -1, cols) for m in maps], dim=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Upstream's training outputs: arm_loc [B, N, 4], arm_conf [B, N, 2] logits, odm_loc [B, N, 4],
        odm_conf [B, N, num_classes + 1] logits."""
        src = self.sources(x)
        arm_loc = self._flat([m(s) for m, s in zip(self.arm_loc, src)], 4)
        arm_conf = self._flat([m(s) for m, s in zip(self.arm_conf, src)], 2)
        tcb = self._tcb(src)
        odm_loc = self._flat([m(s) for m, s in zip(self.odm_loc, tcb)], 4)
        odm_conf = self._flat([m(s) for m, s in zip(self.odm_conf, tcb)], self.num_classes + 1)
        return arm_loc, arm_conf, odm_loc, odm_conf

    def forward_deploy(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The graph's outputs: the offsets as trained, both confidences softmaxed (once, here)."""
        arm_loc, arm_conf, odm_loc, odm_conf = self.forward(x)
        return arm_loc, F.softmax(arm_conf, dim=-1), odm_loc, F.softmax(odm_conf, dim=-1)


class RefineDetVGG16(RefineDet):
    def __init__(self, num_classes: int = 20) -> None:
        super().__init__((512, 512, 1024), num_classes)
        self.vgg = nn.ModuleList(vgg16_layers())

    def backbone_sources(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for k, layer in enumerate(self.vgg):
            x = layer(x)
            if k == 22:  # conv4_3's ReLU
                out.append(self.conv4_3_L2Norm(x))
            elif k == 29:  # conv5_3's ReLU
                out.append(self.conv5_3_L2Norm(x))
        return out + [x]


class RefineDetResNeSt50(RefineDet):
    ignored_checkpoint_prefixes = ("Resnet86.",)  # upstream keeps a second, unused copy of the backbone

    def __init__(self, num_classes: int = 1) -> None:
        super().__init__((512, 1024, 2048), num_classes)
        self.model = resnest50()

    def backbone_sources(self, x: torch.Tensor) -> list[torch.Tensor]:
        c3, c4, c5 = self.model.forward_features(x)
        return [self.conv4_3_L2Norm(c3), self.conv5_3_L2Norm(c4), c5]


# RefineDet320 by default; --input-size 512 gives RefineDet512 (the same weights: the priors follow
# the input size, the layers do not)
@register_model("refinedet_vgg16", family="refinedet", task="detection", input_size=320,
                strides=REFINEDET_SPEC.steps, outputs=REFINEDET_OUTPUTS)
def refinedet_vgg16(**kw) -> RefineDetVGG16:
    return RefineDetVGG16(**kw)


@register_model("refinedet_resnest50", family="refinedet", task="detection", input_size=320,
                strides=REFINEDET_SPEC.steps, outputs=REFINEDET_OUTPUTS)
def refinedet_resnest50(**kw) -> RefineDetResNeSt50:
    return RefineDetResNeSt50(**kw)
