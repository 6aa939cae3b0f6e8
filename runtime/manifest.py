"""The bundle manifest: everything a device or the desktop needs to run a model.

Written by ``litedet.convert`` and read by the runtime, the C++ core's config
generator and ``litedet android push``. Versioned and strict: a missing field,
an unknown field or a value of the wrong type is an error that names the field
(``postprocess.center_offset``), so no default can silently change an answer.
The postprocess section's fields belong to its kind (``runtime/kinds/``): each
kind registers the dataclass that describes it.
"""

from __future__ import annotations

import json
import math
import types
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from litedet.datasets import class_name_problem
from litedet.hashing import sha256_file
from litedet.text import QUOTE
from litedet.text import short as short_text
from litedet.paths import file_kind

from .kinds import BundleError, KindGraph, KindSpec, kind_names, postprocess_kind, rng

__all__ = [
    "MANIFEST_VERSION", "MAX_INPUT_SIZE", "ManifestError", "InputSpec", "ResizeSpec", "OutputSpec", "KindSpec",
    "Manifest", "Int8Spec", "PrecisionPlan", "load_manifest", "sha256_file", "bundle_path",
]

# 2: the postprocess section holds only its kind's fields, and every field is required
# 3: the int8 section (null unless `litedet quantize` wrote the bundle) and the precision_plan
#    section (null unless `convert --arm-plan` chose one); a version 2 manifest is read as version 3
#    with both null (it has neither), nothing else changed
MANIFEST_VERSION = 3
# the largest network input side a bundle may have (phones run 320-416; 2048 is already ~40x the work)
MAX_INPUT_SIZE = 2048
PIXEL_FORMATS = ("bgr", "rgb")
WEIGHT_STORAGE = ("fp16", "fp32", "int8")
PAD_MODES = ("stride_multiple", "fixed")
RESIZE_POLICIES = ("letterbox", "letterbox_top_left", "stretch", "stretch_multiple", "center_crop")


class ManifestError(BundleError):
    """The manifest is missing something or contradicts itself."""


# Every number in a manifest has a finite range; a field states it as field(metadata=rng(lo, hi))
# (for a list, of each item). A field without one is an integer in [-INT_LIMIT, INT_LIMIT] or a
# finite float. NaN and infinities are refused everywhere.
INT_LIMIT = 2 ** 31 - 1
MAX_STRING = 4096  # characters of any string in a manifest (a blob name, a path)
MAX_CLASSES = 100_000
MAX_MANIFEST_BYTES = 16 << 20


def short(value: Any, limit: int = QUOTE) -> str:
    """``repr(value)``, cut to ``limit`` characters: an error line never quotes a huge value whole."""
    return short_text(repr(value), limit)


def check_class_names(names: Any, where: str = "class_names") -> list[str]:
    """A non-empty list of printable strings of at most MAX_CLASS_NAME characters, without commas
    (NAME.cfg lists them comma-separated) or surrogates (OpenCV cannot draw them)."""
    if not isinstance(names, list) or not names:
        raise ManifestError(f"{where} is {short(names)}; expected a non-empty list of strings")
    if len(names) > MAX_CLASSES:
        raise ManifestError(f"{where} has {len(names)} names; at most {MAX_CLASSES}")
    for i, n in enumerate(names):
        if not isinstance(n, str):
            raise ManifestError(f"{where}[{i}] is {short(n)} ({type(n).__name__}); class names must be strings")
        problem = class_name_problem(n)
        if problem:
            raise ManifestError(f"{where}[{i}] is {short(n)}; {problem}")
    return names


@dataclass
class InputSpec:
    blob: str
    pixel_format: str  # channel order the network expects
    mean: list[float] = field(metadata=rng(-1e4, 1e4))  # per channel, in pixel_format order, subtracted first
    norm: list[float] = field(metadata=rng(1e-8, 1e4))  # per channel, multiplied after the mean is subtracted
    channels: int = field(default=3, metadata=rng(1, 4))


@dataclass
class ResizeSpec:
    """``letterbox`` (detection): long side to ``target`` (aspect kept, short
    side floored), then pad centred with ``pad_value`` (raw pixel value, before
    mean/norm) either to the next multiple of ``pad_multiple`` (dynamic-shape
    graphs) or to exactly ``target`` x ``target`` (``fixed``: graphs converted
    at one size).

    ``center_crop`` (classification, the ImageNet evaluation recipe): the
    centred square of side ``crop_fraction`` x the short side is resized to
    ``target`` x ``target`` (= resize the short side to target/crop_fraction,
    then centre-crop target)."""

    target: int = field(metadata=rng(1, MAX_INPUT_SIZE))
    pad_multiple: int = field(metadata=rng(1, MAX_INPUT_SIZE))
    pad_mode: str = "stride_multiple"
    pad_value: float = field(default=0.0, metadata=rng(-1e4, 1e4))
    policy: str = "letterbox"
    crop_fraction: float = field(default=0.875, metadata=rng(0.01, 1.0))
    # False: pad_value is a raw pixel value, padded before mean/norm; True: it is in
    # normalised units, padded after them (upstream NanoDet pads its batches with 0 there)
    pad_normalized: bool = False


@dataclass
class OutputSpec:
    blob: str
    role: str  # what the postprocess kind reads it as (cls_scores, dist_logits, logits, ...)
    stride: int = field(metadata=rng(0, MAX_INPUT_SIZE))  # 0 for outputs that are not per-stride maps
    channels: int = field(metadata=rng(1, 1 << 24))  # columns of the [H*W, channels] matrix (classes for logits)
    # cls_scores only: "sigmoid" means the graph already applied it (never apply it again)
    activation: str = "none"


@dataclass
class Int8Spec:
    """How ``litedet quantize`` made the graph int8: ncnn runs the layers marked ``8=1`` with int8
    weights (per output channel scales) and int8 inputs (one scale each), the rest in floating point."""

    method: str  # kl | aciq | minmax: how the activation scales were chosen
    calib_images: int = field(metadata=rng(1, 10_000_000))
    calib_sha256: str  # of the calibration images: their sorted names and sha256s
    table: str  # the calibration table in ncnn2table's format, a file in the bundle
    table_sha256: str
    int8_layers: list[str]  # the main graph's layers quantised (8=1)
    fp_layers: list[str]  # quantisable layers kept in floating point (--keep-fp, or the automatic plan)
    plan: str  # all | keep-fp | target-agreement: how fp_layers were chosen
    target_agreement: float = field(metadata=rng(0.0, 1.0))  # 0 unless plan is target-agreement
    # measured at quantize time on the calibration images against the fp32 graph: agreement mAP
    # (detectors) or top-1 agreement (classifiers)
    agreement: float = field(metadata=rng(0.0, 1.0))
    agreement_metric: str
    # quantisable layers kept in floating point because their int8 form cost ARM (qemu cortex-a76
    # guest instructions, fp16 on) at least what their fp16 form does (quantize --arm-aware)
    arm_fp_layers: list[str]


@dataclass
class PrecisionPlan:
    """The layers of the main graph that run in fp32 on ARM while the rest runs fp16 (``litedet
    convert --arm-plan``), chosen from per-layer guest instruction counts under qemu. Each listed
    layer carries ncnn's featmask ``31=3`` (no fp16 arithmetic, no fp16 storage) and reads its input
    through an identity Dropout named LAYER_fp32in, which makes ncnn cast the fp16 blob to fp32
    (ncnn 1.0.20261020 does not cast for a layer whose featmask turns fp16 storage off)."""

    cpu: str  # the qemu CPU model the layers were measured on
    fp32_layers: list[str]
    # guest instructions of the main graph's layers for one inference at the bundle's input size
    insns_fp32: int = field(metadata=rng(0, 1 << 62))
    insns_fp16: int = field(metadata=rng(0, 1 << 62))  # uniform fp16
    insns_planned: int = field(metadata=rng(0, 1 << 62))
    uniform_param: str  # the graph without the plan, kept in the bundle for comparison


INT8_METHODS = ("kl", "aciq", "minmax")
INT8_PLANS = ("all", "keep-fp", "target-agreement")


@dataclass
class Manifest:
    architecture: str
    variant: str
    task: str
    param: str
    bin: str
    param_sha256: str
    bin_sha256: str
    weight_storage: str  # fp16 | fp32 | int8 (int8 layers, the others as the source bundle stored them)
    input: InputSpec
    resize: ResizeSpec
    outputs: list[OutputSpec]
    postprocess: Any  # the kind's dataclass (runtime/kinds/): GflSpec, SoftmaxTopkSpec, ...
    class_names: list[str]
    provenance: dict[str, Any] = field(default_factory=dict)
    reference: dict[str, Any] = field(default_factory=dict)
    int8: Int8Spec | None = None
    precision_plan: PrecisionPlan | None = None
    version: int = field(default=MANIFEST_VERSION, metadata=rng(0, 1000))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def output(self, role: str, stride: int) -> OutputSpec:
        for o in self.outputs:
            if o.role == role and o.stride == stride:
                return o
        raise ManifestError(f"manifest has no output with role {role!r} at stride {stride}")

    def extra_graphs(self) -> dict[str, KindGraph]:
        """The bundle's further ncnn graphs by name (a two-stage head), as its kind declares them."""
        kind = postprocess_kind(self.postprocess.kind)
        return kind.graphs(self.postprocess) if kind.graphs else {}

    def graph_files(self) -> list[tuple[str, str, str]]:
        """(manifest field, relative path, sha256) of every param and bin of the bundle."""
        files = [("param", self.param, self.param_sha256), ("bin", self.bin, self.bin_sha256)]
        for name, g in self.extra_graphs().items():
            files += [(f"postprocess.{name}.param", g.param, g.param_sha256), (f"postprocess.{name}.bin", g.bin, g.bin_sha256)]
        return files

    def outputs_with_role(self, role: str) -> list[OutputSpec]:
        return [o for o in self.outputs if o.role == role]

    def to_dict(self) -> dict[str, Any]:
        return {"format": "litedet-bundle", **asdict(self)}

    def write(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    def validate(self) -> "Manifest":
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ManifestError(msg)

        need(self.version == MANIFEST_VERSION,
             f"manifest version {self.version!r} is not supported; this litedet reads version {MANIFEST_VERSION}")
        for what, rel, _ in self.graph_files():
            check_relative(rel, what)  # confined to the bundle
        for name, g in self.extra_graphs().items():
            if g.fp32_bin:
                check_relative(g.fp32_bin, f"postprocess.{name}.fp32_bin")
        need(self.input.pixel_format in PIXEL_FORMATS, f"input.pixel_format is {self.input.pixel_format!r}; expected one of {PIXEL_FORMATS}")
        need(len(self.input.mean) == self.input.channels and len(self.input.norm) == self.input.channels,
             f"input.mean and input.norm need {self.input.channels} values each")
        need(self.weight_storage in WEIGHT_STORAGE,
             f"weight_storage is {self.weight_storage!r}; expected one of {', '.join(WEIGHT_STORAGE)}")
        need((self.weight_storage == "int8") == (self.int8 is not None),
             f"weight_storage is {self.weight_storage!r} but the int8 section is "
             f"{'set' if self.int8 is not None else 'null'}; an int8 bundle has both, any other neither")
        if self.int8 is not None:
            self._validate_int8(need)
        if self.precision_plan is not None:
            check_relative(self.precision_plan.uniform_param, "precision_plan.uniform_param")
            need(bool(self.precision_plan.fp32_layers), "precision_plan.fp32_layers is empty; a plan lists its layers")
        r = self.resize
        need(r.policy in RESIZE_POLICIES, f"resize.policy is {r.policy!r}; expected one of {RESIZE_POLICIES}")
        need(r.pad_mode in PAD_MODES, f"resize.pad_mode is {r.pad_mode!r}; expected one of {PAD_MODES}")
        need(r.target > 0 and r.pad_multiple > 0, "resize.target and resize.pad_multiple must be positive")
        need(r.target <= MAX_INPUT_SIZE, f"resize.target {r.target} is larger than {MAX_INPUT_SIZE}, the largest input litedet runs")
        need(r.target % r.pad_multiple == 0, f"resize.target {r.target} must be a multiple of resize.pad_multiple {r.pad_multiple}")
        need(0.0 < r.crop_fraction <= 1.0, f"resize.crop_fraction {r.crop_fraction} must be in (0, 1]")
        check_class_names(self.class_names)
        roles = [(o.role, o.stride) for o in self.outputs]
        need(len(set(roles)) == len(roles), f"outputs list a role at a stride twice: {short(roles)}")
        blobs = [o.blob for o in self.outputs]
        need(len(set(blobs)) == len(blobs), f"outputs name a blob twice: {short(blobs)}")
        kind = postprocess_kind(self.postprocess.kind)
        need(isinstance(self.postprocess, kind.spec),
             f"postprocess is a {type(self.postprocess).__name__}; kind {kind.name!r} needs a {kind.spec.__name__}")
        need(kind.task == self.task, f"postprocess.kind {kind.name!r} does not fit task {self.task!r}; expected task {kind.task!r}")
        for o in self.outputs:
            need(o.role in kind.roles, f"output {o.blob!r} has role {o.role!r}; postprocess kind {kind.name!r} reads "
                                       f"roles {kind.roles}")
        try:
            kind.validate(self)
        except ValueError as e:
            raise ManifestError(str(e)) from None
        return self

    def _validate_int8(self, need) -> None:
        q = self.int8
        check_relative(q.table, "int8.table")
        need(q.method in INT8_METHODS, f"int8.method is {q.method!r}; expected one of {', '.join(INT8_METHODS)}")
        need(q.plan in INT8_PLANS, f"int8.plan is {q.plan!r}; expected one of {', '.join(INT8_PLANS)}")
        need(bool(q.int8_layers), "int8.int8_layers is empty; an int8 bundle quantises at least one layer")
        both = set(q.int8_layers) & set(q.fp_layers)
        need(not both, f"int8: layer {short(sorted(both)[:1])} is listed as int8 and as kept in floating point")
        both = set(q.int8_layers) & set(q.arm_fp_layers)
        need(not both, f"int8: layer {short(sorted(both)[:1])} is listed as int8 and as kept fp for ARM's cost")
        need(q.plan == "target-agreement" or q.target_agreement == 0.0,
             f"int8.target_agreement is {q.target_agreement}; it is 0 unless int8.plan is 'target-agreement'")

    @classmethod
    def from_dict(cls, d: Any) -> "Manifest":
        if not isinstance(d, dict):
            raise ManifestError(f"a manifest is a JSON object; this one is a JSON {type(d).__name__}")
        if d.get("format") != "litedet-bundle":
            raise ManifestError(f"not a litedet manifest (format is {short(d.get('format'))}, expected 'litedet-bundle')")
        if isinstance(d.get("version"), int) and d["version"] == 2 and "int8" not in d:
            # version 2 had no int8 layers and no precision plan; nothing else changed
            d = {**d, "version": MANIFEST_VERSION, "int8": None, "precision_plan": None}
        if "version" in d and d["version"] != MANIFEST_VERSION:  # before the field checks: another layout
            raise ManifestError(f"manifest version {short(d['version'])} is not supported; this litedet reads version "
                                f"{MANIFEST_VERSION}")
        d = {k: v for k, v in d.items() if k != "format"}
        post = d.get("postprocess")
        if not isinstance(post, dict) or "kind" not in post:
            raise ManifestError("manifest field 'postprocess' must be an object with a 'kind' "
                                f"(one of {', '.join(kind_names())})")
        try:
            spec = postprocess_kind(post["kind"]).spec
        except (KeyError, TypeError):
            raise ManifestError(f"unknown postprocess kind {short(post['kind'])} (manifest field postprocess.kind); "
                                f"expected one of {', '.join(kind_names())}") from None
        return _build(cls, d, "", {"postprocess": spec}).validate()


def _type_name(t: Any) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(t, str(t))


def _check_number(value: Any, t: Any, where: str, limits: tuple[float, float] | None) -> Any:
    ok = isinstance(value, int) and not isinstance(value, bool) if t is int else \
        isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok:
        raise ManifestError(f"manifest field '{where}' is {short(value)} ({type(value).__name__}); expected {_type_name(t)}")
    if t is float and not math.isfinite(value):
        raise ManifestError(f"manifest field '{where}' is {value!r}; expected a finite number")
    lo, hi = limits if limits is not None else ((-INT_LIMIT, INT_LIMIT) if t is int else (-math.inf, math.inf))
    if not lo <= value <= hi:
        raise ManifestError(f"manifest field '{where}' is {short(value)}; expected a number in [{lo:g}, {hi:g}]")
    return float(value) if t is float else value


def _check_value(value: Any, t: Any, where: str, limits: tuple[float, float] | None = None) -> Any:
    """``value`` as type ``t`` (int, float, str, bool, list[X], dict, a dataclass), or ManifestError.
    ``limits``: the field's documented range (of each item, for a list of numbers)."""
    origin = typing.get_origin(t)
    if origin in (typing.Union, types.UnionType) and type(None) in typing.get_args(t):  # X | None
        if value is None:
            return None
        (t,) = [a for a in typing.get_args(t) if a is not type(None)]
        origin = typing.get_origin(t)
    if is_dataclass(t):
        return _build(t, value, where + ".", {})
    if t is Any:
        return value
    if origin is list:
        (item,) = typing.get_args(t)
        if not isinstance(value, list):
            raise ManifestError(f"manifest field '{where}' is {short(value)}; expected a list")
        if len(value) > MAX_CLASSES:
            raise ManifestError(f"manifest field '{where}' has {len(value)} items; at most {MAX_CLASSES}")
        return [_check_value(v, item, f"{where}[{i}]", limits) for i, v in enumerate(value)]
    if origin is dict or t is dict:
        if not isinstance(value, dict):
            raise ManifestError(f"manifest field '{where}' is {short(value)}; expected an object")
        return value
    if t in (int, float):
        return _check_number(value, t, where, limits)
    ok = {bool: isinstance(value, bool), str: isinstance(value, str)}[t]
    if not ok:
        raise ManifestError(f"manifest field '{where}' is {short(value)} ({type(value).__name__}); expected {_type_name(t)}")
    if t is str and (len(value) > MAX_STRING or not value.isprintable()):
        raise ManifestError(f"manifest field '{where}' is {short(value)}; expected at most {MAX_STRING} printable characters")
    return value


def _build(cls: type, d: Any, prefix: str, overrides: dict[str, type]) -> Any:
    """A dataclass from a dict whose keys are exactly its fields, each type-checked."""
    name = prefix.rstrip(".") or "manifest"
    if not isinstance(d, dict):
        raise ManifestError(f"manifest field '{name}' is {short(d)}; expected an object")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    missing = [n for n in names if n not in d]
    unknown = [k for k in d if k not in names]
    if missing:
        raise ManifestError(f"manifest is missing the field '{prefix}{missing[0]}'"
                            + (f" (and {len(missing) - 1} more: {', '.join(prefix + m for m in missing[1:])})" if len(missing) > 1 else ""))
    if unknown:
        raise ManifestError(f"manifest has an unknown field '{prefix}{short(unknown[0])[1:-1]}'; {name} has the fields "
                            f"{', '.join(names)}")
    limits = {f.name: f.metadata.get("range") for f in fields(cls)}
    return cls(**{n: _check_value(d[n], overrides.get(n, hints[n]), prefix + n, limits[n]) for n in names})


def check_relative(rel: str, what: str) -> Path:
    """``rel`` as a path that stays inside a bundle on its face: relative, without '..'."""
    p = Path(rel)
    if not rel or p.is_absolute() or ".." in p.parts:
        raise ManifestError(f"manifest field '{what}' is {short(rel)}; it must be a path inside the bundle "
                            "(relative, without '..')")
    return p


def bundle_path(bundle_dir: Path, rel: str, what: str) -> Path:
    """``bundle_dir / rel``, refused when ``rel`` is absolute, leaves the bundle, or resolves (through
    a symbolic link anywhere on the way) to a place outside the bundle."""
    full = Path(bundle_dir) / check_relative(rel, what)
    root = Path(bundle_dir).resolve()
    real = full.resolve()
    if not real.is_relative_to(root):
        raise ManifestError(f"manifest field '{what}': {full} is a link to {real}, outside the bundle {root}; "
                            "a bundle's files must be inside it")
    return full


def load_manifest(bundle_dir: str | Path) -> Manifest:
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / "manifest.json"
    if not bundle_dir.is_dir():
        raise ManifestError(f"bundle directory not found: {bundle_dir}")
    if not path.exists():
        raise ManifestError(f"{bundle_dir} is not a bundle: it has no manifest.json")
    if not path.is_file():
        raise ManifestError(f"{path} is {file_kind(path)}, not a regular file")
    bundle_path(bundle_dir, "manifest.json", "manifest.json")  # not a link out of the bundle
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{path} is {path.stat().st_size} bytes; a manifest is at most {MAX_MANIFEST_BYTES}")
    try:
        d = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ManifestError(f"{path} is not valid JSON: {short(str(e))}") from None
    except RecursionError:
        raise ManifestError(f"{path} nests too deeply to be a manifest") from None
    return Manifest.from_dict(d)
