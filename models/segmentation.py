"""Real-time semantic segmentation: BiSeNet V1 (ResNet-18 context path) and V2, with the
state-dict names of CoinCheung/BiSeNet (``lib/models/bisenetv1.py``, ``bisenetv2.py``), and DFANet
A / B as its paper describes them (Li et al., CVPR 2019; no official code exists).

Every model ends in per-class logits at its head's stride (BiSeNet 8, DFANet 4).
``forward`` returns them bilinearly upsampled to the input (align_corners False, as CoinCheung's
eval mode); ``forward_deploy`` does the same when ``deploy_upsample`` is True, and otherwise
returns the head's logits and leaves the upsample to the runtime (``argmax_mask``'s
``upsample: runtime``). The training-only auxiliary heads (V1 ``conv_out16/32``, V2 ``aux*``)
are not built: a training checkpoint's entries for them are counted in the load report and left
out of the export, as NanoDet-Plus's.

DFANet, the choices that are ours (the paper leaves them open, and the most-used unofficial code,
huaifeng1993/DFANet, applies one decoder conv to two different inputs, which we do not copy):
- an encoder block is Xception's: three separable convs (depthwise 3x3 + BN, pointwise 1x1 + BN,
  ReLU) of widths out/4, out/4, out, the last one strided, plus a 1x1 conv + BN shortcut where the
  shape changes; stages enc2/enc3/enc4 repeat it 4/6/4 times (the paper's Table 1), widths
  48/96/192 (A) and 32/64/128 (B), after a 3x3 stride-2 conv of 8 channels;
- the FC attention is global pooling -> a 1x1 conv to 1000 (the ImageNet FC) -> a 1x1 conv back
  to the stage width + BN -> sigmoid, multiplied onto enc4's output;
- sub-network aggregation: backbone k's enc2 takes concat(4x bilinear upsample of backbone k-1's
  attention output, backbone k-1's enc2 output); sub-stage aggregation: its enc3 and enc4 take
  concat(its previous stage, backbone k-1's same stage). The three backbones thus end at strides
  16, 32 and 64, so DFANet's input is a multiple of 64;
- the decoder gives each of the six inputs its own 1x1 conv + BN + ReLU to 32 channels (the three
  enc2 outputs, the three attention outputs), upsamples them bilinearly to stride 4, sums them,
  then a 3x3 conv + BN + ReLU and a 1x1 conv to the classes.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .registry import register_model
from .resnet import BasicBlock, ResNet

__all__ = ["BiSeNetV1", "BiSeNetV2", "DFANet", "bisenet_v1", "bisenet_v2", "dfanet_a", "dfanet_b",
           "SEGMENTATION_CLASSES"]

SEGMENTATION_CLASSES = 19  # Cityscapes' evaluation classes


def _up(x: torch.Tensor, factor: int) -> torch.Tensor:
    return F.interpolate(x, scale_factor=float(factor), mode="bilinear", align_corners=False)


class Segmenter(nn.Module):
    """Shared by the segmentation models: the two forwards over a subclass's ``head_logits(x)`` (the
    class logits at the head's own stride)."""

    head_stride: int = 8
    input_multiple: int = 32  # the input's sides must be multiples of it (the deepest stride)
    deploy_upsample: bool = True  # the convert adapter sets it from --upsample

    head_logits: "Callable[[torch.Tensor], torch.Tensor]"  # each subclass defines it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _up(self.head_logits(x), self.head_stride)

    def forward_deploy(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        logits = self.head_logits(x)
        return (_up(logits, self.head_stride) if self.deploy_upsample else logits,)


class ConvBNReLU(nn.Module):
    def __init__(self, cin: int, cout: int, ks: int = 3, stride: int = 1, padding: int | None = None,
                 groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, ks, stride, ks // 2 if padding is None else padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


def _gap(x: torch.Tensor) -> torch.Tensor:
    return torch.mean(x, dim=(2, 3), keepdim=True)


# -- BiSeNet V1 ---------------------------------------------------------------------------------

class AttentionRefinement(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(cin, cout)
        self.conv_atten = nn.Conv2d(cout, cout, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv(x)
        return feat * self.bn_atten(self.conv_atten(_gap(feat))).sigmoid()


class ContextPath(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.resnet = ResNet(BasicBlock, [2, 2, 2, 2])
        del self.resnet.fc  # CoinCheung's Resnet18 has no classifier
        self.arm16 = AttentionRefinement(256, 128)
        self.arm32 = AttentionRefinement(512, 128)
        self.conv_head32 = ConvBNReLU(128, 128)
        self.conv_head16 = ConvBNReLU(128, 128)
        self.conv_avg = ConvBNReLU(512, 128, ks=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, feat16, feat32 = self.resnet.forward_features(x)
        avg = self.conv_avg(_gap(feat32))
        up32 = self.conv_head32(F.interpolate(self.arm32(feat32) + avg, scale_factor=2.0, mode="nearest"))
        return self.conv_head16(F.interpolate(self.arm16(feat16) + up32, scale_factor=2.0, mode="nearest"))


class SpatialPath(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = ConvBNReLU(3, 64, ks=7, stride=2)
        self.conv2 = ConvBNReLU(64, 64, stride=2)
        self.conv3 = ConvBNReLU(64, 64, stride=2)
        self.conv_out = ConvBNReLU(64, 128, ks=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv3(self.conv2(self.conv1(x))))


class FeatureFusion(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.convblk = ConvBNReLU(cin, cout, ks=1)
        self.conv = nn.Conv2d(cout, cout, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, fsp: torch.Tensor, fcp: torch.Tensor) -> torch.Tensor:
        feat = self.convblk(torch.cat([fsp, fcp], dim=1))
        return feat * self.bn(self.conv(_gap(feat))).sigmoid() + feat


class OutputHead(nn.Module):
    """CoinCheung's BiSeNetOutput without its upsample (``Segmenter`` owns it)."""

    def __init__(self, cin: int, mid: int, num_classes: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(cin, mid)
        self.conv_out = nn.Conv2d(mid, num_classes, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv(x))


class BiSeNetV1(Segmenter):
    head_stride = 8
    ignored_checkpoint_prefixes = ("conv_out16.", "conv_out32.")  # the training-only auxiliary heads

    def __init__(self, num_classes: int = SEGMENTATION_CLASSES) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.cp = ContextPath()
        self.sp = SpatialPath()
        self.ffm = FeatureFusion(256, 256)
        self.conv_out = OutputHead(256, 256, num_classes)

    def head_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.ffm(self.sp(x), self.cp(x)))

    @property
    def classifier(self) -> nn.Conv2d:
        return self.conv_out.conv_out


# -- BiSeNet V2 ---------------------------------------------------------------------------------

def _conv_bn(cin: int, cout: int, ks: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, ks, stride, ks // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]


class DetailBranch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.S1 = nn.Sequential(ConvBNReLU(3, 64, stride=2), ConvBNReLU(64, 64))
        self.S2 = nn.Sequential(ConvBNReLU(64, 64, stride=2), ConvBNReLU(64, 64), ConvBNReLU(64, 64))
        self.S3 = nn.Sequential(ConvBNReLU(64, 128, stride=2), ConvBNReLU(128, 128), ConvBNReLU(128, 128))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.S3(self.S2(self.S1(x)))


class StemBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = ConvBNReLU(3, 16, stride=2)
        self.left = nn.Sequential(ConvBNReLU(16, 8, ks=1), ConvBNReLU(8, 16, stride=2))
        self.right = nn.MaxPool2d(3, 2, 1)
        self.fuse = ConvBNReLU(32, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv(x)
        return self.fuse(torch.cat([self.left(feat), self.right(feat)], dim=1))


class CEBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(128)
        self.conv_gap = ConvBNReLU(128, 128, ks=1)
        self.conv_last = ConvBNReLU(128, 128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_last(self.conv_gap(self.bn(_gap(x))) + x)


class GELayerS1(nn.Module):
    def __init__(self, cin: int, cout: int, exp: int = 6) -> None:
        super().__init__()
        mid = cin * exp
        self.conv1 = ConvBNReLU(cin, cin)
        self.dwconv = nn.Sequential(*_conv_bn(cin, mid, 3, groups=cin), nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(*_conv_bn(mid, cout, 1))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv2(self.dwconv(self.conv1(x))) + x)


class GELayerS2(nn.Module):
    def __init__(self, cin: int, cout: int, exp: int = 6) -> None:
        super().__init__()
        mid = cin * exp
        self.conv1 = ConvBNReLU(cin, cin)
        self.dwconv1 = nn.Sequential(*_conv_bn(cin, mid, 3, 2, groups=cin))
        self.dwconv2 = nn.Sequential(*_conv_bn(mid, mid, 3, groups=mid), nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(*_conv_bn(mid, cout, 1))
        self.shortcut = nn.Sequential(*_conv_bn(cin, cin, 3, 2, groups=cin), *_conv_bn(cin, cout, 1))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv2(self.dwconv2(self.dwconv1(self.conv1(x)))) + self.shortcut(x))


class SegmentBranch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.S1S2 = StemBlock()
        self.S3 = nn.Sequential(GELayerS2(16, 32), GELayerS1(32, 32))
        self.S4 = nn.Sequential(GELayerS2(32, 64), GELayerS1(64, 64))
        self.S5_4 = nn.Sequential(GELayerS2(64, 128), GELayerS1(128, 128), GELayerS1(128, 128), GELayerS1(128, 128))
        self.S5_5 = CEBlock()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.S5_5(self.S5_4(self.S4(self.S3(self.S1S2(x)))))


class BGALayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.left1 = nn.Sequential(*_conv_bn(128, 128, 3, groups=128), nn.Conv2d(128, 128, 1, bias=False))
        self.left2 = nn.Sequential(*_conv_bn(128, 128, 3, 2), nn.AvgPool2d(3, 2, 1))
        self.right1 = nn.Sequential(*_conv_bn(128, 128, 3))
        self.right2 = nn.Sequential(*_conv_bn(128, 128, 3, groups=128), nn.Conv2d(128, 128, 1, bias=False))
        self.conv = nn.Sequential(*_conv_bn(128, 128, 3), nn.ReLU(inplace=True))

    def forward(self, x_d: torch.Tensor, x_s: torch.Tensor) -> torch.Tensor:
        right1 = F.interpolate(self.right1(x_s), scale_factor=4.0, mode="nearest")
        left = self.left1(x_d) * torch.sigmoid(right1)
        right = self.left2(x_d) * torch.sigmoid(self.right2(x_s))
        return self.conv(left + F.interpolate(right, scale_factor=4.0, mode="nearest"))


class SegmentHead(nn.Module):
    """CoinCheung's SegmentHead with aux=False (``conv_out.0`` is an Identity, ``conv_out.1`` the
    classifier), without its upsample (``Segmenter`` owns it); dropout is inert at inference."""

    def __init__(self, cin: int, mid: int, num_classes: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(cin, mid)
        self.drop = nn.Dropout(0.1)
        self.conv_out = nn.Sequential(nn.Identity(), nn.Conv2d(mid, num_classes, 1, bias=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.drop(self.conv(x)))


class BiSeNetV2(Segmenter):
    head_stride = 8
    ignored_checkpoint_prefixes = ("aux2.", "aux3.", "aux4.", "aux5_4.")  # the training-only booster heads

    def __init__(self, num_classes: int = SEGMENTATION_CLASSES) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.detail = DetailBranch()
        self.segment = SegmentBranch()
        self.bga = BGALayer()
        self.head = SegmentHead(128, 1024, num_classes)

    def head_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.bga(self.detail(x), self.segment(x)))

    @property
    def classifier(self) -> nn.Conv2d:
        return self.head.conv_out[1]


# -- DFANet -------------------------------------------------------------------------------------

class SeparableConv(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.dw = nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False)
        self.bn_dw = nn.BatchNorm2d(cin)
        self.pw = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn_pw = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn_pw(self.pw(self.bn_dw(self.dw(x)))))


class XceptionBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        q = cout // 4
        self.convs = nn.Sequential(SeparableConv(cin, q), SeparableConv(q, q), SeparableConv(q, cout, stride))
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)) \
            if cin != cout or stride != 1 else nn.Identity()

    def residual_branch_norms(self) -> list[nn.BatchNorm2d]:
        return [self.convs[-1].bn_pw]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(x) + self.shortcut(x)


def _stage(cin: int, cout: int, repeats: int) -> nn.Sequential:
    return nn.Sequential(XceptionBlock(cin, cout, 2), *[XceptionBlock(cout, cout, 1) for _ in range(repeats - 1)])


class FCAttention(nn.Module):
    def __init__(self, channels: int, hidden: int = 1000) -> None:
        super().__init__()
        self.fc = nn.Conv2d(channels, hidden, 1, bias=True)
        self.conv = nn.Conv2d(hidden, channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.bn(self.conv(self.fc(_gap(x)))).sigmoid()


class DFANet(Segmenter):
    head_stride = 4
    input_multiple = 64  # the third backbone ends at stride 64
    REPEATS = (4, 6, 4)

    def __init__(self, widths: tuple[int, int, int], num_classes: int = SEGMENTATION_CLASSES,
                 decoder: int = 32) -> None:
        super().__init__()
        c2, c3, c4 = widths
        self.num_classes = num_classes
        self.conv1 = ConvBNReLU(3, 8, stride=2)
        r2, r3, r4 = self.REPEATS
        self.enc2 = nn.ModuleList([_stage(8, c2, r2)] + [_stage(c2 + c4, c2, r2) for _ in range(2)])
        self.enc3 = nn.ModuleList([_stage(c2, c3, r3)] + [_stage(c2 + c3, c3, r3) for _ in range(2)])
        self.enc4 = nn.ModuleList([_stage(c3, c4, r4)] + [_stage(c3 + c4, c4, r4) for _ in range(2)])
        self.fca = nn.ModuleList([FCAttention(c4) for _ in range(3)])
        self.low = nn.ModuleList([ConvBNReLU(c2, decoder, ks=1) for _ in range(3)])
        self.high = nn.ModuleList([ConvBNReLU(c4, decoder, ks=1) for _ in range(3)])
        self.fuse = ConvBNReLU(decoder, decoder)
        self.cls = nn.Conv2d(decoder, num_classes, 1, bias=True)

    def head_logits(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        lows, highs, prev = [], [], None
        for k in range(3):
            if prev is None:
                e2 = self.enc2[k](x)
                e3 = self.enc3[k](e2)
                e4 = self.enc4[k](e3)
            else:
                p2, p3, p4, pa = prev
                e2 = self.enc2[k](torch.cat([_up(pa, 4), p2], dim=1))
                e3 = self.enc3[k](torch.cat([e2, p3], dim=1))
                e4 = self.enc4[k](torch.cat([e3, p4], dim=1))
            a = self.fca[k](e4)
            prev = (e2, e3, e4, a)
            lows.append(self.low[k](e2) if k == 0 else _up(self.low[k](e2), 2 ** k))  # enc2_k at stride 4 * 2^k
            highs.append(_up(self.high[k](a), 4 * 2 ** k))  # attention k at stride 16 * 2^k
        feat = lows[0] + lows[1] + lows[2] + highs[0] + highs[1] + highs[2]
        return self.cls(self.fuse(feat))

    @property
    def classifier(self) -> nn.Conv2d:
        return self.cls


# The published figures are compared with our counts at the papers' own input sizes in
# benchmarks/segmentation.py (the registry's paper_macs is for square inputs): BiSeNetV2 21.15 G at
# its 1024x512 inference input (Cityscapes' 2048x1024 frames halved); DFANet A 1.7 G at 1024x512 (its
# "A'") and 3.4 G at 1024x1024, DFANet B 2.1 G at 1024x1024.
def _deploy(model: Segmenter, deploy_upsample: bool) -> Segmenter:
    model.deploy_upsample = bool(deploy_upsample)
    return model


# input_size: the long side of the network input (resize policy stretch_multiple: a 2048x1024
# Cityscapes frame becomes 1024x512, the input of CoinCheung's ncnn demo)
@register_model("bisenet_v1", family="segmentation", task="segmentation", input_size=1024, strides=(8,))
def bisenet_v1(deploy_upsample: bool = True, **kw) -> BiSeNetV1:
    return _deploy(BiSeNetV1(**kw), deploy_upsample)


@register_model("bisenet_v2", family="segmentation", task="segmentation", input_size=1024, strides=(8,))
def bisenet_v2(deploy_upsample: bool = True, **kw) -> BiSeNetV2:
    return _deploy(BiSeNetV2(**kw), deploy_upsample)


@register_model("dfanet_a", family="segmentation", task="segmentation", input_size=1024, strides=(4,))
def dfanet_a(deploy_upsample: bool = True, **kw) -> DFANet:
    return _deploy(DFANet((48, 96, 192), **kw), deploy_upsample)


@register_model("dfanet_b", family="segmentation", task="segmentation", input_size=1024, strides=(4,))
def dfanet_b(deploy_upsample: bool = True, **kw) -> DFANet:
    return _deploy(DFANet((32, 64, 128), **kw), deploy_upsample)
