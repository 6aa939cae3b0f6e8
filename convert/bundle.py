"""Write bundles atomically (the pipeline's and ``wrap``'s): no family code here.

A bundle is built in a temp directory beside the destination and renamed into
place only after it has been verified, so a failure at any step leaves an
existing bundle untouched and never leaves a half bundle behind.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from litedet.runtime.manifest import MAX_INPUT_SIZE, Manifest

__all__ = ["ConvertError", "ConvertResult", "atomic_bundle_dir", "assemble_manifest", "is_bundle",
           "check_bundle_loads", "check_destination", "check_input_size",
           "reference_image", "tool_versions", "PARAM_NAME", "BIN_NAME", "REF_DIR"]

PARAM_NAME, BIN_NAME = "model.ncnn.param", "model.ncnn.bin"
REF_DIR = "reference"


class ConvertError(ValueError):
    """Conversion input or result is wrong; the message says what and what would be right."""


@dataclass
class ConvertResult:
    bundle: Path
    manifest: Manifest
    timings: dict[str, float] = field(default_factory=dict)
    verify: dict[str, dict[str, float]] = field(default_factory=dict)


def tool_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("torch", "pnnx", "ncnn", "onnx", "onnxsim", "numpy", "litedet"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def is_bundle(d: Path) -> bool:
    """A directory with a litedet manifest (what ``--force`` may replace)."""
    import json

    try:
        return json.loads((d / "manifest.json").read_text()).get("format") == "litedet-bundle"
    except (OSError, ValueError, AttributeError):
        return False


def check_bundle_loads(d: Path) -> None:
    """ncnn must load what was written and run it once (a truncated bin fails here): opening a
    bundle runs every graph on a blank input and decodes it (BundleRunner.probe)."""
    from litedet.runtime.runner import open_bundle

    try:
        open_bundle(d, fp16=False)
    except (ValueError, RuntimeError) as e:
        raise ConvertError(f"the bundle written does not load or run in ncnn, so it was not put in place: {e}") from None


def check_input_size(size: int, multiple: int = 32) -> None:
    """A positive multiple of the largest stride, at most MAX_INPUT_SIZE (checked before any work)."""
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        what = "a positive integer" if multiple == 1 else f"a positive multiple of {multiple}"
        raise ConvertError(f"input size {size!r} must be {what} (e.g. 320), at most {MAX_INPUT_SIZE}")
    if size > MAX_INPUT_SIZE:
        raise ConvertError(f"input size {size} is larger than {MAX_INPUT_SIZE}, the largest litedet converts "
                           f"(phones run 320-416); choose a multiple of {multiple} up to {MAX_INPUT_SIZE}")
    if size % multiple:
        lo, hi = max(multiple, size // multiple * multiple), min(MAX_INPUT_SIZE, (size // multiple + 1) * multiple)
        try_ = f"{lo} or {hi}" if lo != hi else f"{lo}"
        raise ConvertError(f"input size {size} is not a multiple of {multiple} (the largest stride); try {try_}")


def check_destination(out: str | Path, force: bool) -> Path:
    """Refuse, before any work, an output that exists (without ``force``), is not a
    directory, is not a litedet bundle (``force`` replaces only bundles), or holds
    the current directory. Returns the absolute path."""
    out = Path(out).absolute()
    if not out.name:
        raise ConvertError(f"{out} cannot be a bundle's path; choose a named folder for --out")
    if out.exists() and not force:
        raise ConvertError(f"{out} already exists; pass --force to replace it (the old bundle is kept until the new one is complete)")
    if out.exists() and not out.is_dir():
        raise ConvertError(f"{out} exists and is not a directory; choose another --out")
    if out.exists() and not is_bundle(out):
        raise ConvertError(f"{out} is not a litedet bundle (it has no litedet manifest.json); --force replaces only a "
                           "bundle, never another directory: choose a new --out")
    if out.exists() and Path.cwd().resolve().is_relative_to(out.resolve()):
        raise ConvertError(f"{out} holds the current directory; run from elsewhere or choose another --out")
    parent = next((p for p in out.parents if p.exists()), None)
    if parent is not None and not (parent.is_dir() and os.access(parent, os.W_OK | os.X_OK)):
        raise ConvertError(f"cannot write {out}: {parent} is not a writable directory")
    return out


def _identity(p: Path) -> tuple[int, int] | None:
    """(device, inode) of what ``p`` names now, or None when nothing is there."""
    try:
        st = os.stat(p, follow_symlinks=False)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def check_writable(out: Path) -> None:
    """--force onto an existing bundle: its folder must be writable (the old bundle is moved aside and
    removed), checked by writing a probe file, before any work (mode bits say nothing to root)."""
    probe = out / f".litedet-probe-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ConvertError(f"cannot replace {out}: it is not writable ({e.strerror}); the bundle stays as it is") from None


@contextmanager
def _parent_locked(parent: Path) -> Iterator[None]:
    """An exclusive lock on the destination's folder (flock on the directory itself: no lock file
    is left behind), held while a finished bundle is checked and renamed into place."""
    import fcntl

    fd = os.open(parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _put_in_place(tmp: Path, out: Path, before: tuple[int, int] | None) -> None:
    """Rename ``tmp`` to ``out`` if ``out`` is still what it was when the run started: two runs
    writing one --out never silently replace each other's bundle."""
    import secrets

    from litedet.atomic import OWNER_FILE, mark_owned

    with _parent_locked(out.parent):
        now = _identity(out)
        if now != before:
            raise ConvertError(f"{out} appeared while converting; pass --force to replace it (another run wrote it)"
                               if before is None else
                               f"{out} was replaced by another run while converting; run again to replace it")
        if now is not None:
            mark_owned(out)  # so a run killed between the two renames can be undone by the next one
            old = out.parent / f".{out.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
        (out / OWNER_FILE).unlink(missing_ok=True)


@contextmanager
def atomic_bundle_dir(out: Path, force: bool, verify=check_bundle_loads) -> Iterator[Path]:
    """Yield a temp dir beside ``out``; once the body has filled it and ``verify(tmp)``
    passes, it replaces ``out``. ``force`` may replace only an existing bundle, never
    another directory. Temp dirs of dead runs are cleaned first (``litedet.atomic``)."""
    from litedet.atomic import cleanup_stale_dirs, make_temp_dir, temp_dir_path

    out = check_destination(out, force)
    if out.exists():
        check_writable(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConvertError(f"cannot create the folder for {out}: {e.strerror} ({e.filename})") from None
    before = _identity(out)
    cleanup_stale_dirs(out.parent, out.name)
    tmp = temp_dir_path(out.parent, out.name)
    try:
        yield make_temp_dir(tmp)  # made inside the try: a Ctrl-C right after the mkdir still removes it
        if verify is not None:
            verify(tmp)
        _put_in_place(tmp, out, before)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def reference_image(width: int = 480, height: int = 352, seed: int = 0) -> np.ndarray:
    """A fixed, non-square BGR test card (gradients, blocks, stripes, noise):
    deterministic everywhere, textured roughly like a photo, and its size is
    not a stride multiple so padding is exercised."""
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([x / width * 255, y / height * 255, (x + y) / (width + height) * 255], axis=2)
    for _ in range(40):
        x0, y0 = rng.randint(0, width - 20), rng.randint(0, height - 20)
        w, h = rng.randint(10, width // 3), rng.randint(10, height // 3)
        img[y0:y0 + h, x0:x0 + w] = rng.randint(0, 256, size=3)
    for _ in range(6):  # stripes of several periods and orientations
        period, angle = rng.uniform(4, 24), rng.uniform(0, np.pi)
        x0, y0 = rng.randint(0, width - 60), rng.randint(0, height - 60)
        w, h = rng.randint(40, width // 3), rng.randint(40, height // 3)
        phase = (np.cos(angle) * x + np.sin(angle) * y) * 2 * np.pi / period
        img[y0:y0 + h, x0:x0 + w] = (127 + 120 * np.sin(phase[y0:y0 + h, x0:x0 + w]))[..., None]
    img += rng.normal(0, 16, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def assemble_manifest(arch: str, input_size: int, deploy, fp16: bool, param_sha: str, bin_sha: str) -> Manifest:
    """The family's DeploySpec plus the bundle's files and hashes, validated."""
    return Manifest(
        architecture=arch, variant=f"{arch}-{input_size}", task=deploy.task,
        param=PARAM_NAME, bin=BIN_NAME, param_sha256=param_sha, bin_sha256=bin_sha,
        weight_storage="fp16" if fp16 else "fp32", input=deploy.input, resize=deploy.resize,
        outputs=deploy.outputs, postprocess=deploy.postprocess, class_names=deploy.class_names,
    ).validate()


def now_utc() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
