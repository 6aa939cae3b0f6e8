"""A new model family is added files, not edits: this test registers a tiny
family (a few layers, its own postprocess kind, its own parity check) from this
file alone, converts it with the one pipeline and runs parity on it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from litedet.convert.families import DeploySpec, FamilyAdapter, calibration_batch, register_adapter, unregister_adapter
from litedet.convert.pipeline import convert_model
from litedet.convert.verify.checks import ResultCheck
from litedet.convert.verify.torch_parity import format_report, run_parity
from litedet.models.registry import register_model, unregister_model
from litedet.runtime.kinds import KindSpec, PostprocessKind, register_kind, unregister_kind
from litedet.runtime.manifest import InputSpec, ManifestError, OutputSpec, ResizeSpec, load_manifest
from litedet.runtime.runner import open_bundle

STRIDE, CLASSES = 4, ("dot", "ring", "cross")


# -- the runtime side: a postprocess kind "peaks" (one peak per class) -------------------

@dataclass
class Peak:
    label: int
    name: str
    x: float  # original-image pixels
    y: float
    score: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(kw_only=True)
class PeakSpec(KindSpec):
    kind: str = "test_peaks"
    stride: int
    score_threshold: float


def _validate(m) -> None:
    (o,) = m.outputs_with_role("heatmap")
    if o.channels != m.num_classes or o.stride != m.postprocess.stride:
        raise ValueError(f"output {o.blob!r} must have {m.num_classes} columns at stride {m.postprocess.stride}")


def _decode(m, outputs, lb) -> list[Peak]:
    (o,) = m.outputs_with_role("heatmap")
    s = m.postprocess.stride
    heat = outputs[o.blob].reshape(lb.in_h // s, lb.in_w // s, m.num_classes)
    out = []
    for c in range(m.num_classes):
        idx = int(np.argmax(heat[:, :, c]))
        y, x = divmod(idx, heat.shape[1])
        score = float(heat[y, x, c])
        if score > m.postprocess.score_threshold:
            sx, sy = lb.resized_w / lb.src_w, lb.resized_h / lb.src_h
            px = min(max(((x + 0.5) * s - lb.pad_left) / sx, 0.0), lb.src_w)  # clipped, as boxes are
            py = min(max(((y + 0.5) * s - lb.pad_top) / sy, 0.0), lb.src_h)
            out.append(Peak(c, m.class_names[c], px, py, score))
    return out


# -- the model: a few layers, deploy output [H*W, classes] with the sigmoid applied ------

class TinyPeaks(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.num_classes = len(CLASSES)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Conv2d(8, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Conv2d(8, self.num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.head(self.body(x))).flatten(2).permute(0, 2, 1)


# -- the convert side: adapter and parity check -------------------------------------------

class PeakCheck(ResultCheck):
    header = f"{'peaks r/t':>9} {'same':>5} {'dScore':>7}"

    def compare(self, m, name, key, ref_out, test_out, ref_res, test_res, stats, lim):
        same = [(p.label, round(p.x, 3), round(p.y, 3)) for p in ref_res] == \
               [(p.label, round(p.x, 3), round(p.y, 3)) for p in test_res]
        dscore = max((abs(a.score - b.score) for a, b in zip(ref_res, test_res)), default=0.0)
        record = {"reference": len(ref_res), "test": len(test_res), "same_peaks": same, "max_score_diff": dscore}
        bad = not same or dscore > lim.max_score_diff
        return record, (f"{name}: {key} peaks differ: {record}" if bad else None)

    def row(self, r) -> str:
        return f"{r['reference']:>4}/{r['test']:<4} {'yes' if r['same_peaks'] else 'NO':>5} {r['max_score_diff']:>7.4f}"


class PeaksAdapter(FamilyAdapter):
    family = "test_peaks"
    kind = "test_peaks"
    check = PeakCheck()

    def seed(self, model, info, seed, input_size):
        from litedet.models.init import seeded_random_weights

        seeded_random_weights(model, seed, calibration_batch((0, 0, 0), (255, 255, 255), input_size))

    def deploy_spec(self, model, info, input_size, graph, class_names, options):
        return DeploySpec(
            task="keypoints",
            input=InputSpec(graph.input_name, "bgr", [0.0, 0.0, 0.0], [1 / 255] * 3),
            resize=ResizeSpec(target=input_size, pad_multiple=32, pad_mode="stride_multiple" if graph.dynamic else "fixed"),
            outputs=[OutputSpec(graph.output_names[0], "heatmap", STRIDE, len(class_names))],
            postprocess=PeakSpec(stride=STRIDE, score_threshold=0.0),
            class_names=list(class_names),
        )


# -- the device side: the kind's NAME.cfg values; its key table and C++ live in tests/fixtures/cpp ----

DEVICE = Path(__file__).resolve().parent / "fixtures" / "cpp"


def _device_values(m, names) -> dict:
    (o,) = m.outputs_with_role("heatmap")
    return {"heat_blob": o.blob, "stride": m.postprocess.stride, "score_threshold": m.postprocess.score_threshold}


@pytest.fixture(scope="module")
def tiny_family():
    register_kind(PostprocessKind("test_peaks", "keypoints", PeakSpec, ("heatmap",), _validate, _decode,
                                  device_values=_device_values, device_keys=DEVICE / "litedet_test_peaks_keys.h"))
    register_model("tiny_peaks", family="test_peaks", task="keypoints", input_size=64, strides=(STRIDE,),
                   outputs=(("heatmap", STRIDE),))(lambda: TinyPeaks())
    register_adapter(PeaksAdapter())
    yield "tiny_peaks"
    unregister_adapter("test_peaks")
    unregister_model("tiny_peaks")
    unregister_kind("test_peaks")


@pytest.fixture(scope="module")
def tiny_bundle(tiny_family, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny") / "bundle"
    convert_model(tiny_family, out, class_names=list(CLASSES), progress=False)
    return out


def test_a_registered_family_converts_with_the_one_pipeline(tiny_bundle):
    m = load_manifest(tiny_bundle)
    assert (m.task, m.postprocess.kind, m.postprocess.stride, m.class_names) == ("keypoints", "test_peaks", 4, list(CLASSES))
    assert m.outputs[0].role == "heatmap" and m.reference["verify_fp32"]
    assert (tiny_bundle / "reference" / "model.torchscript.pt").is_file()


def test_the_runtime_decodes_it_by_its_kind(tiny_bundle, photos):
    peaks = open_bundle(tiny_bundle).run(photos["chelsea"])
    assert [p.name for p in peaks] == list(CLASSES)
    h, w = photos["chelsea"].shape[:2]
    assert all(0 <= p.x <= w and 0 <= p.y <= h for p in peaks)


def test_parity_runs_its_own_check(tiny_bundle, photos):
    rep = run_parity(tiny_bundle, images=[("chelsea", photos["chelsea"]), ("coffee", photos["coffee"])], progress=False)
    text = format_report(rep)
    assert rep.passed, text
    assert rep.kind == "test_peaks" and "peaks r/t" in text
    for ip in rep.images:
        assert ip.results["ncnn_fp32"]["same_peaks"] and ip.results["ncnn_fp32"]["reference"] == 3
        assert {s.blob for s in ip.tensors["ncnn_fp16"]} == {load_manifest(tiny_bundle).outputs[0].blob}


def test_its_check_can_fail(tiny_bundle):
    """Peaks moved by the test side are caught (the check is not vacuous)."""
    m = load_manifest(tiny_bundle)
    ref = [Peak(0, "dot", 10.0, 10.0, 0.9)]
    moved = [Peak(0, "dot", 14.0, 10.0, 0.9)]
    from litedet.convert.verify.torch_parity import ParityThresholds

    rec, why = PeakCheck().compare(m, "x", "ncnn_fp16", {}, {}, ref, moved, [], ParityThresholds().limits("ncnn_fp16"))
    assert why and not rec["same_peaks"]


def test_an_unregistered_kind_is_a_clear_manifest_error(tiny_bundle, tmp_path):
    import json
    import shutil

    b = tmp_path / "b"
    shutil.copytree(tiny_bundle, b)
    d = json.loads((b / "manifest.json").read_text())
    d["postprocess"]["kind"] = "nope"
    (b / "manifest.json").write_text(json.dumps(d))
    with pytest.raises(ManifestError, match="unknown postprocess kind 'nope'"):
        load_manifest(b)


def test_the_kind_plugs_into_the_device_too(tiny_bundle, photos, tmp_path):
    """The kind's C++ (tests/fixtures/cpp only) is compiled into the host litedet_cpp through the
    kind registry and run by the same runner: its peaks equal the Python kind's."""
    import cv2

    from conftest import need_ncnn_lib
    from litedet.benchmarks.cpp import build_litedet_cpp, litedet_cpp_sources, run_cpp
    from litedet.runtime.devconfig import export_device_assets

    need_ncnn_lib("x86_64")
    root = Path(__file__).resolve().parents[1]
    kind_cpp = DEVICE / "litedet_test_peaks_ncnn.cpp"
    sources = litedet_cpp_sources((kind_cpp,))
    # the build takes the repository's driver, runner, kinds and core as they are, plus this file
    assert [p for p in sources if p.is_relative_to(root / "tests")] == [kind_cpp]
    assert [p for p in sources if not p.is_relative_to(root / "tests")] == litedet_cpp_sources()
    # and nothing outside the test tree knows the kind
    for folder in ("android_demo", "runtime", "convert", "litedet", "models", "benchmarks"):
        for f in (root / folder).rglob("*"):
            if f.suffix in (".py", ".h", ".cpp", ".txt", ".md", ".java"):
                assert "test_peaks" not in f.read_text(errors="replace"), f
    binary = build_litedet_cpp("x86_64", kinds=(kind_cpp,))
    export_device_assets(tiny_bundle, tmp_path / "assets", "peaks")
    for name in ("chelsea", "coffee"):
        png = tmp_path / f"{name}.png"
        cv2.imwrite(str(png), photos[name])
        (out,) = run_cpp(binary, ["detect", str(tmp_path / "assets"), str(png), "--fp32"])
        py = open_bundle(tiny_bundle, fp16=False).run(photos[name])
        cpp = out["detections"]
        assert [int(d[5]) for d in cpp] == [p.label for p in py] and len(py) == 3
        for d, p in zip(cpp, py):
            assert d[0] == d[2] and d[1] == d[3]  # a point
            assert abs(d[0] - p.x) < 1e-3 and abs(d[1] - p.y) < 1e-3 and abs(d[4] - p.score) < 1e-4, (d, p)
