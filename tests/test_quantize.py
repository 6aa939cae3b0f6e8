"""`litedet quantize`: int8 in ncnn's own format, written in Python and proved by ncnn itself.

The format: one known layer of each quantised type, written by ``write_int8`` and run by ncnn's
int8 inference, equals int8 arithmetic done here in numpy (the scales in the right order, the
weights behind the right tag). The bundle: SqueezeNet v1.1 int8 within a point of fp32 top-1 on
the 400 real photos; the automatic plan reaches its target on NanoDet-m; bad input is one line.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from conftest import REFERENCE, need_reference

PHOTOS = REFERENCE / "imagenet-sample"
SQUEEZENET = REFERENCE / "squeezenet-v1.1"


def test_kl_threshold_of_a_gaussian_clips_its_far_tail():
    from litedet.convert.quantize import kl_scale

    x = np.random.default_rng(0).standard_normal(200_000)
    threshold = 127.0 / kl_scale(x)
    assert 2.0 < threshold < np.abs(x).max()  # clips the rare tail, keeps the bulk


def test_aciq_and_minmax_scales():
    from litedet.convert.quantize import ActStats, activation_scale, aciq_threshold

    s = ActStats()
    s.add_absmax(np.linspace(-4.0, 4.0, 1001))
    assert activation_scale(s, "minmax") == pytest.approx(127 / 4.0)
    # ncnn2table's formula: a Gaussian of a million samples whose largest is 4 clips at about 3.2
    assert aciq_threshold(4.0, 10**6) == pytest.approx(3.22, abs=0.01)
    # with 1001 samples the clip would lie beyond the largest value: the largest value it is
    assert aciq_threshold(4.0, 1001) > 4.0 and activation_scale(s, "aciq") == pytest.approx(127 / 4.0)


def _tiny_graph(tmp: Path, layer: str, rng) -> tuple[Path, Path, np.ndarray, np.ndarray, int]:
    """One quantisable layer on an 8x8x8 input, fp32 weights (tag 0) and a bias."""
    c_in, c_out = 8, 6
    if layer == "Convolution":  # 1x1: no winograd, 8-bit weights
        w = rng.standard_normal((c_out, c_in)).astype(np.float32)
        line, groups = f"Convolution conv 1 1 data out 0={c_out} 1=1 5=1 6={w.size}", c_out
    elif layer == "ConvolutionDepthWise":  # 3x3 depthwise, pad 1
        c_out = c_in
        w = rng.standard_normal((c_in, 9)).astype(np.float32)
        line, groups = f"ConvolutionDepthWise conv 1 1 data out 0={c_in} 1=3 4=1 5=1 6={w.size} 7={c_in}", c_in
    else:
        w = rng.standard_normal((c_out, c_in * 64)).astype(np.float32)
        line, groups = f"InnerProduct conv 1 1 data out 0={c_out} 1=1 2={w.size}", c_out
    bias = rng.standard_normal(c_out).astype(np.float32)
    param, binf = tmp / "g.param", tmp / "g.bin"
    param.write_text(f"7767517\n2 2\nInput data 0 1 data 0=8 1=8 2={c_in}\n{line}\n")
    binf.write_bytes(struct.pack("<I", 0) + w.tobytes() + bias.tobytes())
    return param, binf, w, bias, groups


def _int8_reference(layer: str, x: np.ndarray, w: np.ndarray, bias: np.ndarray, ws: np.ndarray, s_in: float):
    """ncnn's int8 arithmetic in numpy: int8 input and weights, int32 sums, dequantised, plus bias."""
    def q(v, s):
        return np.clip(np.sign(v * s) * np.floor(np.abs(v * s) + 0.5), -127, 127)  # round half away, as ncnn

    xq = q(x, s_in)
    wq = q(w, ws[:, None])
    if layer == "Convolution":
        acc = np.einsum("oc,chw->ohw", wq, xq)
    elif layer == "ConvolutionDepthWise":
        xp = np.pad(xq, ((0, 0), (1, 1), (1, 1)))
        acc = np.zeros_like(xq)
        for k in range(9):
            dy, dx = divmod(k, 3)
            acc += wq[:, k, None, None] * xp[:, dy:dy + 8, dx:dx + 8]
    else:
        acc = (wq @ xq.reshape(-1))[:, None, None]
    return acc / (s_in * ws[:, None, None]) + bias[:, None, None]


@pytest.mark.parametrize("layer", ["Convolution", "ConvolutionDepthWise", "InnerProduct"])
def test_one_quantised_layer_runs_in_ncnn_as_int8_arithmetic_says(tmp_path, layer):
    import ncnn

    from litedet.convert.quantize import TAG_INT8, read_weights, table_text, write_int8

    rng = np.random.default_rng(7)
    param, binf, w, bias, groups = _tiny_graph(tmp_path, layer, rng)
    _, weights = read_weights(param, binf)
    s_in = 127 / 3.0
    scales = write_int8(param, binf, weights, weights, {"conv": s_in}, "kl", tmp_path / "q.param", tmp_path / "q.bin")
    ws = scales["conv"]
    assert ws.shape == (groups,) and np.allclose(ws, 127 / np.abs(w).max(axis=1))
    assert "8=1" in (tmp_path / "q.param").read_text().splitlines()[-1].split()
    raw = (tmp_path / "q.bin").read_bytes()
    assert struct.unpack_from("<I", raw)[0] == TAG_INT8 and len(raw) == 4 + w.size + 4 * (len(bias) + groups + 1)
    assert table_text(scales, {"conv": s_in}).splitlines()[1] == f"conv {s_in:f}"

    x = rng.uniform(-3, 3, (8, 8, 8)).astype(np.float32)
    want = _int8_reference(layer, x, w.reshape(len(ws), -1), bias, ws, s_in).reshape(-1)
    step = float((1 / (s_in * ws)).max())  # one int8 step of the output
    for packing in (False, True):
        net = ncnn.Net()
        net.opt.use_fp16_storage = net.opt.use_fp16_packed = net.opt.use_fp16_arithmetic = False
        net.opt.use_int8_inference = True
        net.opt.use_packing_layout = packing
        assert net.load_param(str(tmp_path / "q.param")) == 0 and net.load_model(str(tmp_path / "q.bin")) == 0
        with net.create_extractor() as ex:
            ex.input("data", ncnn.Mat(x).clone())  # clone: Mat(ndarray) borrows the buffer
            got = np.array(ex.extract("out")[1]).reshape(-1).copy()
        # unpacked, ncnn's int8 kernels are exactly these int8 sums; packed (x86 depthwise, elempack
        # 8) they take another rounding path, within a few output steps
        tol = 1e-4 if not packing else 4 * step
        assert np.abs(got - want).max() <= tol, (packing, np.abs(got - want).max(), step)
    if layer == "Convolution":  # int8 is not fp32: the quantisation error shows, so the check is not vacuous
        fp32 = (np.einsum("oc,chw->ohw", w, x) + bias[:, None, None]).reshape(-1)
        assert np.abs(want - fp32).max() > 10 * 1e-4


def _quantize(*argv: str) -> int:
    from litedet.cli import main

    return main(["quantize", *argv, "--quiet"])


@pytest.fixture(scope="module")
def squeezenet(tmp_path_factory) -> Path:
    from litedet.cli import main

    need_reference(SQUEEZENET, PHOTOS)
    out = tmp_path_factory.mktemp("sq") / "fp16"
    assert main(["convert", "squeezenet1_1", "--checkpoint", str(SQUEEZENET / "squeezenet_v1.1.param"), "--out",
                 str(out), "--quiet", "--pixel-order", "bgr", "--mean", "104,117,123", "--norm", "1,1,1",
                 "--input-size", "227", "--resize", "stretch"]) == 0
    return out


@pytest.fixture(scope="module")
def calib(tmp_path_factory) -> Path:
    """Every 4th reference photo (100), linked: calibration never sees the other 300."""
    need_reference(PHOTOS)
    d = tmp_path_factory.mktemp("calib")
    for p in sorted(PHOTOS.glob("*.JPEG"))[::4]:
        (d / p.name).symlink_to(p)
    return d


@pytest.mark.reference
def test_int8_squeezenet_within_a_point_of_fp32_on_400_photos(squeezenet, calib, tmp_path):
    from litedet.convert.verify.evaluate import evaluate
    from litedet.runtime.bundle import Bundle

    out = tmp_path / "int8"
    assert _quantize(str(squeezenet), "--calib", str(calib), "--out", str(out), "--threads", "2") == 0
    b = Bundle.open(out)
    m = b.manifest
    assert m.weight_storage == "int8" and m.int8.method == "kl" and m.int8.calib_images == 100
    assert len(m.int8.int8_layers) == 26 and m.int8.fp_layers == [] and m.int8.plan == "all"
    assert (out / m.int8.table).is_file() and len((out / m.int8.table).read_text().splitlines()) == 52
    assert (out / m.bin).stat().st_size < 0.55 * (squeezenet / m.bin).stat().st_size
    r = evaluate(out, PHOTOS, backends=["ncnn-fp32", "ncnn-int8"], labels=("synset", str(SQUEEZENET / "synset_words.txt")),
                 progress=False, threads=2)
    fp32, int8 = r.backends["ncnn-fp32"]["top1"], r.backends["ncnn-int8"]["top1"]
    assert fp32 == pytest.approx(0.685, abs=0.005)
    assert abs(int8 - fp32) <= 0.01, (int8, fp32)
    assert int8 != fp32 or r.backends["ncnn-int8"]["agreement_top1"] < 1.0  # the int8 graph really ran


@pytest.mark.reference
def test_the_automatic_plan_reaches_its_target_on_nanodet(reexported_bundle, calib, tmp_path):
    from litedet.runtime.manifest import load_manifest

    out = tmp_path / "auto"
    assert _quantize(str(reexported_bundle), "--calib", str(calib), "--out", str(out), "--method", "minmax",
                     "--target-agreement", "0.95", "--limit", "40", "--threads", "2") == 0
    q = load_manifest(out).int8
    assert q.plan == "target-agreement" and q.target_agreement == 0.95 and q.agreement >= 0.95
    assert q.agreement_metric == "agreement mAP" and q.calib_images == 40
    assert 0 < len(q.fp_layers) < len(q.int8_layers) + len(q.fp_layers)
    # all-int8 misses the target, so the plan had something to do
    out2 = tmp_path / "all"
    assert _quantize(str(reexported_bundle), "--calib", str(calib), "--out", str(out2), "--method", "minmax",
                     "--limit", "40", "--threads", "2") == 0
    assert load_manifest(out2).int8.agreement < 0.95


def _one_line(capsys, code: int, *needles: str) -> None:
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, err


def test_bad_input_is_one_line_and_writes_nothing(seeded_bundle, calib, tmp_path, capsys):
    out = tmp_path / "out"
    empty = tmp_path / "empty"
    empty.mkdir()
    _one_line(capsys, _quantize(str(seeded_bundle), "--calib", str(empty), "--out", str(out)), "--calib", "no images")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.jpg").write_bytes(b"not a jpeg")
    _one_line(capsys, _quantize(str(seeded_bundle), "--calib", str(bad), "--out", str(out)), "a.jpg")
    _one_line(capsys, _quantize(str(seeded_bundle), "--calib", str(calib), "--out", str(out), "--keep-fp", "nope"),
              "--keep-fp 'nope'", "e.g.")
    _one_line(capsys, _quantize(str(seeded_bundle), "--calib", str(calib), "--out", str(out), "--method", "mse"),
              "--method 'mse'", "kl, aciq, minmax")
    _one_line(capsys, _quantize(str(seeded_bundle), "--calib", str(calib), "--out", str(out),
                                "--target-agreement", "1.5"), "(0, 1]")
    assert not out.exists() and not list(tmp_path.glob(".out*"))
    assert _quantize(str(seeded_bundle), "--calib", str(calib), "--out", str(out), "--limit", "4") == 0
    _one_line(capsys, _quantize(str(out), "--calib", str(calib), "--out", str(tmp_path / "again")), "already int8")
    assert not (tmp_path / "again").exists()


@pytest.mark.reference
def test_arm_costs_keep_the_layers_int8_makes_dearer_in_floating_point(seeded_bundle, calib, tmp_path):
    """quantize --arm-aware hands in the qemu per-layer counter; here a stand-in cost table: the
    layers whose int8 form costs at least their fp16 form stay fp, the rest go int8."""
    from litedet.convert.int8_bundle import quantize_bundle
    from litedet.ncnn_param import parse_param
    from litedet.runtime.manifest import load_manifest

    m = load_manifest(seeded_bundle)
    convs = [la.name for la in parse_param(seeded_bundle / m.param) if la.type.startswith("Convolution")]
    dearer = set(convs[:3])
    seen = []

    def costs(bundle_dir):
        seen.append(bundle_dir)
        int8 = load_manifest(bundle_dir).int8 is not None
        return [{"name": n, "insns": 1000 if (int8 and n in dearer) or not int8 else 500} for n in convs]

    r = quantize_bundle(seeded_bundle, calib, tmp_path / "q", method="minmax", limit=4, progress=False, arm_costs=costs)
    q = r.manifest.int8
    assert len(seen) == 2 and set(q.arm_fp_layers) == dearer and not dearer & set(q.int8_layers)
    assert len(q.int8_layers) == len(convs) - 3
    assert "8=1" not in next(ln for ln in (tmp_path / "q" / m.param).read_text().splitlines() if f" {convs[0]} " in ln)


@pytest.mark.reference
def test_an_int8_bundle_runs_through_detect_parity_and_assets(seeded_bundle, calib, tmp_path, capsys):
    from litedet.cli import main
    from litedet.runtime.devconfig import export_device_assets

    out = tmp_path / "q"
    assert _quantize(str(seeded_bundle), "--calib", str(calib), "--out", str(out), "--limit", "8") == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["weight_storage"] == "int8" and m["reference"]["fp32_param"].endswith(".param")
    capsys.readouterr()
    assert main(["detect", str(out), str(REFERENCE / "imagenet-sample" / "n01440764_tench.JPEG"), "--json"]) == 0
    assert main(["parity", str(out), "--out", str(tmp_path / "par"), "--quiet"]) in (0, 1)
    rep = json.loads((tmp_path / "par" / "parity.json").read_text())
    assert "ncnn_int8" in rep["images"][0]["tensors"] and "ncnn_fp16" not in rep["images"][0]["tensors"]
    cfg = {ln.split("=", 1)[0]: ln.split("=", 1)[1] for ln in
           export_device_assets(out, tmp_path / "a", name="m")[-1].read_text().splitlines() if "=" in ln}
    assert cfg["precision"] == "int8"
    cfg32 = export_device_assets(out, tmp_path / "a32", name="m", fp32=True)[-1].read_text()
    assert "precision=fp32" in cfg32 and "8=1" not in (tmp_path / "a32" / "m.param").read_text()


@pytest.mark.arm
def test_an_int8_bundle_on_emulated_arm(arm_env, int8_bundle, photos, tmp_path):
    """ARM's int8 kernels (dot product) under qemu: parity against x86 fp32 and torch within the int8
    bounds, and eval's arm-int8 backend against the fp32 graph."""
    from litedet.convert.verify.arm import arm_parity
    from litedet.convert.verify.evaluate import evaluate

    rep = arm_parity(int8_bundle, [("coffee", photos["coffee"])], env=arm_env, progress=False)
    assert rep.passed, rep.failures
    assert rep.thresholds.min_cosine == 0.95  # the int8 bounds
    r = evaluate(int8_bundle, PHOTOS, backends=["ncnn-fp32", "ncnn-int8", "arm-int8"], limit=3, arm_images=3,
                 progress=False, arm_env=arm_env)
    assert r.backends["arm-int8"]["images"] == 3 and "int8 layers" in r.backends["arm-int8"]["note"]
    assert r.backends["arm-int8"]["AP"] > 0.7 and r.backends["ncnn-int8"]["AP"] > 0.7
