"""Load checkpoints into registered models.

Understands a plain state dict (``.pth``), ``{"state_dict": ...}`` or
``{"model": ...}`` wrappers, NanoDet's Lightning ``.ckpt`` (keys prefixed
``model.``, with the EMA copy under ``avg_model.`` preferred, as NanoDet's own
``load_model_weight`` does), DataParallel's ``module.`` prefix, and an ncnn
``.param`` (with its ``.bin`` beside it) whose weights are imported.
"""

from __future__ import annotations

import argparse
import hashlib
import pickle
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from litedet.hashing import sha256_file

__all__ = ["CheckpointError", "LoadReport", "load_checkpoint", "read_state_dict", "extract_state_dict", "split_ignored",
           "fitting_architectures", "sha256_file"]

# Buffers that are constants of the architecture; a checkpoint may or may not carry them.
_OPTIONAL_KEYS = ("distribution_project.project",)
# shapes that follow the number of classes (a user's own class count is not another architecture)
_CLASS_DEPENDENT = ("gfl_cls.",)


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
    # a wrapper's prefix (DataParallel's "module.", Lightning's "model.") is on every key; a
    # prefix on some keys only is a submodule's name (ResNeSt-RefineDet's backbone "model.")
    for prefix in ("module.", "model."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    out = dict(sd)
    bad = [k for k, v in out.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"checkpoint entries are not tensors: {bad[:5]}")
    return out, kind, used_ema


def _key_problems(model: nn.Module, sd: dict[str, torch.Tensor], class_dependent_ok: bool = False) -> list[str]:
    own = model.state_dict()
    missing = [k for k in own if k not in sd and not k.endswith(_OPTIONAL_KEYS)]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in sd and sd[k].shape != own[k].shape
              and not (class_dependent_ok and any(c in k for c in _CLASS_DEPENDENT))]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:5])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:5])})")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatches (e.g. {'; '.join(shapes[:3])})")
    return parts


def split_ignored(model: nn.Module, sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """Drop the entries the model declares training-only (NanoDet-Plus's auxiliary head)."""
    prefixes = tuple(getattr(model, "ignored_checkpoint_prefixes", ()))
    kept = {k: v for k, v in sd.items() if not k.startswith(prefixes)} if prefixes else dict(sd)
    ignored = {p: sum(1 for k in sd if k.startswith(p)) for p in prefixes}
    return kept, {p: n for p, n in ignored.items() if n}


def fitting_architectures(sd: dict[str, torch.Tensor], exclude: str | None = None) -> list[str]:
    """Registered architectures whose keys and shapes this state dict fits (class count aside)."""
    from .registry import create_model, list_models

    found = []
    for name in list_models():
        if name == exclude:
            continue
        try:
            model = create_model(name)
        except Exception:  # a test-registered builder may need arguments
            continue
        kept, _ = split_ignored(model, sd)
        if not _key_problems(model, kept, class_dependent_ok=True):
            found.append(name)
    return found


def _check_keys(model: nn.Module, sd: dict[str, torch.Tensor], path: Path, arch: str | None = None) -> None:
    parts = _key_problems(model, sd)
    if parts:
        hint = ""
        others = fitting_architectures(sd, exclude=arch) if arch else []
        if others:
            hint = f"; it looks like {' or '.join(others)} (its keys and shapes fit that architecture): convert it as that"
        raise CheckpointError(f"{path} does not fit {arch or type(model).__name__}: " + "; ".join(parts) + hint)


class _Opaque:
    """Stands in for a class a checkpoint names outside its tensors (a training config,
    a logger's record): built from its arguments and state, never running its code."""

    def __init__(self, *args, **kwargs) -> None:
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state) -> None:
        self.state = state


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# record types that are harmless to build and that Lightning / NanoDet put beside the weights
_HARMLESS = [argparse.Namespace]


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in _ANSI.sub("", str(e)).splitlines() if ln.strip()]
    hit = next((ln for ln in lines if "Unsupported global" in ln), lines[0] if lines else type(e).__name__)
    return hit[:240]


def _torch_load(path: Path, trust: bool) -> tuple[object, list[str]]:
    """torch.load with weights_only=True; classes other than tensors (e.g. the training
    config in a Lightning ``hyper_parameters``) are read as inert placeholders instead
    of being unpickled. ``trust=True`` unpickles everything (runs the file's code)."""
    if trust:
        return torch.load(path, map_location="cpu", weights_only=False), []
    allowed: list = list(_HARMLESS)
    stubbed: list[str] = []
    for _ in range(64):
        try:
            with torch.serialization.safe_globals(allowed):
                return torch.load(path, map_location="cpu", weights_only=True), stubbed
        except pickle.UnpicklingError as e:
            msg = _ANSI.sub("", str(e))
            m = re.search(r"Unsupported global: GLOBAL ([\w.]+)", msg)
            name = m.group(1) if m else ""
            name = name if "." in name or not name else f"builtins.{name}"  # torch prints builtins bare
            if name and name not in stubbed:
                stubbed.append(name)
                allowed.append((_Opaque, name))
                continue
            if stubbed and "Can only SETITEM" in msg:  # the last stand-in was a dict subclass
                allowed[-1] = (OrderedDict, stubbed[-1])
                continue
            raise
    raise CheckpointError(f"{path} names too many classes outside its tensors to read safely; "
                          "pass --trust-checkpoint if you trust its source")


def _looks_like_torch_file(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(4)
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"  # torch.save's zip, or a legacy pickle


def read_state_dict(path: str | Path, prefer_ema: bool = True, trust: bool = False):
    """(state dict, kind, used_ema, details) of a torch checkpoint, read as load_checkpoint does."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory; expected a .pth/.ckpt file or an ncnn .param")
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    if not _looks_like_torch_file(path):
        raise CheckpointError(f"{path} is not a PyTorch checkpoint (it is neither a torch.save zip archive nor a "
                              "pickle); expected a .pth/.ckpt saved by torch.save, or an ncnn .param with its .bin")
    try:
        obj, stubbed = _torch_load(path, trust)
    except CheckpointError:
        raise
    except Exception as e:  # torch raises many types for a truncated or foreign file
        raise CheckpointError(
            f"could not read checkpoint {path} ({type(e).__name__}: {_first_line(e)}); "
            "expected a .pth/.ckpt saved by torch.save, or an ncnn .param with its .bin"
        ) from None
    sd, kind, used_ema = extract_state_dict(obj, prefer_ema)
    extra = {"not_unpickled": stubbed} if stubbed else {}
    from .pruned import pruned_architecture

    if pruned_architecture(obj) is not None:
        kind, extra["pruned_architecture"] = "litedet-pruned", pruned_architecture(obj)
    return sd, kind, used_ema, extra


def _resize_pruned(model: nn.Module, sd: dict, path: Path, arch: str | None, recorded: str) -> dict:
    from .pruned import resize_to

    if arch is not None and recorded != arch:
        raise CheckpointError(f"{path} is a pruned {recorded}; convert it as {recorded}, not {arch}")
    return {"architecture": recorded, "resized_modules": len(resize_to(model, sd))}


def load_checkpoint(model: nn.Module, path: str | Path, prefer_ema: bool = True, trust: bool = False,
                    arch: str | None = None) -> LoadReport:
    """Load ``path`` into ``model`` in place; raises CheckpointError naming what is wrong.

    Checkpoints are read with ``weights_only=True``: tensors and plain containers
    only, other classes become inert placeholders (reported in ``details``).
    ``trust=True`` unpickles everything, which runs code from the file: only for
    files from a source you trust."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory; expected a .pth/.ckpt file or an ncnn .param")
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    if path.suffix.lower() == ".param":
        from .ncnn_import import import_ncnn_weights

        bin_path = path.with_suffix(".bin")
        if not bin_path.is_file():
            raise CheckpointError(f"ncnn weights not found: expected {bin_path} beside {path}")
        details = import_ncnn_weights(model, path, bin_path)
        digest = hashlib.sha256(path.read_bytes() + bin_path.read_bytes()).hexdigest()
        return LoadReport(str(path), "ncnn", digest, details=details)
    sd, kind, used_ema, extra = read_state_dict(path, prefer_ema, trust)
    sd, ignored = split_ignored(model, sd)
    if kind == "litedet-pruned":  # channels removed: the modules take the checkpoint's sizes first
        extra["pruned"] = _resize_pruned(model, sd, path, arch, extra.pop("pruned_architecture"))
    _check_keys(model, sd, path, arch)
    model.load_state_dict(sd, strict=False)
    details = {"tensors": len(sd), **extra}
    if ignored:
        details["ignored"] = {p + "*": n for p, n in ignored.items()}
        details["ignored_why"] = "training-only entries (an auxiliary head), unused copies (ResNeSt-RefineDet's Resnet86) and duplicate constants: not loaded, not exported"
    return LoadReport(str(path), kind, sha256_file(path), used_ema=used_ema, details=details)
