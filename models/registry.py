"""The model registry: every builder is registered where it is defined.

``@register_model("nanodet_m", family="nanodet", task="detection", input_size=320,
strides=..., outputs=...)`` sits on the builder, beside the numbers it uses, so
the registry is the one place a model's default input size, strides and deploy
output layout are written. The convert pipeline finds the family adapter by
``ModelInfo.family``; nothing else branches on an architecture name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from litedet.registry import Registry

__all__ = ["ModelInfo", "UnknownModelError", "register_model", "model_info", "list_models", "create_model",
           "DeployOutput"]

# one deploy output: (role, stride); stride 0 for outputs that are not per-stride maps
DeployOutput = tuple[str, int]


@dataclass(frozen=True)
class ModelInfo:
    name: str
    builder: Callable[..., nn.Module]
    family: str  # the convert adapter that handles it (convert/families/)
    task: str  # detection | classification | ... (what the runtime returns)
    input_size: int  # default network input side
    strides: tuple[int, ...]  # feature strides the deploy outputs come at (() for classifiers)
    outputs: tuple[DeployOutput, ...]  # deploy forward's outputs, in the order it returns them
    # the multiply-accumulates its paper publishes at input_size (the papers' "FLOPs"), for
    # `litedet bench` to show beside the count on our graph; None where none is published
    paper_macs: int | None = None


class UnknownModelError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


_REGISTRY: Registry[ModelInfo] = Registry("architecture", UnknownModelError)


def register_model(name: str, *, family: str, task: str, input_size: int, strides: tuple[int, ...] = (),
                   outputs: tuple[DeployOutput, ...] = (("logits", 0),), paper_macs: int | None = None) -> Callable:
    """Decorator (or a call on a builder) that registers ``builder`` as ``name``."""
    if input_size <= 0:
        raise ValueError(f"model {name!r}: input_size must be positive, got {input_size}")

    def deco(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY.add(name, ModelInfo(name, builder, family, task, input_size, tuple(strides), tuple(outputs),
                                      paper_macs))
        return builder

    return deco


unregister_model = _REGISTRY.remove
model_info = _REGISTRY.get
list_models = _REGISTRY.names


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model by name (``nanodet_m``, ``shufflenet_v2_x1_0``, ...)."""
    return model_info(name).builder(**kwargs)
