"""OneNet (Sun et al., ICML 2021): an end-to-end one-stage detector with no NMS, in its deployable
form without deformable convolutions (PeizeSun/OneNet ``configs/onenet.res18.nodcn.yaml`` and
``onenet.res50.nodcn.yaml``), with the state-dict names of its detectron2 checkpoints.

- ``backbone``: detectron2's ResNet (``stem.conv1``, ``res2`` .. ``res5``; each conv carries its
  BatchNorm as ``.norm``; stride in the 3x3, STRIDE_IN_1X1 False), features res2..res5.
- ``head.deconv``: CenterNet's upsampling path: deconv1..3 (3x3 conv + BN + ReLU, then a 4x4
  stride-2 transposed conv + BN + ReLU), each summed with a 1x1 lateral conv of res4 / res3 / res2,
  then ``output_conv``: one map at stride 4.
- ``head.feat1`` (3x3 + ReLU), ``head.cls_score`` (class logits) and ``head.ltrb_pred`` (left, top,
  right, bottom distances in input pixels after a ReLU).

A location (x, y) of the map sits at (x * 4 + 2, y * 4 + 2); its box is location -/+ ltrb. The
deploy graph gives the sigmoid scores [C, H, W] and the ReLU'd distances [4, H, W]; the runtime's
kind ``topk`` places the boxes and takes the top k of all class x location scores
(``runtime/kinds/topk.py``), as OneNet's inference does, without NMS.

:func:`min_cost_match` is OneNet's training assignment (``MinCostMatcher``): for each ground-truth
box, the one location of least cost = 2 x focal classification cost + 5 x L1 of the boxes divided
by the image size + 2 x (-GIoU).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .registry import register_model

__all__ = ["OneNetSpec", "ONENET_SPEC", "OneNet", "onenet_resnet18", "onenet_resnet50", "min_cost_match",
           "matching_cost", "generalized_box_iou", "ONENET_OUTPUTS"]

ONENET_OUTPUTS = (("scores", 4), ("ltrb", 4))


@dataclass(frozen=True)
class OneNetSpec:
    """What OneNet trains and tests with (Base-OneNet.yaml, onenet/config.py), read into the manifest."""

    stride: int = 4
    center_offset: float = 0.5  # location = (x + 0.5) * 4 = x * 4 + 2 (upstream: x * stride + stride // 2)
    max_detections: int = 100  # TEST.DETECTIONS_PER_IMAGE: the k of the top-k
    mean_rgb: tuple[float, float, float] = (123.675, 116.28, 103.53)
    std_rgb: tuple[float, float, float] = (58.395, 57.12, 57.375)
    class_cost: float = 2.0
    l1_cost: float = 5.0
    giou_cost: float = 2.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    prior_prob: float = 0.01


ONENET_SPEC = OneNetSpec()


class D2Conv(nn.Conv2d):
    """detectron2's Conv2d: a conv whose BatchNorm is its ``norm`` (state-dict ``conv.norm.*``)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, padding: int = 0, norm: bool = True) -> None:
        super().__init__(cin, cout, k, stride, padding, bias=not norm)
        self.norm = nn.BatchNorm2d(cout) if norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x)
        return self.norm(x) if self.norm is not None else x


class D2BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.shortcut = D2Conv(cin, cout, 1, stride) if cin != cout else None
        self.conv1 = D2Conv(cin, cout, 3, stride, 1)
        self.conv2 = D2Conv(cout, cout, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(F.relu(self.conv1(x)))
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))


class D2Bottleneck(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        mid = cout // 4
        self.shortcut = D2Conv(cin, cout, 1, stride) if cin != cout else None
        self.conv1 = D2Conv(cin, mid, 1)  # STRIDE_IN_1X1 False: the stride is the 3x3's
        self.conv2 = D2Conv(mid, mid, 3, stride, 1)
        self.conv3 = D2Conv(mid, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv3(F.relu(self.conv2(F.relu(self.conv1(x)))))
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))


class D2Stem(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = D2Conv(3, 64, 7, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(F.relu(self.conv1(x)), 3, 2, 1)


class D2ResNet(nn.Module):
    """detectron2's build_resnet_backbone with NORM BN: res2..res5 at strides 4..32."""

    def __init__(self, depth: int) -> None:
        super().__init__()
        block, blocks, widths = {18: (D2BasicBlock, (2, 2, 2, 2), (64, 128, 256, 512)),
                                 50: (D2Bottleneck, (3, 4, 6, 3), (256, 512, 1024, 2048))}[depth]
        self.stem = D2Stem()
        cin = 64
        for i, (n, w) in enumerate(zip(blocks, widths)):
            stride = 1 if i == 0 else 2
            self.add_module(f"res{i + 2}", nn.Sequential(*[block(cin if j == 0 else w, w, stride if j == 0 else 1)
                                                            for j in range(n)]))
            cin = w
        self.channels = widths

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        out = []
        for name in ("res2", "res3", "res4", "res5"):
            x = getattr(self, name)(x)
            out.append(x)
        return out


class DeconvLayer(nn.Module):
    """CNDeconvLayer: 3x3 conv (with bias) + BN + ReLU, 4x4 stride-2 transposed conv + BN + ReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, 1, 1)
        self.bn = nn.BatchNorm2d(cout)
        self.up_sample = nn.ConvTranspose2d(cout, cout, 4, 2, 1, bias=False)
        self.up_bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.up_bn(self.up_sample(F.relu(self.bn(self.conv(x))))))


class CenterNetDeconv(nn.Module):
    def __init__(self, channels: tuple[int, int, int, int], backbone: tuple[int, int, int, int]) -> None:
        super().__init__()
        self.deconv1 = DeconvLayer(channels[0], channels[1])
        self.lateral_conv1 = nn.Conv2d(backbone[2], channels[1], 1)
        self.deconv2 = DeconvLayer(channels[1], channels[2])
        self.lateral_conv2 = nn.Conv2d(backbone[1], channels[2], 1)
        self.deconv3 = DeconvLayer(channels[2], channels[3])
        self.lateral_conv3 = nn.Conv2d(backbone[0], channels[3], 1)
        self.output_conv = nn.Conv2d(channels[3], channels[3], 3, 1, 1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = self.lateral_conv1(feats[2]) + self.deconv1(feats[3])
        x = self.lateral_conv2(feats[1]) + self.deconv2(x)
        x = self.lateral_conv3(feats[0]) + self.deconv3(x)
        return self.output_conv(x)


class OneNetHead(nn.Module):
    def __init__(self, num_classes: int, channels: tuple[int, int, int, int], backbone: tuple[int, int, int, int]) -> None:
        super().__init__()
        self.deconv = CenterNetDeconv(channels, backbone)
        d = channels[-1]
        self.feat1 = nn.Conv2d(d, d, 3, 1, 1)
        self.cls_score = nn.Conv2d(d, num_classes, 3, 1, 1)
        self.ltrb_pred = nn.Conv2d(d, 4, 3, 1, 1)

    def forward(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> class logits [B, C, H, W], distances [B, 4, H, W] (after the ReLU), at stride 4."""
        feat = F.relu(self.feat1(self.deconv(feats)))
        return self.cls_score(feat), F.relu(self.ltrb_pred(feat))


class OneNet(nn.Module):
    input_multiple = 32  # the backbone's deepest stride: the laterals then meet the upsampled maps

    def __init__(self, depth: int, num_classes: int = 80, spec: OneNetSpec = ONENET_SPEC) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes, self.spec = num_classes, spec
        self.backbone = D2ResNet(depth)
        first = self.backbone.channels[-1]  # DECONV_CHANNEL[0]: res5's channels (512 for R18, 2048 for R50)
        self.head = OneNetHead(num_classes, (first, 256, 128, 64), self.backbone.channels)

    def locations(self, h: int, w: int) -> torch.Tensor:
        """[2, H, W]: x * stride + stride // 2 and the same for y, as upstream's Head.locations."""
        s = self.spec.stride
        ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32) * s, torch.arange(w, dtype=torch.float32) * s,
                                indexing="ij")
        return torch.stack([xs, ys]) + s // 2

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Upstream's head outputs: class logits [B, C, H, W] and boxes x1 y1 x2 y2 [B, 4, H, W] in pixels."""
        logits, ltrb = self.head(self.backbone(x))
        loc = self.locations(*ltrb.shape[-2:]).to(ltrb)[None]
        boxes = torch.cat([loc - ltrb[:, :2], loc + ltrb[:, 2:]], dim=1)
        return logits, boxes

    def forward_deploy(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The graph's outputs: sigmoid scores [B, C, H, W] (applied once, here) and distances [B, 4, H, W]."""
        logits, ltrb = self.head(self.backbone(x))
        return torch.sigmoid(logits), ltrb


@register_model("onenet_resnet18", family="onenet", task="detection", input_size=512, strides=(4,),
                outputs=ONENET_OUTPUTS)
def onenet_resnet18(**kw) -> OneNet:
    return OneNet(18, **kw)


@register_model("onenet_resnet50", family="onenet", task="detection", input_size=512, strides=(4,),
                outputs=ONENET_OUTPUTS)
def onenet_resnet50(**kw) -> OneNet:
    return OneNet(50, **kw)


# -- the minimum-cost matcher (training) ---------------------------------------------------------

def generalized_box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[N, 4] x [M, 4] boxes (x1 y1 x2 y2, x2 >= x1) -> [N, M] GIoU (Rezatofighi et al., 2019)."""
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    iou = inter / union
    lt_c = torch.min(a[:, None, :2], b[None, :, :2])
    rb_c = torch.max(a[:, None, 2:], b[None, :, 2:])
    wh_c = (rb_c - lt_c).clamp(min=0)
    enclose = wh_c[..., 0] * wh_c[..., 1]
    return iou - (enclose - union) / enclose


def matching_cost(logits: torch.Tensor, boxes: torch.Tensor, gt_labels: torch.Tensor, gt_boxes: torch.Tensor,
                  image_w: float, image_h: float, spec: OneNetSpec = ONENET_SPEC) -> torch.Tensor:
    """OneNet's cost of assigning each location to each ground truth, [H*W, G].

    logits: [C, H, W] class logits; boxes: [4, H, W] predicted x1 y1 x2 y2 in pixels (the
    ``forward`` outputs of one image); gt_labels [G] (0-based); gt_boxes [G, 4] in pixels.
    Cost = class_cost x (focal positive cost - focal negative cost of the gt's class)
         + l1_cost x L1 distance of the boxes divided by (w, h, w, h) + giou_cost x (-GIoU)."""
    c = logits.shape[0]
    prob = logits.reshape(c, -1).t().sigmoid()  # [HW, C], locations row-major
    out = boxes.reshape(4, -1).t()
    a, g = spec.focal_alpha, spec.focal_gamma
    neg = (1 - a) * prob ** g * -(1 - prob + 1e-8).log()
    pos = a * (1 - prob) ** g * -(prob + 1e-8).log()
    cost_class = pos[:, gt_labels] - neg[:, gt_labels]
    scale = torch.tensor([image_w, image_h, image_w, image_h], dtype=out.dtype)
    cost_l1 = torch.cdist(out / scale, gt_boxes.to(out.dtype) / scale, p=1)
    cost_giou = -generalized_box_iou(out, gt_boxes.to(out.dtype))
    return spec.l1_cost * cost_l1 + spec.class_cost * cost_class + spec.giou_cost * cost_giou


@torch.no_grad()
def min_cost_match(logits: torch.Tensor, boxes: torch.Tensor, gt_labels: torch.Tensor, gt_boxes: torch.Tensor,
                   image_w: float, image_h: float, spec: OneNetSpec = ONENET_SPEC) -> tuple[torch.Tensor, torch.Tensor]:
    """OneNet's one-to-one assignment of one image: (location indices, ground-truth indices), one
    location per ground truth, the location of least :func:`matching_cost` (the first on ties), as
    upstream's ``MinCostMatcher``. Locations are row-major indices of the [H, W] map. No ground
    truth: two empty tensors."""
    if gt_labels.numel() == 0:
        empty = torch.zeros(0, dtype=torch.int64)
        return empty, empty
    cost = matching_cost(logits, boxes, gt_labels, gt_boxes, image_w, image_h, spec)
    src = torch.argmin(cost, dim=0)
    return src.to(torch.int64), torch.arange(gt_labels.numel(), dtype=torch.int64)
