"""Measure on real devices: an Android phone over adb, an ARM Linux board over ssh.

adb: the bundles' param files and a user-supplied benchncnn (from an ncnn Android release)
go to /data/local/tmp/litedet, then ``benchncnn LOOPS 1 2 -1 1 param=... shape=[w,h,c]``
(1 thread, big cores, CPU, cooling down) per graph; and the static aarch64 litedet_cpp (the
app's C++ pipeline) with the device assets and the photo, ``litedet_cpp bench``.

ssh: a self-contained runner zip (litedet's runtime + pyrunner.py), the bundles and the
photo are copied with tar over ssh; the board's python runs it and streams one record per
measurement (a lost connection keeps what was measured, marked partial).

Every failure is one line naming what is wrong and what would fix it (RemoteError).
"""

from __future__ import annotations

import io
import json
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from litedet.benchmarks.pyrunner import PROGRESS
from litedet.runtime.bundle import Bundle

DEVICE_DIR = "/data/local/tmp/litedet"
BENCHNCNN_LOOPS = 8


class RemoteError(ValueError):
    """A device or connection problem, said in one line."""


# -- benchncnn's output -------------------------------------------------------------
_BENCH_LINE = re.compile(r"^\s*(\S+)\s+min\s*=\s*([0-9.]+)\s+max\s*=\s*([0-9.]+)\s+avg\s*=\s*([0-9.]+)\s*$")
_HEADER = re.compile(r"^\s*(loop_count|num_threads|powersave|gpu_device|cooling_down)\s*=\s*(-?\d+)\s*$")


@dataclass
class BenchncnnResult:
    settings: dict[str, int]
    timings: dict[str, dict[str, float]]  # model name -> {min, max, avg}


def parse_benchncnn(text: str) -> BenchncnnResult:
    """benchncnn's documented output: ``key = value`` settings, then one line per model,
    ``NAME  min = X  max = Y  avg = Z`` (ms); GPU info lines and blank lines are ignored."""
    settings, timings = {}, {}
    for line in text.splitlines():
        m = _HEADER.match(line)
        if m:
            settings[m.group(1)] = int(m.group(2))
            continue
        m = _BENCH_LINE.match(line)
        if m:
            lo, hi, avg = (float(v) for v in m.groups()[1:])
            if not lo <= avg <= hi:
                raise RemoteError(f"benchncnn line {line.strip()!r}: avg is not between min and max")
            timings[m.group(1)] = {"min": lo, "max": hi, "avg": avg}
    if not timings:
        tail = " / ".join(ln.strip() for ln in text.strip().splitlines()[-3:]) or "(no output)"
        raise RemoteError(f"benchncnn printed no timing line (expected 'NAME  min = ..  max = ..  avg = ..'): {tail}")
    return BenchncnnResult(settings, timings)


def benchncnn_record(res: BenchncnnResult, name: str, model: str, input_chw: list[int], device: str) -> dict:
    t = res.timings[name]
    return {"model": model, "place": "adb", "runtime": "benchncnn", "precision": "fp16",
            "threads": res.settings.get("num_threads", 1), "device": device, "input": input_chw,
            "latency_ms": {"min": t["min"], "mean": t["avg"], "max": t["max"],
                           "runs": res.settings.get("loop_count", 1)},
            "note": f"benchncnn {name} (random weights, fp16 where the CPU has it), powersave "
                    f"{res.settings.get('powersave', '?')}"}


# -- adb --------------------------------------------------------------------------
@dataclass
class AdbDevice:
    serial: str
    state: str
    model: str = ""


def parse_adb_devices(text: str) -> list[AdbDevice]:
    """``adb devices -l``: after the header, ``SERIAL  STATE  key:value ...`` per device."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("List of devices") or line.startswith("*"):
            continue
        parts = line.split()
        if len(parts) < 2:
            continue
        state = parts[1] if parts[1] != "no" else " ".join(parts[1:3])  # "no permissions"
        model = next((p.split(":", 1)[1] for p in parts[2:] if p.startswith("model:")), "")
        out.append(AdbDevice(parts[0], state, model))
    return out


def choose_device(devices: list[AdbDevice], serial: str | None) -> AdbDevice:
    if serial is not None:
        match = [d for d in devices if d.serial == serial]
        if not match:
            listed = ", ".join(d.serial for d in devices) or "none"
            raise RemoteError(f"adb: no device with serial {serial!r} (adb devices lists: {listed})")
        dev = match[0]
    else:
        if not devices:
            raise RemoteError("adb: no device connected: plug in a phone with USB debugging on "
                              "(Settings > Developer options), then check `adb devices`")
        if len(devices) > 1:
            raise RemoteError(f"adb: {len(devices)} devices connected ({', '.join(d.serial for d in devices)}): "
                              "choose one with --serial SERIAL")
        dev = devices[0]
    if dev.state == "unauthorized":
        raise RemoteError(f"adb: device {dev.serial} is unauthorized: accept the 'Allow USB debugging' prompt on the "
                          "phone, then run again")
    if dev.state != "device":
        raise RemoteError(f"adb: device {dev.serial} is {dev.state!r}, not ready: reconnect it (adb devices should "
                          "say 'device')")
    return dev


class Adb:
    def __init__(self, serial: str, exe: str) -> None:
        self.serial, self.exe = serial, exe

    def run(self, *args: str, timeout: float = 600) -> str:
        p = subprocess.run([self.exe, "-s", self.serial, *args], capture_output=True, text=True, timeout=timeout)
        if p.returncode != 0:
            msg = (p.stderr.strip() or p.stdout.strip() or f"exit {p.returncode}").splitlines()[-1]
            raise RemoteError(f"adb {args[0]} on {self.serial} failed: {msg}")
        return p.stdout

    def shell(self, cmd: str, timeout: float = 1800) -> str:
        # `adb shell` passes the remote exit status through (adb >= 1.0.36) and appends nothing
        return self.run("shell", cmd, timeout=timeout)


def find_adb() -> str:
    exe = shutil.which("adb")
    if exe is None:
        raise RemoteError("adb is not installed: install Android's platform-tools (Debian/Ubuntu: apt-get install adb)")
    return exe


def list_adb_devices(exe: str) -> list[AdbDevice]:
    p = subprocess.run([exe, "devices", "-l"], capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise RemoteError(f"adb devices failed: {(p.stderr.strip() or p.stdout.strip()).splitlines()[-1:]}")
    return parse_adb_devices(p.stdout)


def _graph_inputs(bundle: Bundle, image: np.ndarray) -> list[tuple[str, Path, list[int]]]:
    """(label, param, [C, H, W]) of each graph of a bundle on the standard image."""
    from litedet.runtime import open_bundle
    from litedet.runtime.bundle import MAIN_GRAPH

    from litedet.benchmarks.bench import graph_shape

    m = bundle.manifest
    chw, _ = open_bundle(bundle, threads=1, fp16=False).preprocess_array(image)
    return [(m.architecture, g.param, list(chw.shape)) if name == MAIN_GRAPH else
            (f"{m.architecture}:{name}", g.param, list(graph_shape(m, name)))
            for name, g in bundle.graph_files().items()]


def bench_adb(targets: list[tuple[str, Bundle]], *, serial: str | None, benchncnn: Path | None, runs: int,
              warmup: int, progress: bool = True) -> tuple[list[dict], dict, str | None]:
    """(records, device info, error or None: the run stopped there, records so far kept)."""
    with tempfile.TemporaryDirectory(prefix="litedet-bench-adb-") as tmp:
        return _bench_adb(targets, serial, benchncnn, runs, warmup, Path(tmp), progress)


def _adb_prepare(adb: "Adb", benchncnn: Path, image: np.ndarray, work: Path) -> None:
    """benchncnn, the static aarch64 litedet_cpp and the standard image onto the device."""
    import cv2

    from litedet.benchmarks.cpp import build_litedet_cpp

    adb.shell(f"mkdir -p {DEVICE_DIR}")
    adb.run("push", str(benchncnn), f"{DEVICE_DIR}/benchncnn")
    adb.run("push", str(build_litedet_cpp("aarch64")), f"{DEVICE_DIR}/litedet_cpp")
    adb.shell(f"chmod 755 {DEVICE_DIR}/benchncnn {DEVICE_DIR}/litedet_cpp")
    png = work / "image.png"  # PNG: litedet_cpp reads the same pixels as OpenCV here
    cv2.imwrite(str(png), image)
    adb.run("push", str(png), f"{DEVICE_DIR}/image.png")


def _adb_bench_bundle(adb: "Adb", i: int, bundle: Bundle, image: np.ndarray, work: Path, runs: int, warmup: int,
                      device: str) -> list[dict]:
    """benchncnn on each graph of one bundle, then (detectors) the app's C++ pipeline."""
    from litedet.benchmarks.cpp import cpp_record
    from litedet.runtime.devconfig import export_device_assets

    records = []
    for name, param, chw in _graph_inputs(bundle, image):
        remote = f"{DEVICE_DIR}/{name.replace(':', '_')}.param"
        adb.run("push", str(param), remote)
        shape = f"[{chw[2]},{chw[1]},{chw[0]}]"  # benchncnn's shape is w,h,c
        out = adb.shell(f"cd {DEVICE_DIR} && ./benchncnn {max(runs, 1)} 1 2 -1 1 "
                        f"param={shlex.quote(remote)} shape={shape}")
        res = parse_benchncnn(out)
        records.append(benchncnn_record(res, next(iter(res.timings)), name, chw, device))
    from litedet.runtime.devconfig import device_kinds

    if bundle.manifest.postprocess.kind in device_kinds():  # the kinds the app's C++ pipeline runs
        assets = work / f"assets_{i}"  # written afresh from the bundle
        export_device_assets(bundle, assets, name="model")
        rdir = f"{DEVICE_DIR}/assets_{i}"
        adb.shell(f"mkdir -p {rdir}")
        for f in sorted(assets.iterdir()):
            adb.run("push", str(f), f"{rdir}/{f.name}")
        out = adb.shell(f"cd {DEVICE_DIR} && ./litedet_cpp bench {rdir} image.png --threads 1 "
                        f"--runs {runs} --warmup {warmup}")
        line = next((ln for ln in out.splitlines() if ln.startswith("{")), None)
        if line is None:
            raise RemoteError(f"litedet_cpp on {adb.serial} printed no result: {out.strip()[-200:]}")
        records.append(cpp_record(json.loads(line), "adb", device))
    return records


def _bench_adb(targets, serial, benchncnn, runs, warmup, work: Path, progress: bool):
    from litedet.benchmarks.bench import standard_image

    exe = find_adb()
    if benchncnn is None:
        raise RemoteError("--adb needs --benchncnn PATH: the benchncnn binary of an ncnn Android release "
                          "(ncnn-YYYYMMDD-android.zip, arm64-v8a/bin/benchncnn)")
    if not Path(benchncnn).is_file():
        raise RemoteError(f"--benchncnn {benchncnn}: no such file (expected ncnn's benchncnn built for Android arm64)")
    dev = choose_device(list_adb_devices(exe), serial)
    adb = Adb(dev.serial, exe)
    image = standard_image()
    info = {"serial": dev.serial, "model": dev.model}
    records: list[dict] = []
    try:
        props = {k: adb.shell(f"getprop {k}").strip() for k in ("ro.product.model", "ro.soc.model",
                                                                   "ro.build.version.release")}
        info.update(props)
        device = props.get("ro.product.model") or dev.model or dev.serial
        _adb_prepare(adb, benchncnn, image, work)
        for i, (label, bundle) in enumerate(targets):
            if progress:
                print(f"adb {dev.serial}: {label}", file=sys.stderr, flush=True)
            records += _adb_bench_bundle(adb, i, bundle, image, work, runs, warmup, device)
    except (RemoteError, subprocess.TimeoutExpired) as e:
        if not records:
            raise
        return records, info, f"stopped on {dev.serial}: {e}"
    return records, info, None


# -- ssh --------------------------------------------------------------------------
_BENCH_FILES = ("__init__.py", "schema.py", "machine.py", "pyrunner.py")


def build_runner_zip(path: Path) -> Path:
    """litedet's runtime (numpy + ncnn only) and the timing runner as one zip python runs
    (taken from the imported packages, so an installed litedet works as well as a checkout)."""
    import litedet
    import litedet.benchmarks
    import litedet.runtime

    top, rt, bench = (Path(m.__file__).parent for m in (litedet, litedet.runtime, litedet.benchmarks))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        # every shared helper: they import neither torch nor another layer (tests/test_layering.py),
        # so the runtime's imports among them never fall out of date with a list
        for f in sorted(top.glob("*.py")):
            z.write(f, f"litedet/{f.name}")
        for f in sorted(rt.rglob("*.py")):
            z.write(f, "litedet/runtime/" + f.relative_to(rt).as_posix())
        for f in _BENCH_FILES:
            z.write(bench / f, f"litedet/benchmarks/{f}")
        z.writestr("__main__.py", "import sys\nfrom litedet.benchmarks.pyrunner import main\nsys.exit(main())\n")
    return path


def ssh_base(target: str, port: int | None, identity: Path | None, options: list[str]) -> list[str]:
    cmd = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]
    for o in options:
        cmd += ["-o", o]
    if port:
        cmd += ["-p", str(port)]
    if identity:
        cmd += ["-i", str(identity)]
    return cmd + [target]


def classify_ssh_error(stderr: str, target: str, port: int | None) -> str:
    """ssh's own words (exit 255) -> one line saying what to do."""
    s = "\n".join(ln for ln in stderr.strip().splitlines() if not ln.startswith(PROGRESS)).strip()
    where = f"{target}" + (f" port {port}" if port else "")
    if "Connection refused" in s:
        return f"ssh: connection to {where} refused: is sshd running there, and on that --port?"
    if "Permission denied" in s or "Too many authentication failures" in s:
        return f"ssh: authentication failed for {target}: pass --identity KEY (or add your key with ssh-copy-id)"
    if "Host key verification failed" in s or "REMOTE HOST IDENTIFICATION HAS CHANGED" in s:
        return f"ssh: the host key of {where} is not the known one: check known_hosts"
    if any(k in s for k in ("No route to host", "timed out", "Network is unreachable", "Could not resolve hostname",
                            "Name or service not known")):
        return f"ssh: {where} is unreachable ({s.splitlines()[-1]}): check the address and that the board is on"
    if "closed by remote host" in s or "Broken pipe" in s or "Connection reset" in s or not s:
        return f"ssh: the connection to {where} was lost ({s.splitlines()[-1] if s else 'ssh exit 255'})"
    return f"ssh to {where} failed: {s.splitlines()[-1]}"


def _tar_stream(files: list[tuple[Path, str]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for src, arc in files:
            t.add(str(src), arcname=arc)
    return buf.getvalue()


def bench_ssh(targets: list[tuple[str, Bundle]], target: str, *, remote_python: str = "python3", port: int | None = None,
              identity: Path | None = None, options: list[str] | None = None, runs: int = 20, warmup: int = 3,
              threads: list[int] | None = None, precisions: tuple[str, ...] = ("fp16", "fp32"),
              progress: bool = True, remote_dir: str = "/tmp/litedet-bench",
              timeout: float = 3600) -> tuple[list[dict], dict, str | None]:
    """(records, board info, error or None) of the bundles run by the board's Python runtime."""
    with tempfile.TemporaryDirectory(prefix="litedet-bench-ssh-") as tmp:
        return _bench_ssh(targets, target, remote_python, port, identity, options, runs, warmup, threads,
                          precisions, Path(tmp), progress, remote_dir, timeout)


def _ssh_upload(base: list[str], targets, work: Path, remote_dir: str, target: str, port) -> list[str]:
    """One tar stream over ssh: the runner zip, the standard image and each bundle's manifest and
    graphs; returns the bundles' folders on the board."""
    from litedet.benchmarks.bench import standard_image

    zip_path = build_runner_zip(work / "litedet_bench_runner.pyz")
    np.save(work / "image.npy", standard_image())
    files = [(zip_path, "litedet_bench_runner.pyz"), (work / "image.npy", "image.npy")]
    names = []
    for i, (label, bundle) in enumerate(targets):
        name = f"b{i}_{re.sub(r'[^A-Za-z0-9_.-]', '_', label)}"
        names.append(f"bundles/{name}")
        files.append((bundle.path / "manifest.json", f"bundles/{name}/manifest.json"))
        for _, rel, _ in bundle.manifest.graph_files():
            files.append((bundle.file(rel, rel), f"bundles/{name}/{rel}"))
    q = shlex.quote(remote_dir)
    p = subprocess.run(base + [f"rm -rf {q} && mkdir -p {q} && tar xf - -C {q}"], input=_tar_stream(files),
                       capture_output=True, timeout=600)
    if p.returncode == 255:
        raise RemoteError(classify_ssh_error(p.stderr.decode(errors="replace"), target, port))
    if p.returncode != 0:
        raise RemoteError(f"ssh {target}: copying the bundles failed: {p.stderr.decode(errors='replace').strip()[-300:]}")
    return names


def _ssh_read(proc: subprocess.Popen, target: str, progress: bool, timeout) -> tuple[list[dict], dict]:
    """The runner's JSON lines as they come: (records, machine)."""
    records, machine = [], {}
    try:
        for line in proc.stdout:
            if not line.startswith("{"):
                continue
            d = json.loads(line)
            if "record" in d:
                records.append(d["record"])
                if progress:
                    r = d["record"]
                    print(f"ssh {target}: {r['model']} {r['precision']} {r['threads']}t "
                          f"{r['latency_ms']['median']:.2f} ms", file=sys.stderr, flush=True)
            elif "machine" in d:
                machine = d["machine"]
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return records, machine


def _ssh_failure(code: int, stderr: str, target: str, port, remote_python: str) -> str:
    """What a non-zero exit of the board's runner (or of ssh) means, in one line."""
    if code == 255:
        return classify_ssh_error(stderr, target, port)
    if code == 127:
        return f"ssh {target}: the board has no {remote_python!r}: pass --remote-python PATH (python3 with numpy, ncnn)"
    lines = [ln for ln in stderr.strip().splitlines() if not ln.startswith(PROGRESS)]
    return f"ssh {target}: " + (lines or [f"the runner exited {code}"])[-1]


def _bench_ssh(targets, target, remote_python, port, identity, options, runs, warmup, threads, precisions,
               work: Path, progress, remote_dir, timeout):
    if "@" not in target or target.startswith("@") or target.endswith("@"):
        raise RemoteError(f"--ssh {target!r}: expected USER@HOST")
    base = ssh_base(target, port, identity, options or [])
    names = _ssh_upload(base, targets, work, remote_dir, target, port)
    th = ",".join(str(t) for t in (threads or [1]))
    cmd = (f"cd {shlex.quote(remote_dir)} && {shlex.quote(remote_python)} litedet_bench_runner.pyz image.npy "
           f"{' '.join(names)} --threads {th} --precisions {','.join(precisions)} --runs {runs} --warmup {warmup} "
           "--place ssh")
    proc = subprocess.Popen(base + [cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    records, machine = _ssh_read(proc, target, progress, timeout)
    err = None
    if proc.returncode != 0:
        err = _ssh_failure(proc.returncode, proc.stderr.read(), target, port, remote_python)
        if not records:
            raise RemoteError(err)
    return records, machine, err
