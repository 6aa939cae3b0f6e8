"""`litedet prune`: structured channel pruning with Torch-Pruning, and an optional short distillation.

Channels are removed physically (Torch-Pruning's dependency graph shrinks every coupled conv,
BatchNorm and concat), so pnnx exports the smaller graph. What is never pruned:
- the layers that produce the model's outputs (their channels are classes and box bins), found
  by walking the autograd graph back from the deploy outputs to the first conv or linear;
- a trunk with channel shuffles (ShuffleNetV2, the NanoDet backbones): Torch-Pruning 1.6 cannot
  follow nn.ChannelShuffle's permutation (its index mapping fails), so for a detector the
  backbone is kept whole and the neck and head are pruned; a classifier with shuffles is refused.
Channel counts are rounded to multiples of 8 (``round_to``): ncnn's fp16 kernels on ARM pack 8
channels, and a count off that grid falls to slower paths (see benchmarks/arm/plan.py).

The pruned checkpoint records its architecture and each tensor's shape; ``convert`` (and every
loader, models/checkpoint.py) rebuilds the smaller modules from them before loading.
"""

from __future__ import annotations

import copy
import hashlib
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from litedet.models.pruned import PRUNED_KEY

__all__ = ["PruneError", "PruneReport", "prune", "output_layers", "PRUNED_KEY", "ROUND_TO"]

ROUND_TO = 8
DISTILL_LR = 1e-4


class PruneError(ValueError):
    """Bad input to litedet prune (one line: what is wrong, what would be right)."""


@dataclass
class PruneReport:
    architecture: str
    ratio: float
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    pruned_part: str  # what was pruned ("every layer but the outputs", "neck and head")
    distill: dict = field(default_factory=dict)  # steps, images, loss first/last, seconds
    out: str = ""


class _Deploy:
    """The module whose outputs a bundle ships (forward_deploy where the model has one)."""

    def __init__(self, model) -> None:
        self.model = model

    def __call__(self, x):
        out = getattr(self.model, "forward_deploy", self.model.forward)(x)
        return list(out) if isinstance(out, (tuple, list)) else [out]


def output_layers(model, example) -> list:
    """The convs / linears whose outputs reach the deploy outputs with no other conv or linear
    between (the autograd graph walked back from each output)."""
    import torch

    made_by = {}
    hooks = [m.register_forward_hook(lambda m, i, o: made_by.__setitem__(o.grad_fn, m))
             for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    try:
        with torch.enable_grad():
            outs = _Deploy(model)(example)
    finally:
        for h in hooks:
            h.remove()
    found, seen, todo = [], set(), [o.grad_fn for o in outs]
    while todo:
        fn = todo.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if fn in made_by:
            found.append(made_by[fn])
            continue
        todo += [n for n, _ in fn.next_functions]
    return list(dict.fromkeys(found))


class _Captured:
    """What Torch-Pruning traces: the output layers' own outputs (the splits and reshapes after
    them would confuse its index mapping), the trunk run without a graph when it is kept whole."""

    def __init__(self, model, ignored: list, frozen_trunk: bool) -> None:
        self.model, self.ignored, self.frozen_trunk = model, ignored, frozen_trunk

    def __call__(self, model, x):
        import torch

        got = []
        hooks = [m.register_forward_hook(lambda m, i, o: got.append(o)) for m in self.ignored]
        try:
            if self.frozen_trunk:
                with torch.no_grad():
                    feats = model.backbone.forward_features(x)
                model.head(model.fpn([f.detach().requires_grad_() for f in feats]))
            else:
                _Deploy(model)(x)
        finally:
            for h in hooks:
                h.remove()
        return tuple(got)


def _has_shuffle(module) -> bool:
    import torch

    return any(isinstance(m, torch.nn.ChannelShuffle) for m in module.modules())


def _prune_in_place(model, example, ratio: float) -> str:
    import torch_pruning as tp

    ignored = output_layers(model, example)
    frozen = _has_shuffle(model)
    if frozen:
        parts = [getattr(model, n, None) for n in ("backbone", "fpn", "head")]
        if any(p is None for p in parts) or not hasattr(model.backbone, "forward_features") or \
                _has_shuffle(model.fpn) or _has_shuffle(model.head):
            raise PruneError(f"{type(model).__name__} has channel shuffles (nn.ChannelShuffle) whose permutation "
                             "Torch-Pruning 1.6 cannot follow; litedet prunes such a trunk only as a detector's "
                             "backbone kept whole (neck and head pruned)")
        ignored += list(model.backbone.modules())
    pruner = tp.pruner.MetaPruner(model, example, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                  pruning_ratio=ratio, ignored_layers=ignored, round_to=ROUND_TO,
                                  forward_fn=_Captured(model, output_layers(model, example), frozen))
    pruner.step()
    return "neck and head (backbone with channel shuffles kept whole)" if frozen else "every layer but the outputs"


def _count(model, example) -> tuple[int, int]:
    """(MACs, params) of the deploy forward (Torch-Pruning's counter)."""
    import torch
    import torch_pruning as tp

    class Deployed(torch.nn.Module):
        def __init__(self, m) -> None:
            super().__init__()
            self.m = m

        def forward(self, x):
            return _Deploy(self.m)(x)

    macs, params = tp.utils.count_ops_and_params(Deployed(model), example)
    return int(macs), int(params)


def prune(arch: str, checkpoint: str | Path | None, ratio: float, out: str | Path, *, distill: str | Path | None = None,
          steps: int = 200, config=None, trust: bool = False, force: bool = False, progress: bool = True,
          seed: int = 0, input_size: int | None = None, stated=None) -> PruneReport:
    """Prune ``arch`` (weights from ``checkpoint``, or seeded), distil it for ``steps`` on the images
    of ``distill`` when given, and save the pruned checkpoint at ``out`` (through a temp file)."""
    import torch

    from .pipeline import load_model

    if not isinstance(ratio, (int, float)) or not 0.0 < ratio < 1.0:
        raise PruneError(f"--ratio {ratio}: expected a fraction of channels to remove in (0, 1), e.g. 0.3")
    if distill is not None and steps < 1:
        raise PruneError(f"--steps {steps}: distillation needs at least 1 step")
    out = _check_out(out, force)
    images = _distill_images(distill) if distill is not None else None
    job = load_model(arch, checkpoint, config=config, trust=trust, seed=seed, input_size=input_size, stated=stated)
    teacher = job.model.eval()
    size = job.input_size
    example = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    student = copy.deepcopy(teacher)
    macs0, params0 = _count(teacher, example)
    part = _prune_in_place(student, example, float(ratio))
    macs1, params1 = _count(student, example)
    rep = PruneReport(job.arch, float(ratio), params0, params1, macs0, macs1, part)
    if images is not None:
        rep.distill = _distill(teacher, student, job, images, steps, progress)
    rep.out = str(out)
    _save(student.eval(), rep, checkpoint, out)
    return rep


def _check_out(out, force: bool) -> Path:
    out = Path(out)
    if out.exists() and (out.is_dir() or not force):
        raise PruneError(f"--out {out} exists{' and is a directory' if out.is_dir() else ''}; choose a new file "
                         f"name{'' if out.is_dir() else ' or pass --force to replace it'} (e.g. pruned.pth)")
    if not out.parent.is_dir():
        raise PruneError(f"--out {out}: the folder {out.parent} does not exist")
    return out


def _distill_images(folder) -> list:
    from .int8_bundle import QuantizeError, calibration_images

    try:
        return calibration_images(folder)
    except QuantizeError as e:
        raise PruneError(str(e).replace("--calib", "--distill")) from None


def _inputs(job, images: list) -> list[np.ndarray]:
    """The images as the deployed model sees them (the runtime's preprocessing of a bundle of the
    same model, converted into a scratch folder), padded to the square input size."""
    import tempfile

    from litedet.runtime.runner import BundleRunner, load_image

    from .pipeline import convert_model

    with tempfile.TemporaryDirectory(prefix="litedet-prune-") as tmp:
        # seeded weights: only the preprocessing is used, as the stated flags and the config give it
        cfg = job.provenance.get("config", {}).get("path")
        res = convert_model(job.arch, Path(tmp) / "b", progress=False, input_size=job.input_size, config=cfg,
                            preprocess=job.stated)
        r = BundleRunner.from_bundle(res.bundle, fp16=False, bin_override=res.bundle / res.manifest.reference["fp32_bin"])
        m, s = res.manifest, job.input_size
        pad = ((m.resize.pad_value - np.array(m.input.mean)) * np.array(m.input.norm)).astype(np.float32)
        out = []
        for im in images:
            chw, _ = r.preprocess_array(load_image(im.path))
            sq = np.broadcast_to(pad[:, None, None], (3, s, s)).copy()
            sq[:, :chw.shape[1], :chw.shape[2]] = chw[:, :s, :s]
            out.append(sq)
    return out


def _distill(teacher, student, job, images: list, steps: int, progress: bool) -> dict:
    """Adam on _distill_loss of every deploy output, one image per step, the teacher's outputs as
    the target (no labels)."""
    import torch
    from tqdm import tqdm

    t0 = time.perf_counter()
    xs = _inputs(job, images)
    opt = torch.optim.Adam(student.parameters(), lr=DISTILL_LR)
    # eval mode throughout: BatchNorm keeps its trained statistics (one image is no batch) and
    # dropout stays off, so the student is fitted as it will run
    student.eval()
    losses = []
    for step in tqdm(range(steps), desc="distill", disable=not progress, leave=False):
        x = torch.from_numpy(xs[step % len(xs)])[None]
        with torch.no_grad():
            target = _Deploy(teacher)(x)
        loss = sum(_distill_loss(a, b) for a, b in zip(_Deploy(student)(x), target))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    head, tail = losses[:10], losses[-10:]
    return {"steps": steps, "images": len(xs), "lr": DISTILL_LR, "loss_first10": float(np.mean(head)),
            "loss_last10": float(np.mean(tail)), "seconds": round(time.perf_counter() - t0, 1)}


def _distill_loss(student_out, teacher_out):
    """Probabilities (a detector's sigmoid scores: every teacher value in [0, 1]) by binary cross
    entropy against the teacher's as soft targets, which weighs the few confident cells as a detector
    needs; anything else (logits, box distributions) by squared error relative to the teacher
    output's own spread, so no output drowns the others."""
    import torch

    t = teacher_out
    if float(t.min()) >= 0.0 and float(t.max()) <= 1.0:
        return torch.nn.functional.binary_cross_entropy(student_out.clamp(1e-6, 1 - 1e-6), t)
    return torch.nn.functional.mse_loss(student_out, t) / (t.var() + 1e-6)


def _save(model, rep: PruneReport, checkpoint, out: Path) -> None:
    import os

    import torch

    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    meta = {"architecture": rep.architecture, "ratio": rep.ratio, "round_to": ROUND_TO, "report": asdict(rep),
            "shapes": {k: list(v.shape) for k, v in sd.items()},
            "source_checkpoint": str(checkpoint) if checkpoint else None,
            "source_sha256": _sha256(checkpoint) if checkpoint else None}
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        torch.save({PRUNED_KEY: meta, "state_dict": sd}, tmp)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)


def _sha256(path) -> str:
    p = Path(path)
    files = [p, p.with_suffix(".bin")] if p.suffix == ".param" else [p]
    h = hashlib.sha256()
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()
