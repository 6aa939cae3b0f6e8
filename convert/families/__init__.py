"""Family adapters: what the convert pipeline needs to know about a model family.

A family (NanoDet, the ImageNet classifiers, ...) is one :class:`FamilyAdapter`
registered under the ``family`` name its builders carry in the model registry
(``models/registry.py``). The pipeline (``convert/pipeline.py``) and the parity
checks (``convert/verify/``) call only this interface, so a new family adds an
adapter module and edits no pipeline.
"""

from __future__ import annotations

from .base import (DeploySpec, ExtraGraph, FamilyAdapter, GraphIO, Prepared, adapter_for, adapter_for_config, calibration_batch,
                   check_for_kind, register_adapter, unregister_adapter)

__all__ = ["DeploySpec", "ExtraGraph", "FamilyAdapter", "GraphIO", "Prepared", "adapter_for", "adapter_for_config", "calibration_batch", "check_for_kind",
           "register_adapter", "unregister_adapter"]

from . import classifier, nanodet, onenet, refinedet, segmentation, two_stage  # noqa: E402,F401  (the built-in families register themselves)
