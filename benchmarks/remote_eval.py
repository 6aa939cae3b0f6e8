"""Accuracy on a phone: `litedet eval --adb` and `litedet parity --adb` run the bundle through the
app's own C++ pipeline, the static aarch64 ``litedet_cpp`` pushed over adb (as `litedet bench
--adb` does), and read its detections back.

The bundle's reference image goes first: its detections on the device are matched with the
torch detections stored in the bundle (``reference/outputs.npz``, decoded the same way), an
on-device parity before any photo. Then the photos, in chunks. When the device goes away mid-run
the images done so far are kept and the error is returned beside them (partial results).
"""

from __future__ import annotations

import json
import shlex
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

from litedet.benchmarks.remote import DEVICE_DIR, Adb, RemoteError, choose_device, find_adb, list_adb_devices
from litedet.runtime.bundle import Bundle
from litedet.runtime.manifest import Manifest
from litedet.runtime.results import Detection

__all__ = ["PhoneRun", "adb_detections", "reference_check", "adb_parity", "format_adb_parity"]

CHUNK = 40  # images per litedet_cpp process (command-line length, and progress)
# on the phone: the shipped graph with fp16 arithmetic on (int8 layers in int8), or fp16 off with the fp32 graph
VARIANTS = {"arm-fp16": [], "arm-int8": [], "arm-fp32": ["--fp32"]}


class PhoneRun:
    """What the phone gave: per variant, per image, detections; the device; the reference check;
    the error that stopped it, if one did."""

    def __init__(self) -> None:
        self.results: dict[str, dict[str, list[Detection]]] = {}
        self.device: dict = {}
        self.reference: dict[str, dict] = {}
        self.error: str | None = None


def adb_detections(bundle: Bundle, manifest: Manifest, images: list[tuple[str, Path]], variants: list[str],
                   serial: str | None = None, progress: bool = True) -> PhoneRun:
    """``images`` ((name, file) pairs) through litedet_cpp on the phone, once per variant, decoded
    with ``manifest`` (the bundle's, or its eval decode)."""
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        raise RemoteError(f"on a phone the backends are {', '.join(VARIANTS)}; got {', '.join(bad)}")
    exe = find_adb()
    dev = choose_device(list_adb_devices(exe), serial)
    adb = Adb(dev.serial, exe)
    run = PhoneRun()
    run.device = {"serial": dev.serial, "model": dev.model}
    with tempfile.TemporaryDirectory(prefix="litedet-eval-adb-") as tmp:
        names = _prepare(adb, bundle, manifest, images, variants, Path(tmp))
        try:
            run.device["model"] = adb.shell("getprop ro.product.model").strip() or dev.model
            for v in variants:
                run.results[v] = {}
                if bundle.has_reference("image"):
                    run.reference[v] = reference_check(bundle, manifest, _detect(adb, v, ["reference.png"], manifest)[0])
                for i in range(0, len(images), CHUNK):
                    chunk = images[i:i + CHUNK]
                    got = _detect(adb, v, [names[n] for n, _ in chunk], manifest)
                    run.results[v].update({n: d for (n, _), d in zip(chunk, got)})
                    if progress:
                        print(f"adb {dev.serial} {v}: {len(run.results[v])}/{len(images)} images", file=sys.stderr,
                              flush=True)
        except RemoteError as e:
            if not any(run.results.values()):
                raise
            run.error = f"stopped on {dev.serial}: {e}"
    return run


def _prepare(adb: Adb, bundle: Bundle, manifest: Manifest, images: list[tuple[str, Path]], variants: list[str],
             work: Path) -> dict[str, str]:
    """litedet_cpp, one asset folder per variant, the reference image and the photos onto the
    device; each photo's name there (by index: file names may hold anything)."""
    from litedet.benchmarks.cpp import build_litedet_cpp
    from litedet.runtime.devconfig import export_device_assets

    adb.shell(f"rm -rf {DEVICE_DIR}/eval && mkdir -p {DEVICE_DIR}/eval")
    adb.run("push", str(build_litedet_cpp("aarch64")), f"{DEVICE_DIR}/litedet_cpp")
    adb.shell(f"chmod 755 {DEVICE_DIR}/litedet_cpp")
    for v in variants:
        assets = work / f"assets_{v}"
        for f in export_device_assets(bundle, assets, name="model", manifest=manifest, fp32=v == "arm-fp32"):
            adb.run("push", str(f), f"{DEVICE_DIR}/eval/{assets.name}/{f.name}")
    if bundle.has_reference("image"):
        adb.run("push", str(bundle.reference("image")), f"{DEVICE_DIR}/eval/reference.png")
    names = {}
    for i, (name, path) in enumerate(images):
        names[name] = f"img{i}{path.suffix.lower()}"
        adb.run("push", str(path), f"{DEVICE_DIR}/eval/{names[name]}")
    return names


def _detect(adb: Adb, variant: str, files: list[str], manifest: Manifest) -> list[list[Detection]]:
    """litedet_cpp detect on the device; one list of detections per file."""
    flags = " ".join(VARIANTS[variant])
    out = adb.shell(f"cd {DEVICE_DIR} && ./litedet_cpp detect eval/assets_{variant} "
                    f"{' '.join(shlex.quote('eval/' + f) for f in files)} --threads 1 {flags}".rstrip())
    rows = [json.loads(ln) for ln in out.splitlines() if ln.startswith("{")]
    if len(rows) != len(files):
        raise RemoteError(f"litedet_cpp detected on {len(rows)} of {len(files)} images; its output ended early")
    names = manifest.class_names
    return [[Detection(float(d[0]), float(d[1]), float(d[2]), float(d[3]), float(d[4]), int(d[5]), names[int(d[5])])
             for d in r["detections"]] for r in rows]


def reference_check(bundle: Bundle, manifest: Manifest, device: list[Detection]) -> dict:
    """The phone's detections on the bundle's reference image against torch's, decoded from the
    outputs stored in the bundle with the same settings: matched, missed, extra, IoU, score gap."""
    import cv2

    from litedet.convert.verify.compare import match_detections
    from litedet.runtime.runner import BundleRunner

    r = BundleRunner.from_bundle(bundle, threads=1, fp16=False)
    img = cv2.imread(str(bundle.reference("image")), cv2.IMREAD_UNCHANGED)
    g = r.geometry(img.shape[1], img.shape[0])
    with np.load(bundle.reference("outputs")) as z:
        torch_out = {o.blob: z[o.blob] for o in manifest.outputs}  # stage 1 as torch gave it
    if r.kind.complete is not None:  # later stages: torch's own, on its own proposals
        from litedet.convert.verify.torch_parity import torch_complete

        torch_out = torch_complete(bundle, manifest, torch_out, np.load(bundle.reference("input")))
    ref = r.kind.decode(manifest, torch_out, g)
    p = manifest.postprocess
    m = match_detections(ref, device, 0.5, getattr(p, "score_threshold", 0.0), 0.02,
                         getattr(p, "max_detections", None))
    return {"torch": len(ref), **asdict(m)}


# -- parity --adb -------------------------------------------------------------------
def adb_parity(bundle: Bundle, images: list[tuple[str, np.ndarray]], serial: str | None = None,
               progress: bool = True) -> dict:
    """`litedet parity --adb`: the shipped bundle (fp16, its own decode) through the app's C++ on the
    phone, the reference image first (against torch's stored outputs), then ``images``, each
    against torch on this machine. An image passes when every detection of one side is matched on
    the other (IoU >= 0.5, same label) or is borderline (within 0.02 of a cut), with mean IoU >= 0.9."""
    import cv2

    with tempfile.TemporaryDirectory(prefix="litedet-parity-adb-") as tmp:
        files = []
        for i, (name, img) in enumerate(images):
            f = Path(tmp) / f"p{i}.png"  # PNG: the phone reads the same pixels as OpenCV here
            cv2.imwrite(str(f), img)
            files.append((name, f))
        run = adb_detections(bundle, bundle.manifest, files, ["arm-fp16"], serial, progress)
    rows = [{"image": "reference (torch's stored outputs)", **run.reference["arm-fp16"]}] \
        if "arm-fp16" in run.reference else []
    torch_dets = _torch_detections(bundle, images)
    from litedet.convert.verify.compare import match_detections

    p = bundle.manifest.postprocess
    for name, _ in images:
        if name in run.results.get("arm-fp16", {}):
            m = match_detections(torch_dets[name], run.results["arm-fp16"][name], 0.5,
                                 getattr(p, "score_threshold", 0.0), 0.02, getattr(p, "max_detections", None))
            rows.append({"image": name, "torch": len(torch_dets[name]), **asdict(m)})
    for r in rows:
        r["passed"] = r["missed"] + r["extra"] <= r["borderline"] and (r["matched"] == 0 or r["mean_iou"] >= 0.9)
    return {"device": run.device, "rows": rows, "error": run.error,
            "passed": bool(rows) and all(r["passed"] for r in rows) and run.error is None}


def _torch_detections(bundle: Bundle, images: list[tuple[str, np.ndarray]]) -> dict[str, list[Detection]]:
    """torch fp32 (the bundle's TorchScript) on this machine's preprocessing, decoded by the bundle."""
    from litedet.convert.verify.torch_parity import torch_runner
    from litedet.runtime.runner import BundleRunner

    r = BundleRunner.from_bundle(bundle, threads=1, fp16=False)
    run = torch_runner(bundle)
    out = {}
    for name, img in images:
        chw, g = r.preprocess_array(img)
        out[name] = r.kind.decode(bundle.manifest, run(chw), g)
    return out


def format_adb_parity(rep: dict) -> str:
    dev = rep["device"]
    lines = [f"parity on the phone {dev.get('model') or '?'} ({dev.get('serial')}): the app's C++ (litedet_cpp, fp16) vs "
             "torch fp32", "",
             f"{'image':<36} {'torch':>5} {'phone':>5} {'matched':>7} {'missed':>6} {'extra':>5} {'border':>6} "
             f"{'mean IoU':>8} {'max score gap':>13}  verdict"]
    for r in rep["rows"]:
        lines.append(f"{r['image'][:36]:<36} {r['torch']:>5} {r['test']:>5} {r['matched']:>7} {r['missed']:>6} "
                     f"{r['extra']:>5} {r['borderline']:>6} {r['mean_iou']:>8.4f} {r['max_score_diff']:>13.4f}  "
                     f"{'ok' if r['passed'] else 'DIFFERS'}")
    if rep["error"]:
        lines += ["", f"PARTIAL: {rep['error']}"]
    lines += ["", "passed" if rep["passed"] else "FAILED"]
    return "\n".join(lines)
