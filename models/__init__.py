"""PyTorch model definitions, one registry, checkpoint loading (imports torch)."""

from __future__ import annotations

from typing import Callable

from torch import nn

from . import nanodet, shufflenetv2
from .checkpoint import CheckpointError, LoadReport, load_checkpoint, sha256_file

__all__ = ["create_model", "list_models", "register", "CheckpointError", "LoadReport", "load_checkpoint",
           "sha256_file", "UnknownModelError", "count_parameters"]

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


class UnknownModelError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


def register(name: str, fn: Callable[..., nn.Module]) -> None:
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    _REGISTRY[name] = fn


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model by name (``nanodet_m``, ``shufflenet_v2_x1_0``, ...)."""
    try:
        fn = _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(f"unknown architecture {name!r}; known: {', '.join(list_models())}") from None
    return fn(**kwargs)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


register("nanodet_m", nanodet.nanodet_m)
register("nanodet_m_1.5x", nanodet.nanodet_m_1_5x)
register("shufflenet_v2_x0_5", shufflenetv2.shufflenet_v2_x0_5)
register("shufflenet_v2_x1_0", shufflenetv2.shufflenet_v2_x1_0)
register("shufflenet_v2_x1_5", shufflenetv2.shufflenet_v2_x1_5)
register("shufflenet_v2_x2_0", shufflenetv2.shufflenet_v2_x2_0)
