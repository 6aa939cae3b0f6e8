"""The convert pipeline: checkpoint -> verified bundle, the same steps for every family.

load (or seed) -> trace -> pnnx (fp16 bin + fp32 reference bin) -> manifest
-> reference outputs -> verify -> rename into place. Whatever differs between
families is asked of the family's adapter (``convert/families/``); this module
never branches on a task or an architecture name.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from litedet.runtime.manifest import Manifest, sha256_file

from .bundle import (BIN_NAME, PARAM_NAME, REF_DIR, ConvertError, ConvertResult, assemble_manifest, atomic_bundle_dir,
                     check_destination, check_input_size, now_utc, reference_image, tool_versions)

if TYPE_CHECKING:
    from .preprocessing import Stated

__all__ = ["convert_model", "load_model", "VERIFY_MIN_COSINE", "ROUTES"]

# convert refuses a bundle whose fp32 ncnn outputs drift further than this from torch
VERIFY_MIN_COSINE = 0.9999
ROUTES = ("pnnx", "onnx")


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    den = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / den) if den > 0 else float(np.array_equal(a, b))


class _Steps:
    """Progress bar and per-step timings of one conversion."""

    def __init__(self, arch: str, progress: bool, t0: float | None = None) -> None:
        from tqdm import tqdm

        self.timings: dict[str, float] = {}
        self.bar = tqdm(total=6, desc=f"convert {arch}", disable=not progress, leave=False)
        self.t0 = self.t = time.perf_counter() if t0 is None else t0

    def done(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = round(now - self.t, 3)
        self.t = now
        self.bar.update(1)
        self.bar.set_postfix_str(name)

    def close(self) -> dict[str, float]:
        self.timings["total"] = round(time.perf_counter() - self.t0, 3)
        self.bar.close()
        return self.timings


def _weights(adapter, model, info, checkpoint, seed: int, input_size: int, trust: bool) -> dict:
    """Load the checkpoint (or seed untrained weights); the provenance for the manifest."""
    if checkpoint is None:
        adapter.seed(model, info, seed, input_size)
        return {"weights": "seeded-random", "seed": seed, "source_checkpoint": None, "source_sha256": None,
                "note": f"UNTRAINED: seeded random weights (seed {seed}, Kaiming convs, BatchNorm statistics "
                        "calibrated on the reference card); outputs exercise every layer for parity but mean nothing"}
    rep = adapter.load(model, info, checkpoint, trust=trust)
    return {"weights": rep.kind, "source_checkpoint": str(Path(checkpoint).resolve()), "source_sha256": rep.sha256,
            "used_ema": rep.used_ema, "load_details": rep.details}


def _pnnx(model, example, src: Path, work: Path, tmp: Path, shapes, route: str, fp32: bool, out_names: list[str],
          stem: str = "model"):
    """The shipped STEM.ncnn.param/bin (fp16 weights unless ``fp32``) and, for fp16, an fp32 bin
    of the same graph, so parity separates conversion error from fp16 rounding. Returns (result, ref_bin)."""
    from .export import export_onnx, run_pnnx

    shape, shape2 = shapes
    if route == "onnx":
        src, shape2 = export_onnx(model, example, work / f"{stem}.onnx", out_names), None
    res = run_pnnx(src, work, shape, shape2, fp16=not fp32, stem=stem)
    ref_bin = None
    if not fp32:
        res32 = run_pnnx(src, work, shape, shape2, fp16=False, stem=f"{stem}_fp32")
        if res32.param.read_text() != res.param.read_text():
            raise ConvertError("pnnx wrote different graphs for fp16 and fp32 weights; cannot keep an fp32 reference")
        ref_bin = f"{REF_DIR}/{stem}.fp32.ncnn.bin"
        shutil.copyfile(res32.bin, tmp / ref_bin)
    shutil.copyfile(res.param, tmp / f"{stem}.ncnn.param")
    shutil.copyfile(res.bin, tmp / f"{stem}.ncnn.bin")
    return res, ref_bin


def _extra_graphs(extras, work: Path, tmp: Path, fp32: bool, seed: int) -> tuple[dict, dict]:
    """Trace and convert the family's further graphs (always the pnnx route); their GraphIO and
    their reference files (TorchScript, fp32 bin) by name."""
    import torch

    from .export import trace_deploy
    from litedet.runtime.kinds import GraphFiles

    from .families import GraphIO

    ios, files = {}, {}
    for eg in extras:
        example = torch.rand(eg.shapes[0], generator=torch.Generator().manual_seed(seed))
        ts_path = tmp / REF_DIR / f"{eg.name}.torchscript.pt"
        trace_deploy(eg.module, example).save(str(ts_path))
        res, ref_bin = _pnnx(eg.module, example, ts_path, work, tmp, eg.shapes, "pnnx", fp32, eg.output_names, eg.name)
        if len(res.output_names) != len(eg.output_names):
            raise ConvertError(f"graph {eg.name!r} has {len(res.output_names)} outputs; expected {len(eg.output_names)}")
        param, binf = f"{eg.name}.ncnn.param", f"{eg.name}.ncnn.bin"
        own = GraphFiles(param=param, bin=binf, param_sha256=sha256_file(tmp / param),
                         bin_sha256=sha256_file(tmp / binf), fp32_bin=ref_bin or "")
        ios[eg.name] = GraphIO(res.input_name, res.output_names, res.dynamic_shape, files=own)
        files[f"{eg.name}_torchscript"] = f"{REF_DIR}/{eg.name}.torchscript.pt"
        if ref_bin:
            files[f"{eg.name}_fp32_bin"] = ref_bin
    return ios, files


def _reference(tmp: Path, ts, blobs: list[str], ref_bin: str | None, extras=()):
    """The fixed card, its preprocessed input and torch's outputs, saved in reference/;
    returns the fp32 runner and both sides' outputs on that input. A further graph's torch
    outputs are computed on the input ncnn gave it (e.g. the RoIs pooled from ncnn's stage 1),
    so both sides of every graph see one tensor."""
    import cv2
    import torch

    from litedet.runtime.runner import BundleRunner

    img = reference_image()
    cv2.imwrite(str(tmp / REF_DIR / "image.png"), img)
    runner32 = BundleRunner.from_bundle(tmp, fp16=False, bin_override=tmp / (ref_bin or BIN_NAME))
    chw, _ = runner32.preprocess_array(img)
    with torch.no_grad():
        tref = {name: o[0].numpy() for name, o in zip(blobs, ts(torch.from_numpy(chw)[None]))}
    n32 = runner32.run_array(chw)
    if extras:  # the later stages in torch, on the intermediate inputs ncnn gave them (the same RoIs)
        from .verify.torch_parity import load_torchscript

        graphs = {eg.name: load_torchscript(tmp / REF_DIR / f"{eg.name}.torchscript.pt") for eg in extras}
        m = runner32.manifest

        def run_graph(name: str, x: np.ndarray) -> dict[str, np.ndarray]:
            with torch.no_grad():
                outs = graphs[name](torch.from_numpy(x)[None])
            return {b: o[0].numpy() for b, o in zip(m.extra_graphs()[name].blobs()[1], outs)}

        t_later = runner32.kind.complete(m, n32, chw.shape[2], chw.shape[1], run_graph, reference=n32)
        for eg in extras:
            if any(t_later[k].size == 0 for k in eg.output_names):
                raise ConvertError(f"graph {eg.name!r} got no input on the reference image; cannot verify it")
            tref.update({k: t_later[k] for k in eg.output_names})
    np.save(tmp / REF_DIR / "input.npy", chw)
    np.savez(tmp / REF_DIR / "outputs.npz", **tref)
    return runner32, tref, n32



def _verify(tref: dict, n32: dict) -> dict[str, dict[str, float]]:
    """ncnn fp32 vs torch per output on the reference input; refuses a drifting graph."""
    verify = {}
    for name, ref in tref.items():
        got = n32[name].reshape(ref.shape)
        verify[name] = {"max_abs": float(np.abs(got - ref).max()), "cosine": _cosine(got, ref)}
    worst = min(verify.items(), key=lambda kv: kv[1]["cosine"])
    if worst[1]["cosine"] < VERIFY_MIN_COSINE:
        raise ConvertError(f"converted model does not reproduce torch: output {worst[0]} has cosine "
                           f"{worst[1]['cosine']:.6f} (< {VERIFY_MIN_COSINE}) on the reference input")
    return verify


def _resolve(arch, config, checkpoint, class_names, trust: bool, options):
    """(architecture, its ModelInfo, its family's adapter, what the adapter derives from checkpoint
    and config), the architecture taken from the config when it names one."""
    from litedet.models import model_info

    from .families import adapter_for, adapter_for_config

    try:
        if config is not None:
            _, described = adapter_for_config(config)
            if arch is not None and arch != described:
                raise ConvertError(f"{config} describes {described}, but {arch} was asked for; drop one of them")
            arch = described
        if arch is None:
            raise ConvertError("no architecture given: name one (see 'litedet list') or pass --config")
        info = model_info(arch)  # an unknown name stays a KeyError (UnknownModelError) naming the known ones
        adapter = adapter_for(info.family)
        return arch, info, adapter, adapter.prepare(info, checkpoint, config, class_names, trust, dict(options or {}))
    except ConvertError:
        raise
    except ValueError as e:
        raise ConvertError(str(e)) from None


@dataclass
class _Job:
    """What a conversion writes, resolved before any work."""

    arch: str
    info: Any
    adapter: Any
    prepared: Any
    model: Any
    names: list[str]
    input_size: int
    provenance: dict
    stated: Any = None  # the user's preprocessing (convert/preprocessing.py: Stated)


def convert_model(arch: str | None, out: str | Path, checkpoint: str | Path | None = None,
                  input_size: int | None = None, fp32: bool = False, route: str = "pnnx", force: bool = False,
                  seed: int = 0, progress: bool = True, class_names: list[str] | None = None,
                  model_kwargs: dict | None = None, trust_checkpoint: bool = False, config: str | Path | None = None,
                  options: dict | None = None, preprocess: "Stated | None" = None) -> ConvertResult:
    """Checkpoint -> verified bundle directory (see DESIGN.md for its contents).

    ``arch`` may be None when ``config`` (e.g. NanoDet's own .yml) names it.
    ``input_size`` defaults to the config's, else the architecture's (the model
    registry's); ``class_names`` names the model's classes (a classifier's
    default is ``class_0`` ... : no ImageNet label list ships here).
    ``options`` are the family's deploy options (NanoDet: ``decode``,
    ``preprocess``). ``trust_checkpoint`` unpickles the whole checkpoint, which
    runs code from it (default: tensors only)."""
    if route not in ROUTES:
        raise ConvertError(f"unknown route {route!r}; expected one of {', '.join(ROUTES)}")
    out = Path(out)
    t0 = time.perf_counter()
    job = _prepare(arch, out, checkpoint, input_size, force, seed, class_names, model_kwargs, trust_checkpoint,
                   config, options, preprocess)
    steps = _Steps(job.arch, progress, t0)
    steps.done("load")
    with atomic_bundle_dir(out, force) as tmp:
        manifest, verify = _write_bundle(job, tmp, route, fp32, seed, steps)
    return ConvertResult(out, manifest, steps.close(), verify)


def _prepare(arch, out: Path | None, checkpoint, input_size, force: bool, seed: int, class_names, model_kwargs,
             trust: bool, config, options, stated=None) -> _Job:
    """Resolve the architecture, check every input and the destination (``out``; None: no bundle is
    written, as for `litedet prune`), build the model with its weights (loaded, imported or
    seeded): all before the first conversion step."""
    from litedet.models import create_model

    from .preprocessing import Stated, check_graph_import, default_source, sources

    arch, info, adapter, prepared = _resolve(arch, config, checkpoint, class_names, trust, options)
    stated = stated or Stated()
    size_source = "flags" if input_size is not None else ("config" if prepared.input_size else "architecture default")
    input_size = input_size if input_size is not None else (prepared.input_size or info.input_size)
    check_input_size(input_size, adapter.input_multiple)
    try:
        check_graph_import(checkpoint, stated, adapter.preprocess_convention)
    except ValueError as e:
        raise ConvertError(str(e)) from None
    if out is not None:
        check_destination(out, force)
    model = create_model(arch, **{**prepared.model_kwargs, **(model_kwargs or {})})
    try:
        names = adapter.class_names(model, info, class_names)
    except ValueError as e:
        raise ConvertError(str(e)) from None
    provenance = _weights(adapter, model, info, checkpoint, seed, input_size, trust)
    provenance["deploy_options"] = prepared.options
    provenance["preprocessing"] = sources(stated, default_source(adapter.preprocess_convention, config is not None),
                                          size_source)
    if config is not None:
        provenance["config"] = {"path": str(Path(config).resolve()), "sha256": sha256_file(config)}
    if prepared.notes:
        provenance["inferred"] = prepared.notes
    model.eval()
    return _Job(arch, info, adapter, prepared, model, names, input_size, provenance, stated)


def load_model(arch: str | None, checkpoint, *, config=None, trust: bool = False, options=None, seed: int = 0,
               input_size: int | None = None, stated=None) -> _Job:
    """The model with its weights as convert would build it (no bundle written): `litedet prune`."""
    return _prepare(arch, None, checkpoint, input_size, False, seed, None, None, trust, config, options, stated)


def _stated(job: _Job, deploy, dynamic: bool):
    """The family's preprocessing with what the user stated in its place (refused where it
    contradicts the config the family read)."""
    from .preprocessing import apply_stated, check_against_config

    config = job.provenance.get("config")
    if config is not None:
        check_against_config(deploy, job.stated, config["path"])
    return apply_stated(deploy, job.stated, job.info.task, dynamic)


def _write_bundle(job: _Job, tmp: Path, route: str, fp32: bool, seed: int, steps: "_Steps") -> tuple[Manifest, dict]:
    """Trace, pnnx, manifest, reference and verification into the temp bundle ``tmp``."""
    import torch

    from .export import trace_deploy
    from .families import GraphIO

    adapter, info, model = job.adapter, job.info, job.model
    shapes = adapter.trace_shapes(info, job.input_size)
    out_names = adapter.output_names(model, info)
    extras = adapter.extra_graphs(model, info, job.input_size)
    work = tmp / ".work"
    work.mkdir()
    (tmp / REF_DIR).mkdir()
    example = torch.rand(shapes[0], generator=torch.Generator().manual_seed(seed))
    ts = trace_deploy(model, example)
    ts.save(str(tmp / REF_DIR / "model.torchscript.pt"))
    steps.done("trace")
    res, ref_bin = _pnnx(model, example, tmp / REF_DIR / "model.torchscript.pt", work, tmp, shapes, route, fp32,
                         out_names)
    extra_io, extra_files = _extra_graphs(extras, work, tmp, fp32, seed)
    steps.done("pnnx")
    try:
        graph = GraphIO(res.input_name, res.output_names, res.dynamic_shape, extra_io)
        deploy = adapter.deploy_spec(model, info, job.input_size, graph, job.names, job.prepared.options)
        deploy = _stated(job, deploy, res.dynamic_shape)
        manifest = assemble_manifest(job.arch, job.input_size, deploy, not fp32, sha256_file(tmp / PARAM_NAME),
                                     sha256_file(tmp / BIN_NAME))
    except ValueError as e:
        raise ConvertError(str(e)) from None
    manifest.provenance = {**job.provenance, "route": route, "tools": tool_versions(), "created": now_utc(),
                           "deploy_outputs": dict(zip(res.output_names, out_names))}
    manifest.write(tmp / "manifest.json")
    runner32, tref, n32 = _reference(tmp, ts, res.output_names, ref_bin, extras)
    steps.done("reference")
    try:
        adapter.check_graph(runner32, deploy, job.input_size)
    except ValueError as e:
        raise ConvertError(str(e)) from None
    verify = _verify(tref, n32)
    steps.done("verify")
    files = {"image": f"{REF_DIR}/image.png", "input": f"{REF_DIR}/input.npy",
             "outputs": f"{REF_DIR}/outputs.npz", "torchscript": f"{REF_DIR}/model.torchscript.pt",
             "fp32_bin": ref_bin, **extra_files}
    manifest.reference = {**files, "sha256": {k: sha256_file(tmp / v) for k, v in files.items() if v},
                          "verify_fp32": verify}
    manifest.write(tmp / "manifest.json")
    shutil.rmtree(work)
    steps.done("write")
    return manifest, verify


def registered_models() -> list[dict]:
    """Every registered architecture with its task, family, default input side and published MACs
    (for tools above convert, e.g. ``litedet bench``, that may not import models)."""
    from litedet.models import list_models, model_info

    return [{"name": n, "task": model_info(n).task, "family": model_info(n).family,
             "input_size": model_info(n).input_size, "paper_macs": model_info(n).paper_macs} for n in list_models()]
