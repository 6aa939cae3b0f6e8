"""Run a classification bundle: ImageNet-style centre crop with ncnn's own
pixel call, extract the logits, softmax and top-k in numpy."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import ncnn
import numpy as np

from .detector import as_pixels, make_net
from .manifest import Manifest, ManifestError, load_manifest, verify_bundle_files
from .postprocess import CenterCrop, center_crop_geometry, softmax, top_k

__all__ = ["Classification", "Classifier"]


@dataclass
class Classification:
    label: int
    name: str
    prob: float

    def to_dict(self) -> dict:
        return asdict(self)


class Classifier:
    def __init__(self, manifest: Manifest, net: ncnn.Net) -> None:
        self.manifest = manifest
        self.net = net
        (self.output,) = [o for o in manifest.outputs if o.role == "logits"]
        if manifest.input.blob not in net.input_names():
            raise ManifestError(f"input blob {manifest.input.blob!r} is not an input of the param file; it has {net.input_names()}")
        if self.output.blob not in net.output_names():
            raise ManifestError(f"output blob {self.output.blob!r} is not an output of the param file; it has {net.output_names()}")

    @classmethod
    def from_bundle(cls, bundle_dir: str | Path, threads: int = 1, fp16: bool = True, verify: bool = True,
                    bin_override: str | Path | None = None) -> "Classifier":
        bundle_dir = Path(bundle_dir)
        m = load_manifest(bundle_dir)
        if m.task != "classification":
            raise ManifestError(f"{bundle_dir} holds a {m.task!r} model; Classifier runs 'classification' bundles")
        if verify:
            verify_bundle_files(bundle_dir, m)
        return cls(m, make_net(bundle_dir / m.param, bin_override or bundle_dir / m.bin, threads, fp16))

    def geometry(self, src_w: int, src_h: int) -> CenterCrop:
        r = self.manifest.resize
        return center_crop_geometry(src_w, src_h, r.target, r.crop_fraction)

    def preprocess(self, image: np.ndarray) -> tuple[ncnn.Mat, CenterCrop]:
        img, ptype = as_pixels(image, self.manifest.input.pixel_format)
        h, w = img.shape[:2]
        g = self.geometry(w, h)
        mat = ncnn.Mat.from_pixels_roi_resize(img, ptype, w, h,
                                              g.roi_x, g.roi_y, g.roi_size, g.roi_size, g.target, g.target)
        mat.substract_mean_normalize(list(self.manifest.input.mean), list(self.manifest.input.norm))
        return mat, g

    def preprocess_array(self, image: np.ndarray) -> tuple[np.ndarray, CenterCrop]:
        mat, g = self.preprocess(image)
        return np.array(mat).copy(), g

    def run_mat(self, mat: ncnn.Mat) -> dict[str, np.ndarray]:
        with self.net.create_extractor() as ex:
            ex.input(self.manifest.input.blob, mat)
            ret, out = ex.extract(self.output.blob)
            if ret != 0:
                raise RuntimeError(f"ncnn failed to compute output {self.output.blob!r} (error {ret})")
            return {self.output.blob: np.array(out).copy().reshape(-1)}

    def run_array(self, chw: np.ndarray) -> dict[str, np.ndarray]:
        return self.run_mat(ncnn.Mat(np.ascontiguousarray(chw, dtype=np.float32)).clone())

    def postprocess(self, outputs: dict[str, np.ndarray], k: int | None = None) -> list[Classification]:
        return classify_outputs(self.manifest, outputs, k)

    def classify(self, image: np.ndarray, top: int | None = None) -> list[Classification]:
        mat, _ = self.preprocess(image)
        return self.postprocess(self.run_mat(mat), top)


def classify_outputs(m: Manifest, outputs: dict[str, np.ndarray], k: int | None = None) -> list[Classification]:
    (o,) = [o for o in m.outputs if o.role == "logits"]
    logits = outputs[o.blob].reshape(-1)
    if logits.size != o.channels:
        raise ValueError(f"output {o.blob!r} has {logits.size} values; the manifest says {o.channels} classes")
    probs = softmax(logits)
    return [Classification(int(i), m.class_names[int(i)], float(probs[i])) for i in top_k(probs, k or m.postprocess.top_k)]
