"""Load a bundle and run it with ncnn, whatever its postprocess kind.

Top to bottom in the order the data moves (like ncnn's examples): load the
manifest and the net, preprocess with ncnn's own pixel calls (letterbox or
centre crop, as the manifest's resize policy says), extract every output into
numpy while the extractor is alive, then the kind's pure postprocessing
(``runtime/kinds/``). :func:`open_bundle` gives the runner for any bundle;
``Detector`` and ``Classifier`` are the typed front doors for two tasks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import ncnn
import numpy as np

from .kinds import postprocess_kind
from .bundle import MAIN_GRAPH, Bundle, open_bundle_dir
from .manifest import Manifest, ManifestError
from .letterbox import center_crop_geometry, letterbox_geometry

__all__ = ["BundleRunner", "ImageError", "InferenceError", "extract_copy", "as_pixels", "load_image", "to_uint8", "make_net", "open_bundle", "MAX_THREADS"]

MAX_THREADS = 256


class ImageError(ValueError):
    """The image cannot be used (empty, unreadable, unsupported channel count)."""


class InferenceError(ValueError):
    """ncnn could not run a graph of the bundle (the message names the graph, the blob and ncnn's code)."""


def extract_copy(ex: "ncnn.Extractor", blob: str, graph: str) -> np.ndarray:
    """One output as a numpy copy. The Mat never leaves this function: a Mat from ``extract`` lives in
    its net's pool allocator, and one kept alive by a traceback past its net makes ncnn abort
    ('pool allocator destroyed too early')."""
    ret, mat = ex.extract(blob)
    arr = np.array(mat).copy() if ret == 0 else None
    del mat
    if arr is None:
        raise InferenceError(f"ncnn failed to compute output {blob!r} of {graph} (ncnn error {ret}): the graph does "
                             "not run as its param file says; convert the bundle again")
    return arr


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file as BGR/BGRA/gray uint8 (OpenCV's convention).

    16-bit images are scaled to 8 bits (/257). Float images (e.g. a float32 TIFF)
    must hold values in [0, 1], which become 0..255 (x 255, rounded); any other
    float range or pixel type is refused, never cast."""
    import cv2

    from litedet.paths import check_input_file

    path = check_input_file(path, "image", "an image file", ImageError)
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ImageError(f"could not decode {path} as an image (expected a JPEG, PNG, BMP, TIFF, ... file)")
    return to_uint8(img, str(path))


def to_uint8(img: np.ndarray, what: str = "image") -> np.ndarray:
    """uint8 as is, uint16 / 257 (floored), float in [0, 1] x 255 (rounded); anything else is refused."""
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        return (img / 257).astype(np.uint8)
    if np.issubdtype(img.dtype, np.floating):
        if img.size and np.isnan(img).any():
            raise ImageError(f"{what} has NaN pixels ({img.dtype}); float images must hold numbers in [0, 1]")
        if img.size == 0 or not np.isfinite(img).all() or img.min() < 0.0 or img.max() > 1.0:
            lo, hi = (float(np.nanmin(img)), float(np.nanmax(img))) if img.size else (0.0, 0.0)
            raise ImageError(f"{what} has {img.dtype} pixels in [{lo:g}, {hi:g}]; float images must hold values in "
                             "[0, 1] (they are scaled to 0..255); convert it to 8-bit first")
        return (img.astype(np.float64) * 255.0).round().astype(np.uint8)
    raise ImageError(f"{what} has {img.dtype} pixels; expected 8-bit, 16-bit or float [0, 1] images")


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
    """An ncnn.Net with fp16 storage and arithmetic set explicitly (ARM defaults them on), and int8
    inference on: layers an int8 bundle marks ``8=1`` run in int8, the others as the fp16 flags say."""
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= MAX_THREADS:
        raise ValueError(f"threads must be an integer from 1 to {MAX_THREADS}, got {threads!r}")
    net = ncnn.Net()
    net.opt.num_threads = threads
    net.opt.use_vulkan_compute = False
    net.opt.use_fp16_storage = fp16
    net.opt.use_fp16_packed = fp16
    net.opt.use_fp16_arithmetic = fp16
    net.opt.use_bf16_storage = False
    net.opt.use_int8_inference = True
    from litedet.ncnn_param import NcnnImportError, parse_param

    try:  # ncnn's own parser reads past bad layers and may crash on them: ours names the problem first
        parse_param(param)
    except (NcnnImportError, ValueError, OSError) as e:
        raise ManifestError(f"{param} is not a valid ncnn param file: {e}") from None
    with ncnn_messages() as said:
        ok_param = net.load_param(str(param)) == 0
        ok_bin = ok_param and net.load_model(str(bin_path)) == 0
    if not ok_param:
        raise ManifestError(f"ncnn could not parse {param}" + (f" ({said[0]})" if said else ""))
    if not ok_bin:
        raise ManifestError(f"ncnn could not load the weights {bin_path} (truncated, or not the bin for "
                            f"{Path(param).name})" + (f": {said[0]}" if said else ""))
    return net


class ncnn_messages:
    """``with ncnn_messages() as said:`` collects what ncnn prints to stderr from C (its own error
    lines) into ``said`` instead of the terminal, so a failure is reported as one line."""

    def __enter__(self) -> list[str]:
        import os
        import sys
        import tempfile

        self.lines: list[str] = []
        try:
            sys.stderr.flush()
            self.fd = os.dup(2)
            # memfd: no random temp name (whose generation would make instruction counts vary)
            self.tmp = (os.fdopen(os.memfd_create("litedet-ncnn-messages"), "w+b") if hasattr(os, "memfd_create")
                        else tempfile.TemporaryFile())
            os.dup2(self.tmp.fileno(), 2)
        except (OSError, ValueError):  # no real stderr (embedded): leave it as it is
            self.fd = None
        return self.lines

    def __exit__(self, *exc) -> None:
        import os

        if self.fd is None:
            return
        os.dup2(self.fd, 2)
        os.close(self.fd)
        self.tmp.seek(0)
        text = self.tmp.read(64 << 10).decode("utf-8", "replace")
        self.tmp.close()
        self.lines.extend(ln.strip() for ln in text.splitlines() if ln.strip())


# ncnn itself crashes (SIGSEGV) on some param files that parse: a layer parameter out of its range,
# a weight count that disagrees with the bin. A bundle is therefore first loaded and probed in a
# child process; a crash there is one error line here, and a bundle that passed is remembered by the
# sha256 of its manifest (which holds those of its graphs), so this costs one child per bundle.
PROBE_ENV = "LITEDET_PROBE_CHILD"  # "0": load in-process only (the aarch64 child under qemu sets it)
PROBE_TIMEOUT_S = 300


def _probe_cache(key: str) -> Path | None:
    import os

    base = os.environ.get("LITEDET_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "litedet")
    return Path(base) / "probed" / key


def _probe_forked(bundle_dir: Path, fp16: bool, bin_override: str | Path | None) -> int | None:
    """The probe in a forked copy of this process (modules already loaded: milliseconds, not the
    ~0.2 s of a new interpreter): its exit code, -signal when it crashed, None when it hung."""
    import os
    import time

    pid = os.fork()
    if pid == 0:  # child: never returns, never runs the parent's cleanup handlers
        code = 2
        try:
            import faulthandler

            faulthandler.disable()  # a crash here is the expected outcome of a bad graph, not a dump to print
            os.environ[PROBE_ENV] = "0"
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 2)  # ncnn's own messages: the parent reports the outcome
            open_bundle(bundle_dir, fp16=fp16, bin_override=bin_override)
            code = 0
        finally:
            os._exit(code)
    deadline = time.monotonic() + PROBE_TIMEOUT_S
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            return None
        time.sleep(0.002)


def _probe_spawned(bundle_dir: Path, fp16: bool, bin_override: str | Path | None) -> int | None:
    """The probe in a new interpreter (where fork is missing): its exit code, or None."""
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "litedet.runtime.runner", str(bundle_dir), "1" if fp16 else "0", str(bin_override or "")]
    try:
        return subprocess.run(cmd, capture_output=True, timeout=PROBE_TIMEOUT_S,
                              env={**os.environ, PROBE_ENV: "0"}).returncode
    except (OSError, subprocess.TimeoutExpired):
        return None  # no child can run here (an emulated python): load in-process as before


def probe_in_child(bundle_dir: Path, param: str, fp16: bool, bin_override: str | Path | None) -> None:
    """Load and probe the bundle in a child process first; a crash there becomes a ManifestError."""
    import hashlib
    import os
    import signal

    if os.environ.get(PROBE_ENV) == "0":
        return
    h = hashlib.sha256((bundle_dir / "manifest.json").read_bytes())
    h.update(f"{fp16}|{bin_override and sha256_of(Path(bin_override))}".encode())
    mark = _probe_cache(h.hexdigest())
    if mark is not None and mark.exists():
        return
    code = _probe_forked(bundle_dir, fp16, bin_override) if hasattr(os, "fork") else None
    if code is None:
        code = _probe_spawned(bundle_dir, fp16, bin_override)
    if code is not None and code < 0:
        raise ManifestError(f"ncnn crashed ({signal.Signals(-code).name}) loading or running "
                            f"{bundle_dir / param}: the graph is corrupt although the manifest's sha256 matches; "
                            "convert the bundle again")
    if code == 0 and mark is not None:
        try:
            mark.parent.mkdir(parents=True, exist_ok=True)
            mark.touch()
        except OSError:
            pass  # not remembered: probed again next time


def sha256_of(p: Path) -> str:
    from litedet.hashing import sha256_file

    return sha256_file(p) if p.is_file() else str(p)


class BundleRunner:
    """A bundle run by ncnn on the CPU; postprocessing by the manifest's kind."""

    task: ClassVar[str | None] = None  # a subclass for one task refuses bundles of another

    def __init__(self, manifest: Manifest, net: ncnn.Net, bundle_dir: Path | None = None,
                 graphs: dict[str, ncnn.Net] | None = None) -> None:
        self.manifest = manifest
        self.net = net
        self.bundle_dir = bundle_dir
        self.kind = postprocess_kind(manifest.postprocess.kind)
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
        self.graphs: dict[str, ncnn.Net] = dict(graphs or {})
        self._graph_blobs: dict[str, tuple[str, list[str]]] = {}
        for name, g in manifest.extra_graphs().items():
            if name not in self.graphs:
                raise ManifestError(f"the bundle's graph {name!r} ({g.param}) was not loaded")
            gin, gout = set(self.graphs[name].input_names()), set(self.graphs[name].output_names())
            blobs = g.blobs()
            if blobs[0] not in gin or not set(blobs[1]) <= gout:
                raise ManifestError(f"graph {name!r} ({g.param}) has inputs {sorted(gin)} and outputs {sorted(gout)}; "
                                    f"the manifest says input {blobs[0]!r} and outputs {blobs[1]}")
            self._graph_blobs[name] = blobs
        self.probe()

    def probe(self) -> None:
        """Run every graph once on a blank input of the target size and decode it: an output whose
        shape disagrees with the manifest (levels, channels, the head's class count) is refused
        when the bundle is opened, not at the first image."""
        r = self.manifest.resize
        g = self.geometry(r.target, r.target)
        w, h = g.input_size
        where = self.bundle_dir or "the bundle"
        try:
            outputs = BundleRunner.run_array(self, np.zeros((self.manifest.input.channels, h, w), np.float32))
            self.kind.decode(self.manifest, outputs, g)
            if self.kind.probe is not None:
                self.kind.probe(self.manifest, self.run_graph)
        except InferenceError as e:
            raise ManifestError(f"{where}: {e}") from None
        except (ValueError, KeyError, IndexError) as e:
            raise ManifestError(f"{where}: the graph {self.manifest.param} disagrees with its manifest: {e}") from None

    @classmethod
    def from_bundle(cls, bundle_dir: "str | Path | Bundle", threads: int = 1, fp16: bool = True, verify: bool = True,
                    bin_override: str | Path | None = None) -> "BundleRunner":
        """Load a bundle (a directory or an opened Bundle); ``fp16`` turns ncnn's fp16
        storage/packed/arithmetic on or off. ``bin_override`` runs the fp32 reference bin (with the
        fp32 reference param of an int8 bundle); every further graph then runs its fp32 reference
        weights too."""
        b = open_bundle_dir(bundle_dir, verify)
        m = b.manifest
        if cls.task is not None and m.task != cls.task:
            raise ManifestError(f"{b.path} holds a {m.task!r} model; {cls.__name__} runs {cls.task!r} bundles")
        probe_in_child(b.path, m.param, fp16, bin_override)
        files = b.graph_files(fp32=bin_override is not None)
        main = files.pop(MAIN_GRAPH)
        net = make_net(main.param, bin_override or main.bin, threads, fp16)
        graphs = {name: make_net(g.param, g.bin, threads, fp16) for name, g in files.items()}
        return cls(m, net, b.path, graphs)

    # -- preprocessing -------------------------------------------------------
    def geometry(self, src_w: int, src_h: int) -> Any:
        r = self.manifest.resize
        if r.policy == "center_crop":
            return center_crop_geometry(src_w, src_h, r.target, r.crop_fraction)
        return letterbox_geometry(src_w, src_h, r.target, r.pad_multiple, fixed=r.pad_mode == "fixed", policy=r.policy)

    def preprocess(self, image: np.ndarray) -> tuple[ncnn.Mat, Any]:
        """uint8 BGR/BGRA/gray image -> normalised ncnn.Mat and its geometry."""
        m = self.manifest
        img, ptype = as_pixels(image, m.input.pixel_format)
        h, w = img.shape[:2]
        g = self.geometry(w, h)
        if m.resize.policy == "center_crop":
            mat = ncnn.Mat.from_pixels_roi_resize(img, ptype, w, h, g.roi_x, g.roi_y, g.roi_size, g.roi_size,
                                                  g.target, g.target)
            mat.substract_mean_normalize(list(m.input.mean), list(m.input.norm))
            return mat, g
        mat = ncnn.Mat.from_pixels_resize(img, ptype, w, h, g.resized_w, g.resized_h)
        if m.resize.pad_normalized:  # pad with a value in normalised units, after mean/norm
            mat.substract_mean_normalize(list(m.input.mean), list(m.input.norm))
        mat = ncnn.copy_make_border(mat, g.pad_top, g.pad_bottom, g.pad_left, g.pad_right,
                                    int(ncnn.BorderType.BORDER_CONSTANT), float(m.resize.pad_value), self._border_opt)
        if not m.resize.pad_normalized:
            mat.substract_mean_normalize(list(m.input.mean), list(m.input.norm))
        return mat, g

    def preprocess_array(self, image: np.ndarray) -> tuple[np.ndarray, Any]:
        """The network input as a [C, H, W] float32 array (for parity with torch)."""
        mat, g = self.preprocess(image)
        return np.array(mat).copy(), g

    # -- inference -----------------------------------------------------------
    def run_graph(self, name: str, x: np.ndarray) -> dict[str, np.ndarray]:
        """Run one of the bundle's further graphs on a 2-D input [rows, cols] (all rows in one extract)."""
        in_blob, out_blobs = self._graph_blobs[name]
        arr = np.ascontiguousarray(x, dtype=np.float32)
        graph = self.manifest.extra_graphs()[name].param
        with self.graphs[name].create_extractor() as ex:
            ex.input(in_blob, ncnn.Mat(arr).clone())
            return {b: extract_copy(ex, b, f"graph {name!r} ({graph})") for b in out_blobs}

    def complete(self, outputs: dict[str, np.ndarray], in_w: int, in_h: int, **kw) -> dict[str, np.ndarray]:
        """The later stages' tensors (two-stage kinds), added to a copy of the stage-1 outputs."""
        if self.kind.complete is None:
            return outputs
        return {**outputs, **self.kind.complete(self.manifest, outputs, in_w, in_h, self.run_graph, **kw)}

    def run_stage1(self, mat: ncnn.Mat) -> dict[str, np.ndarray]:
        """The first (for most kinds the only) graph's outputs."""
        with self.net.create_extractor() as ex:
            ex.input(self.manifest.input.blob, mat)
            # copied before the extractor goes away
            return {o.blob: extract_copy(ex, o.blob, self.manifest.param) for o in self.manifest.outputs}

    def run_mat(self, mat: ncnn.Mat) -> dict[str, np.ndarray]:
        """Every tensor the kind decodes: the graph's outputs, and for two-stage kinds the later stages'."""
        return self.complete(self.run_stage1(mat), mat.w, mat.h)

    def run_stage1_array(self, chw: np.ndarray) -> dict[str, np.ndarray]:
        """The first graph's outputs on a preprocessed [C, H, W] input."""
        arr = np.ascontiguousarray(chw, dtype=np.float32)
        return self.run_stage1(ncnn.Mat(arr).clone())

    def run_array(self, chw: np.ndarray) -> dict[str, np.ndarray]:
        """Run on an already preprocessed [C, H, W] float32 input."""
        arr = np.ascontiguousarray(chw, dtype=np.float32)
        return self.run_mat(ncnn.Mat(arr).clone())  # clone: Mat(ndarray) borrows the buffer

    # -- postprocessing ------------------------------------------------------
    def postprocess(self, outputs: dict[str, np.ndarray], geometry: Any, **options) -> list:
        return self.kind.decode(self.manifest, outputs, geometry, **options)

    def run(self, image: np.ndarray, **options) -> list:
        """Image -> the kind's results (detections in original-image pixels, top-k classes, ...)."""
        mat, g = self.preprocess(image)
        return self.postprocess(self.run_mat(mat), g, **options)


def open_bundle(bundle_dir: "str | Path | Bundle", threads: int = 1, fp16: bool = True, verify: bool = True,
                bin_override: str | Path | None = None) -> BundleRunner:
    """The runner for any bundle: its postprocess kind decides what ``run`` returns."""
    return BundleRunner.from_bundle(bundle_dir, threads, fp16, verify, bin_override)


if __name__ == "__main__":  # the child of probe_in_child: exit 0 (fine), 2 (a clean error) or a signal
    import sys

    try:
        open_bundle(sys.argv[1], fp16=sys.argv[2] == "1", bin_override=sys.argv[3] or None)
    except (ValueError, OSError):
        sys.exit(2)
