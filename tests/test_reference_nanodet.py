"""Our NanoDet-m *is* the official NanoDet-m: official ncnn weights import into
the PyTorch definition and reproduce the official model; the re-exported fp16
bundle detects what the official model detects (the acceptance test)."""

from __future__ import annotations

import shutil

import ncnn
import numpy as np
import pytest
import torch

from conftest import NANODET416_PARAM, NANODET_BIN, NANODET_PARAM, need_reference
from litedet.convert.verify.compare import match_detections
from litedet.convert.verify.torch_parity import run_parity
from litedet.models import create_model, load_checkpoint
from litedet.models.ncnn_import import NcnnImportError, import_ncnn_weights, parse_param
from litedet.runtime.detector import Detector

pytestmark = pytest.mark.reference


@pytest.fixture(scope="module")
def imported():
    need_reference(NANODET_PARAM, NANODET_BIN)
    m = create_model("nanodet_m").eval()
    rep = load_checkpoint(m, NANODET_PARAM)
    assert rep.kind == "ncnn" and rep.details == {"convolutions": 73, "batchnorms_as_bias": 67}
    return m


def _official_outputs(chw: np.ndarray, param=NANODET_PARAM) -> dict[str, np.ndarray]:
    net = ncnn.Net()
    net.opt.use_fp16_storage = net.opt.use_fp16_packed = net.opt.use_fp16_arithmetic = False
    net.load_param(str(param))
    net.load_model(str(param.with_suffix(".bin")))
    out = {}
    with net.create_extractor() as ex:
        ex.input("input.1", ncnn.Mat(chw).clone())
        for name in net.output_names():
            out[name] = np.array(ex.extract(name)[1]).copy()
    return out


def test_imported_pytorch_model_reproduces_official_ncnn_outputs(imported, official_bundle, photos):
    det = Detector.from_bundle(official_bundle, fp16=False)
    names = imported.deploy_output_names()
    worst = {}
    for pname, img in photos.items():
        chw, lb = det.preprocess_array(img)
        assert chw.shape[1:] == (lb.in_h, lb.in_w)
        ref = _official_outputs(chw)
        with torch.no_grad():
            ours = imported.forward_deploy(torch.from_numpy(chw)[None])
        for n, o in zip(names, ours):
            err = float(np.abs(ref[n] - o[0].numpy()).max())
            worst[n] = max(worst.get(n, 0.0), err)
    print("max abs error, PyTorch (imported) vs official ncnn, 4 photos:", worst)
    assert max(v for k, v in worst.items() if k.startswith("cls")) < 1e-4
    assert max(v for k, v in worst.items() if k.startswith("dis")) < 1e-3


def test_416_weights_import_too():
    need_reference(NANODET416_PARAM)
    m = create_model("nanodet_m").eval()
    load_checkpoint(m, NANODET416_PARAM)
    x = np.random.RandomState(0).randn(3, 416, 288).astype(np.float32)
    ref = _official_outputs(x, NANODET416_PARAM)
    with torch.no_grad():
        ours = m.forward_deploy(torch.from_numpy(x)[None])
    assert float(np.abs(ref["dis_pred_stride_8"] - ours[3][0].numpy()).max()) < 1e-3


def test_import_into_the_wrong_architecture_names_the_layer():
    need_reference(NANODET_PARAM)
    with pytest.raises(NcnnImportError) as e:
        import_ncnn_weights(create_model("nanodet_m_1.5x"), NANODET_PARAM, NANODET_BIN)
    msg = str(e.value)
    assert "convolution #" in msg and "Conv_" in msg and "backbone." in msg


def test_import_refuses_a_truncated_bin(tmp_path):
    need_reference(NANODET_PARAM)
    param = tmp_path / "m.param"
    shutil.copy(NANODET_PARAM, param)
    (tmp_path / "m.bin").write_bytes(NANODET_BIN.read_bytes()[:100_000])
    with pytest.raises(NcnnImportError, match="bin ends before"):
        import_ncnn_weights(create_model("nanodet_m"), param, tmp_path / "m.bin")


def test_param_parser_reads_arrays_and_counts():
    need_reference(NANODET_PARAM)
    layers = parse_param(NANODET_PARAM)
    conv0 = layers[1]
    assert conv0.type == "Convolution" and conv0.p(0) == 24 and conv0.p(9) == 2 and conv0.p(10) == [0.1]
    assert sum(l.type == "ShuffleChannel" for l in layers) == 16


def test_reexported_fp16_bundle_detects_what_the_official_model_detects(official_bundle, reexported_bundle, photos):
    """Acceptance: same labels, IoU >= 0.9, score difference <= 0.02 on the four photos."""
    official = Detector.from_bundle(official_bundle, fp16=True)
    ours = Detector.from_bundle(reexported_bundle, fp16=True)
    assert ours.manifest.weight_storage == "fp16"
    total = 0
    for name, img in photos.items():
        a, b = official.detect(img), ours.detect(img)
        print(name, [(d.name, round(d.score, 3)) for d in a])
        assert [d.name for d in a] == [d.name for d in b], name
        m = match_detections(a, b, match_iou=0.5)
        assert m.matched == len(a) == len(b), name
        assert m.min_iou >= 0.9 and m.max_score_diff <= 0.02, (name, m)
        total += len(a)
    assert total >= 4  # real objects were found: person, cat, cup, motorcycle...
    found = {d.name for img in photos.values() for d in official.detect(img)}
    assert {"person", "cat", "cup"} <= found


def test_parity_report_passes_on_official_weights(reexported_bundle, photos, tmp_path):
    r = run_parity(reexported_bundle, images=list(photos.items()), out_dir=tmp_path, progress=False)
    assert r.passed, r.failures
    fp16 = [s for ip in r.images for s in ip.tensors["ncnn_fp16"]]
    assert min(s.cosine for s in fp16) > 0.9999
    assert sum(ip.results["ncnn_fp16"].matched for ip in r.images) >= 4
    assert (tmp_path / "parity.json").is_file() and (tmp_path / "parity_astronaut.jpg").is_file()


def test_onnx_route_bundle_passes_parity_on_official_weights(tmp_path, photos):
    need_reference(NANODET_PARAM)
    from litedet.convert.pipeline import convert_model

    r = convert_model("nanodet_m", tmp_path / "b", checkpoint=NANODET_PARAM, route="onnx", progress=False)
    assert r.manifest.resize.pad_mode == "fixed"  # pnnx's ONNX path only converts at one size
    rep = run_parity(r.bundle, images=list(photos.items())[:2], progress=False)
    assert rep.passed, rep.failures
    assert all(ip.input_size == [320, 320] for ip in rep.images)


def test_wrap_takes_the_default_input_size_from_the_registry(tmp_path):
    """`wrap --arch nanodet_m_1.5x` is a 416 model (the registry's size), `nanodet_m` a 320 one."""
    need_reference(NANODET416_PARAM)
    from litedet.cli import main
    from litedet.models import model_info
    from litedet.runtime.manifest import load_manifest

    for arch, param in (("nanodet_m", NANODET_PARAM), ("nanodet_m_1.5x", NANODET416_PARAM)):
        out = tmp_path / arch
        assert main(["wrap", str(param), "--arch", arch, "--out", str(out)]) == 0
        assert load_manifest(out).resize.target == model_info(arch).input_size
    assert load_manifest(tmp_path / "nanodet_m_1.5x").resize.target == 416


def test_wrap_refuses_an_architecture_of_another_family(tmp_path):
    need_reference(NANODET_PARAM)
    from litedet.convert.bundle import ConvertError
    from litedet.convert.families.nanodet_wrap import wrap_ncnn_model

    with pytest.raises(ConvertError, match="mobilenet_v2 is a 'classifier' model"):
        wrap_ncnn_model(NANODET_PARAM, NANODET_BIN, tmp_path / "w", arch="mobilenet_v2")
