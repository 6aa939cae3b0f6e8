"""Load checkpoints into registered models.

Understands a plain state dict (``.pth``), ``{"state_dict": ...}`` or
``{"model": ...}`` wrappers, NanoDet's Lightning ``.ckpt`` (keys prefixed
``model.``, with the EMA copy under ``avg_model.`` preferred, as NanoDet's own
``load_model_weight`` does), DataParallel's ``module.`` prefix, and an ncnn
``.param`` (with its ``.bin`` beside it) whose weights are imported.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from litedet.hashing import sha256_file

__all__ = ["CheckpointError", "LoadReport", "load_checkpoint", "extract_state_dict", "sha256_file"]

# Buffers that are constants of the architecture; a checkpoint may or may not carry them.
_OPTIONAL_KEYS = ("distribution_project.project",)


class CheckpointError(ValueError):
    """The checkpoint cannot be loaded into the model; the message says why."""


@dataclass
class LoadReport:
    path: str
    kind: str  # "state_dict", "lightning", "ncnn"
    sha256: str
    used_ema: bool = False
    details: dict = field(default_factory=dict)


def extract_state_dict(obj: object, prefer_ema: bool = True) -> tuple[dict[str, torch.Tensor], str, bool]:
    """Find the model's state dict inside whatever ``torch.load`` returned."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint holds a {type(obj).__name__}, expected a dict of tensors or a dict with 'state_dict'")
    kind, used_ema = "state_dict", False
    if "state_dict" in obj and isinstance(obj["state_dict"], dict):
        sd, kind = dict(obj["state_dict"]), "lightning"
    elif "model" in obj and isinstance(obj["model"], dict):
        sd = dict(obj["model"])
    else:
        sd = dict(obj)
    if any(k.startswith("avg_model.") for k in sd):
        ema = {k[len("avg_model."):]: v for k, v in sd.items() if k.startswith("avg_model.")}
        raw = {k[len("model."):]: v for k, v in sd.items() if k.startswith("model.")}
        sd, used_ema = (ema if prefer_ema else raw), prefer_ema
    out = {}
    for k, v in sd.items():
        for prefix in ("module.", "model."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    bad = [k for k, v in out.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"checkpoint entries are not tensors: {bad[:5]}")
    return out, kind, used_ema


def _check_keys(model: nn.Module, sd: dict[str, torch.Tensor], path: Path) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in sd and not k.endswith(_OPTIONAL_KEYS)]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in sd and sd[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:5])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:5])})")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches (e.g. {'; '.join(shapes[:3])})")
        raise CheckpointError(f"{path} does not fit {type(model).__name__}: " + "; ".join(parts))


def load_checkpoint(model: nn.Module, path: str | Path, prefer_ema: bool = True) -> LoadReport:
    """Load ``path`` into ``model`` in place; raises CheckpointError naming what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    if path.suffix == ".param":
        from .ncnn_import import import_ncnn_weights

        bin_path = path.with_suffix(".bin")
        if not bin_path.is_file():
            raise CheckpointError(f"ncnn weights not found: expected {bin_path} beside {path}")
        details = import_ncnn_weights(model, path, bin_path)
        digest = hashlib.sha256(path.read_bytes() + bin_path.read_bytes()).hexdigest()
        return LoadReport(str(path), "ncnn", digest, details=details)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a truncated or foreign file
        raise CheckpointError(
            f"could not read checkpoint {path} ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
            "expected a .pth/.ckpt saved by torch.save, or an ncnn .param with its .bin"
        ) from e
    sd, kind, used_ema = extract_state_dict(obj, prefer_ema)
    _check_keys(model, sd, path)
    model.load_state_dict(sd, strict=False)
    return LoadReport(str(path), kind, sha256_file(path), used_ema=used_ema, details={"tensors": len(sd)})
