"""`litedet bench`: the result schema, the desktop harness, reference graphs, merge, the
benchncnn parser and the adb paths. No timing asserts: the tests check the harness, the
schema, the parsers and the error paths (timings are whatever this machine gives)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import cv2
import pytest

from conftest import REFERENCE, converted, need_ncnn_lib, need_reference, unavailable
from litedet.benchmarks import remote
from litedet.benchmarks.schema import Record, Results, SchemaError, load_results, markdown_table, merge, stats
from litedet.cli import main

FIXTURES = Path(__file__).parent / "fixtures"
REF_GRAPHS = REFERENCE / "ncnn-benchmark"


@pytest.fixture(scope="module")
def small_bundle(tmp_path_factory) -> Path:
    """A small classifier (ShuffleNetV2 0.5x at 224), seeded weights."""
    return converted(tmp_path_factory, "shufflenet_v2_x0_5", "bench")


def _rec(**kw) -> dict:
    d = {"model": "m", "place": "desktop", "runtime": "ncnn", "precision": "fp16", "threads": 1,
         "latency_ms": {"min": 1.0, "median": 2.0, "max": 3.0, "runs": 5}}
    d.update(kw)
    return d


# -- schema ------------------------------------------------------------------------
def test_stats_and_record_round_trip():
    s = stats([3.0, 1.0, 2.0, 10.0])
    assert s == {"min": 1.0, "median": 2.5, "max": 10.0, "runs": 4}
    r = Record.from_dict(_rec(stages_ms={"pre": s, "inference": s, "glue": None, "post": s}, macs=10, params=2))
    assert Record.from_dict(json.loads(json.dumps(r.__dict__))) == r
    assert r.value == 2.0
    q = Record.from_dict(_rec(place="qemu", unit="instructions", latency_ms=None, instructions=123))
    assert q.value == 123.0


@pytest.mark.parametrize("bad, msg", [
    (dict(place="cloud"), "place 'cloud' is not one of desktop, qemu, adb, ssh"),
    (dict(runtime="tflite"), "runtime 'tflite' is not one of"),
    (dict(threads=0), "threads must be an integer >= 1"),
    (dict(latency_ms={"min": 3.0, "median": 2.0, "max": 4.0, "runs": 2}), "needs min <= median <= max"),
    (dict(latency_ms={"min": 1.0, "max": 4.0, "runs": 2}), "expected {min, median, max, runs}"),
    (dict(latency_ms=None), "a 'ms' record needs latency_ms"),
    (dict(unit="instructions", instructions=0), "positive integer instructions"),
    (dict(stages_ms={"decode": None}), "stage 'decode' is not one of pre, inference, glue, post"),
    (dict(macs=-1), "macs must be a non-negative integer"),
    (dict(colour="red"), "unknown field(s) colour"),
])
def test_bad_records_are_refused_with_the_field_named(bad, msg):
    with pytest.raises(SchemaError, match=msg.replace("(", r"\(").replace(")", r"\)").replace("{", r"\{")
                       .replace("}", r"\}")):
        Record.from_dict(_rec(**bad))
    with pytest.raises(SchemaError, match="missing field"):
        Record.from_dict({"model": "m"})


def test_results_files_are_checked(tmp_path):
    p = tmp_path / "r.json"
    p.write_text(json.dumps({"schema": "other/1", "place": "desktop", "records": []}))
    with pytest.raises(SchemaError, match="schema is 'other/1'; expected 'litedet-bench/1'"):
        load_results(p)
    p.write_text("{not json")
    with pytest.raises(SchemaError, match="not JSON"):
        load_results(p)
    with pytest.raises(SchemaError, match="no such file"):
        load_results(tmp_path / "none")


def test_merge_keeps_every_place_in_one_table_and_plot(tmp_path):
    a = Results("desktop", {"cpu_model": "x"}, [Record.from_dict(_rec(macs=100_000_000))])
    b = Results("ssh", {"machine": "aarch64"}, [Record.from_dict(_rec(place="ssh", macs=100_000_000,
                                                                     latency_ms={"min": 9.0, "median": 9.5,
                                                                                 "max": 12.0, "runs": 3}))],
                partial=True, errors=["stopped"])
    m = merge([a, b])
    assert m.place == "merged" and m.partial and m.errors == ["stopped"]
    assert [r.place for r in m.records] == ["desktop", "ssh"]
    table = markdown_table(m)
    assert "| m | desktop |" in table and "| m | ssh |" in table and "9.50 ms" in table
    for i, res in enumerate((a, b)):
        (tmp_path / f"r{i}").mkdir()
        (tmp_path / f"r{i}" / "results.json").write_text(json.dumps(res.to_dict()))
    out = tmp_path / "merged"
    assert main(["bench", "--merge", str(tmp_path / "r0"), str(tmp_path / "r1" / "results.json"), "--out", str(out)]) == 0
    res = load_results(out)
    assert len(res.records) == 2 and res.place == "merged"
    img = cv2.imread(str(out / "latency_vs_macs.png"))
    assert img is not None and img.shape[1] > 500


def test_merge_refuses_what_is_not_a_results_file(tmp_path, capsys):
    (tmp_path / "x.json").write_text("[]")
    assert main(["bench", "--merge", str(tmp_path / "x.json"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "expected a JSON object" in err[0]
    assert not (tmp_path / "o" / "results.json").exists()


# -- desktop -------------------------------------------------------------------------
def test_desktop_bench_measures_every_way_in_one_run(small_bundle, tmp_path):
    need_reference(REF_GRAPHS)
    out = tmp_path / "out"
    rc = main(["bench", str(small_bundle), "shufflenet_v2_x1_0", "--runs", "2", "--warmup", "1", "--out", str(out),
               "--bundles-dir", str(tmp_path / "bundles"), "--reference-graphs", str(REF_GRAPHS), "--quiet"])
    assert rc == 0
    res = load_results(out)
    assert res.place == "desktop" and not res.partial
    ways = {(r.model, r.runtime, r.precision, r.threads) for r in res.records}
    for model in ("shufflenet_v2_x0_5", "shufflenet_v2_x1_0"):
        for way in (("ncnn", "fp32", 1), ("ncnn", "fp16", 1), ("onnxruntime", "fp32", 1), ("torch", "fp32", 1)):
            assert (model, *way) in ways
    by = {(r.model, r.runtime, r.precision): r for r in res.records}
    r = by[("shufflenet_v2_x1_0", "ncnn", "fp16")]
    assert r.input == [3, 224, 224] and r.latency_ms["runs"] == 2
    assert set(k for k, v in r.stages_ms.items() if v) == {"pre", "inference", "post"}  # no glue in one graph
    # counted on the ncnn graph: ShuffleNetV2 1.0x is 2.27 M params / 146 M MACs (torchvision's figures)
    assert 2.2e6 < r.params < 2.4e6 and 1.40e8 < r.macs < 1.52e8
    assert 1e6 < r.bin_bytes < 6e6 and 2e7 < r.peak_rss_bytes < 2e9
    # ncnn's shufflenet_v2 graph timed with ours, empty weights, same run
    assert r.reference_graph is None
    r32 = by[("shufflenet_v2_x1_0", "ncnn", "fp32")]
    assert r32.reference_graph == "shufflenet_v2" and 0.2 < r32.reference_ratio < 5
    assert ("ref:shufflenet_v2", "ncnn-empty", "fp32") in by
    assert by[("shufflenet_v2_x0_5", "ncnn", "fp32")].reference_ratio is None  # ncnn has no 0.5x graph
    md = (out / "results.md").read_text()
    assert md.count("\n| shufflenet_v2_x1_0 |") >= 4 and "÷ ref" in md
    machine = json.loads((out / "machine.json").read_text())
    for k in ("cpu_model", "cpu_count", "simd_flags", "versions", "loadavg_start", "loadavg_end"):
        assert k in machine
    assert machine["versions"]["ncnn"] == "1.0.20261020"
    assert cv2.imread(str(out / "latency_vs_macs.png")) is not None
    # a second run reuses the converted bundle and replaces the results as a whole
    before = (tmp_path / "bundles" / "shufflenet_v2_x1_0" / "manifest.json").stat().st_mtime_ns
    assert main(["bench", "shufflenet_v2_x1_0", "--runs", "1", "--warmup", "0", "--out", str(out),
                 "--bundles-dir", str(tmp_path / "bundles"), "--quiet"]) == 0
    assert (tmp_path / "bundles" / "shufflenet_v2_x1_0" / "manifest.json").stat().st_mtime_ns == before
    assert {r.model for r in load_results(out).records} == {"shufflenet_v2_x1_0"}


@pytest.mark.reference
def test_an_int8_bundle_is_benched_as_int8(int8_bundle, tmp_path):
    out = tmp_path / "out"
    assert main(["bench", str(int8_bundle), "--runs", "1", "--warmup", "0", "--out", str(out), "--quiet"]) == 0
    by = {(r.runtime, r.precision) for r in load_results(out).records}
    assert ("ncnn", "int8") in by and ("ncnn", "int8-fp32") in by and ("ncnn", "fp16") not in by
    r = next(r for r in load_results(out).records if r.precision == "int8")
    assert r.bin_bytes < 1.3e6  # int8 weights: NanoDet-m's fp16 bin is 1.9 MB


def test_two_stage_bench_splits_the_glue(thundernet_bundle, tmp_path):
    need_ncnn_lib("x86_64")  # --cpp links the app's C++ against it
    out = tmp_path / "out"
    assert main(["bench", str(thundernet_bundle), "--runs", "2", "--warmup", "0", "--out", str(out), "--cpp",
                 "--photos", "--quiet"]) == 0
    res = load_results(out)
    photos = ("astronaut", "chelsea", "coffee", "motorcycle_left")
    assert sorted({r.image for r in res.records}) == sorted(photos)
    for photo in photos:  # every way on every photo: the glue's cost per photo, Python and the app's C++
        by = {(r.runtime, r.precision): r for r in res.records if r.image == photo}
        nc = by[("ncnn", "fp16")]
        assert all(nc.stages_ms[k]["median"] > 0 for k in ("pre", "inference", "glue", "post"))
        assert "head on" in by[("onnxruntime", "fp32")].note
        cpp = by[("litedet_cpp", "fp16")]
        assert cpp.stages_ms["glue"]["median"] > 0 and cpp.input == nc.input
        assert nc.input == ([3, 320, 320] if photo == "astronaut" else [3, 224, 320])  # landscape: 320x224
    by = {(r.runtime, r.precision): r for r in res.records if r.image == "astronaut"}
    nc = by[("ncnn", "fp16")]
    # MACs: stage 1 + the head on 200 RoIs beside ThunderNet-SNet49's 262 M of the paper
    assert 2.5e8 < nc.macs < 2.7e8 and nc.paper_macs == 262_000_000 and by[("litedet_cpp", "fp16")].macs == nc.macs
    assert nc.peak_rss_bytes and all(r.peak_rss_bytes is None for r in res.records
                                     if r.image != "astronaut" and r.runtime == "ncnn")
    assert "(paper 262.00 M)" in (out / "results.md").read_text()


def test_conversion_wall_time_is_measured(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["bench", "shufflenet_v2_x0_5", "--convert-runs", "2", "--runs", "1", "--warmup", "0", "--out",
                 str(out), "--bundles-dir", str(tmp_path / "bundles"), "--quiet"]) == 0
    conv = [r for r in load_results(out).records if r.runtime == "litedet-convert"]
    assert len(conv) == 1 and conv[0].latency_ms["runs"] == 2 and conv[0].latency_ms["min"] > 100
    steps = conv[0].convert_steps_ms
    assert {"load", "trace", "pnnx", "verify"} <= set(steps) and all(v["runs"] == 2 for v in steps.values())
    assert sum(v["median"] for v in steps.values()) <= conv[0].latency_ms["max"]
    assert "steps (median s): load" in (out / "results.md").read_text()
    # a bundle directory cannot be converted again: one line naming the fix
    assert main(["bench", str(tmp_path / "bundles" / "shufflenet_v2_x0_5"), "--convert-runs", "1", "--out",
                 str(tmp_path / "o2"), "--quiet"]) == 2
    assert "name the architecture instead" in capsys.readouterr().err


@pytest.mark.parametrize("args, msg", [
    (["not_a_model"], "'not_a_model' is neither a bundle directory nor a registered model; known:"),
    (["--threads", "0", "nanodet_m"], "--threads '0': expected thread counts >= 1"),
    ([], "name the models to measure"),
    (["--qemu", "--ssh", "a@b", "nanodet_m"], "--qemu and --ssh measure in different places"),
    (["--runs", "0", "nanodet_m"], "--runs and --repeats must be >= 1"),
    (["--qemu", "--repeats", "0", "nanodet_m"], "--runs and --repeats must be >= 1"),
    (["--reference-graphs", "/nonexistent", "shufflenet_v2_x0_5"], "not a directory of ncnn benchmark graphs"),
    (["nanodet_m", "--merge", "a.json"], "--merge joins results files; measure models in a separate run"),
    (["--qemu", "--photos", "nanodet_m"], "--photos measures on the desktop; drop --qemu"),
    (["--convert-runs", "-1", "nanodet_m"], "--warmup and --convert-runs >= 0"),
])
def test_bad_arguments_give_one_line(args, msg, tmp_path, capsys):
    assert main(["bench", *args, "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and msg in err[0], err


def test_a_directory_that_is_not_a_bundle_is_refused(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    assert main(["bench", str(tmp_path / "d"), "--out", str(tmp_path / "o")]) == 2
    assert "is a directory but not a litedet bundle" in capsys.readouterr().err


# -- benchncnn's output ----------------------------------------------------------------
def test_benchncnn_parser_on_its_documented_format():
    res = remote.parse_benchncnn((FIXTURES / "benchncnn_android_documented.txt").read_text())
    assert res.settings == {"loop_count": 8, "num_threads": 1, "powersave": 2, "gpu_device": -1, "cooling_down": 1}
    assert res.timings == {"/data/local/tmp/litedet/model.param": {"min": 14.71, "max": 15.38, "avg": 14.97}}
    rec = Record.from_dict(remote.benchncnn_record(res, "/data/local/tmp/litedet/model.param", "nanodet_m",
                                                   [3, 320, 320], "Pixel 7"))
    assert rec.latency_ms == {"min": 14.71, "mean": 14.97, "max": 15.38, "runs": 8} and rec.value == 14.97
    assert "14.97 avg ms" in markdown_table(Results("adb", {}, [rec]))
    zoo = remote.parse_benchncnn((FIXTURES / "benchncnn_zoo_documented.txt").read_text())
    assert list(zoo.timings) == ["squeezenet", "mobilenet", "mobilenet_v2", "shufflenet", "nanodet_m"]
    assert zoo.timings["nanodet_m"]["avg"] == 1377.76


def test_benchncnn_parser_refuses_output_without_timings():
    with pytest.raises(remote.RemoteError, match="benchncnn printed no timing line .*param file not found"):
        remote.parse_benchncnn("loop_count = 4\nnum_threads = 1\nparam file not found\n")
    with pytest.raises(remote.RemoteError, match="avg is not between min and max"):
        remote.parse_benchncnn("m  min =   5.00  max =   6.00  avg =   9.00\n")


# -- adb ---------------------------------------------------------------------------------
def test_adb_devices_listing_is_parsed():
    text = ("List of devices attached\n"
            "R58M123ABC             device usb:1-1 product:p model:Pixel_7 device:panther transport_id:1\n"
            "emulator-5554          unauthorized transport_id:2\n"
            "0123456789             no permissions (user in plugdev group); see [http://developer.android.com]\n")
    devs = remote.parse_adb_devices(text)
    assert [(d.serial, d.state, d.model) for d in devs] == [("R58M123ABC", "device", "Pixel_7"),
                                                            ("emulator-5554", "unauthorized", ""),
                                                            ("0123456789", "no permissions", "")]
    assert remote.choose_device(devs, "R58M123ABC").serial == "R58M123ABC"
    with pytest.raises(remote.RemoteError, match="3 devices connected .*choose one with --serial"):
        remote.choose_device(devs, None)
    with pytest.raises(remote.RemoteError, match="unauthorized: accept the 'Allow USB debugging' prompt"):
        remote.choose_device(devs, "emulator-5554")
    with pytest.raises(remote.RemoteError, match="'no permissions', not ready"):
        remote.choose_device(devs, "0123456789")
    with pytest.raises(remote.RemoteError, match="no device with serial 'X'"):
        remote.choose_device(devs, "X")


def _real_adb() -> str:
    exe = shutil.which("adb")
    if exe is None:
        unavailable("Debian's adb client is missing: scripts/setup_bench.sh installs it")
    return exe


def test_real_adb_with_no_device_says_so(small_bundle, tmp_path, capsys):
    exe = _real_adb()
    fake_bench = tmp_path / "benchncnn"
    fake_bench.write_bytes(b"\x7fELF")  # never runs: there is no device to push it to
    try:
        rc = main(["bench", str(small_bundle), "--adb", "--benchncnn", str(fake_bench), "--out", str(tmp_path / "o")])
    finally:  # the adb server it started listens on 127.0.0.1:5037 only
        subprocess.run([exe, "kill-server"], capture_output=True, timeout=30)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "adb: no device connected: plug in a phone with USB debugging on" in err[0]


def test_missing_adb_and_benchncnn(small_bundle, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no adb on it
    assert main(["bench", str(small_bundle), "--adb", "--benchncnn", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "adb is not installed: install Android's platform-tools (Debian/Ubuntu: apt-get install adb)" in \
        capsys.readouterr().err
    monkeypatch.undo()
    _real_adb()
    assert main(["bench", str(small_bundle), "--adb", "--out", str(tmp_path / "o")]) == 2
    assert "--adb needs --benchncnn PATH" in capsys.readouterr().err
    assert main(["bench", str(small_bundle), "--adb", "--benchncnn", str(tmp_path / "nope"),
                 "--out", str(tmp_path / "o")]) == 2
    assert "no such file" in capsys.readouterr().err


@pytest.fixture
def fake_phone(tmp_path, monkeypatch):
    """PATH's adb is the stand-in of fixtures/fake_adb.sh (see there why)."""
    d = tmp_path / "phone"
    d.mkdir()
    (d / "benchncnn.txt").write_text((FIXTURES / "benchncnn_android_documented.txt").read_text())
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "adb").symlink_to(FIXTURES / "fake_adb.sh")
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_ADB_DIR", str(d))
    bench = tmp_path / "benchncnn"
    bench.write_bytes(b"\x7fELF")
    return d, bench


def _devices(*lines: str) -> str:
    return "List of devices attached\n" + "".join(f"{ln}\n" for ln in lines)


def test_adb_device_states(fake_phone, small_bundle, tmp_path, capsys):
    d, bench = fake_phone
    args = ["bench", str(small_bundle), "--adb", "--benchncnn", str(bench), "--out", str(tmp_path / "o"), "--quiet"]
    (d / "devices").write_text(_devices("AAA device model:Pixel_7", "BBB device model:Pixel_8"))
    assert main(args) == 2
    assert "2 devices connected (AAA, BBB): choose one with --serial SERIAL" in capsys.readouterr().err
    (d / "devices").write_text(_devices("AAA unauthorized"))
    assert main(args) == 2
    assert "device AAA is unauthorized" in capsys.readouterr().err


def test_adb_run_and_a_device_that_goes_away(fake_phone, small_bundle, tmp_path, capsys):
    """A classifier (benchncnn only; litedet_cpp runs detectors): measured on the stand-in,
    then the device disconnects before the second model; the first is kept, marked partial."""
    d, bench = fake_phone
    (d / "devices").write_text(_devices("AAA device model:Pixel_7", "BBB device model:Pixel_8"))
    out = tmp_path / "o"
    args = ["bench", str(small_bundle), str(small_bundle), "--adb", "--serial", "BBB", "--benchncnn", str(bench),
            "--out", str(out), "--runs", "3", "--quiet"]
    (d / "gone_after").write_text("1")
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "PARTIAL results (stopped on BBB: adb shell on BBB failed: adb: device 'BBB' not found)" in err
    res = load_results(out)
    assert res.place == "adb" and res.partial and len(res.records) == 1
    r = res.records[0]
    assert (r.runtime, r.device, r.threads, r.input) == ("benchncnn", "Pixel 7", 1, [3, 224, 224])
    assert r.latency_ms["mean"] == 14.97 and r.macs and r.params
    assert res.machine["device"]["ro.soc.model"] == "GS201"
    log = (d / "log").read_text()
    assert "BBB shell cd /data/local/tmp/litedet && ./benchncnn 3 1 2 -1 1 param=" in log
    assert "shape=[224,224,3]" in log and "AAA" not in log
    assert "PARTIAL" in (out / "results.md").read_text()


# -- qemu --------------------------------------------------------------------------------
@pytest.mark.arm
def test_qemu_counts_repeat_exactly(arm_env, small_bundle, tmp_path):
    out = tmp_path / "q"
    assert main(["bench", str(small_bundle), "--qemu", "--repeats", "2", "--out", str(out), "--quiet"]) == 0
    res = load_results(out)
    assert res.place == "qemu" and res.machine["qemu"]["cpu"] == "cortex-a76"
    by = {r.precision: r for r in res.records}
    assert set(by) == {"fp32", "fp16"}
    for r in by.values():
        assert r.unit == "instructions" and r.instructions > 1e6 and r.repeats_identical is True
        assert r.input == [3, 224, 224] and r.macs and r.latency_ms is None
    assert "insns" in (out / "results.md").read_text()
    assert not (out / "latency_vs_macs.png").exists()  # nothing in ms to plot


@pytest.mark.arm
def test_adb_detector_runs_benchncnn_and_the_apps_cpp(arm_env, fake_phone, tmp_path_factory, tmp_path):
    """A detector on the stand-in phone: benchncnn (fixture output) per graph, then the real
    static aarch64 litedet_cpp, pushed with the assets and the photo, run under qemu-aarch64
    (the stand-in calls qemu-aarch64 from PATH, which scripts/setup_arm.sh installs)."""
    need_ncnn_lib("aarch64")
    d, bench = fake_phone
    (d / "devices").write_text(_devices("AAA device model:Pixel_7"))
    bundle = converted(tmp_path_factory, "nanodet_m", "nanodet96", input_size=96)
    out = tmp_path / "o"
    assert main(["bench", str(bundle), "--adb", "--benchncnn", str(bench), "--out", str(out), "--runs", "2",
                 "--warmup", "0", "--quiet"]) == 0
    res = load_results(out)
    by = {r.runtime: r for r in res.records}
    assert set(by) == {"benchncnn", "litedet_cpp"} and not res.partial
    cpp = by["litedet_cpp"]
    assert (cpp.place, cpp.device, cpp.precision, cpp.input) == ("adb", "Pixel 7", "fp16", [3, 96, 96])
    assert cpp.latency_ms["runs"] == 2 and cpp.stages_ms["inference"]["median"] > 0 and cpp.macs
    assert (d / "root" / "data/local/tmp/litedet/litedet_cpp").is_file()
    assert (d / "root" / "data/local/tmp/litedet/image.png").is_file()
