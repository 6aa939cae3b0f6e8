"""The CLI tried as a hostile user would: bad input, killed runs, unwritable places.

Every case drives `litedet` in a subprocess and checks: no traceback, a non-zero
exit with one line that names what is wrong, no user file lost or half-written,
and no stale temp directory after a killed run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import NANODET_BIN, NANODET_PARAM, REFERENCE, need_reference

ROOT = Path(__file__).resolve().parents[1]


def litedet(*args, cwd=None, timeout=300, user=None, **kw) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "litedet.cli", *map(str, args)]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    if user:  # a real unprivileged user, so read-only folders are read-only (root ignores modes)
        cmd = ["setpriv", f"--reuid={user}", "--regid=nogroup", "--clear-groups", *cmd]
        env["HOME"] = "/tmp"
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=timeout, env=env, **kw)


def refused(r: subprocess.CompletedProcess, *needles: str) -> str:
    """Non-zero exit, no traceback, and the last stderr line names the problem."""
    err = r.stderr.strip()
    assert r.returncode != 0, f"exit 0 on bad input:\n{r.stdout}\n{err}"
    assert "Traceback" not in err, err
    last = err.splitlines()[-1] if err else ""
    assert last.startswith(("litedet", "usage:")) or "error:" in last, err
    for n in needles:
        assert n in err, f"{n!r} not in:\n{err}"
    return last


def snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def stale(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name or ".bak-" in p.name]


def edited_bundle(src: Path, dst: Path, fn) -> Path:
    shutil.copytree(src, dst)
    d = json.loads((dst / "manifest.json").read_text())
    fn(d)
    (dst / "manifest.json").write_text(json.dumps(d))
    return dst


@pytest.fixture(scope="module")
def image(tmp_path_factory, photos) -> Path:
    p = tmp_path_factory.mktemp("img") / "coffee.png"
    cv2.imwrite(str(p), photos["coffee"])
    return p


@pytest.fixture(scope="module")
def clf_bundle(tmp_path_factory) -> Path:
    from litedet.convert.pipeline import convert_model

    out = tmp_path_factory.mktemp("clf") / "squeeze"
    convert_model("squeezenet1_1", out, progress=False)
    return out


# -- data loss and half-written output ------------------------------------------------------

def test_force_never_replaces_a_directory_that_is_not_a_bundle(tmp_path):
    user = tmp_path / "userdir"
    user.mkdir()
    (user / "thesis.tex").write_text("years of work")
    r = litedet("convert", "nanodet_m", "--out", user, "--force", "--quiet")
    refused(r, "not a litedet bundle", "--force replaces only a bundle")
    assert snapshot(user) == {"thesis.tex": b"years of work"} and stale(tmp_path) == []


def test_force_never_replaces_the_current_directory(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    r = litedet("convert", "nanodet_m", "--out", ".", "--force", "--quiet", cwd=tmp_path)
    refused(r)
    assert snapshot(tmp_path) == {"notes.txt": b"mine"}


def _push_target(tmp_path, seeded_bundle):
    demo = tmp_path / "demo"
    assets = demo / "app" / "src" / "main" / "assets"
    assets.mkdir(parents=True)
    r = litedet("android", "push", seeded_bundle, "--demo", demo, "--name", "nd")
    assert r.returncode == 0, r.stderr
    return demo, assets


def test_android_push_is_all_or_nothing(tmp_path, seeded_bundle, monkeypatch):
    demo, assets = _push_target(tmp_path, seeded_bundle)
    before = snapshot(assets)
    # a push whose third rename fails: the first two are put back, no temp is left
    from litedet.runtime import devconfig

    real = os.replace
    calls = []

    def flaky(src, dst):
        calls.append(dst)
        if len([c for c in calls if not str(Path(c).name).startswith(".")]) == 3:
            raise OSError(28, "No space left on device", str(dst))
        return real(src, dst)

    other = tmp_path / "other"
    shutil.copytree(seeded_bundle, other)
    d = json.loads((other / "manifest.json").read_text())
    d["postprocess"]["score_threshold"] = 0.5
    (other / "manifest.json").write_text(json.dumps(d))
    monkeypatch.setattr(os, "replace", flaky)
    with pytest.raises(OSError, match="No space"):
        devconfig.export_device_assets(other, assets, "nd")
    monkeypatch.undo()
    assert snapshot(assets) == before and stale(assets) == []


def test_android_push_refuses_a_cfg_path_that_is_a_directory(tmp_path, seeded_bundle):
    demo, assets = _push_target(tmp_path, seeded_bundle)
    (assets / "nd.cfg").unlink()
    (assets / "nd.cfg").mkdir()
    before = snapshot(assets)
    refused(litedet("android", "push", seeded_bundle, "--demo", demo, "--name", "nd"), "nd.cfg exists and is not a file")
    assert snapshot(assets) == before and stale(assets) == []


def test_android_push_to_an_assets_path_that_is_a_file(tmp_path, seeded_bundle):
    demo = tmp_path / "demo"
    (demo / "app" / "src" / "main").mkdir(parents=True)
    (demo / "app" / "src" / "main" / "assets").write_text("not a folder")
    refused(litedet("android", "push", seeded_bundle, "--demo", demo), "assets exists and is not a directory")


def _start_convert(out: Path) -> tuple[subprocess.Popen, Path]:
    p = subprocess.Popen([sys.executable, "-m", "litedet.cli", "convert", "nanodet_m", "--out", str(out), "--quiet"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        tmps = [d for d in out.parent.glob(f".{out.name}.tmp-*")]
        if tmps:
            time.sleep(0.5)  # let it write into the temp dir
            return p, tmps[0]
        if p.poll() is not None:
            break
        time.sleep(0.05)
    p.kill()
    raise AssertionError(f"the conversion never made its temp dir: {p.communicate()}")


def test_sigterm_cleans_up_like_ctrl_c(tmp_path):
    out = tmp_path / "b"
    p, tmp = _start_convert(out)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode != 0 and "Traceback" not in err, err
    assert not out.exists() and stale(tmp_path) == []


def test_a_killed_conversion_leaves_a_temp_dir_that_the_next_run_removes(tmp_path):
    out = tmp_path / "b"
    p, tmp = _start_convert(out)
    p.kill()
    p.wait()
    assert tmp.exists()  # SIGKILL cannot clean up
    live = tmp_path / ".b.tmp-someone-elses"  # another tool's dir with a similar name: not ours, kept
    live.mkdir()
    r = litedet("convert", "nanodet_m", "--out", out, "--quiet")
    assert r.returncode == 0, r.stderr
    assert not tmp.exists() and live.exists() and out.is_dir()


def test_a_run_killed_between_the_renames_gets_its_bundle_back(tmp_path, seeded_bundle):
    from litedet.atomic import OWNER_FILE

    out = tmp_path / "b"
    shutil.copytree(seeded_bundle, tmp_path / ".b.old-99999999-dead")
    (tmp_path / ".b.old-99999999-dead" / OWNER_FILE).write_text(json.dumps({"pid": 99999999, "start": "1"}))
    from litedet.convert.bundle import atomic_bundle_dir

    with pytest.raises(RuntimeError):
        with atomic_bundle_dir(out, force=True):
            raise RuntimeError("the next run fails too")
    assert snapshot(out) == snapshot(seeded_bundle) and stale(tmp_path) == []


def test_wrap_refuses_a_truncated_bin(tmp_path):
    need_reference(NANODET_PARAM, NANODET_BIN)
    shutil.copy(NANODET_PARAM, tmp_path / "m.param")
    (tmp_path / "m.bin").write_bytes(NANODET_BIN.read_bytes()[:500_000])
    refused(litedet("wrap", tmp_path / "m.param", "--out", tmp_path / "w"), "does not load or run in ncnn")
    assert not (tmp_path / "w").exists() and stale(tmp_path) == []


# -- wrong results with exit code 0 ---------------------------------------------------------

@pytest.mark.parametrize("section,field", [("postprocess", "center_offset"), (None, "version"),
                                           ("postprocess", "score_threshold"), ("resize", "pad_mode")])
def test_a_manifest_missing_a_field_is_refused(tmp_path, seeded_bundle, image, section, field):
    b = edited_bundle(seeded_bundle, tmp_path / "b", lambda d: (d[section] if section else d).pop(field))
    name = f"{section}.{field}" if section else field
    refused(litedet("detect", b, image), f"missing the field '{name}'")


def test_a_float_tiff_in_0_1_detects_what_the_8_bit_image_does(tmp_path, seeded_bundle, photos):
    u8 = photos["coffee"]
    cv2.imwrite(str(tmp_path / "f.tiff"), u8.astype(np.float32) / 255.0)
    cv2.imwrite(str(tmp_path / "u.png"), u8)
    a = litedet("detect", seeded_bundle, tmp_path / "f.tiff", "--json")
    b = litedet("detect", seeded_bundle, tmp_path / "u.png", "--json")
    assert a.returncode == 0 and b.returncode == 0, a.stderr
    assert json.loads(a.stdout) == json.loads(b.stdout) and json.loads(a.stdout)
    cv2.imwrite(str(tmp_path / "g.tiff"), u8.astype(np.float32))  # 0..255 floats: refused, not cast
    refused(litedet("detect", seeded_bundle, tmp_path / "g.tiff"), "float images must hold values in [0, 1]")


def test_class_names_for_a_detector_are_used_or_refused(tmp_path):
    names = [f"thing{i}" for i in range(80)]
    (tmp_path / "names.txt").write_text("\n".join(names) + "\n")
    r = litedet("convert", "nanodet_m", "--out", tmp_path / "b", "--class-names", tmp_path / "names.txt", "--quiet")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["class_names"] == names
    # a checkpoint with 80 classes and 3 names: refused, naming both counts
    import torch

    from litedet.models import create_model

    torch.save(create_model("nanodet_m").state_dict(), tmp_path / "m.pth")
    (tmp_path / "three.txt").write_text("cat\ndog\nbird\n")
    refused(litedet("convert", "nanodet_m", "--checkpoint", tmp_path / "m.pth", "--out", tmp_path / "c",
                    "--class-names", tmp_path / "three.txt", "--quiet"),
            "class counts disagree", "has 80", "--class-names has 3")
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("top", ["0", "-3"])
def test_classify_top_below_one_is_refused(clf_bundle, image, top):
    refused(litedet("classify", clf_bundle, image, "--top", top), "top-k must be at least 1")


def test_parity_images_without_files_is_refused(seeded_bundle):
    r = litedet("parity", seeded_bundle, "--images")
    refused(r, "--images")


# -- crashes ----------------------------------------------------------------------------------

@pytest.mark.parametrize("threads", ["-1", "0"])
def test_thread_counts_below_one_are_refused(seeded_bundle, clf_bundle, image, threads):
    refused(litedet("detect", seeded_bundle, image, "--threads", threads), "threads must be an integer from 1")
    refused(litedet("classify", clf_bundle, image, "--threads", threads), "threads must be an integer from 1")


def test_the_python_api_validates_threads_too(seeded_bundle):
    from litedet.runtime.detector import Detector

    with pytest.raises(ValueError, match="threads must be an integer from 1"):
        Detector.from_bundle(seeded_bundle, threads=-1)


def test_huge_input_sizes_are_refused_before_work(tmp_path, seeded_bundle, image):
    t = time.perf_counter()
    refused(litedet("convert", "nanodet_m", "--out", tmp_path / "b", "--input-size", "4096"), "larger than 2048")
    assert time.perf_counter() - t < 60  # refused up front (a 4096 conversion runs for minutes)
    b = edited_bundle(seeded_bundle, tmp_path / "m", lambda d: d["resize"].update(target=32000))
    refused(litedet("detect", b, image), "'resize.target' is 32000; expected a number in [1, 2048]")


# -- security -------------------------------------------------------------------------------------

def test_manifest_paths_outside_the_bundle_are_refused(tmp_path, seeded_bundle, image):
    b = edited_bundle(seeded_bundle, tmp_path / "b", lambda d: d.update(param="../../other/model.ncnn.param"))
    refused(litedet("detect", b, image), "inside the bundle")


def test_a_corrupt_reference_torchscript_is_refused_by_name(tmp_path, seeded_bundle):
    b = tmp_path / "b"
    shutil.copytree(seeded_bundle, b)
    (b / "reference" / "model.torchscript.pt").write_bytes(b"garbage")
    refused(litedet("parity", b, "--quiet"), "does not match the sha256")


def test_a_lightning_checkpoint_with_a_namespace_loads_safely(tmp_path):
    import argparse

    import torch

    from litedet.models import create_model, load_checkpoint

    m = create_model("nanodet_m")
    ckpt = tmp_path / "model_best.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in m.state_dict().items()}, "epoch": 3,
                "hyper_parameters": {"args": argparse.Namespace(lr=0.1, cfg="nanodet-m.yml")}}, ckpt)
    rep = load_checkpoint(create_model("nanodet_m"), ckpt)
    assert rep.kind == "lightning"
    rep = load_checkpoint(create_model("nanodet_m"), ckpt, trust=True)  # --trust-checkpoint: full unpickling
    assert rep.kind == "lightning"


def test_unknown_classes_in_a_checkpoint_are_not_unpickled(tmp_path):
    """A class outside the tensors is read as an inert placeholder; its code never runs."""
    code = f"""
import torch, sys
class Boom:
    def __reduce__(self):
        return (print, ("PWNED",))
class Cfg(dict):
    pass
from litedet.models import create_model
m = create_model("nanodet_m")
torch.save({{"state_dict": {{"model." + k: v for k, v in m.state_dict().items()}},
            "hyper_parameters": {{"cfg": Cfg(a=1), "x": Boom()}}}}, {str(tmp_path / 'evil.ckpt')!r})
"""
    subprocess.run([sys.executable, "-c", code], check=True)
    out = subprocess.run([sys.executable, "-c", f"""
from litedet.models import create_model, load_checkpoint
rep = load_checkpoint(create_model("nanodet_m"), {str(tmp_path / 'evil.ckpt')!r})
print(rep.details)
"""], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "PWNED" not in out.stdout and "__main__.Cfg" in out.stdout


# -- tracebacks instead of messages ---------------------------------------------------------------

@pytest.fixture
def world(seeded_bundle):
    """A folder the unprivileged user can reach (pytest's own tmp dirs are private to root),
    with a read-only folder ``ro`` and a readable copy of the seeded bundle."""
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="litedet-ro-", dir="/tmp"))
    base.chmod(0o755)
    shutil.copytree(seeded_bundle, base / "bundle")
    for p in (base / "bundle").rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    (base / "ro").mkdir()
    (base / "ro").chmod(0o555)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def test_read_only_output_folders_are_one_line(world):
    probe = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable, "-c",
                            "import litedet.cli"], capture_output=True, text=True)
    if probe.returncode != 0:  # e.g. a checkout inside a folder private to root
        pytest.skip(f"an unprivileged user cannot run this checkout's python: {probe.stderr.strip()[-200:]}")
    ro = world / "ro"
    refused(litedet("convert", "nanodet_m", "--out", ro / "b", "--quiet", user="nobody"), "not a writable directory")
    refused(litedet("parity", world / "bundle", "--out", ro / "p", "--quiet", user="nobody"), "Permission denied")
    assets = world / "demo" / "app" / "src" / "main" / "assets"
    assets.mkdir(parents=True)
    for d in (world / "demo", *(world / "demo").rglob("*")):
        d.chmod(0o755)
    assets.chmod(0o555)
    refused(litedet("android", "push", world / "bundle", "--demo", world / "demo", user="nobody"), "Permission denied")
    assert list(assets.iterdir()) == []
    need_reference(NANODET_PARAM, NANODET_BIN)
    refused(litedet("wrap", NANODET_PARAM, "--out", ro / "w", user="nobody"), "not a writable directory")
    assert list(ro.iterdir()) == []


def test_run_out_that_is_a_file_is_refused_before_the_work(tmp_path):
    f = tmp_path / "out.txt"
    f.write_text("keep")
    t = time.perf_counter()
    refused(litedet("run", "--out", f, "--quiet"), "is not a directory")
    assert time.perf_counter() - t < 60 and f.read_text() == "keep"


def test_detect_out_without_an_image_extension(tmp_path, seeded_bundle, image):
    (tmp_path / "img").mkdir()
    refused(litedet("detect", seeded_bundle, image, "--out", tmp_path / "img" / "vis"), "needs an image extension")


def test_a_manifest_that_is_a_json_array(tmp_path, seeded_bundle, image):
    b = tmp_path / "b"
    shutil.copytree(seeded_bundle, b)
    (b / "manifest.json").write_text("[]")
    refused(litedet("detect", b, image), "JSON object")


def test_a_closed_stdout_pipe_is_not_a_traceback(seeded_bundle, image):
    p = subprocess.Popen([sys.executable, "-m", "litedet.cli", "detect", str(seeded_bundle), str(image), "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    p.stdout.close()  # like `| head` exiting before litedet writes
    err = p.stderr.read()
    p.wait(timeout=120)
    assert p.returncode != 0 and "Traceback" not in err and "standard output was closed" in err, err


# -- clearer messages -------------------------------------------------------------------------------

def test_negative_input_size_message(tmp_path):
    last = refused(litedet("convert", "nanodet_m", "--out", tmp_path / "b", "--input-size", "-32"),
                   "must be a positive multiple of 32")
    assert "try 32 or 0" not in last


def test_a_mistyped_manifest_field_is_named(tmp_path, seeded_bundle, image):
    b = edited_bundle(seeded_bundle, tmp_path / "b", lambda d: d["postprocess"].update(score_threshold="0.3"))
    refused(litedet("detect", b, image), "'postprocess.score_threshold' is '0.3' (str); expected a number")
    b = edited_bundle(seeded_bundle, tmp_path / "c", lambda d: d.update(version="1"))
    refused(litedet("detect", b, image), "version '1' is not supported")


def test_a_text_file_renamed_pth(tmp_path):
    (tmp_path / "model.pth").write_text("hello, I am a text file\n")
    refused(litedet("convert", "nanodet_m", "--checkpoint", tmp_path / "model.pth", "--out", tmp_path / "b", "--quiet"),
            "is not a PyTorch checkpoint")


def test_an_upper_case_param_is_read_as_ncnn(tmp_path):
    (tmp_path / "M.PARAM").write_text("7767517\n0 0\n")
    refused(litedet("convert", "nanodet_m", "--checkpoint", tmp_path / "M.PARAM", "--out", tmp_path / "b", "--quiet"),
            "ncnn weights not found")


def test_a_directory_given_as_an_image(tmp_path, seeded_bundle):
    refused(litedet("detect", seeded_bundle, tmp_path), "is a directory, not an image file")


def test_ncnn_benchmark_param_is_read_as_ncnn_reads_it():
    from litedet.ncnn_param import parse_param

    p = REFERENCE / "ncnn-benchmark" / "nanodet_m.param"
    need_reference(p)
    assert len(parse_param(p)) == 179  # declares 179 of its 180 layers; ncnn reads 179
    r = litedet("convert", "nanodet_m", "--checkpoint", p, "--out", "/nonexistent-dir/b", "--quiet")
    refused(r, "ncnn weights not found")


def test_another_networks_param_is_not_a_nanodet_graph(tmp_path, clf_bundle):
    refused(litedet("convert", "nanodet_m", "--checkpoint", clf_bundle / "model.ncnn.param", "--out", tmp_path / "b",
                    "--quiet"), "is not a NanoDet graph")
