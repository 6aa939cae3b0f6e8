"""The torchvision oracle's server: runs in the oracle venv (scripts/setup_oracle.sh, torch
2.14.1 + torchvision 0.29.1), never imports litedet. Requests on stdin, replies on stdout,
each a 4-byte little-endian length and a pickle: (op, kwargs) in, ("ok", result) or
("error", message) out. Arrays are numpy; every op runs torchvision's own code."""

from __future__ import annotations

import pickle
import struct
import sys

import numpy as np
import torch
import torchvision
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection._utils import BoxCoder
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.ops import batched_nms, nms, ps_roi_align

torch.set_num_threads(1)


def _t(a) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def op_versions() -> dict:
    return {"torch": torch.__version__, "torchvision": torchvision.__version__}


def op_ps_roi_align(feat, rois, spatial_scale, pooled, sampling_ratio):
    r = _t(rois).reshape(-1, 4)
    r = torch.cat([torch.zeros(len(r), 1), r], dim=1)  # batch index 0
    # torchvision's sampling_ratio: <= 0 is adaptive (litedet writes 0)
    return ps_roi_align(_t(feat)[None], r, (pooled, pooled), spatial_scale, sampling_ratio if sampling_ratio > 0 else -1).numpy()


def op_nms(boxes, scores, iou_threshold):
    return nms(_t(boxes).reshape(-1, 4), _t(scores), iou_threshold).numpy()


def op_batched_nms(boxes, scores, idxs, iou_threshold):
    return batched_nms(_t(boxes).reshape(-1, 4), _t(scores), torch.from_numpy(np.asarray(idxs, np.int64)),
                       iou_threshold).numpy()


def _anchor_generator(sizes, ratios) -> AnchorGenerator:
    return AnchorGenerator(sizes=(tuple(float(s) for s in sizes),), aspect_ratios=(tuple(float(r) for r in ratios),))


def op_anchors(feat_w, feat_h, stride, sizes, ratios):
    ag = _anchor_generator(sizes, ratios)
    s = torch.tensor(stride, dtype=torch.int64)
    return ag.grid_anchors([[feat_h, feat_w]], [[s, s]])[0].numpy()


def op_decode(ref, deltas, weights, box_clip):
    return BoxCoder(tuple(weights), box_clip).decode_single(_t(deltas).reshape(-1, 4), _t(ref).reshape(-1, 4)).numpy()


def op_encode(ref, boxes, weights):
    return BoxCoder(tuple(weights)).encode_single(_t(boxes).reshape(-1, 4), _t(ref).reshape(-1, 4)).numpy()


def op_rpn(logits, deltas, feat_w, feat_h, in_w, in_h, stride, sizes, ratios, weights, box_clip, pre_nms_top_n,
           post_nms_top_n, nms_threshold, score_threshold):
    """Anchors, decode and filter_proposals of torchvision's RPN (eval mode), one image.
    logits [H*W*A] and deltas [H*W*A, 4] in torchvision's anchor order."""
    ag = _anchor_generator(sizes, ratios)
    s = torch.tensor(stride, dtype=torch.int64)
    anchors = ag.grid_anchors([[feat_h, feat_w]], [[s, s]])[0]
    rpn = RegionProposalNetwork(ag, torch.nn.Identity(), 0.7, 0.3, 256, 0.5,
                                dict(training=pre_nms_top_n, testing=pre_nms_top_n),
                                dict(training=post_nms_top_n, testing=post_nms_top_n), nms_threshold,
                                score_threshold).eval()
    rpn.box_coder = BoxCoder(tuple(weights), box_clip)
    props = rpn.box_coder.decode(_t(deltas).reshape(-1, 4), [anchors]).view(1, -1, 4)
    obj = _t(logits).reshape(1, -1)
    boxes, scores = rpn.filter_proposals(props, obj, [(in_h, in_w)], [obj.shape[1]])
    return boxes[0].numpy(), scores[0].numpy()


def op_rcnn(rois, probs, deltas, in_w, in_h, weights, box_clip, score_threshold, nms_threshold, max_detections):
    """RoIHeads.postprocess_detections, one image. It applies the softmax itself: it gets log(probs)."""
    heads = RoIHeads(None, None, None, 0.5, 0.5, 512, 0.25, tuple(weights), score_threshold, nms_threshold,
                     max_detections)
    heads.box_coder = BoxCoder(tuple(weights), box_clip)
    logits = torch.log(_t(probs))
    boxes, scores, labels = heads.postprocess_detections(logits, _t(deltas), [_t(rois).reshape(-1, 4)], [(in_h, in_w)])
    return boxes[0].numpy(), scores[0].numpy(), labels[0].numpy()


def op_tv_classifier(name, x):
    """torchvision.models.NAME (random init, seed 0): its state dict and its logits for x."""
    torch.manual_seed(0)
    m = getattr(torchvision.models, name)(weights=None).eval()
    with torch.no_grad():
        out = m(torch.from_numpy(x)).numpy()
    return {k: v.numpy() for k, v in m.state_dict().items()}, out


def main() -> int:
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        head = stdin.read(4)
        if len(head) < 4:
            return 0
        op, kwargs = pickle.loads(stdin.read(struct.unpack("<I", head)[0]))
        try:
            reply = ("ok", globals()[f"op_{op}"](**kwargs))
        except Exception as e:  # reported to the test, which fails with it
            reply = ("error", f"{type(e).__name__}: {e}")
        data = pickle.dumps(reply)
        stdout.write(struct.pack("<I", len(data)) + data)
        stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
