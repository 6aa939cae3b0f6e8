"""PyTorch model definitions, one registry, checkpoint loading (imports torch).

Importing this package imports every family module, and each registers its
builders where they are defined (``models/registry.py``).
"""

from __future__ import annotations

from torch import nn

from . import (mobilenet, nanodet, nanodet_plus, onenet, refinedet, resnet, segmentation, shufflenetv1,  # noqa: F401  (registers builders)
               shufflenetv2, squeezenet, two_stage)
from .checkpoint import CheckpointError, LoadReport, load_checkpoint, sha256_file
from .registry import ModelInfo, UnknownModelError, create_model, list_models, model_info, register_model

__all__ = ["create_model", "list_models", "register_model", "ModelInfo", "CheckpointError", "LoadReport",
           "load_checkpoint", "sha256_file", "UnknownModelError", "count_parameters", "model_info"]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
