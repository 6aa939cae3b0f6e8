"""PyTorch model definitions, one registry, checkpoint loading (imports torch)."""

from __future__ import annotations

from functools import partial
from typing import Callable

from torch import nn

from . import mobilenet, nanodet, resnet, shufflenetv1, shufflenetv2, squeezenet
from .checkpoint import CheckpointError, LoadReport, load_checkpoint, sha256_file

__all__ = ["create_model", "list_models", "register", "CheckpointError", "LoadReport", "load_checkpoint",
           "sha256_file", "UnknownModelError", "count_parameters", "model_info"]

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_INFO: dict[str, dict] = {}


class UnknownModelError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


def register(name: str, fn: Callable[..., nn.Module], task: str = "classification", input_size: int = 224) -> None:
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    _REGISTRY[name] = fn
    _INFO[name] = {"task": task, "input_size": input_size}


def model_info(name: str) -> dict:
    """{'task': 'classification' | 'detection', 'input_size': default input side}."""
    if name not in _INFO:
        raise UnknownModelError(f"unknown architecture {name!r}; known: {', '.join(list_models())}")
    return dict(_INFO[name])


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


register("nanodet_m", nanodet.nanodet_m, "detection", 320)
register("nanodet_m_1.5x", nanodet.nanodet_m_1_5x, "detection", 416)
for _w in ("0_5", "1_0", "1_5", "2_0"):
    register(f"shufflenet_v2_x{_w}", getattr(shufflenetv2, f"shufflenet_v2_x{_w}"))
for _g in (3, 8):
    for _w in ("0.5x", "1.0x", "1.5x", "2.0x"):
        register(f"shufflenet_v1_g{_g}_x{_w[:-1].replace('.', '_')}", partial(shufflenetv1.shufflenet_v1, _g, _w))
# ThunderNet's SNets are named for their MFLOPs on 224x224 ImageNet crops
register("snet49", shufflenetv2.snet49)
register("snet146", shufflenetv2.snet146)
register("snet535", shufflenetv2.snet535)
register("mobilenet_v1", mobilenet.mobilenet_v1)
register("mobilenet_v1_0.75", mobilenet.mobilenet_v1_0_75)
register("mobilenet_v1_0.5", mobilenet.mobilenet_v1_0_5)
register("mobilenet_v2", mobilenet.mobilenet_v2)
register("mobilenet_v2_0.75", mobilenet.mobilenet_v2_0_75)
register("mobilenet_v2_0.5", mobilenet.mobilenet_v2_0_5)
register("mobilenet_v3_large", mobilenet.mobilenet_v3_large)
register("mobilenet_v3_small", mobilenet.mobilenet_v3_small)
register("squeezenet1_0", squeezenet.squeezenet1_0)
register("squeezenet1_1", squeezenet.squeezenet1_1)
register("resnet18", resnet.resnet18)
register("resnet50", resnet.resnet50)
register("resnest50", resnet.resnest50)
