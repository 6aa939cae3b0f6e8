"""Python <-> C++ postprocessing parity: the on-device C++ core
(android_demo/app/src/main/cpp/litedet_gfl.*, litedet_boxes.*, litedet_letterbox.*) against
runtime/kinds/gfl.py:postprocess_outputs.

Same raw tensors in, same detections out: the same count, labels, names and order, scores
equal to 1e-4, and box coordinates equal to 1e-4 network-input pixels (i.e. scaled by the
letterbox's src/resized factor, because float32 cannot resolve 1e-4 on a 2000-pixel image)
plus 2 float32 ulps of the coordinate itself.
The config always reaches C++ as NAME.cfg text, so its reader runs in every comparison.

numpy's SIMD expf and libm's expf differ by up to 2 ulp, so distances (never scores) may
differ in the last bits; the property tests are derandomized so a run is reproducible.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import NANODET_BIN, NANODET_PARAM, need_reference
from litedet.runtime.detector import Detector, postprocess_outputs
from litedet.runtime.results import Detection
from litedet.runtime.devconfig import device_config_text
from litedet.runtime.manifest import Manifest, load_manifest
from litedet.runtime.boxes import nms
from litedet.runtime.kinds.gfl import distribution_to_distance
from litedet.runtime.letterbox import RESIZE_ALIGNS, Letterbox, letterbox_geometry

PROPS = settings(max_examples=40, deadline=None, derandomize=True,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
TIE_SCORES = np.array([0.0, 0.125, 0.25, 0.3, 0.35, 0.5, 0.75, 0.9, 1.0], np.float32)
SCORE_TOL = 1e-4
BOX_TOL = 1e-4  # network-input pixels


# ---------------------------------------------------------------------------
# fixtures and helpers
# ---------------------------------------------------------------------------

@pytest.fixture(scope="session")
def cpp(tmp_path_factory):
    """The C++ core built once per session into a fresh cache dir."""
    from litedet.convert.verify.cpp_core import CppCore, build_core

    if shutil.which("g++") is None:
        msg = "no C++ compiler (g++) on PATH: the C++ core cannot be built"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return CppCore(build_core(tmp_path_factory.mktemp("cpp-cache")))


@pytest.fixture(scope="module")
def base(seeded_bundle) -> Manifest:
    return load_manifest(seeded_bundle)


def variant(m: Manifest, *, reg_max: int | None = None, num_classes: int | None = None, class_names=None,
            target: int | None = None, pad_mode: str | None = None, policy: str | None = None, **post) -> Manifest:
    """A validated copy of ``m`` with other GFL parameters, classes or input size."""
    m = copy.deepcopy(m)
    p = m.postprocess
    for k, v in post.items():
        assert hasattr(p, k), k
        setattr(p, k, v)
    if reg_max is not None:
        p.reg_max = reg_max
    if class_names is None and num_classes is not None:
        class_names = [f"class {i}" for i in range(num_classes)]  # spaces survive the cfg
    if class_names is not None:
        m.class_names = list(class_names)
    if target is not None:
        m.resize.target = target
    if pad_mode is not None:
        m.resize.pad_mode = pad_mode
    if policy is not None:
        m.resize.policy = policy
        if policy == "stretch":
            m.resize.pad_mode = "fixed"
    for o in m.outputs:
        o.channels = m.num_classes if o.role == "cls_scores" else 4 * (p.reg_max + 1)
    return m.validate()


def geometry(m: Manifest, w: int, h: int) -> Letterbox:
    r = m.resize
    return letterbox_geometry(w, h, r.target, r.pad_multiple, fixed=r.pad_mode == "fixed", policy=r.policy)


def random_outputs(m: Manifest, lb: Letterbox, rng: np.random.Generator, scores: str = "uniform",
                   logits: str = "normal") -> dict[str, np.ndarray]:
    p, out = m.postprocess, {}
    bins = p.reg_max + 1
    for s in p.strides:
        n = -(-lb.in_w // s) * -(-lb.in_h // s)
        c = m.num_classes
        if scores == "uniform":
            sc = rng.random((n, c), dtype=np.float32)
        elif scores == "sparse":  # few above threshold, like a real detector
            sc = rng.random((n, c), dtype=np.float32) ** 6
        elif scores == "ties":  # argmax ties, equal scores across cells, score == threshold
            sc = rng.choice(TIE_SCORES, size=(n, c))
        else:  # quantised to 1/16: many exact ties
            sc = (rng.integers(0, 17, size=(n, c)) / 16).astype(np.float32)
        if logits == "normal":
            dl = rng.standard_normal((n, 4 * bins)).astype(np.float32) * np.float32(rng.choice([0.5, 3.0, 10.0]))
        elif logits == "integers":  # repeated logit rows: identical boxes, IoU exactly 1
            dl = rng.integers(-3, 4, size=(n, 4 * bins)).astype(np.float32)
        else:  # one-hot: exp is exact (1 and 0), so distances are whole bins and IoUs are exact
            dl = np.full((n, 4, bins), -1000.0, np.float32)
            hot = rng.integers(0, bins, size=(n, 4))
            np.put_along_axis(dl, hot[..., None], 0.0, axis=2)
            dl = dl.reshape(n, 4 * bins)
        out[m.output("cls_scores", s).blob] = np.ascontiguousarray(sc, dtype=np.float32)
        out[m.output("dist_logits", s).blob] = np.ascontiguousarray(dl, dtype=np.float32)
    return out


def assert_same(py: list[Detection], cc: list[Detection], lb: Letterbox) -> tuple[float, float]:
    """Identical detections; returns (max box diff in network-input pixels, max score diff)."""
    assert len(cc) == len(py), f"C++ gave {len(cc)} detections, Python {len(py)}"
    assert [d.label for d in cc] == [d.label for d in py], "labels or order differ"
    assert [d.name for d in cc] == [d.name for d in py]
    if not py:
        return 0.0, 0.0
    a = np.array([[d.x1, d.y1, d.x2, d.y2] for d in py], np.float64)
    b = np.array([[d.x1, d.y1, d.x2, d.y2] for d in cc], np.float64)
    scale = np.array([lb.resized_w / lb.src_w, lb.resized_h / lb.src_h] * 2)  # image px -> input px
    diff = np.abs(a - b)
    ulps = 2 * np.spacing(np.maximum(np.abs(a), np.abs(b)).astype(np.float32)).astype(np.float64)
    bad = diff > BOX_TOL / scale + ulps
    assert not bad.any(), f"boxes differ by up to {diff[bad].max()} image pixels (scale {scale[:2]})"
    box = float((diff * scale).max())
    score = float(np.abs(np.array([d.score for d in py]) - np.array([d.score for d in cc])).max())
    assert score <= SCORE_TOL, f"scores differ by {score}"
    return box, score


def compare(cpp, m: Manifest, outputs: dict[str, np.ndarray], lb: Letterbox) -> list[Detection]:
    py = postprocess_outputs(m, outputs, lb)
    cc = cpp.kind("gfl").postprocess(m, outputs, lb)
    assert_same(py, cc, lb)
    return py


# ---------------------------------------------------------------------------
# the library itself
# ---------------------------------------------------------------------------

def test_cpp_core_module_imports_without_torch():
    code = ("import sys; sys.modules['torch'] = None\n"
            "import litedet.convert.verify.cpp_core as c\n"
            "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
            "print('ok')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


def test_build_is_cached_by_source_hash_and_refuses_fast_math(cpp, tmp_path):
    from litedet.convert.verify.cpp_core import CppBuildError, build_core

    assert build_core(cpp.lib_path.parent) == cpp.lib_path  # cached: no rebuild
    assert not list(cpp.lib_path.parent.glob(".*.tmp")), "temporary build files left behind"
    with pytest.raises(ValueError, match="fast-math"):
        build_core(tmp_path, extra_flags=("-ffast-math",))
    with pytest.raises(CppBuildError, match="not found"):
        build_core(tmp_path, cxx="no-such-compiler-xyz")
    with pytest.raises(CppBuildError, match=r"compiling the C\+\+ core failed"):
        build_core(tmp_path, extra_flags=("-fno-such-option-litedet",))
    assert not list(tmp_path.iterdir()), "a failed build left files in the cache"


# ---------------------------------------------------------------------------
# letterbox_geometry
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("fixed", [False, True])
def test_letterbox_geometry_equals_python_for_known_shapes(cpp, fixed):
    shapes = [(640, 480), (480, 640), (500, 500), (1920, 1080), (1080, 1920), (1, 1), (1, 1000), (1000, 1),
              (3, 2), (2, 3), (7, 31), (31, 7), (100_000, 3), (3, 100_000), (40_000, 30_000), (319, 320), (321, 1)]
    for w, h in shapes:
        for target, multiple in ((320, 32), (416, 32), (320, 64), (96, 32), (7, 1)):
            for policy in RESIZE_ALIGNS:
                assert cpp.letterbox_geometry(w, h, target, multiple, fixed, policy) == \
                    letterbox_geometry(w, h, target, multiple, fixed, policy)


@PROPS
@given(w=st.integers(1, 60_000), h=st.integers(1, 60_000), multiple=st.sampled_from([1, 2, 8, 16, 32, 64]),
       k=st.integers(1, 40), fixed=st.booleans(), policy=st.sampled_from(RESIZE_ALIGNS))
def test_letterbox_geometry_equals_python_for_any_size(cpp, w, h, multiple, k, fixed, policy):
    assert cpp.letterbox_geometry(w, h, multiple * k, multiple, fixed, policy) == \
        letterbox_geometry(w, h, multiple * k, multiple, fixed, policy)


def test_resize_policies_place_the_image_as_documented():
    for policy, pad in (("letterbox", (0, 60)), ("letterbox_top_left", (0, 0))):
        lb = letterbox_geometry(640, 400, 320, 32, fixed=True, policy=policy)
        assert (lb.resized_w, lb.resized_h, lb.in_w, lb.in_h, lb.pad_left, lb.pad_top) == (320, 200, 320, 320, *pad)
    lb = letterbox_geometry(640, 400, 320, 32, fixed=True, policy="stretch")
    assert (lb.resized_w, lb.resized_h, lb.pad_left, lb.pad_top, lb.pad_right, lb.pad_bottom) == (320, 320, 0, 0, 0, 0)


@pytest.mark.parametrize("args", [(0, 100, 320, 32), (100, 0, 320, 32), (-5, 100, 320, 32), (100, 100, 330, 32),
                                  (100, 100, 0, 32), (100, 100, 320, 0)])
def test_letterbox_geometry_bad_input_raises_value_error_in_both(cpp, args):
    with pytest.raises(ValueError):
        letterbox_geometry(*args)
    with pytest.raises(ValueError):
        cpp.letterbox_geometry(*args)


# ---------------------------------------------------------------------------
# NAME.cfg
# ---------------------------------------------------------------------------

def _assert_config_matches_manifest(got: dict, m: Manifest) -> None:
    f32 = np.float32
    p, r = m.postprocess, m.resize
    assert (got["architecture"], got["variant"], got["param"], got["bin"]) == (m.architecture, m.variant, "m.param", "m.bin")
    assert (got["input_blob"], got["pixel_format"], got["pad_mode"]) == (m.input.blob, m.input.pixel_format, r.pad_mode)
    assert [f32(v) for v in got["mean"]] == [f32(v) for v in m.input.mean]
    assert [f32(v) for v in got["norm"]] == [f32(v) for v in m.input.norm]
    assert (got["target_size"], got["pad_multiple"], f32(got["pad_value"])) == (r.target, r.pad_multiple, f32(r.pad_value))
    assert got["strides"] == list(p.strides)
    assert got["cls_blobs"] == [m.output("cls_scores", s).blob for s in p.strides]
    assert got["dis_blobs"] == [m.output("dist_logits", s).blob for s in p.strides]
    assert got["reg_max"] == p.reg_max
    for k in ("center_offset", "score_threshold", "nms_threshold"):  # np.float32(python float), bit for bit
        assert f32(got[k]) == f32(getattr(p, k)), k
    assert (got["class_agnostic_nms"], got["multi_label"]) == (p.class_agnostic_nms, p.multi_label)
    assert (got["max_detections"], got["num_classes"], got["class_names"]) == (p.max_detections, m.num_classes, m.class_names)


def test_config_round_trip_for_the_bundle_and_variants(cpp, base):
    manifests = [base,
                 variant(base, reg_max=0, num_classes=1, score_threshold=0.0, nms_threshold=1.0, center_offset=0.0,
                         class_agnostic_nms=True, multi_label=True, max_detections=1),
                 variant(base, reg_max=16, class_names=["traffic light", "a b c", "x"], score_threshold=0.1,
                         nms_threshold=0.45, max_detections=3000, target=416, pad_mode="fixed")]
    for m in manifests:
        _assert_config_matches_manifest(cpp.parse_config_text(device_config_text(m, "m.param", "m.bin")), m)


def test_config_reader_accepts_crlf_comments_and_blank_lines(cpp, base):
    text = device_config_text(base, "m.param", "m.bin")
    messy = "\n# a comment\n\n" + "\r\n".join(("  " + line if i % 3 == 0 else line) for i, line in enumerate(text.splitlines()))
    assert cpp.parse_config_text(messy) == cpp.parse_config_text(text)


REQUIRED_KEYS = ["version", "architecture", "variant", "param", "bin", "input_blob", "pixel_format", "mean", "norm",
                 "target_size", "pad_multiple", "pad_mode", "pad_value", "strides", "cls_blobs", "dis_blobs", "reg_max",
                 "center_offset", "score_threshold", "nms_threshold", "class_agnostic_nms", "multi_label",
                 "max_detections", "num_classes", "class_names", "resize_policy", "clamp_to_input", "pad_normalized"]


@pytest.mark.parametrize("key", REQUIRED_KEYS)
def test_config_missing_key_is_an_error_naming_the_key(cpp, base, key):
    from litedet.convert.verify.cpp_core import CppConfigError

    text = device_config_text(base, "m.param", "m.bin")
    lines = [line for line in text.splitlines() if not line.startswith(key + "=")]
    assert len(lines) == len(text.splitlines()) - 1
    with pytest.raises(CppConfigError, match=f"'{key}' is missing"):
        cpp.parse_config_text("\n".join(lines))


@pytest.mark.parametrize("key,value,match", [
    ("reg_max", "seven", "'reg_max'"),
    ("reg_max", "-1", "'reg_max'"),
    ("score_threshold", "1.5", "'score_threshold'"),
    ("nms_threshold", "0,6", "'nms_threshold'"),
    ("mean", "1,2,x", "'mean'"),
    ("strides", "8,,32", "'strides'"),
    ("multi_label", "yes", "'multi_label'"),
    ("pixel_format", "yuv", "'pixel_format'"),
    ("pad_mode", "stretch", "'pad_mode'"),
    ("num_classes", "79", "'class_names'"),
    ("cls_blobs", "a,b", "'cls_blobs'"),
    ("version", "1", "'version'"),
    ("precision", "int4", "'precision'"),
    ("resize_policy", "crop", "'resize_policy'"),
    ("clamp_to_input", "maybe", "'clamp_to_input'"),
    ("target_size", "330", "'target_size'"),
])
def test_config_bad_value_is_an_error_naming_the_key(cpp, base, key, value, match):
    from litedet.convert.verify.cpp_core import CppConfigError

    text = device_config_text(base, "m.param", "m.bin")
    bad = "\n".join(f"{key}={value}" if line.startswith(key + "=") else line for line in text.splitlines())
    with pytest.raises(CppConfigError, match=match):
        cpp.parse_config_text(bad)


def test_config_duplicate_key_and_garbage_line_are_errors(cpp, base):
    from litedet.convert.verify.cpp_core import CppConfigError

    text = device_config_text(base, "m.param", "m.bin")
    with pytest.raises(CppConfigError, match="'reg_max' appears twice"):
        cpp.parse_config_text(text + "reg_max=7\n")
    with pytest.raises(CppConfigError, match="not key=value"):
        cpp.parse_config_text(text + "just some words\n")


# ---------------------------------------------------------------------------
# the pure steps
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("reg_max", range(0, 17))
def test_distribution_to_distance_matches_numpy(cpp, reg_max):
    rng = np.random.default_rng(reg_max)
    x = (rng.standard_normal((300, 4 * (reg_max + 1))) * rng.choice([0.1, 3.0, 30.0], size=(300, 1))).astype(np.float32)
    # only exp differs (numpy SIMD expf vs libm expf, <= 2 ulp): a few ulp of reg_max at most
    np.testing.assert_allclose(cpp.kind("gfl").distribution_to_distance(x, reg_max), distribution_to_distance(x, reg_max),
                               rtol=0, atol=8 * np.finfo(np.float32).eps * max(reg_max, 1))
    # where exp is exact (one-hot logits) the pairwise sums make C++ bit-identical to numpy
    hot = np.full((50, 4, reg_max + 1), -1000.0, np.float32)
    np.put_along_axis(hot, rng.integers(0, reg_max + 1, (50, 4, 1)), 0.0, axis=2)
    hot[:5, :, :] = 0.25  # uniform rows: exp(0) = 1 everywhere
    hot = hot.reshape(50, -1)
    np.testing.assert_array_equal(cpp.kind("gfl").distribution_to_distance(hot, reg_max), distribution_to_distance(hot, reg_max))


@st.composite
def _nms_case(draw):
    n = draw(st.integers(0, 60))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    xy = rng.integers(0, 64 * 4, (n, 2))
    wh = rng.integers(0, 24 * 4, (n, 2))
    boxes = (np.concatenate([xy, xy + wh], axis=1) / 4).astype(np.float32)  # exact in float32
    if n and draw(st.booleans()):
        boxes = boxes[np.minimum(rng.integers(0, n, n), np.arange(n))]  # exact duplicates
    scores = rng.choice(TIE_SCORES, n) if draw(st.booleans()) else rng.random(n, dtype=np.float32)
    labels = rng.integers(0, draw(st.integers(1, 4)), n)
    thr = draw(st.sampled_from([0.0, 0.25, 0.375, 0.5, 0.6, 0.625, 0.75, 1.0]))
    return boxes, scores.astype(np.float32), labels, thr, draw(st.booleans()), draw(st.one_of(st.none(), st.integers(1, 70)))


@PROPS
@given(_nms_case())
def test_nms_keeps_exactly_what_python_keeps(cpp, case):
    boxes, scores, labels, thr, agnostic, max_det = case
    np.testing.assert_array_equal(cpp.nms(boxes, scores, labels, thr, agnostic, max_det),
                                  nms(boxes, scores, labels, thr, agnostic, max_det))


# ---------------------------------------------------------------------------
# the whole chain: random tensors
# ---------------------------------------------------------------------------

_SHAPES = st.one_of(
    st.sampled_from([(640, 480), (480, 640), (500, 500), (1, 1), (3, 1000), (1000, 3), (7, 5), (2400, 1600)]),
    st.tuples(st.integers(1, 4000), st.integers(1, 4000)),
)


@PROPS
@given(shape=_SHAPES, seed=st.integers(0, 2**32 - 1), reg_max=st.integers(0, 16),
       num_classes=st.sampled_from([1, 2, 5, 80]), target=st.sampled_from([64, 160, 320]),
       pad_mode=st.sampled_from(["stride_multiple", "fixed"]), center_offset=st.sampled_from([0.0, 0.5]),
       score_threshold=st.sampled_from([0.0, 0.05, 0.3, 0.35, 0.5, 0.9, 1.0]),
       nms_threshold=st.sampled_from([0.0, 0.3, 0.5, 0.6, 1.0]), class_agnostic_nms=st.booleans(),
       multi_label=st.booleans(), max_detections=st.sampled_from([1, 7, 100, 500]),
       scores=st.sampled_from(["uniform", "sparse", "ties", "quantised"]),
       logits=st.sampled_from(["normal", "integers", "onehot"]), clamp_to_input=st.booleans(),
       policy=st.sampled_from(RESIZE_ALIGNS))
def test_random_tensors_give_identical_detections(cpp, base, shape, seed, reg_max, num_classes, target, pad_mode,
                                                  center_offset, score_threshold, nms_threshold, class_agnostic_nms,
                                                  multi_label, max_detections, scores, logits, clamp_to_input, policy):
    m = variant(base, reg_max=reg_max, num_classes=num_classes, target=target, pad_mode=pad_mode,
                center_offset=center_offset, score_threshold=score_threshold, nms_threshold=nms_threshold,
                class_agnostic_nms=class_agnostic_nms, multi_label=multi_label, max_detections=max_detections,
                clamp_to_input=clamp_to_input, policy=policy)
    lb = geometry(m, *shape)
    compare(cpp, m, random_outputs(m, lb, np.random.default_rng(seed), scores, logits), lb)


def _random_case(base: Manifest, seed: int) -> tuple[Manifest, Letterbox, dict[str, np.ndarray]]:
    """A uniformly random configuration (hypothesis above shrinks towards small cases; this
    sweep keeps the big ones: 320 inputs, 80 classes, multi-label with low thresholds)."""
    rng = np.random.default_rng(1000 + seed)
    pick = lambda xs: xs[int(rng.integers(len(xs)))]  # noqa: E731
    m = variant(base, reg_max=int(rng.integers(0, 17)), num_classes=pick([1, 3, 80]),
                pad_mode=pick(["stride_multiple", "fixed"]), center_offset=pick([0.0, 0.5]),
                score_threshold=pick([0.05, 0.3, 0.35, 0.6]), nms_threshold=pick([0.3, 0.5, 0.6, 0.65]),
                class_agnostic_nms=bool(rng.integers(2)), multi_label=bool(rng.integers(2)),
                max_detections=pick([10, 100, 1000]), clamp_to_input=bool(rng.integers(2)),
                policy=pick(list(RESIZE_ALIGNS)))
    shape = pick([(640, 480), (480, 640), (512, 512), (1, 1), (5, 2000), (3000, 7),
                  (int(rng.integers(1, 4000)), int(rng.integers(1, 4000)))])
    lb = geometry(m, *shape)
    return m, lb, random_outputs(m, lb, rng, pick(["uniform", "sparse", "ties", "quantised"]),
                                 pick(["normal", "normal", "integers", "onehot"]))


@pytest.mark.parametrize("seed", range(24))
def test_random_configurations_sweep_gives_identical_detections(cpp, base, seed):
    m, lb, outs = _random_case(base, seed)
    compare(cpp, m, outs, lb)


@pytest.mark.parametrize("multi_label", [False, True])
@pytest.mark.parametrize("class_agnostic_nms", [False, True])
def test_thousands_of_candidates_on_a_40x40_grid(cpp, base, multi_label, class_agnostic_nms):
    m = variant(base, num_classes=3, score_threshold=0.02, nms_threshold=0.5, multi_label=multi_label,
                class_agnostic_nms=class_agnostic_nms, max_detections=10_000)
    lb = geometry(m, 640, 640)  # 320x320 input: 40x40 + 20x20 + 10x10 cells
    outs = random_outputs(m, lb, np.random.default_rng(7), "uniform", "normal")
    n_cand = sum(int((outs[m.output("cls_scores", s).blob] > 0.02).sum()) for s in m.postprocess.strides)
    assert n_cand > 2000
    dets = compare(cpp, m, outs, lb)
    assert len(dets) > 100


@pytest.mark.parametrize("score_threshold", [0.35, 1.0])
def test_all_below_threshold_gives_no_detections_in_both(cpp, base, score_threshold):
    m = variant(base, score_threshold=score_threshold)
    lb = geometry(m, 640, 480)
    outs = random_outputs(m, lb, np.random.default_rng(1), "uniform")
    for s in m.postprocess.strides:
        blob = m.output("cls_scores", s).blob
        outs[blob] = np.minimum(outs[blob], np.float32(score_threshold))  # equal to the threshold: dropped
    assert compare(cpp, m, outs, lb) == []
    assert cpp.kind("gfl").postprocess(m, outs, lb) == []


def test_score_ties_keep_the_lowest_class_and_input_order(cpp, base):
    m = variant(base, num_classes=4, score_threshold=0.3, max_detections=500, nms_threshold=1.0)
    lb = geometry(m, 320, 320)
    outs = random_outputs(m, lb, np.random.default_rng(3), "ties", "integers")
    for s in m.postprocess.strides:  # every cell: classes 1 and 3 tie at the maximum
        blob = m.output("cls_scores", s).blob
        outs[blob][:] = np.array([0.25, 0.5, 0.125, 0.5], np.float32)
    dets = compare(cpp, m, outs, lb)
    assert len(dets) == 500 and {d.label for d in dets} == {1}


def _exact_pair(m: Manifest, lb: Letterbox, box_b_bins: tuple[int, int, int, int], cell_b: tuple[int, int]):
    """Two candidates at stride 8, centre offset 0, whole-bin distances (exact boxes):
    A at cell (2, 2) with l=t=r=b=2 bins -> [0, 0, 32, 32]; B at ``cell_b`` with ``box_b_bins``."""
    bins = m.postprocess.reg_max + 1
    outs = {}
    for s in m.postprocess.strides:
        fw, fh = -(-lb.in_w // s), -(-lb.in_h // s)
        sc = np.zeros((fw * fh, m.num_classes), np.float32)
        dl = np.full((fw * fh, 4, bins), -1000.0, np.float32)
        dl[:, :, 0] = 0.0
        if s == 8:
            a, b = 2 * fw + 2, cell_b[1] * fw + cell_b[0]
            sc[a, 0], sc[b, 0] = 0.9, 0.8
            dl[a] = -1000.0
            dl[a, :, 2] = 0.0
            dl[b] = -1000.0
            for side, k in enumerate(box_b_bins):
                dl[b, side, k] = 0.0
        outs[m.output("cls_scores", s).blob] = sc
        outs[m.output("dist_logits", s).blob] = dl.reshape(fw * fh, 4 * bins)
    return outs


@pytest.mark.parametrize("iou,b_bins,cell_b", [
    (0.6, (2, 2, 2, 2), (3, 2)),   # B = [8, 0, 40, 32]: inter 768 / union 1280
    (0.5, (2, 1, 2, 1), (2, 3)),   # B = [0, 16, 32, 32]: inter 512 / union 1024
])
def test_iou_exactly_at_the_nms_threshold_is_kept_just_above_is_suppressed(cpp, base, iou, b_bins, cell_b):
    lb = geometry(base, 320, 320)
    for thr, kept in ((iou, 2), (float(np.nextafter(np.float32(iou), np.float32(0))), 1)):
        m = variant(base, center_offset=0.0, nms_threshold=thr)
        dets = compare(cpp, m, _exact_pair(m, lb, b_bins, cell_b), lb)
        assert len(dets) == kept, (thr, dets)
        assert (dets[0].x1, dets[0].y1, dets[0].x2, dets[0].y2) == (0.0, 0.0, 32.0, 32.0)


# ---------------------------------------------------------------------------
# errors: the C++ refuses what the Python refuses
# ---------------------------------------------------------------------------

def test_raw_logits_nan_and_wrong_shapes_are_refused_by_both(cpp, base):
    from litedet.convert.verify.cpp_core import CppCoreError

    lb = geometry(base, 640, 480)
    good = random_outputs(base, lb, np.random.default_rng(0))
    blob8 = base.output("cls_scores", 8).blob
    for bad_value, match in ((3.5, "sigmoid"), (-0.25, "sigmoid"), (np.nan, "NaN"), (np.inf, "NaN")):
        outs = dict(good)
        outs[blob8] = good[blob8].copy()
        outs[blob8][5, 7] = bad_value
        with pytest.raises(ValueError, match=match):
            postprocess_outputs(base, outs, lb)
        with pytest.raises(CppCoreError, match=match):
            cpp.kind("gfl").postprocess(base, outs, lb)
    other = geometry(base, 640, 640)  # outputs of a 320x256 input given with a 320x320 letterbox
    with pytest.raises(ValueError):
        postprocess_outputs(base, good, other)
    with pytest.raises(CppCoreError, match="rows"):
        cpp.kind("gfl").postprocess(base, good, other)
    outs = dict(good)
    outs[base.output("dist_logits", 16).blob] = good[base.output("dist_logits", 16).blob][:, :20]
    with pytest.raises(ValueError, match="reg_max"):
        postprocess_outputs(base, outs, lb)
    with pytest.raises(CppCoreError, match="reg_max"):
        cpp.kind("gfl").postprocess(base, outs, lb)


# ---------------------------------------------------------------------------
# the same core compiled for aarch64 (Android's ABI), run under qemu
# ---------------------------------------------------------------------------

AARCH64_DRIVER = r"""
// Runs litedet::postprocess on case files written by tests/test_cpp_parity.py.
// case: u32 cfg_len, cfg text, i32 lb[8], i32 levels, per level {i32 rows, stride, ncls, ndis, f32 cls[], f32 dis[]}
// out (case + ".out"): i32 count (-1: error, then the message), count x {f32 x1 y1 x2 y2 score, i32 label}
#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>
#include "litedet_gfl.h"

template <class T> static void rd(FILE* f, T* p, size_t n) {
  if (fread(p, sizeof(T), n, f) != n) throw std::runtime_error("short read");
}

int main(int argc, char** argv) {
  for (int a = 1; a < argc; ++a) {
    FILE* f = fopen(argv[a], "rb");
    if (!f) return 2;
    uint32_t n = 0;
    rd(f, &n, 1);
    std::string text(n, '\0');
    rd(f, &text[0], n);
    int32_t g[8], levels = 0;
    rd(f, g, 8);
    rd(f, &levels, 1);
    std::vector<std::vector<float>> bufs;
    bufs.reserve(2 * static_cast<size_t>(levels));
    std::vector<litedet::LevelOutput> lv;
    for (int k = 0; k < levels; ++k) {
      int32_t h[4];
      rd(f, h, 4);
      bufs.emplace_back(static_cast<size_t>(h[0]) * static_cast<size_t>(h[2]));
      rd(f, bufs.back().data(), bufs.back().size());
      bufs.emplace_back(static_cast<size_t>(h[0]) * static_cast<size_t>(h[3]));
      rd(f, bufs.back().data(), bufs.back().size());
      lv.push_back({bufs[bufs.size() - 2].data(), bufs.back().data(), h[0], h[1]});
    }
    fclose(f);
    FILE* o = fopen((std::string(argv[a]) + ".out").c_str(), "wb");
    litedet::GflConfig cfg;
    std::string err;
    std::vector<litedet::Detection> dets;
    const litedet::Letterbox lb{g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7]};
    if (!litedet::parse_gfl_config(text, cfg, &err) || !litedet::try_postprocess(cfg, lv, lb, dets, &err)) {
      int32_t c = -1;
      fwrite(&c, 4, 1, o);
      fwrite(err.data(), 1, err.size(), o);
    } else {
      int32_t c = static_cast<int32_t>(dets.size());
      fwrite(&c, 4, 1, o);
      for (const auto& d : dets) {
        float v[5] = {d.x1, d.y1, d.x2, d.y2, d.score};
        fwrite(v, 4, 5, o);
        fwrite(&d.label, 4, 1, o);
      }
    }
    fclose(o);
  }
  return 0;
}
"""


@pytest.fixture(scope="module", autouse=True)
def _aarch64_build(tmp_path_factory):
    """Starts the aarch64 cross-build at the top of the module, so it compiles while the
    other tests (and the seeded conversion) run; None when the toolchain is missing."""
    from litedet.convert.verify.cpp_core import BASE_FLAGS, CPP_DIR, core_sources

    cxx, qemu = shutil.which("aarch64-linux-gnu-g++"), shutil.which("qemu-aarch64")
    if not cxx or not qemu:
        yield None
        return
    d = tmp_path_factory.mktemp("aarch64")
    (d / "driver.cpp").write_text(AARCH64_DRIVER)
    flags = [f for f in BASE_FLAGS if f not in ("-fPIC", "-shared")]  # the same float flags as the library
    cmd = [cxx, *flags, "-static", f"-I{CPP_DIR}", str(d / "driver.cpp"), *(str(CPP_DIR / s) for s in core_sources()),
           "-o", str(d / "driver")]
    # own process group, so a deselected test can stop g++ together with its cc1plus/as children
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    yield proc, cmd, d / "driver"
    if proc.poll() is None:  # the aarch64 test was deselected: stop the build
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    if proc.stdout and not proc.stdout.closed:
        proc.stdout.close()


@pytest.fixture(scope="module")
def aarch64_driver(_aarch64_build) -> Path:
    if _aarch64_build is None:
        msg = "aarch64-linux-gnu-g++ and qemu-aarch64 are needed for the aarch64 check (scripts/setup_arm.sh installs them)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    proc, cmd, driver = _aarch64_build
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, f"aarch64 build failed:\n{' '.join(cmd)}\n{log[-3000:]}"
    return driver


def _write_case(path: Path, m: Manifest, outputs: dict[str, np.ndarray], lb: Letterbox) -> None:
    text = device_config_text(m, "m.param", "m.bin").encode()
    parts = [np.array([len(text)], np.uint32).tobytes(), text,
             np.array([lb.src_w, lb.src_h, lb.resized_w, lb.resized_h, lb.in_w, lb.in_h, lb.pad_left, lb.pad_top],
                      np.int32).tobytes(),
             np.array([len(m.postprocess.strides)], np.int32).tobytes()]
    for s in m.postprocess.strides:
        cls = np.ascontiguousarray(outputs[m.output("cls_scores", s).blob], np.float32)
        dis = np.ascontiguousarray(outputs[m.output("dist_logits", s).blob], np.float32)
        parts += [np.array([cls.shape[0], s, cls.shape[1], dis.shape[1]], np.int32).tobytes(), cls.tobytes(), dis.tobytes()]
    path.write_bytes(b"".join(parts))


def _read_result(path: Path, m: Manifest) -> list[Detection] | str:
    raw = path.read_bytes()
    count = int(np.frombuffer(raw[:4], np.int32)[0])
    if count < 0:
        return raw[4:].decode()
    rec = np.frombuffer(raw[4:], np.dtype([("box", "<f4", 5), ("label", "<i4")]), count)
    return [Detection(*(float(v) for v in r["box"]), int(r["label"]), m.class_names[int(r["label"])]) for r in rec]


def test_aarch64_build_under_qemu_gives_the_same_detections(cpp, base, aarch64_driver, seeded_bundle, photos, tmp_path):
    cases = [_random_case(base, seed) for seed in range(10)]
    lb = geometry(base, 320, 320)
    for thr in (0.5, float(np.nextafter(np.float32(0.5), np.float32(0)))):
        m = variant(base, center_offset=0.0, nms_threshold=thr)
        cases.append((m, lb, _exact_pair(m, lb, (2, 1, 2, 1), (2, 3))))
    det = Detector.from_bundle(seeded_bundle)
    for img in (photos["astronaut"], photos["motorcycle_left"]):
        mat, lb = det.preprocess(img)
        cases.append((variant(det.manifest, score_threshold=0.05), lb, det.run_mat(mat)))
    bad = dict(cases[0][2])
    blob = cases[0][0].output("cls_scores", 8).blob
    bad[blob] = bad[blob] * np.float32(4) + np.float32(1)  # raw logits
    cases.append((cases[0][0], cases[0][1], bad))
    files = []
    for i, (m, lb, outs) in enumerate(cases):
        files.append(tmp_path / f"case{i}.bin")
        _write_case(files[-1], m, outs, lb)
    r = subprocess.run([shutil.which("qemu-aarch64"), str(aarch64_driver), *map(str, files)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    for f, (m, lb, outs) in zip(files, cases):
        arm = _read_result(f.with_name(f.name + ".out"), m)
        if outs is bad:
            assert isinstance(arm, str) and "sigmoid" in arm
            continue
        assert not isinstance(arm, str), arm
        assert_same(postprocess_outputs(m, outs, lb), arm, lb)
        x86 = cpp.kind("gfl").postprocess(m, outs, lb)
        # same C++ and the same float flags: aarch64 and x86-64 agree bit for bit
        assert [dataclasses.astuple(d) for d in arm] == [dataclasses.astuple(d) for d in x86]


# ---------------------------------------------------------------------------
# real networks on real photos
# ---------------------------------------------------------------------------

def _photo_parity(cpp, bundle: Path, photos, thresholds=(None, 0.05)) -> int:
    det = Detector.from_bundle(bundle)
    total = 0
    for name, img in photos.items():
        mat, lb = det.preprocess(img)
        outs = det.run_mat(mat)
        for thr in thresholds:
            m = det.manifest if thr is None else variant(det.manifest, score_threshold=thr)
            total += len(compare(cpp, m, outs, lb))
    return total


def test_seeded_network_on_photos_gives_identical_detections(cpp, seeded_bundle, photos):
    _photo_parity(cpp, seeded_bundle, photos, thresholds=(None, 0.05))


@pytest.mark.reference
def test_official_nanodet_m_on_photos_gives_identical_detections(cpp, official_bundle, photos):
    need_reference(NANODET_PARAM, NANODET_BIN)
    assert _photo_parity(cpp, official_bundle, photos, thresholds=(None, 0.05, 0.2)) > 20
