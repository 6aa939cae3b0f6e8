"""Pruned checkpoints (`litedet prune`): the architecture's modules rebuilt at the sizes the
checkpoint's tensors have, so a model with channels removed loads into its registered builder."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["PRUNED_KEY", "resize_to", "pruned_architecture"]

PRUNED_KEY = "litedet_pruned"  # the checkpoint entry litedet prune writes beside "state_dict"


def pruned_architecture(obj: object) -> str | None:
    """The architecture a pruned checkpoint records (None for any other checkpoint)."""
    if isinstance(obj, dict) and isinstance(obj.get(PRUNED_KEY), dict):
        arch = obj[PRUNED_KEY].get("architecture")
        return arch if isinstance(arch, str) else None
    return None


def _param(shape: torch.Size) -> nn.Parameter:
    return nn.Parameter(torch.zeros(shape))


def resize_to(model: nn.Module, sd: dict[str, torch.Tensor]) -> list[str]:
    """Resize every Conv2d, BatchNorm2d and Linear whose checkpoint weight is smaller than the
    module's (channels removed by pruning); returns the names of the resized modules. A depthwise
    conv stays depthwise (groups follow its channels); other convs keep their groups."""
    done = []
    for name, mod in model.named_modules():
        w = sd.get(f"{name}.weight")
        if w is None or not isinstance(mod, (nn.Conv2d, nn.BatchNorm2d, nn.Linear)) or w.shape == mod.weight.shape:
            continue
        if isinstance(mod, nn.Conv2d):
            depthwise = mod.groups > 1 and mod.groups == mod.in_channels == mod.out_channels
            mod.groups = int(w.shape[0]) if depthwise else mod.groups
            mod.out_channels, mod.in_channels = int(w.shape[0]), int(w.shape[1]) * mod.groups
        elif isinstance(mod, nn.BatchNorm2d):
            n = int(w.shape[0])
            mod.num_features = n
            mod.running_mean = torch.zeros(n)
            mod.running_var = torch.ones(n)
        else:
            mod.out_features, mod.in_features = int(w.shape[0]), int(w.shape[1])
        mod.weight = _param(w.shape)
        if getattr(mod, "bias", None) is not None:
            mod.bias = _param(torch.Size([int(w.shape[0])]))
        done.append(name)
    return done
