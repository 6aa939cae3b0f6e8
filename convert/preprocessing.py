"""Preprocessing is stated, never assumed: the user's ``--pixel-order / --mean / --norm (--std) /
--resize / --input-size`` applied to the family's deploy spec, and where each value came from.

Every value of a bundle's preprocessing has a source, recorded in the manifest's
``provenance.preprocessing`` and printed by ``convert``:

- ``flags``: stated by the user;
- ``config``: read from the family's config file (NanoDet's yml: ``normalize``, ``input_size``);
- ``family convention``: the family fixes it for every export (NanoDet: BGR, upstream's mean/norm);
- ``architecture default``: the family's default for the architecture (the classifiers: torchvision's
  ImageNet recipe, RGB, mean/std, centre crop).

Weights imported from a graph (an ncnn .param, an ONNX) do not record how their inputs were
preprocessed, so there an ``architecture default`` is an error that names the flags: SqueezeNet
v1.1 from ncnn's assets was trained on BGR, mean 104/117/123, no scaling, 227x227, and
torchvision's recipe would classify every photo as one class while parity passes (both sides
get the same wrong input).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

__all__ = ["Stated", "SOURCES", "GRAPH_SUFFIXES", "parse_values", "apply_stated", "RESIZES"]

SOURCES = ("flags", "config", "family convention", "architecture default")
GRAPH_SUFFIXES = (".param", ".onnx")  # checkpoints that are graphs: no record of their preprocessing
RESIZES = ("letterbox", "stretch", "center_crop")
PIXEL_ORDERS = ("rgb", "bgr")


@dataclass(frozen=True)
class Stated:
    """What the user stated (None: not stated)."""

    pixel_format: str | None = None
    mean: tuple[float, ...] | None = None
    norm: tuple[float, ...] | None = None
    resize: str | None = None

    def given(self) -> list[str]:
        return [k for k in ("pixel_format", "mean", "norm", "resize") if getattr(self, k) is not None]


FLAG = {"pixel_format": "--pixel-order", "mean": "--mean", "norm": "--norm (or --std)", "resize": "--resize"}


def parse_values(text: str, flag: str, positive: bool = False) -> tuple[float, ...]:
    """'104,117,123' -> three finite floats (one per channel), or ValueError naming the flag."""
    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError:
        vals = ()
    if len(vals) != 3 or not all(math.isfinite(v) for v in vals) or (positive and min(vals) <= 0):
        raise ValueError(f"{flag} {text!r}: expected three {'positive ' if positive else ''}numbers separated by "
                         "commas, one per channel in the pixel order (e.g. 104,117,123)")
    return vals


def stated_from_flags(pixel_order: str | None, mean: str | None, norm: str | None, std: str | None,
                      resize: str | None) -> Stated:
    """The CLI's flags as a Stated (--std s means --norm 1/s)."""
    if norm is not None and std is not None:
        raise ValueError("--norm and --std say the same thing (norm = 1 / std); give one of them")
    if pixel_order is not None and pixel_order not in PIXEL_ORDERS:
        raise ValueError(f"--pixel-order {pixel_order!r}: expected rgb or bgr")
    if resize is not None and resize not in RESIZES:
        raise ValueError(f"--resize {resize!r}: expected one of {', '.join(RESIZES)}")
    n = parse_values(norm, "--norm", positive=True) if norm is not None else None
    if std is not None:
        n = tuple(1.0 / s for s in parse_values(std, "--std", positive=True))
    return Stated(pixel_order, parse_values(mean, "--mean") if mean is not None else None, n, resize)


def default_source(convention: bool, config: bool) -> str:
    """Where a family's own value came from when the user stated none."""
    return "config" if config else ("family convention" if convention else "architecture default")


def check_graph_import(checkpoint: str | Path | None, stated: Stated, convention: bool) -> None:
    """A graph checkpoint records no preprocessing: pixel order, mean and norm must be stated
    unless the family fixes them by convention."""
    if checkpoint is None or convention or Path(checkpoint).suffix.lower() not in GRAPH_SUFFIXES:
        return
    missing = [FLAG[k] for k in ("pixel_format", "mean", "norm") if getattr(stated, k) is None]
    if missing:
        raise ValueError(f"{Path(checkpoint).name} is a graph, which does not record how its inputs were "
                         f"preprocessed; state {', '.join(missing)} (e.g. ncnn's SqueezeNet v1.1: --pixel-order bgr "
                         "--mean 104,117,123 --norm 1,1,1 --input-size 227 --resize stretch) instead of litedet "
                         "assuming the architecture's default")


def check_against_config(deploy, stated: Stated, config: str | Path) -> None:
    """Stated values that contradict the config the family read are refused (one line, both named)."""
    inp = deploy.input
    for key, ours in (("pixel_format", inp.pixel_format), ("mean", tuple(inp.mean)), ("norm", tuple(inp.norm))):
        want = getattr(stated, key)
        if want is None:
            continue
        same = want == ours if key == "pixel_format" else all(math.isclose(a, b, rel_tol=1e-4) for a, b in zip(want, ours))
        if not same:
            raise ValueError(f"{FLAG[key]} {_fmt(want)} contradicts {Path(config).name}, which says {_fmt(ours)}; "
                             "drop the flag or fix the config")


def _fmt(v) -> str:
    return v if isinstance(v, str) else ",".join(f"{x:g}" for x in v)


def apply_stated(deploy, stated: Stated, task: str, dynamic: bool) -> object:
    """The family's DeploySpec with the stated values in place of its own."""
    inp, rs = deploy.input, deploy.resize
    if stated.pixel_format is not None:
        inp = replace(inp, pixel_format=stated.pixel_format)
    if stated.mean is not None:
        inp = replace(inp, mean=list(stated.mean))
    if stated.norm is not None:
        inp = replace(inp, norm=list(stated.norm))
    if stated.resize is not None and stated.resize != _resize_name(rs.policy):
        if stated.resize == "center_crop" and task != "classification":
            raise ValueError(f"--resize center_crop crops the image, so a {task} model's results could not be "
                             "mapped back to it; use letterbox or stretch")
        policy = {"letterbox": "letterbox", "stretch": "stretch", "center_crop": "center_crop"}[stated.resize]
        pad_mode = "fixed" if not dynamic or stated.resize == "stretch" else rs.pad_mode
        rs = replace(rs, policy=policy, pad_mode=pad_mode)
    return replace(deploy, input=inp, resize=rs)


def _resize_name(policy: str) -> str:
    return "letterbox" if policy.startswith("letterbox") else policy


def sources(stated: Stated, default: str, size_source: str) -> dict[str, str]:
    """Where each value came from, as recorded in provenance.preprocessing."""
    return {"pixel_format": "flags" if stated.pixel_format else default, "mean": "flags" if stated.mean else default,
            "norm": "flags" if stated.norm else default, "resize": "flags" if stated.resize else default,
            "input_size": size_source}
