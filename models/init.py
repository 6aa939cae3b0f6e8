"""Seeded random weights that keep signal alive through the whole network.

A model's own training init is not a good stand-in for trained weights: NanoDet's
head starts at std 0.01, so every output of an untrained model is the same
constant and a parity check on it is vacuous. ``seeded_random_weights`` gives
every conv a variance-preserving (Kaiming) init and every BatchNorm random
statistics; then, given calibration inputs, BatchNorm running statistics are
re-estimated on them (data-dependent init), so activations stay normalised as
in a trained network instead of exploding or saturating every score. Each
layer's output varies with the input and a conversion error anywhere would
show. The result is still untrained: it detects nothing real.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["seeded_random_weights", "unit_output_convs"]


# Added to every BatchNorm's bias. Random BatchNorm networks at init are chaotic: a small
# perturbation grows layer by layer (Yang et al., "A mean field theory of batch normalization",
# 2019), so rounding the weights to fp16 moved seeded NanoDet-Plus-m's outputs by 3-5e-2 of their
# range (scores by up to 0.031 on real photos) where trained weights move by 0.4-2e-2 (scores by
# at most 0.005). A positive shift keeps most ReLU units in their linear part, as in trained
# networks: seeded outputs then move by 0.4-1.2e-2 (scores by at most 0.003), like trained ones.
BN_BIAS_SHIFT = 0.5


def seeded_random_weights(model: nn.Module, seed: int = 0, calibration: torch.Tensor | None = None) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(torch.randn(n, generator=g) * 0.1 + BN_BIAS_SHIFT)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(0.5 + torch.rand(n, generator=g) * 1.5)
        # Residual nets: damp the BatchNorm that ends each residual branch (as
        # torchvision's zero_init_residual does, but not to zero) so the identity
        # path does not accumulate 16 blocks of unit-variance branches.
        for m in model.modules():
            for bn in getattr(m, "residual_branch_norms", lambda: [])():
                bn.weight.mul_(0.2)
        if calibration is not None:
            bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
            saved = [(m.momentum, m.training) for m in bns]
            for m in bns:
                m.reset_running_stats()
                m.momentum = None  # cumulative average over the calibration pass
                m.train()
            model(calibration)
            for m, (mom, tr) in zip(bns, saved):
                m.momentum = mom
                m.train(tr)
    return model


def unit_output_convs(convs: list[nn.Module], run, shift: float = BN_BIAS_SHIFT) -> None:
    """Data-dependent init of convolutions with no BatchNorm after them (LSUV, Mishkin & Matas,
    2016): during one ``run()`` (a forward pass on calibration inputs), each conv of ``convs`` is
    rescaled, in the order the pass reaches it, so that each of its output channels has mean
    ``shift`` (BN_BIAS_SHIFT, for the reason given there) and unit spread over the batch. Without it a random ReLU network without BatchNorm (VGG)
    maps every input to nearly the same features, and a head centred on them subtracts two large
    numbers: fp16 rounding of the weights then moved seeded RefineDet-VGG's box offsets by half
    their range (cosine 0.96), where trained networks move by a few thousandths."""
    todo = set(map(id, convs))

    def hook(m: nn.Module, inputs, out: torch.Tensor) -> torch.Tensor:
        if id(m) not in todo:
            return out
        todo.discard(id(m))
        mean = out.mean(dim=(0, 2, 3))
        std = out.std(dim=(0, 2, 3)).clamp(min=1e-6)
        shape = (-1, 1, 1, 1) if isinstance(m, nn.Conv2d) else (1, -1, 1, 1)  # ConvTranspose2d: [in, out, kh, kw]
        m.weight.div_(std.view(shape))
        bias = m.bias if m.bias is not None else torch.zeros_like(mean)
        if m.bias is None:
            raise ValueError("unit_output_convs needs convs with a bias (the mean is moved into it)")
        m.bias.copy_((bias - mean) / std + shift)
        return (out - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1) + shift

    handles = [c.register_forward_hook(hook) for c in convs]
    try:
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()
