"""Run a detection bundle with ncnn: preprocess as the device does, extract, decode.

Top to bottom in the order the data moves (like ncnn's examples): load the
manifest and the net, letterbox with ncnn's own pixel calls, extract every
output into numpy while the extractor is alive, then the pure postprocessing
of ``postprocess.py``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import ncnn
import numpy as np

from .manifest import Manifest, ManifestError, load_manifest, verify_bundle_files
from .postprocess import Candidates, Letterbox, decode_level, letterbox_geometry, map_boxes_back, nms

__all__ = ["Detection", "Detector", "ImageError", "as_pixels", "load_image", "make_net"]


class ImageError(ValueError):
    """The image cannot be used (empty, unreadable, unsupported channel count)."""


@dataclass
class Detection:
    x1: float
    y1: float
    x2: float
    y2: float
    score: float
    label: int
    name: str

    def to_dict(self) -> dict:
        return asdict(self)


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file as BGR/BGRA/gray uint8 (OpenCV's convention)."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise ImageError(f"image not found: {path}")
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ImageError(f"could not decode {path} as an image (expected a JPEG, PNG, BMP, ... file)")
    if img.dtype != np.uint8:  # 16-bit PNGs: scale to 8 bits
        img = (img / 257).astype(np.uint8) if img.dtype == np.uint16 else img.astype(np.uint8)
    return img


def _pixel_type(channels: int, want: str) -> int:
    P = ncnn.Mat.PixelType
    table = {
        (1, "bgr"): P.PIXEL_GRAY2BGR, (1, "rgb"): P.PIXEL_GRAY2RGB,
        (3, "bgr"): P.PIXEL_BGR, (3, "rgb"): P.PIXEL_BGR2RGB,
        (4, "bgr"): P.PIXEL_BGRA2BGR, (4, "rgb"): P.PIXEL_BGRA2RGB,
    }
    try:
        return int(table[(channels, want)])
    except KeyError:
        raise ImageError(f"images must have 1 (gray), 3 (BGR) or 4 (BGRA) channels, got {channels}") from None


def as_pixels(image: np.ndarray, pixel_format: str) -> tuple[np.ndarray, int]:
    """Check an image and return it as contiguous H x W x C uint8 with the ncnn
    pixel conversion to the network's ``pixel_format``."""
    if not isinstance(image, np.ndarray):
        raise ImageError(f"expected a numpy uint8 image, got {type(image).__name__}")
    if image.size == 0 or image.ndim not in (2, 3) or image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageError(f"image is empty or not 2-D (shape {image.shape})")
    if image.dtype != np.uint8:
        raise ImageError(f"image dtype is {image.dtype}; expected uint8 pixels (0..255)")
    img = np.ascontiguousarray(image if image.ndim == 3 else image[:, :, None])
    return img, _pixel_type(img.shape[2], pixel_format)


def make_net(param: str | Path, bin_path: str | Path, threads: int = 1, fp16: bool = True) -> ncnn.Net:
    """An ncnn.Net with fp16 storage and arithmetic set explicitly (ARM defaults them on)."""
    net = ncnn.Net()
    net.opt.num_threads = threads
    net.opt.use_vulkan_compute = False
    net.opt.use_fp16_storage = fp16
    net.opt.use_fp16_packed = fp16
    net.opt.use_fp16_arithmetic = fp16
    net.opt.use_bf16_storage = False
    if net.load_param(str(param)) != 0:
        raise ManifestError(f"ncnn could not parse {param}")
    if net.load_model(str(bin_path)) != 0:
        raise ManifestError(f"ncnn could not load the weights {bin_path} (truncated, or not the bin for {Path(param).name})")
    return net


class Detector:
    """A NanoDet-style (GFL) detector bundle run by ncnn on the CPU."""

    def __init__(self, manifest: Manifest, net: ncnn.Net, bundle_dir: Path | None = None) -> None:
        self.manifest = manifest
        self.net = net
        self.bundle_dir = bundle_dir
        # padding honours the thread count too (its default Option uses every core)
        self._border_opt = ncnn.Option()
        self._border_opt.num_threads = net.opt.num_threads
        names_in, names_out = set(net.input_names()), set(net.output_names())
        if manifest.input.blob not in names_in:
            raise ManifestError(f"input blob {manifest.input.blob!r} is not an input of the param file; it has {sorted(names_in)}")
        for o in manifest.outputs:
            if o.blob not in names_out:
                raise ManifestError(f"output blob {o.blob!r} ({o.role}, stride {o.stride}) is not an output of the param file; "
                                    f"it has {sorted(names_out)}")

    @classmethod
    def from_bundle(cls, bundle_dir: str | Path, threads: int = 1, fp16: bool = True, verify: bool = True,
                    bin_override: str | Path | None = None) -> "Detector":
        """Load a bundle; ``fp16`` turns ncnn's fp16 storage/packed/arithmetic on or off.
        ``bin_override`` runs another bin with the same param (the fp32 reference bin)."""
        bundle_dir = Path(bundle_dir)
        m = load_manifest(bundle_dir)
        if m.task != "detection":
            raise ManifestError(f"{bundle_dir} holds a {m.task!r} model; Detector runs 'detection' bundles")
        if verify:
            verify_bundle_files(bundle_dir, m)
        net = make_net(bundle_dir / m.param, bin_override or bundle_dir / m.bin, threads, fp16)
        return cls(m, net, bundle_dir)

    # -- preprocessing -------------------------------------------------------
    def geometry(self, src_w: int, src_h: int) -> Letterbox:
        r = self.manifest.resize
        return letterbox_geometry(src_w, src_h, r.target, r.pad_multiple, fixed=r.pad_mode == "fixed")

    def preprocess(self, image: np.ndarray) -> tuple[ncnn.Mat, Letterbox]:
        """uint8 BGR/BGRA/gray image -> normalised, padded ncnn.Mat and its geometry."""
        img, ptype = as_pixels(image, self.manifest.input.pixel_format)
        h, w = img.shape[:2]
        lb = self.geometry(w, h)
        mat = ncnn.Mat.from_pixels_resize(img, ptype, w, h, lb.resized_w, lb.resized_h)
        padded = ncnn.copy_make_border(mat, lb.pad_top, lb.pad_bottom, lb.pad_left, lb.pad_right,
                                       int(ncnn.BorderType.BORDER_CONSTANT), float(self.manifest.resize.pad_value),
                                       self._border_opt)
        padded.substract_mean_normalize(list(self.manifest.input.mean), list(self.manifest.input.norm))
        return padded, lb

    def preprocess_array(self, image: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        """The network input as a [C, H, W] float32 array (for parity with torch)."""
        mat, lb = self.preprocess(image)
        return np.array(mat).copy(), lb

    # -- inference -----------------------------------------------------------
    def run_mat(self, mat: ncnn.Mat) -> dict[str, np.ndarray]:
        out = {}
        with self.net.create_extractor() as ex:
            ex.input(self.manifest.input.blob, mat)
            for o in self.manifest.outputs:
                ret, m = ex.extract(o.blob)
                if ret != 0:
                    raise RuntimeError(f"ncnn failed to compute output {o.blob!r} (error {ret})")
                out[o.blob] = np.array(m).copy()  # copy before the extractor goes away
        return out

    def run_array(self, chw: np.ndarray) -> dict[str, np.ndarray]:
        """Run on an already preprocessed [C, H, W] float32 input."""
        arr = np.ascontiguousarray(chw, dtype=np.float32)
        return self.run_mat(ncnn.Mat(arr).clone())  # clone: Mat(ndarray) borrows the buffer

    # -- postprocessing ------------------------------------------------------
    def postprocess(self, outputs: dict[str, np.ndarray], lb: Letterbox) -> list[Detection]:
        return postprocess_outputs(self.manifest, outputs, lb)

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Detections in original-image pixels, best first."""
        mat, lb = self.preprocess(image)
        return self.postprocess(self.run_mat(mat), lb)


def postprocess_outputs(m: Manifest, outputs: dict[str, np.ndarray], lb: Letterbox) -> list[Detection]:
    """Raw per-stride outputs (name -> [H*W, C]) -> detections, per the manifest."""
    p = m.postprocess
    parts: list[Candidates] = []
    for stride in p.strides:
        cls_o, dis_o = m.output("cls_scores", stride), m.output("dist_logits", stride)
        scores, dists = outputs[cls_o.blob], outputs[dis_o.blob]
        feat_w, feat_h = -(-lb.in_w // stride), -(-lb.in_h // stride)
        scores = scores.reshape(-1, scores.shape[-1])
        dists = dists.reshape(-1, dists.shape[-1])
        if scores.shape != (feat_w * feat_h, cls_o.channels):
            raise ValueError(f"output {cls_o.blob!r} has shape {scores.shape}; a {lb.in_w}x{lb.in_h} input at stride "
                             f"{stride} needs ({feat_w * feat_h}, {cls_o.channels})")
        parts.append(decode_level(scores, dists, feat_w, stride, p.reg_max, p.center_offset,
                                  p.score_threshold, p.multi_label))
    c = Candidates.concat(parts)
    keep = nms(c.boxes, c.scores, c.labels, p.nms_threshold, p.class_agnostic_nms, p.max_detections)
    boxes = map_boxes_back(c.boxes[keep], lb)
    return [Detection(float(b[0]), float(b[1]), float(b[2]), float(b[3]), float(s), int(lab), m.class_names[int(lab)])
            for b, s, lab in zip(boxes, c.scores[keep], c.labels[keep])]
