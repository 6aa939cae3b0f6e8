"""Property tests for the pure numpy postprocessing: GFL decoding (runtime/kinds/gfl.py), box maths
(runtime/boxes.py) and letterbox geometry (runtime/letterbox.py).

Every optimised function is checked against a deliberately naive reference
written here (python loops, float64 or exact integer arithmetic), plus the
conventions documented at the top of runtime/kinds/gfl.py and runtime/boxes.py: sigmoid already applied,
argmax ties -> lowest class, strict '>' for score and IoU thresholds, stable
descending sort in NMS, per-class NMS unless class-agnostic.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from litedet.runtime.boxes import box_iou, nms
from litedet.runtime.kinds.gfl import Candidates, decode_level, distribution_to_distance, grid_centers
from litedet.runtime.letterbox import Letterbox, letterbox_geometry, map_boxes_back

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Scores drawn from a tiny set of exactly representable values so that ties
# (equal scores, equal class scores, score == threshold) are common.
TIE_SCORES = [0.0, 0.125, 0.25, 0.3, 0.5, 0.75, 0.9, 1.0]
# Dyadic IoU thresholds: exactly representable, so "IoU == threshold" is decidable exactly.
DYADIC_THRESHOLDS = [0.0, 0.25, 0.375, 0.5, 0.625, 0.75, 1.0]


# ---------------------------------------------------------------------------
# letterbox_geometry
# ---------------------------------------------------------------------------

def _check_letterbox(lb: Letterbox, src_w: int, src_h: int, target: int, multiple: int, fixed: bool) -> None:
    assert (lb.src_w, lb.src_h) == (src_w, src_h)
    long_side, short_side = max(src_w, src_h), min(src_w, src_h)
    expect_short = max(1, (short_side * target) // long_side)
    # exact floor, independent of the integer expression used by the implementation
    assert expect_short == max(1, math.floor(Fraction(short_side * target, long_side)))
    if src_w >= src_h:
        assert (lb.resized_w, lb.resized_h) == (target, expect_short)
    else:
        assert (lb.resized_w, lb.resized_h) == (expect_short, target)
    # never swapped: orientation of the resized image follows the source
    if src_w > src_h:
        assert lb.resized_w >= lb.resized_h
    elif src_w < src_h:
        assert lb.resized_w <= lb.resized_h
        assert lb.resized_h == target
    else:
        assert lb.resized_w == lb.resized_h == target
    assert lb.resized_w >= 1 and lb.resized_h >= 1
    if fixed:
        assert (lb.in_w, lb.in_h) == (target, target)
    else:
        assert lb.in_w % multiple == 0 and lb.in_h % multiple == 0
        # smallest such multiple
        assert lb.in_w - lb.resized_w < multiple and lb.in_h - lb.resized_h < multiple
    assert lb.in_w >= lb.resized_w and lb.in_h >= lb.resized_h
    for pad in (lb.pad_left, lb.pad_top, lb.pad_right, lb.pad_bottom):
        assert pad >= 0
    assert lb.pad_left == (lb.in_w - lb.resized_w) // 2
    assert lb.pad_top == (lb.in_h - lb.resized_h) // 2
    assert lb.pad_left + lb.resized_w + lb.pad_right == lb.in_w
    assert lb.pad_top + lb.resized_h + lb.pad_bottom == lb.in_h
    # centred: the two sides differ by at most one pixel, the extra one goes right/bottom
    assert lb.pad_right - lb.pad_left in (0, 1)
    assert lb.pad_bottom - lb.pad_top in (0, 1)


@pytest.mark.parametrize("fixed", [False, True])
@pytest.mark.parametrize("src_w,src_h", [
    (640, 480),      # landscape
    (480, 640),      # portrait
    (500, 500),      # square
    (1920, 1080), (1080, 1920),
    (1, 1), (1, 1000), (1000, 1), (3, 2), (2, 3),   # tiny / smaller than one stride
    (7, 31), (31, 7),
    (100_000, 3), (3, 100_000), (40_000, 30_000), (30_000, 40_000),  # huge
])
def test_letterbox_known_shapes_long_side_is_target_and_padding_is_centred(src_w, src_h, fixed):
    lb = letterbox_geometry(src_w, src_h, 320, 32, fixed=fixed)
    _check_letterbox(lb, src_w, src_h, 320, 32, fixed)


def test_letterbox_portrait_input_gives_portrait_resized_and_padded_image():
    lb = letterbox_geometry(300, 600, 320, 32)
    assert (lb.resized_w, lb.resized_h) == (160, 320)
    assert (lb.in_w, lb.in_h) == (160, 320)
    lb = letterbox_geometry(600, 300, 320, 32)
    assert (lb.resized_w, lb.resized_h) == (320, 160)
    assert (lb.in_w, lb.in_h) == (320, 160)


def test_letterbox_one_pixel_wide_image_is_padded_to_one_multiple_and_centred():
    lb = letterbox_geometry(1, 1000, 320, 32)
    assert (lb.resized_w, lb.resized_h) == (1, 320)
    assert (lb.in_w, lb.in_h) == (32, 320)
    assert (lb.pad_left, lb.pad_right, lb.pad_top, lb.pad_bottom) == (15, 16, 0, 0)


@FAST
@given(src_w=st.integers(1, 50_000), src_h=st.integers(1, 50_000),
       multiple=st.sampled_from([1, 2, 8, 16, 32, 64]), k=st.integers(1, 30), fixed=st.booleans())
def test_letterbox_geometry_properties_for_any_size(src_w, src_h, multiple, k, fixed):
    target = multiple * k
    lb = letterbox_geometry(src_w, src_h, target, multiple, fixed=fixed)
    _check_letterbox(lb, src_w, src_h, target, multiple, fixed)
    # transposing the source transposes the result (no width/height mix-up)
    if src_w != src_h:
        t = letterbox_geometry(src_h, src_w, target, multiple, fixed=fixed)
        assert (t.resized_w, t.resized_h, t.in_w, t.in_h, t.pad_left, t.pad_top) == \
            (lb.resized_h, lb.resized_w, lb.in_h, lb.in_w, lb.pad_top, lb.pad_left)


@pytest.mark.parametrize("args", [
    (0, 100, 320, 32), (100, 0, 320, 32), (0, 0, 320, 32), (-5, 100, 320, 32), (100, -1, 320, 32),
    (100, 100, 330, 32),  # target not a multiple
    (100, 100, 0, 32), (100, 100, -32, 32), (100, 100, 320, 0), (100, 100, 320, -32),
])
@pytest.mark.parametrize("fixed", [False, True])
def test_letterbox_bad_input_raises_value_error(args, fixed):
    with pytest.raises(ValueError):
        letterbox_geometry(*args, fixed=fixed)


# ---------------------------------------------------------------------------
# distribution_to_distance
# ---------------------------------------------------------------------------

def _ref_distance(logits: np.ndarray, reg_max: int) -> np.ndarray:
    """Naive float64 per-row softmax + integral."""
    k = logits.shape[0]
    out = np.zeros((k, 4), dtype=np.float64)
    for r in range(k):
        for side in range(4):
            row = [float(v) for v in logits[r, side * (reg_max + 1):(side + 1) * (reg_max + 1)]]
            m = max(row)
            e = [math.exp(v - m) for v in row]
            s = sum(e)
            out[r, side] = sum(j * e[j] / s for j in range(reg_max + 1))
    return out


@st.composite
def _logits(draw, max_rows=6):
    reg_max = draw(st.integers(1, 16))
    k = draw(st.integers(0, max_rows))
    arr = draw(hnp.arrays(np.float32, (k, 4 * (reg_max + 1)),
                          elements=st.floats(-30, 30, width=32, allow_nan=False, allow_infinity=False)))
    return arr, reg_max


@FAST
@given(_logits())
def test_distribution_to_distance_matches_naive_float64_softmax_integral(data):
    logits, reg_max = data
    got = distribution_to_distance(logits, reg_max)
    assert got.shape == (logits.shape[0], 4)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, _ref_distance(logits, reg_max), rtol=1e-5, atol=1e-5)


@FAST
@given(_logits())
def test_distribution_to_distance_stays_within_zero_and_reg_max(data):
    logits, reg_max = data
    got = distribution_to_distance(logits, reg_max)
    assert np.all(np.isfinite(got))
    # float32 rounding of sum(p) may overshoot 1 by an ulp or so
    assert np.all(got >= 0.0)
    assert np.all(got <= reg_max * (1 + 1e-6))


@pytest.mark.parametrize("reg_max", range(1, 17))
@pytest.mark.parametrize("value", [0.0, -7.5, 42.0])
def test_distribution_to_distance_uniform_logits_give_half_reg_max(reg_max, value):
    logits = np.full((3, 4 * (reg_max + 1)), value, dtype=np.float32)
    np.testing.assert_allclose(distribution_to_distance(logits, reg_max), reg_max / 2, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("reg_max", range(1, 17))
def test_distribution_to_distance_one_hot_huge_logit_gives_that_bin(reg_max):
    n = reg_max + 1
    rows = []
    for k in range(n):
        row = np.zeros((4, n), np.float32)
        for side in range(4):
            row[side, (k + side) % n] = 100.0  # a different bin on each side
        rows.append(row.reshape(-1))
    got = distribution_to_distance(np.stack(rows), reg_max)
    expect = np.array([[(k + side) % n for side in range(4)] for k in range(n)], np.float32)
    np.testing.assert_allclose(got, expect, atol=1e-5)


def test_distribution_to_distance_is_shift_invariant_per_side():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(10, 4 * 8)).astype(np.float32)
    shifted = logits.reshape(10, 4, 8) + np.array([0, 10, -10, 25], np.float32)[None, :, None]
    np.testing.assert_allclose(distribution_to_distance(shifted.reshape(10, -1), 7),
                               distribution_to_distance(logits, 7), atol=1e-5)


# ---------------------------------------------------------------------------
# grid_centers
# ---------------------------------------------------------------------------

@FAST
@given(feat_w=st.integers(1, 60), feat_h=st.integers(1, 60), stride=st.sampled_from([4, 8, 16, 32, 64]),
       offset=st.sampled_from([0.0, 0.5]), data=st.data())
def test_grid_centers_row_major_for_non_square_grids(feat_w, feat_h, stride, offset, data):
    n = feat_w * feat_h
    idx = np.asarray(data.draw(st.lists(st.integers(0, n - 1), min_size=0, max_size=50)), dtype=np.int64)
    cx, cy = grid_centers(idx, feat_w, stride, offset)
    assert cx.shape == cy.shape == idx.shape
    for i, x, y in zip(idx.tolist(), cx.tolist(), cy.tolist()):
        assert x == ((i % feat_w) + offset) * stride
        assert y == ((i // feat_w) + offset) * stride
        # every centre lies inside the feature map's footprint
        assert 0 <= x < feat_w * stride and 0 <= y < feat_h * stride


@pytest.mark.parametrize("feat_w,feat_h", [(10, 4), (4, 10), (1, 7), (7, 1)])
@pytest.mark.parametrize("offset", [0.0, 0.5])
def test_grid_centers_corners_of_portrait_and_landscape_grids(feat_w, feat_h, offset):
    stride = 8
    idx = np.array([0, feat_w - 1, feat_w * (feat_h - 1), feat_w * feat_h - 1], np.int64)
    cx, cy = grid_centers(idx, feat_w, stride, offset)
    last_x, last_y = (feat_w - 1 + offset) * stride, (feat_h - 1 + offset) * stride
    np.testing.assert_array_equal(cx, [offset * stride, last_x, offset * stride, last_x])
    np.testing.assert_array_equal(cy, [offset * stride, offset * stride, last_y, last_y])


# ---------------------------------------------------------------------------
# decode_level
# ---------------------------------------------------------------------------

def _ref_decode(scores, dists, feat_w, stride, reg_max, offset, thr, multi_label):
    """Naive double loop over cells and classes."""
    thr32 = np.float32(thr)
    n, c = scores.shape
    dist = _ref_distance(dists, reg_max) if n else np.zeros((0, 4))
    boxes, out_scores, labels = [], [], []
    for cell in range(n):
        row = [np.float32(v) for v in scores[cell]]
        if multi_label:
            picks = [j for j in range(c) if row[j] > thr32]
        else:
            best = 0
            for j in range(1, c):
                if row[j] > row[best]:  # strict: the first maximum wins
                    best = j
            picks = [best] if row[best] > thr32 else []
        cx = ((cell % feat_w) + offset) * stride
        cy = ((cell // feat_w) + offset) * stride
        d = dist[cell] * stride
        for j in picks:
            boxes.append([cx - d[0], cy - d[1], cx + d[2], cy + d[3]])
            out_scores.append(float(row[j]))
            labels.append(j)
    return (np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(out_scores, np.float32),
            np.asarray(labels, np.int64))


@st.composite
def _level(draw):
    feat_w = draw(st.integers(1, 6))
    feat_h = draw(st.integers(1, 6))
    ncls = draw(st.integers(1, 5))
    reg_max = draw(st.sampled_from([1, 3, 7, 16]))
    n = feat_w * feat_h
    score_el = st.one_of(st.sampled_from(TIE_SCORES),
                         st.floats(0, 1, width=32, allow_nan=False))
    scores = draw(hnp.arrays(np.float32, (n, ncls), elements=score_el))
    dists = draw(hnp.arrays(np.float32, (n, 4 * (reg_max + 1)),
                            elements=st.floats(-8, 8, width=32, allow_nan=False)))
    stride = draw(st.sampled_from([8, 16, 32]))
    offset = draw(st.sampled_from([0.0, 0.5]))
    thr = draw(st.one_of(st.sampled_from(TIE_SCORES), st.floats(0, 1)))
    return scores, dists, feat_w, stride, reg_max, offset, thr


def _assert_candidates_match(got: Candidates, ref) -> None:
    rb, rs, rl = ref
    assert got.boxes.shape == rb.shape and got.boxes.dtype == np.float32
    assert got.scores.dtype == np.float32 and got.labels.dtype == np.int64
    np.testing.assert_array_equal(got.labels, rl)
    np.testing.assert_array_equal(got.scores, rs)
    np.testing.assert_allclose(got.boxes, rb, rtol=1e-5, atol=1e-3)


@FAST
@given(_level())
def test_decode_level_matches_naive_argmax_reference(level):
    scores, dists, feat_w, stride, reg_max, offset, thr = level
    got = decode_level(scores, dists, feat_w, stride, reg_max, offset, thr)
    _assert_candidates_match(got, _ref_decode(scores, dists, feat_w, stride, reg_max, offset, thr, False))
    assert np.all(got.scores > np.float32(thr))


@FAST
@given(_level())
def test_decode_level_multi_label_keeps_every_cell_class_above_threshold(level):
    scores, dists, feat_w, stride, reg_max, offset, thr = level
    got = decode_level(scores, dists, feat_w, stride, reg_max, offset, thr, multi_label=True)
    _assert_candidates_match(got, _ref_decode(scores, dists, feat_w, stride, reg_max, offset, thr, True))
    assert len(got.scores) == int((scores > np.float32(thr)).sum())


@FAST
@given(_level())
def test_decode_level_box_sizes_are_between_zero_and_two_reg_max_strides(level):
    scores, dists, feat_w, stride, reg_max, offset, thr = level
    got = decode_level(scores, dists, feat_w, stride, reg_max, offset, thr, multi_label=True)
    w = got.boxes[:, 2] - got.boxes[:, 0]
    h = got.boxes[:, 3] - got.boxes[:, 1]
    assert np.all(w >= 0) and np.all(h >= 0)
    assert np.all(w <= 2 * reg_max * stride + 1e-3) and np.all(h <= 2 * reg_max * stride + 1e-3)


def test_decode_level_argmax_tie_picks_lowest_class():
    scores = np.array([[0.7, 0.7, 0.2], [0.1, 0.8, 0.8], [0.6, 0.6, 0.6]], np.float32)
    dists = np.zeros((3, 8), np.float32)
    got = decode_level(scores, dists, 3, 8, 1, 0.5, 0.3)
    np.testing.assert_array_equal(got.labels, [0, 1, 0])
    np.testing.assert_array_equal(got.scores, np.float32([0.7, 0.8, 0.6]))


def test_decode_level_score_equal_to_threshold_is_dropped():
    scores = np.array([[0.3], [np.nextafter(np.float32(0.3), np.float32(1))]], np.float32)
    dists = np.zeros((2, 8), np.float32)
    got = decode_level(scores, dists, 2, 8, 1, 0.0, 0.3)
    np.testing.assert_array_equal(got.scores, scores[1])
    got = decode_level(scores, dists, 2, 8, 1, 0.0, 0.3, multi_label=True)
    np.testing.assert_array_equal(got.scores, scores[1])


def test_decode_level_box_is_centre_minus_plus_distances_times_stride_in_ltrb_order():
    reg_max, stride, feat_w = 7, 16, 3
    dists = np.full((6, 4, reg_max + 1), -100.0, np.float32)
    for side, b in enumerate([1, 2, 3, 4]):  # l=1, t=2, r=3, b=4 bins
        dists[:, side, b] = 100.0
    scores = np.zeros((6, 2), np.float32)
    scores[5, 1] = 0.9  # cell 5 -> column 2, row 1 of a 3-wide, 2-high grid
    got = decode_level(scores, dists.reshape(6, -1), feat_w, stride, reg_max, 0.5, 0.5)
    cx, cy = (2 + 0.5) * stride, (1 + 0.5) * stride
    np.testing.assert_allclose(got.boxes, [[cx - 1 * stride, cy - 2 * stride, cx + 3 * stride, cy + 4 * stride]],
                               atol=1e-3)
    np.testing.assert_array_equal(got.labels, [1])


@pytest.mark.parametrize("multi_label", [False, True])
@pytest.mark.parametrize("thr", [0.5, 0.9, 1.0])
def test_decode_level_all_below_threshold_gives_empty_candidates(multi_label, thr):
    rng = np.random.default_rng(0)
    scores = (rng.random((4 * 5, 3)) * 0.5).astype(np.float32)
    dists = rng.normal(size=(20, 4 * 8)).astype(np.float32)
    got = decode_level(scores, dists, 5, 8, 7, 0.0, thr, multi_label=multi_label)
    assert got.boxes.shape == (0, 4) and got.scores.shape == (0,) and got.labels.shape == (0,)
    assert got.boxes.dtype == np.float32 and got.scores.dtype == np.float32 and got.labels.dtype == np.int64


def test_decode_level_zero_cells_gives_empty_candidates():
    got = decode_level(np.zeros((0, 3), np.float32), np.zeros((0, 32), np.float32), 4, 8, 7, 0.0, 0.3)
    assert got.boxes.shape == (0, 4) and got.scores.shape == (0,)


@pytest.mark.parametrize("bad", [1.5, -0.25, 7.0, -3.0])
@pytest.mark.parametrize("multi_label", [False, True])
def test_decode_level_raw_logit_scores_raise_mentioning_sigmoid(bad, multi_label):
    scores = np.full((4, 2), 0.1, np.float32)
    scores[2, 1] = bad
    with pytest.raises(ValueError, match="sigmoid"):
        decode_level(scores, np.zeros((4, 8), np.float32), 2, 8, 1, 0.0, 0.3, multi_label=multi_label)


@pytest.mark.parametrize("width", [4 * 7, 4 * 8 + 1, 8, 4 * 9])
def test_decode_level_wrong_distribution_width_raises(width):
    with pytest.raises(ValueError):
        decode_level(np.full((4, 2), 0.6, np.float32), np.zeros((4, width), np.float32), 2, 8, 7, 0.0, 0.3)


def test_decode_level_wrong_distribution_rows_raises():
    with pytest.raises(ValueError):
        decode_level(np.full((4, 2), 0.6, np.float32), np.zeros((5, 32), np.float32), 2, 8, 7, 0.0, 0.3)


def test_decode_level_cells_not_filling_rows_raises():
    with pytest.raises(ValueError):
        decode_level(np.full((7, 2), 0.6, np.float32), np.zeros((7, 32), np.float32), 2, 8, 7, 0.0, 0.3)


# ---------------------------------------------------------------------------
# box_iou and nms
# ---------------------------------------------------------------------------

QUANTUM = 4  # box coordinates are multiples of 1/4: exact in float32, exact integers after *4


def _exact_iou_gt(box_q: np.ndarray, boxes_q: np.ndarray, thr: Fraction) -> np.ndarray:
    """IoU(box, boxes) > thr, exactly, for integer (quantised) coordinates."""
    iw = np.maximum(0, np.minimum(box_q[2], boxes_q[:, 2]) - np.maximum(box_q[0], boxes_q[:, 0]))
    ih = np.maximum(0, np.minimum(box_q[3], boxes_q[:, 3]) - np.maximum(box_q[1], boxes_q[:, 1]))
    inter = iw * ih
    union = (box_q[2] - box_q[0]) * (box_q[3] - box_q[1]) + \
        (boxes_q[:, 2] - boxes_q[:, 0]) * (boxes_q[:, 3] - boxes_q[:, 1]) - inter
    # iou = inter/union (0 when union <= 0);  iou > p/q  <=>  inter*q > p*union
    return (union > 0) & (inter * thr.denominator > thr.numerator * union)


def _exact_iou(a, b) -> Fraction:
    a = [Fraction(float(v)) for v in a]
    b = [Fraction(float(v)) for v in b]
    iw = max(Fraction(0), min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(Fraction(0), min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else Fraction(0)


def _ref_nms(boxes, scores, labels, thr, class_agnostic=False, max_detections=None) -> list[int]:
    """Naive greedy NMS: stable descending sort, suppress when IoU > thr (exact)."""
    thr = Fraction(float(np.float32(thr)))
    q = np.rint(boxes.astype(np.float64) * QUANTUM).astype(np.int64)
    assert np.array_equal(q, boxes.astype(np.float64) * QUANTUM), "reference needs quantised boxes"
    order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))  # python sort is stable
    suppressed = [False] * len(order)
    keep: list[int] = []
    for pos, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(i)
        if max_detections is not None and len(keep) >= max_detections:
            break
        rest = order[pos + 1:]
        if not rest:
            break
        gt = _exact_iou_gt(q[i], q[rest], thr)
        for j, hit in zip(rest, gt.tolist()):
            if hit and (class_agnostic or labels[j] == labels[i]):
                suppressed[j] = True
    return keep


@st.composite
def _nms_case(draw, max_n=40):
    n = draw(st.integers(0, max_n))
    coord = st.integers(0, 64 * QUANTUM)
    size = st.integers(0, 24 * QUANTUM)  # zero-size (degenerate) boxes included
    xy = draw(hnp.arrays(np.int64, (n, 2), elements=coord))
    wh = draw(hnp.arrays(np.int64, (n, 2), elements=size))
    boxes = (np.concatenate([xy, xy + wh], axis=1) / QUANTUM).astype(np.float32)
    if n and draw(st.booleans()):  # exact duplicates of earlier boxes
        dup = draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, n - 1)))
        boxes = boxes[np.minimum(dup, np.arange(n))]
    score_el = draw(st.sampled_from([
        st.sampled_from([0.5]),                          # all equal
        st.sampled_from(TIE_SCORES),                     # many duplicates
        st.floats(0, 1, width=32, allow_nan=False),      # mostly distinct
    ]))
    scores = draw(hnp.arrays(np.float32, (n,), elements=score_el))
    labels = draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, draw(st.integers(0, 3)))))
    thr = draw(st.sampled_from(DYADIC_THRESHOLDS))
    agnostic = draw(st.booleans())
    max_det = draw(st.one_of(st.none(), st.integers(1, max(1, n + 2))))
    return boxes, scores, labels, thr, agnostic, max_det


@FAST
@given(_nms_case())
def test_nms_matches_naive_greedy_reference(case):
    boxes, scores, labels, thr, agnostic, max_det = case
    got = nms(boxes, scores, labels, thr, class_agnostic=agnostic, max_detections=max_det)
    assert got.dtype == np.int64
    assert got.tolist() == _ref_nms(boxes, scores, labels, thr, agnostic, max_det)


@FAST
@given(_nms_case())
def test_nms_kept_boxes_do_not_overlap_above_threshold_within_class(case):
    boxes, scores, labels, thr, agnostic, _ = case
    keep = nms(boxes, scores, labels, thr, class_agnostic=agnostic).tolist()
    thr_f = Fraction(float(np.float32(thr)))
    for a in range(len(keep)):
        for b in range(a + 1, len(keep)):
            i, j = keep[a], keep[b]
            if agnostic or labels[i] == labels[j]:
                assert _exact_iou(boxes[i], boxes[j]) <= thr_f


@FAST
@given(_nms_case())
def test_nms_every_dropped_box_is_covered_by_a_better_kept_box(case):
    boxes, scores, labels, thr, agnostic, _ = case
    keep = nms(boxes, scores, labels, thr, class_agnostic=agnostic).tolist()
    rank = {int(i): r for r, i in enumerate(np.argsort(-scores, kind="stable"))}
    thr_f = Fraction(float(np.float32(thr)))
    kept = set(keep)
    for j in range(len(scores)):
        if j in kept:
            continue
        assert any(rank[i] < rank[j] and (agnostic or labels[i] == labels[j])
                   and _exact_iou(boxes[i], boxes[j]) > thr_f for i in keep), j


@FAST
@given(_nms_case())
def test_nms_output_is_sorted_by_descending_score_with_ties_in_input_order(case):
    boxes, scores, labels, thr, agnostic, max_det = case
    keep = nms(boxes, scores, labels, thr, class_agnostic=agnostic, max_detections=max_det).tolist()
    assert len(set(keep)) == len(keep)
    assert all(0 <= i < len(scores) for i in keep)
    for a, b in zip(keep, keep[1:]):
        assert scores[a] > scores[b] or (scores[a] == scores[b] and a < b)
    if max_det is not None:
        assert len(keep) <= max_det


@FAST
@given(_nms_case())
def test_nms_max_detections_is_a_prefix_of_the_unlimited_result(case):
    boxes, scores, labels, thr, agnostic, max_det = case
    assume(max_det is not None)
    full = nms(boxes, scores, labels, thr, class_agnostic=agnostic).tolist()
    cut = nms(boxes, scores, labels, thr, class_agnostic=agnostic, max_detections=max_det).tolist()
    assert cut == full[:max_det]


@FAST
@given(_nms_case())
def test_nms_per_class_equals_separate_class_runs_and_agnostic_equals_one_label(case):
    boxes, scores, labels, thr, _, _ = case
    per_class = nms(boxes, scores, labels, thr).tolist()
    agnostic = nms(boxes, scores, labels, thr, class_agnostic=True).tolist()
    # per class == running NMS on each class separately and merging by the global order
    rank = {int(i): r for r, i in enumerate(np.argsort(-scores, kind="stable"))}
    merged = []
    for c in np.unique(labels).tolist():
        idx = np.nonzero(labels == c)[0]
        merged += [int(idx[k]) for k in nms(boxes[idx], scores[idx], labels[idx], thr).tolist()]
    assert per_class == sorted(merged, key=rank.__getitem__)
    # agnostic with a single label equals per-class
    assert agnostic == nms(boxes, scores, np.zeros_like(labels), thr).tolist()


def test_box_iou_exact_half_and_edge_cases():
    box = np.array([0, 0, 10, 10], np.float32)
    others = np.array([
        [0, 0, 10, 5],     # half of it: 0.5 exactly
        [0, 0, 10, 10],    # identical: 1
        [10, 0, 20, 10],   # touching edge: 0
        [20, 20, 30, 30],  # disjoint: 0
        [5, 5, 5, 5],      # degenerate point inside: 0
        [5, 0, 15, 10],    # 50 / 150
    ], np.float32)
    got = box_iou(box, others)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got[:5], np.float32([0.5, 1.0, 0.0, 0.0, 0.0]))
    assert got[5] == np.float32(1 / 3)
    # both degenerate: union 0 -> 0, never NaN
    z = np.array([3, 3, 3, 3], np.float32)
    assert box_iou(z, z[None]).tolist() == [0.0]


@FAST
@given(_nms_case(max_n=12))
def test_box_iou_matches_exact_rational_iou_and_is_symmetric(case):
    boxes = case[0]
    for i in range(len(boxes)):
        got = box_iou(boxes[i], boxes)
        for j in range(len(boxes)):
            assert got[j] == np.float32(float(_exact_iou(boxes[i], boxes[j])))
            assert got[j] == box_iou(boxes[j], boxes[i:i + 1])[0]
            assert 0.0 <= got[j] <= 1.0


@pytest.mark.parametrize("class_agnostic", [False, True])
def test_nms_iou_exactly_equal_to_threshold_is_not_suppressed(class_agnostic):
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 5]], np.float32)  # IoU exactly 0.5
    scores = np.array([0.9, 0.8], np.float32)
    labels = np.array([1, 1])
    assert box_iou(boxes[0], boxes[1:])[0] == 0.5
    assert nms(boxes, scores, labels, 0.5, class_agnostic=class_agnostic).tolist() == [0, 1]
    assert nms(boxes, scores, labels, 0.4999, class_agnostic=class_agnostic).tolist() == [0]


def test_nms_only_suppresses_within_a_class_unless_agnostic():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    labels = np.array([0, 1, 0])
    assert nms(boxes, scores, labels, 0.5).tolist() == [0, 1]
    assert nms(boxes, scores, labels, 0.5, class_agnostic=True).tolist() == [0]


def test_nms_equal_scores_keep_input_order():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60], [0, 0, 10, 10]], np.float32)
    scores = np.full(4, 0.5, np.float32)
    labels = np.zeros(4, np.int64)
    assert nms(boxes, scores, labels, 0.5).tolist() == [0, 2]
    # the lower-index duplicate wins even when it appears after a better-scored box of another place
    scores = np.array([0.5, 0.5, 0.9, 0.5], np.float32)
    assert nms(boxes, scores, labels, 0.5).tolist() == [2, 0]


@pytest.mark.parametrize("class_agnostic", [False, True])
@pytest.mark.parametrize("max_detections", [None, 1, 10])
def test_nms_empty_input_returns_empty(class_agnostic, max_detections):
    got = nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64), 0.5,
              class_agnostic=class_agnostic, max_detections=max_detections)
    assert got.shape == (0,) and got.dtype == np.int64


@pytest.mark.parametrize("class_agnostic", [False, True])
def test_nms_three_thousand_candidates_matches_reference(class_agnostic):
    rng = np.random.default_rng(12345)
    n = 3000
    xy = rng.integers(0, 400 * QUANTUM, size=(n, 2))
    wh = rng.integers(4 * QUANTUM, 200 * QUANTUM, size=(n, 2))
    boxes = (np.concatenate([xy, xy + wh], axis=1) / QUANTUM).astype(np.float32)
    scores = (rng.integers(1, 65, size=n) / 64).astype(np.float32)  # only 64 distinct values: many ties
    labels = rng.integers(0, 5, size=n)
    for thr in (0.5, 0.625):
        got = nms(boxes, scores, labels, thr, class_agnostic=class_agnostic)
        ref = _ref_nms(boxes, scores, labels, thr, class_agnostic)
        assert got.tolist() == ref
        assert 5 < len(ref) < n
        got = nms(boxes, scores, labels, thr, class_agnostic=class_agnostic, max_detections=100)
        assert got.tolist() == ref[:100]


def test_nms_output_feeds_straight_from_decode_level():
    rng = np.random.default_rng(7)
    feat_w, feat_h, reg_max = 8, 5, 7
    scores = rng.random((feat_w * feat_h, 3)).astype(np.float32)
    dists = rng.normal(size=(feat_w * feat_h, 4 * (reg_max + 1))).astype(np.float32)
    c = decode_level(scores, dists, feat_w, 16, reg_max, 0.0, 0.4)
    keep = nms(c.boxes, c.scores, c.labels, 0.6, max_detections=20)
    assert len(keep) <= 20
    assert np.all(np.diff(c.scores[keep]) <= 0)


# ---------------------------------------------------------------------------
# map_boxes_back
# ---------------------------------------------------------------------------

def _forward(boxes: np.ndarray, lb: Letterbox) -> np.ndarray:
    """Original pixels -> network-input pixels (float64), per-axis scale resized/src."""
    sx, sy = lb.resized_w / lb.src_w, lb.resized_h / lb.src_h
    b = boxes.astype(np.float64)
    return np.stack([b[:, 0] * sx + lb.pad_left, b[:, 1] * sy + lb.pad_top,
                     b[:, 2] * sx + lb.pad_left, b[:, 3] * sy + lb.pad_top], axis=1)


@st.composite
def _image_and_boxes(draw):
    src_w = draw(st.one_of(st.integers(1, 4000), st.sampled_from([1, 2, 3, 100_000])))
    src_h = draw(st.one_of(st.integers(1, 4000), st.sampled_from([1, 2, 3, 100_000])))
    multiple = draw(st.sampled_from([8, 32]))
    target = multiple * draw(st.integers(1, 20))
    fixed = draw(st.booleans())
    n = draw(st.integers(0, 10))
    u = draw(hnp.arrays(np.float64, (n, 4), elements=st.floats(0, 1)))
    x = np.sort(u[:, 0::2], axis=1) * src_w
    y = np.sort(u[:, 1::2], axis=1) * src_h
    boxes = np.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], axis=1)
    return letterbox_geometry(src_w, src_h, target, multiple, fixed=fixed), boxes


@FAST
@given(_image_and_boxes())
def test_map_boxes_back_inverts_the_letterbox_mapping(data):
    lb, boxes = data
    net = _forward(boxes, lb).astype(np.float32)
    back = map_boxes_back(net, lb)
    assert back.dtype == np.float32 and back.shape == boxes.shape
    tol = 1e-3 * np.array([lb.src_w, lb.src_h, lb.src_w, lb.src_h])
    assert np.all(np.abs(back.astype(np.float64) - boxes) <= tol)


@FAST
@given(_image_and_boxes(), st.data())
def test_map_boxes_back_clips_into_the_original_image(data, draw):
    lb = data[0]
    n = draw.draw(st.integers(0, 12))
    lo_x, hi_x = -2.0 * lb.in_w - 50, 3.0 * lb.in_w + 50
    lo_y, hi_y = -2.0 * lb.in_h - 50, 3.0 * lb.in_h + 50
    xs = draw.draw(hnp.arrays(np.float32, (n, 2), elements=st.floats(lo_x, hi_x, width=32)))
    ys = draw.draw(hnp.arrays(np.float32, (n, 2), elements=st.floats(lo_y, hi_y, width=32)))
    net = np.stack([xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1]], axis=1).astype(np.float32)
    back = map_boxes_back(net, lb)
    assert np.all(np.isfinite(back))
    assert np.all(back[:, 0::2] >= 0) and np.all(back[:, 0::2] <= lb.src_w)
    assert np.all(back[:, 1::2] >= 0) and np.all(back[:, 1::2] <= lb.src_h)
    # the padding maps to the image border, the far edge of the resized image to W/H
    edges = np.array([[lb.pad_left, lb.pad_top, lb.pad_left + lb.resized_w, lb.pad_top + lb.resized_h]],
                     np.float32)
    np.testing.assert_allclose(map_boxes_back(edges, lb), [[0, 0, lb.src_w, lb.src_h]],
                               rtol=1e-5, atol=1e-3)


def test_map_boxes_back_uses_per_axis_scale_not_one_shared_scale():
    # 1000 x 333 at 320: resized 320 x 106 (106.56 floored), so sy != sx.
    lb = letterbox_geometry(1000, 333, 320, 32)
    assert (lb.resized_w, lb.resized_h) == (320, 106)
    net = np.array([[lb.pad_left, lb.pad_top + 106, lb.pad_left + 320, lb.pad_top + 106]], np.float32)
    back = map_boxes_back(net, lb)
    np.testing.assert_allclose(back, [[0, 333, 1000, 333]], atol=1e-3)


def test_map_boxes_back_portrait_does_not_swap_axes():
    lb = letterbox_geometry(300, 600, 320, 32)  # resized 160 x 320
    box = np.array([[30.0, 60.0, 150.0, 540.0]])
    back = map_boxes_back(_forward(box, lb).astype(np.float32), lb)
    np.testing.assert_allclose(back, box, atol=1e-3)


def test_map_boxes_back_empty():
    lb = letterbox_geometry(640, 480, 320, 32)
    out = map_boxes_back(np.zeros((0, 4), np.float32), lb)
    assert out.shape == (0, 4) and out.dtype == np.float32


def test_nms_with_zero_max_detections_keeps_nothing():
    keep = nms(np.array([[0, 0, 10, 10]], np.float32), np.array([0.5], np.float32), np.array([0]), 0.5,
               max_detections=0)
    assert keep.size == 0


def test_decode_level_refuses_nan_scores():
    s = np.array([[np.nan, 0.9]], np.float32)
    with pytest.raises(ValueError, match="NaN"):
        decode_level(s, np.zeros((1, 8), np.float32), 1, 8, 1, 0.5, 0.3)


def test_clamping_to_the_input_before_nms_changes_what_is_suppressed():
    """Upstream NanoDet clips decoded boxes to the network input before NMS; two boxes
    that only overlap once clipped are suppressed with clipping and both kept without."""
    from litedet.runtime.boxes import clamp_boxes, nms

    boxes = np.array([[-100, 0, 50, 50], [-20, 0, 50, 50]], np.float32)
    scores, labels = np.array([0.9, 0.8], np.float32), np.array([0, 0])
    assert list(nms(boxes, scores, labels, 0.6)) == [0, 1]
    clamped = clamp_boxes(boxes, 320, 320)
    assert clamped.tolist() == [[0, 0, 50, 50], [0, 0, 50, 50]]
    assert list(nms(clamped, scores, labels, 0.6)) == [0]


@given(st.lists(st.tuples(st.floats(-1e4, 1e4, width=32), st.floats(-1e4, 1e4, width=32),
                          st.floats(-1e4, 1e4, width=32), st.floats(-1e4, 1e4, width=32)), min_size=1, max_size=50),
       st.integers(1, 2048), st.integers(1, 2048))
def test_clamped_boxes_lie_inside_the_input(rows, w, h):
    from litedet.runtime.boxes import clamp_boxes

    b = clamp_boxes(np.array(rows, np.float32), w, h)
    assert (b[:, 0::2] >= 0).all() and (b[:, 0::2] <= w).all() and (b[:, 1::2] >= 0).all() and (b[:, 1::2] <= h).all()
