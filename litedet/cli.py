"""The ``litedet`` command. Each subcommand imports what it needs when it runs,
so ``detect`` and the other runtime commands work where torch is not installed."""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from pathlib import Path

# errors a user can fix: print the message, exit 2 (no traceback)
_USER_ERRORS: tuple[type[BaseException], ...] = (FileNotFoundError, ValueError, KeyError)
MAX_ERROR_LINE = 1000  # characters of an error line (values in it are quoted at most ~200 characters each)


def _short(value: object, limit: int = 200) -> str:
    from litedet.text import short

    return short(str(value), limit)


def _cmd_bench(a: argparse.Namespace) -> int:
    from litedet.benchmarks.bench import run

    return run(a)


def _cmd_list(a: argparse.Namespace) -> int:
    from litedet.models import create_model, list_models, model_info
    from litedet.models.profile import profile

    print(f"{'name':<24} {'task':<15} {'input':>5} {'params':>10} {'MACs':>10}")
    for name in a.names or list_models():
        info = model_info(name)
        m = create_model(name)
        fwd = getattr(m, "forward_deploy", None)
        p = profile(m, info.input_size, forward=fwd)
        print(f"{name:<24} {info.task:<15} {info.input_size:>5} {p.params / 1e6:>9.3f}M {p.macs / 1e6:>9.1f}M")
    return 0


def _print_convert(r) -> None:
    m = r.manifest
    rs = m.resize
    shape = f"center_crop {rs.crop_fraction}" if rs.policy == "center_crop" else f"{rs.policy}, pad_mode {rs.pad_mode}"
    print(f"bundle: {r.bundle}  ({m.architecture}, {m.task}, input {m.resize.target}, {m.weight_storage} weights, "
          f"{shape}, route {m.provenance.get('route')})")
    print(f"weights: {m.provenance.get('weights')}" + (f" from {m.provenance['source_checkpoint']}" if m.provenance.get("source_checkpoint") else ""))
    src = m.provenance.get("preprocessing", {})
    fmt = lambda v: ",".join(f"{x:g}" for x in v)  # noqa: E731
    print(f"preprocessing: {m.input.pixel_format} ({src.get('pixel_format', '?')}), mean {fmt(m.input.mean)} "
          f"({src.get('mean', '?')}), norm {fmt(m.input.norm)} ({src.get('norm', '?')}), {rs.policy} "
          f"({src.get('resize', '?')}), input {rs.target} ({src.get('input_size', '?')})")
    for note in [m.provenance.get("note"), *m.provenance.get("inferred", [])]:
        if note:
            print(f"note: {note}")
    worst = max(v["max_abs"] for v in r.verify.values())
    print(f"verified: ncnn fp32 vs torch on the reference input, worst max abs {worst:.2e}")
    print("timings (s): " + ", ".join(f"{k} {v:.2f}" for k, v in r.timings.items()))


MAX_TEXT_FILE = 16 << 20  # bytes of a text file the CLI reads whole (class names, results)


def read_text_file(path: str | Path, what: str) -> str:
    """A UTF-8 text file's text, or one line naming the file and what is wrong with it."""
    from litedet.paths import check_input_file

    p = check_input_file(path, what, "a text file")
    if p.stat().st_size > MAX_TEXT_FILE:
        raise ValueError(f"{what} {p} is {p.stat().st_size} bytes; at most {MAX_TEXT_FILE} are read")
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{what} {p} is not UTF-8 text (byte {e.start}: {e.reason})") from None


def _read_class_names(path: str) -> list[str]:
    from litedet.runtime.manifest import check_class_names

    names = [ln.strip() for ln in read_text_file(path, "--class-names file").splitlines() if ln.strip()]
    if not names:
        raise ValueError(f"{path} holds no class names (expected one name per line)")
    return check_class_names(names, f"--class-names {path}: name")


def _options(a: argparse.Namespace) -> dict:
    """Deploy options the user set (the family fills in its defaults)."""
    return {k: v for k, v in (("decode", a.decode), ("preprocess", a.preprocess),
                              ("upsample", getattr(a, "upsample", None))) if v}


def _stated(a: argparse.Namespace):
    """The preprocessing flags as stated (convert/preprocessing.py)."""
    from litedet.convert.preprocessing import stated_from_flags

    return stated_from_flags(a.pixel_order, a.mean, a.norm, a.std, a.resize)


def _cmd_convert(a: argparse.Namespace) -> int:
    from litedet.convert.pipeline import convert_model

    names = _read_class_names(a.class_names) if a.class_names else None
    if a.arm_plan:
        return _convert_planned(a, names)
    r = convert_model(a.arch, a.out, checkpoint=a.checkpoint, input_size=a.input_size, fp32=a.fp32,
                      route=a.route, force=a.force, seed=a.seed, progress=not a.quiet, class_names=names,
                      trust_checkpoint=a.trust_checkpoint, config=a.config, options=_options(a),
                      preprocess=_stated(a))
    _print_convert(r)
    return 0


def _convert_planned(a: argparse.Namespace, names) -> int:
    """convert --arm-plan: the conversion into a scratch folder beside --out, then the measured plan
    (benchmarks/arm/plan.py) written to --out; --out gets the planned bundle, or the plain one when
    no layer is worth fp32, and nothing when anything fails."""
    import shutil

    from litedet.atomic import cleanup_stale_dirs, make_temp_dir, temp_dir_path
    from litedet.benchmarks.arm.plan import PlanError, plan_bundle
    from litedet.convert.bundle import atomic_bundle_dir, check_destination
    from litedet.convert.pipeline import convert_model
    from litedet.convert.verify.arm.env import resolve_env

    out = check_destination(a.out, a.force)
    env = resolve_env(None, None)  # no qemu environment: one line before any work
    out.parent.mkdir(parents=True, exist_ok=True)
    cleanup_stale_dirs(out.parent, out.name + ".unplanned")
    scratch = temp_dir_path(out.parent, out.name + ".unplanned")
    try:
        make_temp_dir(scratch)  # owner-marked: a killed run's scratch is removed by the next
        r = convert_model(a.arch, scratch / "bundle", checkpoint=a.checkpoint, input_size=a.input_size, fp32=a.fp32,
                          route=a.route, seed=a.seed, progress=not a.quiet, class_names=names,
                          trust_checkpoint=a.trust_checkpoint, config=a.config, options=_options(a),
                          preprocess=_stated(a))
        r.bundle = out
        try:
            r.manifest, why = plan_bundle(scratch / "bundle", out, force=a.force, env=env, progress=not a.quiet)
        except PlanError as e:
            why = str(e).split(": ", 1)[-1]
            with atomic_bundle_dir(out, a.force) as tmp:
                shutil.copytree(scratch / "bundle", tmp, dirs_exist_ok=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    _print_convert(r)
    print(f"arm plan: {why}")
    return 0


def _add_prune(sub) -> None:
    s = sub.add_parser("prune", help="remove a fraction of the channels (Torch-Pruning), optionally distil from the "
                                     "unpruned model on unlabeled photos; writes a checkpoint convert loads")
    s.add_argument("arch", help="a registered architecture (litedet list)")
    s.add_argument("--checkpoint", help=".pth/.ckpt, or an ncnn .param (its .bin beside it); default: seeded weights")
    s.add_argument("--ratio", type=float, required=True, help="fraction of each prunable layer's channels to remove, "
                                                                 "in (0, 1), e.g. 0.3")
    s.add_argument("--distill", default=None, metavar="DIR", help="unlabeled photos to distil the pruned model on")
    s.add_argument("--steps", type=int, default=200, help="--distill: optimiser steps, one photo each (default 200)")
    s.add_argument("--out", required=True, help="the pruned checkpoint (e.g. pruned.pth)")
    s.add_argument("--force", action="store_true", help="replace an existing --out file")
    s.add_argument("--input-size", type=int, default=None, help="as for convert (default: the architecture's)")
    s.add_argument("--config", help="NanoDet's own .yml config, as for convert")
    s.add_argument("--trust-checkpoint", action="store_true", help="as for convert (DANGEROUS)")
    g = s.add_argument_group("preprocessing of --distill photos and of a graph --checkpoint (as for convert)")
    g.add_argument("--pixel-order", choices=("rgb", "bgr"), default=None)
    g.add_argument("--mean", default=None, metavar="A,B,C")
    g.add_argument("--norm", default=None, metavar="A,B,C")
    g.add_argument("--std", default=None, metavar="A,B,C")
    g.add_argument("--resize", choices=("letterbox", "stretch", "center_crop"), default=None)
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(fn=_cmd_prune)


def _cmd_prune(a: argparse.Namespace) -> int:
    from litedet.convert.prune import prune

    r = prune(a.arch, a.checkpoint, a.ratio, a.out, distill=a.distill, steps=a.steps, config=a.config,
              trust=a.trust_checkpoint, force=a.force, progress=not a.quiet, input_size=a.input_size,
              stated=_stated(a))
    print(f"pruned {r.architecture} ({r.pruned_part}): params {r.params_before:,} -> {r.params_after:,}, "
          f"MACs {r.macs_before:,} -> {r.macs_after:,} ({r.macs_after / r.macs_before:.2f}x)")
    if r.distill:
        d = r.distill
        print(f"distilled: {d['steps']} steps on {d['images']} images, loss {d['loss_first10']:.4g} -> "
              f"{d['loss_last10']:.4g} ({d['seconds']} s)")
    print(f"wrote {r.out}; convert it with: litedet convert {r.architecture} --checkpoint {r.out} ...")
    return 0


def _add_plan(sub) -> None:
    s = sub.add_parser("plan", help="measure each layer under qemu (fp32 vs fp16 on a cortex-a76) and write the bundle "
                                    "with the layers that are cheaper in fp32 made fp32 islands")
    s.add_argument("bundle")
    s.add_argument("--out", required=True, help="the planned bundle (may be the bundle itself with --force)")
    s.add_argument("--force", action="store_true", help="replace an existing bundle at --out (atomically)")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(fn=_cmd_plan)


def _cmd_plan(a: argparse.Namespace) -> int:
    from litedet.benchmarks.arm.plan import plan_bundle

    m, why = plan_bundle(a.bundle, a.out, force=a.force, progress=not a.quiet)
    print(f"bundle: {a.out} ({m.architecture}); arm plan: {why}")
    return 0


def _cmd_classify(a: argparse.Namespace) -> int:
    from litedet.runtime.classifier import Classifier
    from litedet.runtime.detector import load_image

    clf = Classifier.from_bundle(a.bundle, threads=a.threads, fp16=not a.fp32)
    res = clf.classify(load_image(a.image), a.top)
    if a.json:
        print(json.dumps([c.to_dict() for c in res], indent=2))
    else:
        for c in res:
            print(f"{c.prob:7.4f}  {c.label:>5}  {c.name}")
    return 0


def _cmd_wrap(a: argparse.Namespace) -> int:
    from litedet.convert.families.nanodet_wrap import is_legacy_ncnn, wrap_exported, wrap_ncnn_model
    from litedet.paths import check_input_file

    param = check_input_file(a.param, "model file", "an ncnn .param or an .onnx file")
    if a.bin:
        check_input_file(a.bin, "--bin", "an ncnn .bin file")
    if param.suffix.lower() == ".onnx" or a.config or a.class_names or not is_legacy_ncnn(param):
        # an export (ONNX, or ncnn made from one): import its weights, convert, keep the torch reference
        names = _read_class_names(a.class_names) if a.class_names else None
        r = wrap_exported(param, a.out, arch=a.arch, config=a.config, input_size=a.input_size, force=a.force,
                          class_names=names, options=_options(a), progress=not a.quiet)
        _print_convert(r)
        return 0
    m = wrap_ncnn_model(param, Path(a.bin) if a.bin else param.with_suffix(".bin"), a.out, arch=a.arch or "nanodet_m",
                        input_size=a.input_size, force=a.force, options=_options(a))
    print(f"bundle: {a.out} wraps {param.name} (input blob {m.input.blob}, {m.weight_storage} weights, pad_mode {m.resize.pad_mode})")
    return 0


_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def _check_image_out(out: Path, inputs: tuple[Path, ...] = ()) -> None:
    """Before any work: an image path OpenCV can write, in a folder that exists, that is neither a
    special file nor one of the inputs."""
    from litedet.paths import check_output_file, same_file

    if out.suffix.lower() not in _IMAGE_SUFFIXES:
        raise ValueError(f"--out {out}: the file name needs an image extension ({', '.join(_IMAGE_SUFFIXES)})")
    if out.is_dir():
        raise ValueError(f"--out {out} is a directory; give an image file name such as {out / 'vis.jpg'}")
    check_output_file(out, "--out")
    for i in inputs:
        if out.exists() and same_file(out, i):
            raise ValueError(f"--out {out} is the input {i}; writing there would replace it: choose another file name")


def _cmd_detect(a: argparse.Namespace) -> int:
    from litedet.runtime.detector import Detector, load_image

    if a.out:
        _check_image_out(Path(a.out), (Path(a.image),))
    det = Detector.from_bundle(a.bundle, threads=a.threads, fp16=not a.fp32)
    img = load_image(a.image)
    dets = det.detect(img)
    if a.json:
        print(json.dumps([d.to_dict() for d in dets], indent=2))
    else:
        for d in dets:
            print(f"{d.name:<16} {d.score:.3f}  [{d.x1:.1f}, {d.y1:.1f}, {d.x2:.1f}, {d.y2:.1f}]")
        if not dets:
            print(f"no detections above score {det.manifest.postprocess.score_threshold}")
    if a.out:
        from litedet.runtime.visualize import draw_detections, save_image

        save_image(a.out, draw_detections(img, dets))
        if not a.json:
            print(f"wrote {a.out}")
    return 0


def _cmd_segment(a: argparse.Namespace) -> int:
    from litedet.runtime.detector import load_image
    from litedet.runtime.segmenter import Segmenter
    from litedet.runtime.visualize import draw_mask, save_image

    for path in (a.out, a.mask):
        if path:
            _check_image_out(Path(path), (Path(a.image),))
    if a.mask and Path(a.mask).suffix.lower() != ".png":
        raise ValueError(f"--mask {a.mask}: the mask is written as a lossless 8-bit PNG of class ids; name it .png")
    if a.out and a.mask and Path(a.out).resolve() == Path(a.mask).resolve():
        raise ValueError(f"--out and --mask are both {a.out}; give the overlay and the mask two files")
    seg = Segmenter.from_bundle(a.bundle, threads=a.threads, fp16=not a.fp32)
    img = load_image(a.image)
    res = seg.segment_full(img)
    if a.json:
        print(json.dumps({"image": str(a.image), **res.to_dict()}, indent=2))
    else:
        print(seg.kind.describe(res))
    for path, pixels in ((a.mask, lambda: res.mask), (a.out, lambda: draw_mask(img, res.mask, seg.palette))):
        if path:
            save_image(path, pixels())
            if not a.json:
                print(f"wrote {path}")
    return 0


def _load_images(paths: list[str]):
    from litedet.runtime.detector import load_image

    return [(Path(p).stem, load_image(p)) for p in paths]


def _thresholds(items: list[str] | None):
    from dataclasses import fields

    from litedet.convert.verify.torch_parity import ParityThresholds

    th = ParityThresholds()
    known = {f.name for f in fields(th)}
    for item in items or []:
        key, _, value = item.partition("=")
        if key not in known or not value:
            raise ValueError(f"--threshold {_short(item)}: expected KEY=VALUE with KEY one of {', '.join(sorted(known))}")
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"--threshold {key}={_short(value)}: the value is not a number") from None
        th.check(key, number)
        setattr(th, key, number)
    return th


def _cmd_parity(a: argparse.Namespace) -> int:
    from litedet.convert.verify.torch_parity import format_report, run_parity

    from litedet.atomic import output_dir
    from litedet.runtime.manifest import load_manifest

    bundle = Path(a.bundle)
    out = Path(a.out) if a.out else bundle.parent / f"{bundle.name}-parity"
    thresholds = _thresholds(a.threshold)
    kind = load_manifest(bundle).postprocess.kind  # a bad bundle is refused before any folder is made
    if a.adb:
        _check_phone(kind, a.serial, "check it on this machine (drop --adb)")
    if out.resolve().is_relative_to(bundle.resolve()):
        raise ValueError(f"--out {out} is inside the bundle {bundle}; the report goes into a folder of its own")
    images = _load_images(a.images) if a.images is not None else None
    with output_dir(out):  # made when the work starts; removed again if it fails before writing
        r = run_parity(bundle, images=images, thresholds=thresholds, out_dir=out, threads=a.threads,
                       progress=not a.quiet, cpp=a.cpp)
    arm = None
    if a.arm:
        from litedet.convert.verify.arm import arm_parity, format_arm_report

        arm = arm_parity(bundle, images=images, out_dir=out / "arm", cache_dir=a.arm_cache, progress=not a.quiet)
    phone = _adb_parity(a, bundle, images, out) if a.adb else None
    if a.json:
        print(json.dumps({**r.to_dict(), **({"arm": arm.to_dict()} if arm else {}),
                          **({"adb": phone} if phone else {})}, indent=2))
    else:
        print(format_report(r))
        if arm:
            print()
            print(format_arm_report(arm))
        if phone:
            from litedet.benchmarks.remote_eval import format_adb_parity

            print()
            print(format_adb_parity(phone))
        print(f"report: {out / 'parity.json'}, images: {out}/parity_*.jpg" + (f", ARM: {out / 'arm'}" if arm else "")
              + (f", phone: {out / 'adb'}" if phone else ""))
    return 0 if r.passed and (arm is None or arm.passed) and (phone is None or phone["passed"]) else 1


def _check_phone(kind: str, serial: str | None, instead: str) -> None:
    """Before any work: the app's C++ runs the bundle's kind, and the phone --adb will use is there
    and ready (no device, several, unauthorized: RemoteError naming what to do)."""
    from litedet.benchmarks.remote import choose_device, find_adb, list_adb_devices
    from litedet.runtime.devconfig import device_kinds

    if kind not in device_kinds():
        raise ValueError(f"--adb runs the app's C++ pipeline, which runs kinds {', '.join(device_kinds())}; this "
                         f"bundle is {kind!r}: {instead}")
    choose_device(list_adb_devices(find_adb()), serial)


def _adb_parity(a: argparse.Namespace, bundle: Path, images, out: Path) -> dict:
    """parity --adb: the phone's part, written to OUT/adb/adb_parity.{json,txt}."""
    from litedet.benchmarks.remote_eval import adb_parity, format_adb_parity
    from litedet.convert.verify.report import write_report
    from litedet.photos import default_images
    from litedet.runtime.bundle import Bundle

    rep = adb_parity(Bundle.open(bundle), images if images is not None else list(default_images()), a.serial,
                     progress=not a.quiet)
    write_report(out / "adb", "adb_parity", rep, format_adb_parity(rep))
    return rep


def _cmd_assets(a: argparse.Namespace) -> int:
    from litedet.runtime.devconfig import export_device_assets

    files = export_device_assets(a.bundle, a.dest, a.name)
    print("wrote " + ", ".join(str(f) for f in files))
    return 0


def _cmd_android_push(a: argparse.Namespace) -> int:
    from litedet.runtime.devconfig import export_device_assets

    demo = Path(a.demo)
    if not (demo / "app" / "src" / "main").is_dir():
        raise ValueError(f"{demo} is not the Android demo project (no app/src/main); pass --demo PATH/TO/android_demo")
    files = export_device_assets(a.bundle, demo / "app" / "src" / "main" / "assets", a.name)
    print("wrote " + ", ".join(str(f) for f in files))
    return 0


def _cmd_run(a: argparse.Namespace) -> int:
    """The main job: convert, check parity, write device assets, print the report."""
    from litedet.atomic import output_dir
    from litedet.convert.bundle import check_destination

    out = Path(a.out)
    if out.exists() and not out.is_dir():  # checked before the conversion runs
        raise ValueError(f"--out {out} exists and is not a directory; the main job writes a folder")
    check_destination(out / "bundle", force=True)
    names = _read_class_names(a.class_names) if a.class_names else None
    with output_dir(out):  # made when the work starts; removed again if it fails before writing
        return _run_steps(a, out, names)


def _run_steps(a: argparse.Namespace, out: Path, names: list[str] | None) -> int:
    import cv2

    from litedet.convert.pipeline import convert_model
    from litedet.convert.verify.torch_parity import format_report, run_parity
    from litedet.runtime.detector import Detector
    from litedet.runtime.devconfig import export_device_assets
    from litedet.runtime.visualize import draw_detections, save_image

    bundle = out / "bundle"
    arch = a.arch or (None if a.config else "nanodet_m")
    print(f"== 1/4 convert {arch or a.config} "
          f"({'checkpoint ' + a.checkpoint if a.checkpoint else 'seeded random weights, untrained'})")
    r = convert_model(arch, bundle, checkpoint=a.checkpoint, input_size=a.input_size, fp32=a.fp32,
                      route=a.route, force=True, seed=a.seed, progress=not a.quiet, class_names=names,
                      trust_checkpoint=a.trust_checkpoint, config=a.config, options=_options(a),
                      preprocess=_stated(a))
    _print_convert(r)
    print("== 2/4 parity: torch fp32 vs ncnn fp32 vs ncnn fp16")
    rep = run_parity(bundle, out_dir=out / "parity", progress=not a.quiet)
    print(format_report(rep))
    print("== 3/4 device assets")
    files = export_device_assets(bundle, out / "android_assets", a.name)
    print("wrote " + ", ".join(str(f) for f in files))
    segmenting = r.manifest.task == "segmentation"
    what = "masks" if segmenting else "detections"
    print(f"== 4/4 {what}")
    from litedet.photos import default_images
    from litedet.runtime.segmenter import Segmenter

    runner = (Segmenter if segmenting else Detector).from_bundle(bundle)
    imgs = default_images() or [("reference", cv2.imread(str(bundle / "reference" / "image.png")))]
    (out / what).mkdir(exist_ok=True)
    for name, img in imgs:
        res = runner.run(img)
        if segmenting:
            from litedet.runtime.visualize import draw_mask

            save_image(out / what / f"{name}.jpg", draw_mask(img, res[0].mask, runner.palette))
            top = sorted(res[0].counts().items(), key=lambda kv: -kv[1])[:3]
            print(f"{name:<16} " + ", ".join(f"{k} {100 * v / res[0].mask.size:.0f} %" for k, v in top))
            continue
        save_image(out / what / f"{name}.jpg", draw_detections(img, res))
        print(f"{name:<16} " + (", ".join(f"{d.name} {d.score:.2f}" for d in res) or "(none)"))
    print(f"\nsummary: bundle {bundle}, parity {'PASS' if rep.passed else 'FAIL'} ({out / 'parity' / 'parity.json'}), "
          f"assets {out / 'android_assets'}, images {out / what}")
    return 0 if rep.passed else 1


def _convert_options(s: argparse.ArgumentParser) -> None:
    """The conversion options `run` and `convert` share."""
    s.add_argument("--checkpoint", help=".pth/.ckpt, or an ncnn .param (its .bin beside it) to import")
    s.add_argument("--input-size", type=int, default=None,
                   help="network input side, a multiple of 32 (default: the architecture's, 320 for NanoDet-m, 224 for backbones)")
    s.add_argument("--fp32", action="store_true", help="store fp32 weights instead of fp16")
    s.add_argument("--route", choices=("pnnx", "onnx"), default="pnnx")
    s.add_argument("--seed", type=int, default=0, help="seed for initial weights when no checkpoint is given")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.add_argument("--config", help="NanoDet's own .yml config: architecture, classes, input size, normalisation, "
                                    "val resize (keep_ratio)")
    s.add_argument("--decode", choices=("device", "upstream"), default=None,
                   help="detectors: 'device' (default) one class per cell, score 0.35, as on the phone; 'upstream' "
                        "upstream NanoDet's evaluation (every class above 0.05, NMS 0.6, 100 boxes)")
    s.add_argument("--preprocess", choices=("letterbox", "upstream_keep_ratio", "upstream_stretch"), default=None,
                   help="detectors: 'letterbox' (default; centred padding) or upstream NanoDet's val pipeline, "
                        "keep_ratio (pad right/bottom after normalisation) or stretch; --config picks the upstream one")
    s.add_argument("--upsample", choices=("graph", "runtime"), default=None,
                   help="segmentation: 'graph' (default) ends the graph in logits at the input size (bilinear, as "
                        "CoinCheung's export); 'runtime' ends it at the head's stride and the runtime / C++ core "
                        "upsample while taking the argmax")
    s.add_argument("--class-names", help="a text file with one class name per line (as many as the model has classes)")
    g = s.add_argument_group("preprocessing (stated, never assumed: required when --checkpoint is a graph, "
                             ".param or .onnx, of a family without a fixed convention)")
    g.add_argument("--pixel-order", choices=("rgb", "bgr"), default=None, help="the channel order the model was trained on")
    g.add_argument("--mean", default=None, metavar="A,B,C", help="per-channel mean on 0..255 pixels, in pixel order")
    g.add_argument("--norm", default=None, metavar="A,B,C", help="per-channel scale applied after the mean (1/std)")
    g.add_argument("--std", default=None, metavar="A,B,C", help="per-channel std (the same as --norm 1/std)")
    g.add_argument("--resize", choices=("letterbox", "stretch", "center_crop"), default=None,
                   help="how an image becomes the input: keep aspect and pad, stretch to the square, or (classifiers) "
                        "centre crop")
    s.add_argument("--trust-checkpoint", action="store_true",
                   help="DANGEROUS: unpickle the whole checkpoint, which runs code from the file (default: "
                        "tensors only, other classes read as inert placeholders); only for files you trust")


def _add_run(sub) -> None:
    s = sub.add_parser("run", help="main job: convert, parity, device assets, report (default: NanoDet-m, seeded weights)")
    s.add_argument("--arch", default=None, help="default: the --config's architecture, else nanodet_m")
    s.add_argument("--out", default="out")
    s.add_argument("--name", default=None, help="asset name (default: the variant, e.g. nanodet_m-320)")
    _convert_options(s)
    s.set_defaults(fn=_cmd_run)


def _add_convert(sub) -> None:
    s = sub.add_parser("convert", help="checkpoint -> bundle directory")
    s.add_argument("arch", nargs="?", help="a registered architecture (litedet list); optional with --config")
    s.add_argument("--out", required=True)
    s.add_argument("--force", action="store_true", help="replace an existing bundle (atomically)")
    s.add_argument("--arm-plan", action="store_true",
                   help="measure each layer under qemu-aarch64 (cortex-a76; scripts/setup_arm.sh) in fp32 and fp16 and "
                        "ship the layers that are cheaper in fp32 as fp32 islands (the plan goes in the manifest)")
    _convert_options(s)
    s.set_defaults(fn=_cmd_convert)


def _add_classify(sub) -> None:
    s = sub.add_parser("classify", help="run a classification bundle on an image (softmax top-k)")
    s.add_argument("bundle")
    s.add_argument("image")
    s.add_argument("--top", type=int, default=5)
    s.add_argument("--json", action="store_true")
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--fp32", action="store_true", help="turn ncnn's fp16 storage/arithmetic off")
    s.set_defaults(fn=_cmd_classify)


def _add_wrap(sub) -> None:
    s = sub.add_parser("wrap", help="make a bundle from an existing NanoDet model: ncnn (legacy per-stride outputs) "
                                     "or ONNX (upstream's tools/export_onnx.py)")
    s.add_argument("param", help="model.param (its .bin beside it) or model.onnx")
    s.add_argument("--bin", help="default: the .bin beside the .param")
    s.add_argument("--arch", default=None, help="default: nanodet_m for ncnn; for ONNX the architecture its graph fits")
    s.add_argument("--config", help="ONNX: NanoDet's .yml (architecture, classes, size, normalisation)")
    s.add_argument("--class-names", help="ONNX: a text file, one class name per line")
    s.add_argument("--decode", choices=("device", "upstream"), default=None)
    s.add_argument("--preprocess", choices=("letterbox", "upstream_keep_ratio", "upstream_stretch"), default=None)
    s.add_argument("--quiet", action="store_true")
    s.add_argument("--input-size", type=int, default=None,
                   help="the model's input side (default: the architecture's, from the model registry)")
    s.add_argument("--out", required=True)
    s.add_argument("--force", action="store_true")
    s.set_defaults(fn=_cmd_wrap)


def _add_segment(sub) -> None:
    s = sub.add_parser("segment", help="run a segmentation bundle on an image (a class per pixel)")
    s.add_argument("bundle")
    s.add_argument("image")
    s.add_argument("--out", help="write the image with the mask blended in its class colours (the manifest's palette)")
    s.add_argument("--mask", help="write the class ids as an 8-bit PNG of the image's size (pixel value = class index)")
    s.add_argument("--json", action="store_true", help="print the pixels per class as JSON")
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--fp32", action="store_true", help="turn ncnn's fp16 storage/arithmetic off")
    s.set_defaults(fn=_cmd_segment)


def _add_detect(sub) -> None:
    s = sub.add_parser("detect", help="run a detection bundle on an image")
    s.add_argument("bundle")
    s.add_argument("image")
    s.add_argument("--out", help="write the image with boxes here")
    s.add_argument("--json", action="store_true", help="print detections as JSON")
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--fp32", action="store_true", help="turn ncnn's fp16 storage/arithmetic off")
    s.set_defaults(fn=_cmd_detect)


def _add_parity(sub) -> None:
    s = sub.add_parser("parity", help="torch vs ncnn fp32 vs ncnn fp16, per output and per detection")
    s.add_argument("bundle")
    s.add_argument("--images", nargs="+", help="image files (default: scikit-image's real photos)")
    s.add_argument("--out", help="report directory (default: <bundle>-parity beside the bundle)")
    s.add_argument("--json", action="store_true", help="print the JSON report instead of the table")
    s.add_argument("--cpp", action="store_true",
                   help="also run the Android C++ postprocessing core (built with g++) and require identical detections")
    s.add_argument("--arm", action="store_true",
                   help="also run the bundle with the aarch64 ncnn under qemu-aarch64, fp16 storage AND arithmetic "
                        "(needs scripts/setup_arm.sh), vs x86 ncnn fp32 and torch")
    s.add_argument("--arm-cache", default=None, help="the setup_arm.sh cache (default: $LITEDET_ARM_CACHE or ~/.cache/litedet/arm)")
    s.add_argument("--adb", action="store_true",
                   help="also run the bundle on an Android phone through the app's C++ (litedet_cpp over adb): the "
                        "reference image against torch's stored outputs, then the images against torch")
    s.add_argument("--serial", default=None, help="--adb: the device (adb devices -l lists them)")
    s.add_argument("--threshold", action="append", metavar="KEY=VALUE",
                   help="override a pass/fail threshold, e.g. fp16_min_cosine=0.9999 (repeatable)")
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(fn=_cmd_parity)


def _add_eval(sub) -> None:
    s = sub.add_parser("eval", help="accuracy per backend (torch, ncnn fp32/fp16, ARM fp32/fp16 under qemu) on a folder "
                                    "of photos: COCO mAP or top-1/top-5, one report (eval.json/.md/.png)")
    s.add_argument("bundle")
    s.add_argument("--images", required=True, help="a folder of photos (e.g. ../shared/reference/imagenet-sample)")
    s.add_argument("--labels", nargs=2, metavar=("synset|coco|masks", "FILE"), default=None,
                   help="real labels: 'synset synset_words.txt' (classifiers; the label is the file name's WordNet "
                        "id), 'coco ANN.json' (detectors) or 'masks DIR' (segmentation: DIR/STEM.png, 8-bit class "
                        "ids, 255 not scored); without, agreement with --against")
    s.add_argument("--backends", default=None,
                   help="some of torch,ncnn-fp32,ncnn-fp16,arm-fp32,arm-fp16 (default torch,ncnn-fp32,ncnn-fp16); an "
                        "int8 bundle's shipped graph is ncnn-int8 / arm-int8 (default torch,ncnn-fp32,ncnn-int8)")
    s.add_argument("--against", default=None, help="the reference backend (default torch, else the first)")
    s.add_argument("--arm-images", type=int, default=20,
                   help="the ARM backends run on the first N images (emulation: ~10 s per image; default 20)")
    s.add_argument("--limit", type=int, default=None, help="only the first N images (sorted by name)")
    s.add_argument("--gt-score", type=float, default=0.3,
                   help="detectors, agreement mode: the reference's boxes with this score or more are the ground "
                        "truth (default 0.3)")
    s.add_argument("--adb", action="store_true",
                   help="run the arm-fp16/arm-fp32 backends on an Android phone over adb, through the app's C++ "
                        "(the static aarch64 litedet_cpp), the bundle's reference image first")
    s.add_argument("--serial", default=None, help="--adb: the device (adb devices -l lists them)")
    s.add_argument("--out", required=True, help="report directory")
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(fn=_cmd_eval)


def _cmd_eval(a: argparse.Namespace) -> int:
    from litedet.atomic import output_dir
    from litedet.convert.verify.evaluate import EvalError, evaluate, format_eval, write_eval

    if a.labels is not None and a.labels[0] not in ("synset", "coco", "masks"):
        raise EvalError(f"--labels {a.labels[0]!r}: expected 'synset FILE' (classifiers), 'coco ANN.json' (detectors) "
                        "or 'masks DIR' (segmentation)")
    if a.limit is not None and a.limit < 1:
        raise EvalError(f"--limit {a.limit}: expected at least 1 image")
    if not 0.0 < a.gt_score <= 1.0:
        raise EvalError(f"--gt-score {a.gt_score}: expected a score in (0, 1]")
    out = Path(a.out)
    if out.exists() and not out.is_dir():
        raise EvalError(f"--out {out} exists and is not a directory")
    from litedet.convert.verify.evaluate import default_backends
    from litedet.runtime.manifest import load_manifest

    backends = [x.strip() for x in a.backends.split(",") if x.strip()] if a.backends is not None else \
        default_backends(load_manifest(a.bundle))
    phone = None
    if a.adb:
        if not any(x.startswith("arm-") for x in backends):
            raise EvalError("--adb runs the arm-fp16 / arm-int8 / arm-fp32 backends on the phone: add them to --backends")
        _check_phone(load_manifest(a.bundle).postprocess.kind, a.serial, "evaluate it under qemu (drop --adb)")
        from litedet.benchmarks.remote_eval import adb_detections

        def phone(bundle, manifest, images, variants, progress):
            return adb_detections(bundle, manifest, images, variants, serial=a.serial, progress=progress)
    with output_dir(out):
        r = evaluate(a.bundle, a.images, backends=backends, labels=tuple(a.labels) if a.labels else None,
                     against=a.against, arm_images=a.arm_images, limit=a.limit, gt_score=a.gt_score,
                     threads=a.threads, progress=not a.quiet, phone=phone)
        write_eval(out, r)
    print(format_eval(r), end="")
    print(f"wrote {out}/eval.json, eval.md, eval.png ({r.wall_s:.0f} s)")
    if r.partial:
        print(f"litedet eval: PARTIAL results ({'; '.join(r.errors)}): the images measured so far are kept",
              file=sys.stderr)
        return 1
    return 0


def _add_quantize(sub) -> None:
    s = sub.add_parser("quantize", help="fp16/fp32 bundle -> int8 bundle in ncnn's own format (calibration table, "
                                        "int8 param/bin), calibrated on your photos")
    s.add_argument("bundle")
    s.add_argument("--calib", required=True, help="a folder of calibration photos (e.g. ../shared/reference/imagenet-sample)")
    s.add_argument("--out", required=True, help="the int8 bundle's directory")
    s.add_argument("--method", default="kl", help="activation scales: kl (ncnn2table's default), aciq or minmax")
    s.add_argument("--keep-fp", default="", metavar="LAYER,...",
                   help="layers (ncnn layer names of the param) to keep in floating point")
    s.add_argument("--target-agreement", type=float, default=None,
                   help="keep the most sensitive layers in floating point, the fewest that bring agreement with the "
                        "fp32 graph on the calibration images (agreement mAP, or top-1) to this, e.g. 0.95")
    s.add_argument("--arm-aware", action="store_true",
                   help="count each layer's aarch64 instructions under qemu (cortex-a76; scripts/setup_arm.sh) in "
                        "int8 and fp16 and keep in floating point the layers int8 does not make cheaper")
    s.add_argument("--limit", type=int, default=None, help="only the first N calibration photos (sorted by name)")
    s.add_argument("--force", action="store_true", help="replace an existing bundle at --out")
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(fn=_cmd_quantize)


def _cmd_quantize(a: argparse.Namespace) -> int:
    from litedet.convert.int8_bundle import QuantizeError, quantize_bundle, summary

    if a.limit is not None and a.limit < 1:
        raise QuantizeError(f"--limit {a.limit}: expected at least 1 image")
    keep = [x.strip() for x in a.keep_fp.split(",") if x.strip()]
    arm_costs = None
    if a.arm_aware:  # convert may not import benchmarks: the CLI hands the counter in
        from litedet.benchmarks.arm.icount import layer_costs
        from litedet.convert.verify.arm.env import resolve_env
        from litedet.runtime.manifest import load_manifest

        env, side = resolve_env(None, None), load_manifest(a.bundle).resize.target

        def arm_costs(bundle_dir):
            return layer_costs(Path(bundle_dir), env, "fp16", width=side, height=side)
    r = quantize_bundle(a.bundle, a.calib, a.out, method=a.method, keep_fp=keep, target_agreement=a.target_agreement,
                        limit=a.limit, force=a.force, threads=a.threads, progress=not a.quiet, arm_costs=arm_costs)
    print(summary(r))
    return 0


def _add_assets(sub) -> None:
    s = sub.add_parser("assets", help="write NAME.param/.bin/.cfg for a device app from a bundle")
    s.add_argument("bundle")
    s.add_argument("dest")
    s.add_argument("--name")
    s.set_defaults(fn=_cmd_assets)


def _add_android(sub) -> None:
    s = sub.add_parser("android", help="Android demo helpers")
    asub = s.add_subparsers(dest="android_cmd", required=True)
    s = asub.add_parser("push", help="copy a bundle's param/bin and its generated config into the demo's assets")
    s.add_argument("bundle")
    s.add_argument("--demo", default="android_demo", help="the Android Studio project (default: ./android_demo)")
    s.add_argument("--name", help="asset name (default: the variant, e.g. nanodet_m-320)")
    s.set_defaults(fn=_cmd_android_push)


def _add_bench(sub) -> None:
    s = sub.add_parser("bench", help="latency / instructions of models on the desktop, under qemu, on a phone (adb) "
                                     "or a board (ssh), one result format (results.json/.md, latency_vs_macs.png)")
    s.add_argument("models", nargs="*", help="registered names (converted with seeded weights) or bundle directories")
    s.add_argument("--all", action="store_true", help="every registered model")
    s.add_argument("--threads", default="1", help="ncnn thread counts, e.g. 1,2 (default 1)")
    s.add_argument("--runs", type=int, default=20, help="timed runs per measurement (default 20)")
    s.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
    s.add_argument("--out", default="bench", help="results directory (default ./bench)")
    s.add_argument("--bundles-dir", default=None, help="where named models are converted (default OUT/bundles)")
    s.add_argument("--reference-graphs", type=Path, default=None,
                   help="ncnn's benchmark graphs (e.g. ../shared/reference/ncnn-benchmark): ours / theirs per model")
    s.add_argument("--cpp", action="store_true", help="desktop: also the app's C++ pipeline (litedet_cpp)")
    s.add_argument("--photos", action="store_true",
                   help="desktop: every way on each of scikit-image's four photos (stage costs per photo), "
                        "not the astronaut only")
    s.add_argument("--convert-runs", type=int, default=0, metavar="N",
                   help="desktop: also time N fresh `litedet convert` runs of each registered model (wall time "
                        "and its steps)")
    s.add_argument("--qemu", action="store_true", help="aarch64 guest instructions under qemu (fp32 and fp16)")
    s.add_argument("--repeats", type=int, default=2, help="--qemu: repeats of each count (default 2)")
    s.add_argument("--adb", action="store_true", help="on an Android phone over adb (needs --benchncnn)")
    s.add_argument("--serial", default=None, help="--adb: the device (adb devices -l lists them)")
    s.add_argument("--benchncnn", type=Path, default=None, help="--adb: benchncnn from an ncnn Android release")
    s.add_argument("--ssh", default=None, metavar="USER@HOST", help="on an ARM Linux board over ssh")
    s.add_argument("--port", type=int, default=None, help="--ssh: port (default 22)")
    s.add_argument("--identity", type=Path, default=None, help="--ssh: private key file")
    s.add_argument("--remote-python", default="python3", help="--ssh: the board's python (default python3)")
    s.add_argument("--ssh-option", action="append", metavar="OPT", help="--ssh: an ssh -o option (repeatable)")
    s.add_argument("--precisions", default="fp16,fp32", help="--ssh: ncnn precisions on the board (default fp16,fp32)")
    s.add_argument("--merge", nargs="+", default=None, metavar="RESULTS",
                   help="join results.json files (or their directories) into one table and plot in --out")
    s.add_argument("--quiet", action="store_true", help="no progress output")
    s.set_defaults(fn=_cmd_bench)


def _add_list(sub) -> None:
    s = sub.add_parser("list", help="registered architectures, parameters and MACs at their default input size")
    s.add_argument("names", nargs="*", help="only these architectures (default: all)")
    s.set_defaults(fn=_cmd_list)


# each command adds its own parser and arguments, in the order `litedet --help` lists them
_COMMANDS = (_add_run, _add_convert, _add_classify, _add_wrap, _add_detect, _add_segment, _add_parity, _add_eval, _add_quantize, _add_prune, _add_plan, _add_assets, _add_android, _add_bench, _add_list)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="litedet", description="PyTorch checkpoint -> verified fp16 ncnn bundle for ARM phones")
    sub = p.add_subparsers(dest="cmd", required=True)
    for add in _COMMANDS:
        add(sub)
    return p


# modules of the conversion side and the extra that installs them
_EXTRAS = {"torch": "convert", "torchvision": "convert", "pnnx": "convert", "onnx": "convert", "onnxsim": "convert",
           "onnxruntime": "convert", "tqdm": "convert", "skimage": "photos", "faster_coco_eval": "convert"}


# after SIGTERM, the seconds the main thread has to unwind (removing its temp files) before the
# process ends anyway: a thread blocked in C code (a FIFO's open, a long ncnn call) never runs
# Python's handler, and a process that cannot be stopped is worse than a stale temp dir, which
# the next run removes (litedet.atomic.cleanup_stale_dirs)
TERM_GRACE_S = 3.0
_WATCHING = False


_SIGINT_SEEN = False


def _on_sigint(signum, frame) -> None:
    # Python's own Ctrl-C handler, plus a record that the user asked to stop (see _interrupted)
    global _SIGINT_SEEN
    _SIGINT_SEEN = True
    raise KeyboardInterrupt


def _on_sigterm(signum, frame) -> None:
    # unwind like Ctrl-C, so temp outputs are removed by the same finally blocks
    raise SystemExit(128 + signum)


def _watch_signals(where: str) -> None:
    """SIGTERM ends the process within TERM_GRACE_S, even when the main thread cannot unwind."""
    import signal

    global _WATCHING
    if _WATCHING:
        return
    _WATCHING = True
    r, w = os.pipe()
    os.set_blocking(w, False)
    signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    signal.signal(signal.SIGTERM, _on_sigterm)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # SIG_IGN (a background job) stays
        signal.signal(signal.SIGINT, _on_sigint)

    def watch() -> None:
        while True:
            got = os.read(r, 64)
            if signal.SIGTERM in got:
                threading.Event().wait(TERM_GRACE_S)
                os.write(2, f"{where} terminated (SIGTERM) while blocked; temp files are left for the next run "
                            "to remove\n".encode())
                os._exit(128 + signal.SIGTERM)

    threading.Thread(target=watch, daemon=True, name="litedet-sigterm").start()


def _os_error_text(e: OSError) -> str:
    where = f": {e.filename}" if e.filename else ""
    return f"{e.strerror or e}{where}" if e.strerror else str(e)


def main(argv: list[str] | None = None) -> int:
    """The CLI's one error boundary: known errors become one line on stderr and exit 2;
    only real bugs show a traceback."""

    args = build_parser().parse_args(argv)
    where = f"litedet {args.cmd}: error:"
    if threading.current_thread() is threading.main_thread():
        _watch_signals(where)
    try:
        return args.fn(args)
    except SystemExit:
        raise
    except BaseException as e:
        if _interrupted(e):
            print(f"{where} interrupted (Ctrl-C); nothing was left half-written", file=sys.stderr)
            return 130
        return _refusal(e, where)


def _interrupted(e: BaseException) -> bool:
    """Ctrl-C, also when it landed inside C++ that called back into Python (torch.jit's tracer):
    there it surfaces as a SystemError caused by the KeyboardInterrupt, or as whatever a library
    made of it, so the handler's flag is the record that counts."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return _SIGINT_SEEN


def _refusal(e: BaseException, where: str) -> int:
    """Known errors become one line and exit 2 (1 for a closed pipe); anything else is a bug and is raised."""
    try:
        raise e
    except BrokenPipeError:
        # the reader went away (`litedet detect ... | head`): nothing more to say to it
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        print(f"{where} standard output was closed before all results were written", file=sys.stderr)
        return 1
    except ModuleNotFoundError as e:
        top = (e.name or "").partition(".")[0]
        if top not in _EXTRAS:
            raise
        extra = _EXTRAS[top]
        print(f"{where} this command needs {top!r}, which comes with litedet's {extra} side: "
              f"pip install 'litedet[{extra}]' (the plain install is the runtime only: detect, classify, assets)",
              file=sys.stderr)
        return 2
    except OSError as e:  # unwritable, missing or wrong-kind paths
        print(f"{where} {_short(_os_error_text(e), MAX_ERROR_LINE)}", file=sys.stderr)
        return 2
    except Exception as e:
        if not isinstance(e, _USER_ERRORS) and type(e).__name__ not in ("PnnxError", "ArmEnvError", "ArmRunError", "CppError",
                                                                            "RemoteError"):
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"{where} {_short(msg, MAX_ERROR_LINE)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
