"""The bundle manifest: everything a device or the desktop needs to run a model.

Written by ``litedet.convert`` and read by the runtime, the C++ core's config
generator and ``litedet android push``. Versioned; unknown versions, missing
fields and inconsistent values are errors that name the field.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from litedet.hashing import sha256_file

__all__ = [
    "MANIFEST_VERSION", "ManifestError", "InputSpec", "ResizeSpec", "OutputSpec", "PostprocessSpec",
    "Manifest", "load_manifest", "sha256_file", "verify_bundle_files",
]

MANIFEST_VERSION = 1
PIXEL_FORMATS = ("bgr", "rgb")
PAD_MODES = ("stride_multiple", "fixed")
RESIZE_POLICIES = ("letterbox", "center_crop")
OUTPUT_ROLES = ("cls_scores", "dist_logits", "logits")
POSTPROCESS_KINDS = ("gfl", "softmax_topk")
TASKS = {"detection": "gfl", "classification": "softmax_topk"}


class ManifestError(ValueError):
    """The manifest is missing something or contradicts itself."""


@dataclass
class InputSpec:
    blob: str
    pixel_format: str  # channel order the network expects
    mean: list[float]  # per channel, in pixel_format order, subtracted first
    norm: list[float]  # per channel, multiplied after the mean is subtracted
    channels: int = 3


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

    target: int
    pad_multiple: int
    pad_mode: str = "stride_multiple"
    pad_value: float = 0.0
    policy: str = "letterbox"
    crop_fraction: float = 0.875


@dataclass
class OutputSpec:
    blob: str
    role: str  # cls_scores | dist_logits
    stride: int  # 0 for outputs that are not per-stride maps
    channels: int  # columns of the [H*W, channels] matrix (classes for logits)
    # cls_scores only: "sigmoid" means the graph already applied it (never apply it again)
    activation: str = "none"


@dataclass
class PostprocessSpec:
    kind: str  # gfl (detection) | softmax_topk (classification)
    strides: list[int] = field(default_factory=list)
    reg_max: int = 0
    center_offset: float = 0.0  # cell centre = (index + center_offset) * stride
    score_threshold: float = 0.35
    nms_threshold: float = 0.6
    class_agnostic_nms: bool = False
    max_detections: int = 100
    multi_label: bool = False  # False: one label per cell (argmax), as on device
    top_k: int = 5  # softmax_topk only


@dataclass
class Manifest:
    architecture: str
    variant: str
    task: str
    param: str
    bin: str
    param_sha256: str
    bin_sha256: str
    weight_storage: str  # fp16 | fp32
    input: InputSpec
    resize: ResizeSpec
    outputs: list[OutputSpec]
    postprocess: PostprocessSpec
    class_names: list[str]
    provenance: dict[str, Any] = field(default_factory=dict)
    reference: dict[str, Any] = field(default_factory=dict)
    version: int = MANIFEST_VERSION

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def output(self, role: str, stride: int) -> OutputSpec:
        for o in self.outputs:
            if o.role == role and o.stride == stride:
                return o
        raise ManifestError(f"manifest has no output with role {role!r} at stride {stride}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d = {"format": "litedet-bundle", **d}
        return d

    def write(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    def validate(self) -> "Manifest":
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ManifestError(msg)

        need(self.version == MANIFEST_VERSION, f"manifest version {self.version} is not supported; this litedet reads version {MANIFEST_VERSION}")
        need(self.input.pixel_format in PIXEL_FORMATS, f"input.pixel_format is {self.input.pixel_format!r}; expected one of {PIXEL_FORMATS}")
        need(len(self.input.mean) == self.input.channels and len(self.input.norm) == self.input.channels,
             f"input.mean and input.norm need {self.input.channels} values each")
        need(self.weight_storage in ("fp16", "fp32"), f"weight_storage is {self.weight_storage!r}; expected 'fp16' or 'fp32'")
        need(self.task in TASKS, f"task is {self.task!r}; expected one of {tuple(TASKS)}")
        r = self.resize
        need(r.policy in RESIZE_POLICIES, f"resize.policy is {r.policy!r}; expected one of {RESIZE_POLICIES}")
        need(r.pad_mode in PAD_MODES, f"resize.pad_mode is {r.pad_mode!r}; expected one of {PAD_MODES}")
        need(r.target > 0 and r.pad_multiple > 0, "resize.target and resize.pad_multiple must be positive")
        need(r.target % r.pad_multiple == 0, f"resize.target {r.target} must be a multiple of resize.pad_multiple {r.pad_multiple}")
        need(0.0 < r.crop_fraction <= 1.0, f"resize.crop_fraction {r.crop_fraction} must be in (0, 1]")
        p = self.postprocess
        need(p.kind == TASKS[self.task], f"postprocess.kind {p.kind!r} does not fit task {self.task!r}; expected {TASKS[self.task]!r}")
        need(len(self.class_names) > 0, "class_names is empty")
        for o in self.outputs:
            need(o.role in OUTPUT_ROLES, f"output {o.blob!r} has role {o.role!r}; expected one of {OUTPUT_ROLES}")
        if p.kind == "softmax_topk":
            logits = [o for o in self.outputs if o.role == "logits"]
            need(len(logits) == 1, f"a classifier needs exactly one output with role 'logits', found {len(logits)}")
            need(logits[0].channels == self.num_classes,
                 f"output {logits[0].blob!r} has {logits[0].channels} logits but there are {self.num_classes} class names")
            need(p.top_k > 0, "postprocess.top_k must be positive")
            return self
        need(p.reg_max >= 0, "postprocess.reg_max must be >= 0")
        need(len(p.strides) > 0, "postprocess.strides is empty")
        need(max(p.strides) <= r.pad_multiple and r.pad_multiple % max(p.strides) == 0,
             f"resize.pad_multiple {r.pad_multiple} must be a multiple of the largest stride {max(p.strides)}")
        need(0.0 <= p.score_threshold <= 1.0, f"postprocess.score_threshold {p.score_threshold} is outside [0, 1]")
        need(0.0 <= p.nms_threshold <= 1.0, f"postprocess.nms_threshold {p.nms_threshold} is outside [0, 1]")
        need(p.max_detections > 0, "postprocess.max_detections must be positive")
        for s in p.strides:
            cls = self.output("cls_scores", s)
            dis = self.output("dist_logits", s)
            need(cls.channels == self.num_classes,
                 f"output {cls.blob!r} has {cls.channels} columns but there are {self.num_classes} class names")
            need(dis.channels == 4 * (p.reg_max + 1),
                 f"output {dis.blob!r} has {dis.channels} columns; reg_max {p.reg_max} needs 4*(reg_max+1) = {4 * (p.reg_max + 1)}")
            need(cls.activation == "sigmoid",
                 f"output {cls.blob!r}: class scores must come out of the graph with the sigmoid applied (activation 'sigmoid'), got {cls.activation!r}")
        return self

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Manifest":
        try:
            if d.get("format") != "litedet-bundle":
                raise ManifestError(f"not a litedet manifest (format is {d.get('format')!r}, expected 'litedet-bundle')")
            d = {k: v for k, v in d.items() if k != "format"}
            d["input"] = InputSpec(**d["input"])
            d["resize"] = ResizeSpec(**d["resize"])
            d["outputs"] = [OutputSpec(**o) for o in d["outputs"]]
            d["postprocess"] = PostprocessSpec(**d["postprocess"])
            return cls(**d).validate()
        except KeyError as e:
            raise ManifestError(f"manifest is missing the field {e.args[0]!r}") from None
        except TypeError as e:
            raise ManifestError(f"manifest has an unexpected or missing field: {e}") from None


def load_manifest(bundle_dir: str | Path) -> Manifest:
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / "manifest.json"
    if not bundle_dir.is_dir():
        raise ManifestError(f"bundle directory not found: {bundle_dir}")
    if not path.is_file():
        raise ManifestError(f"{bundle_dir} is not a bundle: it has no manifest.json")
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ManifestError(f"{path} is not valid JSON: {e}") from None
    return Manifest.from_dict(d)


def verify_bundle_files(bundle_dir: str | Path, m: Manifest) -> None:
    """Refuse a bundle whose param/bin do not match the sha256s in its manifest."""
    bundle_dir = Path(bundle_dir)
    for name, want in ((m.param, m.param_sha256), (m.bin, m.bin_sha256)):
        p = bundle_dir / name
        if not p.is_file():
            raise ManifestError(f"bundle file missing: {p}")
        got = sha256_file(p)
        if got != want:
            raise ManifestError(f"{p} has sha256 {got[:16]}… but the manifest says {want[:16]}…; the bundle was modified")
