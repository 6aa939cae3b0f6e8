"""The two-stage maths against torchvision (the oracle venv) and the C++ core against numpy:
anchors, box coding, NMS, PSRoIAlign, proposals and final detections."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from litedet.runtime.kinds.rpn_psroi_ops import (BOX_CLIP, decode_boxes, encode_boxes, make_anchors, ps_roi_align,
                                       rcnn_detections, select_proposals)
from litedet.runtime.boxes import nms

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def core():
    from litedet.convert.verify.cpp_core import CppCore

    return CppCore()


def _boxes(rng: np.random.Generator, n: int, w: float, h: float, outside: float = 0.3) -> np.ndarray:
    """Boxes partly outside [0, w] x [0, h], from tiny (0.05 px) to larger than the map."""
    cx = rng.uniform(-outside * w, (1 + outside) * w, n)
    cy = rng.uniform(-outside * h, (1 + outside) * h, n)
    bw = np.exp(rng.uniform(np.log(0.05), np.log(2.5 * w), n))
    bh = np.exp(rng.uniform(np.log(0.05), np.log(2.5 * h), n))
    return np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1).astype(np.float32)


# -- anchors -------------------------------------------------------------------------------

@pytest.mark.parametrize("sizes,ratios", [((32, 64, 128, 256, 512), (0.5, 0.75, 1.0, 4 / 3, 2.0)),
                                          ((32, 64, 128, 256, 512), (0.5, 1.0, 2.0)), ((24.0, 37.5), (0.3, 3.1))])
def test_anchors_equal_torchvision(oracle, core, sizes, ratios):
    a = make_anchors(21, 13, 16, list(sizes), list(ratios), 0.0)
    ref = oracle.call("anchors", feat_w=21, feat_h=13, stride=16, sizes=sizes, ratios=ratios)
    assert a.shape == ref.shape == (21 * 13 * len(sizes) * len(ratios), 4)
    np.testing.assert_array_equal(a, ref)
    np.testing.assert_array_equal(core.kind("rpn_psroi").make_anchors(21, 13, 16, sizes, ratios, 0.0), a)


def test_anchor_offset_moves_the_centre_by_offset_strides():
    a0 = make_anchors(4, 3, 16, [32.0], [1.0], 0.0)
    a5 = make_anchors(4, 3, 16, [32.0], [1.0], 0.5)
    np.testing.assert_array_equal(a5 - a0, np.full_like(a0, 8.0))
    assert a0[0].tolist() == [-16.0, -16.0, 16.0, 16.0]  # torchvision: centred on the cell's corner


# -- box coding ----------------------------------------------------------------------------

@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), wset=st.sampled_from([(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)]))
def test_decode_equals_torchvision_and_round_trips(oracle, core, seed, wset):
    rng = np.random.default_rng(seed)
    ref = _boxes(rng, 64, 320, 320)
    ref[:, 2:] = np.maximum(ref[:, 2:], ref[:, :2] + 0.5)  # positive size
    deltas = rng.normal(0, 2.0, (64, 4)).astype(np.float32)
    deltas[:3, 2:] = 50.0  # beyond box_clip: clamped before exp
    got = decode_boxes(ref, deltas, list(wset))
    want = oracle.call("decode", ref=ref, deltas=deltas, weights=wset, box_clip=BOX_CLIP)
    # exp may differ by an ulp between numpy, torch and libm; x1 = centre - half width cancels,
    # so the error is a few ulps of the largest coordinate, not of each result
    atol = max(1e-4, 4e-7 * float(np.abs(want).max()) * 4)
    np.testing.assert_allclose(got, want, rtol=0, atol=atol)
    np.testing.assert_allclose(core.kind("rpn_psroi").decode_boxes(ref, deltas, wset, BOX_CLIP), got, rtol=0, atol=atol)
    # encode is decode's inverse (where dw/dh were not clamped)
    fine = np.abs(deltas[:, 2:] / np.array(wset[2:], np.float32)).max(1) < BOX_CLIP
    back = encode_boxes(ref[fine], got[fine], list(wset))
    np.testing.assert_allclose(back, deltas[fine], rtol=1e-3, atol=2e-3)
    np.testing.assert_allclose(back, oracle.call("encode", ref=ref[fine], boxes=got[fine], weights=wset),
                               rtol=1e-4, atol=1e-4)


# -- NMS -----------------------------------------------------------------------------------

@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(0, 300), thr=st.sampled_from([0.3, 0.5, 0.7]))
def test_nms_equals_torchvision(oracle, core, seed, n, thr):
    rng = np.random.default_rng(seed)
    boxes = _boxes(rng, n, 100, 100, outside=0.0)
    boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1.0)
    scores = rng.permutation(n).astype(np.float32) / max(n, 1)  # distinct: torchvision's sort is not stable
    keep = nms(boxes, scores, np.zeros(n, np.int64), thr, class_agnostic=True)
    np.testing.assert_array_equal(keep, oracle.call("nms", boxes=boxes, scores=scores, iou_threshold=thr))
    labels = rng.integers(0, 4, n)
    keep_c = nms(boxes, scores, labels, thr)
    np.testing.assert_array_equal(keep_c, oracle.call("batched_nms", boxes=boxes, scores=scores, idxs=labels,
                                                      iou_threshold=thr))
    np.testing.assert_array_equal(core.nms(boxes, scores, labels, thr), keep_c)


# -- PSRoIAlign ----------------------------------------------------------------------------

@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), pooled=st.sampled_from([1, 3, 7]), groups=st.sampled_from([1, 5, 10]),
       sampling=st.integers(0, 4), scale=st.sampled_from([1.0, 0.5, 1 / 16]))
def test_psroi_align_equals_torchvision(oracle, core, seed, pooled, groups, sampling, scale):
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(1, 24)), int(rng.integers(1, 24))
    feat = rng.normal(0, 1, (groups * pooled * pooled, h, w)).astype(np.float32)
    rois = _boxes(rng, 17, w / scale, h / scale)
    rois[:, 2:] = np.maximum(rois[:, 2:], rois[:, :2] + 1e-3)  # x2 > x1: no empty adaptive grid
    got = ps_roi_align(feat, rois, scale, pooled, sampling)
    want = oracle.call("ps_roi_align", feat=feat, rois=rois, spatial_scale=scale, pooled=pooled, sampling_ratio=sampling)
    assert got.shape == want.shape == (17, groups, pooled, pooled)
    # the same float32 operations in the same order as torchvision's CPU kernel: bit for bit
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(core.kind("rpn_psroi").ps_roi_align(feat, rois, scale, pooled, sampling), got)


def test_psroi_align_reads_the_position_sensitive_channel():
    """Output channel c, bin (i, j) reads input channel (c * P + i) * P + j (constant maps show it)."""
    p, g = 3, 2
    feat = np.broadcast_to(np.arange(g * p * p, dtype=np.float32)[:, None, None], (g * p * p, 8, 8)).copy()
    out = ps_roi_align(feat, np.array([[0, 0, 8, 8]], np.float32), 1.0, p, 2)
    np.testing.assert_array_equal(out[0].ravel(), np.arange(g * p * p, dtype=np.float32))


# -- proposals and detections on real stage-1 outputs -------------------------------------------

def test_proposals_and_detections_equal_torchvision(oracle, thundernet_bundle, photos):
    """The runtime's whole glue on ncnn's outputs for real photos == torchvision's RPN
    filter_proposals and RoIHeads.postprocess_detections on the same tensors."""
    from litedet.runtime.kinds.rpn_psroi import PROPOSALS, RCNN_DELTAS, RCNN_SCORES, rpn_maps
    from litedet.runtime.runner import open_bundle

    r = open_bundle(thundernet_bundle)
    m, p = r.manifest, r.manifest.postprocess
    for name, img in photos.items():
        chw, _ = r.preprocess_array(img)
        in_h, in_w = chw.shape[1:]
        out = r.run_array(chw)
        logits, deltas = rpn_maps(m, out, in_w, in_h)
        fw, fh = -(-in_w // p.stride), -(-in_h // p.stride)
        anchors = make_anchors(fw, fh, p.stride, p.anchor_sizes, p.anchor_ratios, p.anchor_offset)
        props = select_proposals(logits, deltas, anchors, in_w, in_h, weights=p.rpn_box_weights,
                                 pre_nms_top_n=p.rpn_pre_nms_top_n, post_nms_top_n=p.rpn_post_nms_top_n,
                                 nms_threshold=p.rpn_nms_threshold, min_size=p.rpn_min_size,
                                 score_threshold=p.rpn_score_threshold)
        tb, ts = oracle.call("rpn", logits=logits, deltas=deltas, feat_w=fw, feat_h=fh, in_w=in_w, in_h=in_h,
                             stride=p.stride, sizes=p.anchor_sizes, ratios=p.anchor_ratios, weights=p.rpn_box_weights,
                             box_clip=p.box_clip, pre_nms_top_n=p.rpn_pre_nms_top_n,
                             post_nms_top_n=p.rpn_post_nms_top_n, nms_threshold=p.rpn_nms_threshold,
                             score_threshold=p.rpn_score_threshold)
        assert len(props) == len(tb) == p.rpn_post_nms_top_n, name
        np.testing.assert_allclose(props.boxes, tb, atol=1e-3, err_msg=name)
        np.testing.assert_allclose(props.scores, ts, atol=1e-6, err_msg=name)
        np.testing.assert_array_equal(out[PROPOSALS], props.boxes)
        boxes, scores, labels = rcnn_detections(
            out[PROPOSALS], out[RCNN_SCORES], out[RCNN_DELTAS], in_w, in_h, weights=p.rcnn_box_weights,
            score_threshold=p.score_threshold, nms_threshold=p.nms_threshold, max_detections=p.max_detections,
            min_size=p.min_size, class_agnostic=p.class_agnostic_boxes)
        # torchvision's RoIHeads decodes one delta per class: class-agnostic deltas, repeated
        deltas = np.tile(out[RCNN_DELTAS], (1, m.num_classes + 1)) if p.class_agnostic_boxes else out[RCNN_DELTAS]
        tb, ts, tl = oracle.call("rcnn", rois=out[PROPOSALS], probs=out[RCNN_SCORES], deltas=deltas,
                                 in_w=in_w, in_h=in_h, weights=p.rcnn_box_weights, box_clip=p.box_clip,
                                 score_threshold=p.score_threshold, nms_threshold=p.nms_threshold,
                                 max_detections=p.max_detections)
        assert len(boxes) > 5, name  # the seeded weights give detections to compare
        # torchvision renormalises the softmax of log(probs): scores agree to float rounding, so
        # a pair of near-equal scores may swap; compare as sets keyed by (label, box)
        ours = sorted(zip(labels.tolist(), np.round(boxes, 2).tolist(), scores.tolist()))
        theirs = sorted(zip((tl - 1).tolist(), np.round(tb, 2).tolist(), ts.tolist()))
        assert [(a, b) for a, b, _ in ours] == [(a, b) for a, b, _ in theirs], name
        np.testing.assert_allclose([s for *_, s in ours], [s for *_, s in theirs], atol=1e-5)


def test_glue_in_cpp_equals_numpy(core, thundernet_bundle, photos):
    """Proposals, PSRoIAlign and detections of the C++ core on the same ncnn outputs."""
    from litedet.runtime.runner import open_bundle

    r = open_bundle(thundernet_bundle)
    for name, img in photos.items():
        mat, g = r.preprocess(img)
        c = core.kind("rpn_psroi").match(r.manifest, r.run_mat(mat), g)
        assert c.identical and c.python > 0, (name, c)
        assert c.details["pooled_max_abs"] == 0.0, name  # bit for bit
        assert c.details["proposal_box_diff"] <= 1e-4 and c.max_box_diff <= 1e-4 and c.max_score_diff <= 1e-6, name
