"""Parameter and multiply-accumulate counts, measured by running the model once."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["Profile", "profile"]


@dataclass
class Profile:
    params: int
    macs: int  # multiply-accumulates of convs, transposed convs and linears ("FLOPs" in the mobile papers)
    input_size: tuple[int, int]


def profile(model: nn.Module, height: int = 224, width: int | None = None, forward=None) -> Profile:
    width = width or height
    macs = 0

    def hook(m, inp, out):
        nonlocal macs
        if isinstance(m, nn.Conv2d):
            macs += out.numel() // out.shape[0] * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.ConvTranspose2d):  # each input pixel scatters a kernel into every output channel
            macs += inp[0].numel() // inp[0].shape[0] * (m.out_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.Linear):
            macs += out.numel() // out.shape[0] * m.in_features

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            (forward or model)(torch.zeros(1, 3, height, width))
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    return Profile(sum(p.numel() for p in model.parameters()), macs, (height, width))

