"""Two-stage detectors (ThunderNet, Light-Head R-CNN): two graphs, postprocess kind ``rpn_psroi``.

Stage 1 is the main graph; the R-CNN head is a further graph (``extra_graphs``)
traced on [1, N, groups * 7 * 7] rows at two N, so any number of RoIs runs in
one extract. Both follow torchvision's detection preprocessing (RGB, ImageNet
mean/std) with a centred letterbox padded to a multiple of 32.
"""

from __future__ import annotations

from dataclasses import asdict

from litedet.datasets import IMAGENET_MEAN_RGB, IMAGENET_STD_RGB, default_class_names
from litedet.runtime.kinds.rpn_psroi import RCNN_DELTAS, RCNN_SCORES, HeadGraph, RpnPsroiSpec
from litedet.runtime.manifest import InputSpec, OutputSpec, ResizeSpec

from ..verify.checks import RpnPsroiCheck
from .base import (DeploySpec, ExtraGraph, FamilyAdapter, GraphIO, calibration_batch,
                   checkpoint_class_count, register_adapter)

# the head is traced with this many RoIs and half as many (both sides of the row count move)
TRACE_ROIS = 200
# seeded weights: the background logit's lead over the classes (sets how many detections pass 0.05)
BACKGROUND_LOGIT = 7.0


class TwoStageAdapter(FamilyAdapter):
    family = "two_stage"
    kind = "rpn_psroi"
    check = RpnPsroiCheck()

    def seed(self, model, info, seed, input_size):
        """Random convs with BatchNorm calibrated on the reference card, then the two score
        layers spread out: objectness logits with std ~3 (untrained ones are nearly uniform, so
        fp16 rounding would reorder every proposal), and class logits peaked enough that a few
        dozen (proposal, class) pairs pass the 0.05 score threshold, as with a trained model."""
        import torch

        from litedet.models.init import seeded_random_weights

        batch = calibration_batch(IMAGENET_MEAN_RGB, IMAGENET_STD_RGB, input_size, rgb=True)
        seeded_random_weights(model, seed, batch)
        with torch.no_grad():
            model.eval()
            obj, deltas, feat = model(batch)
            model.rpn.cls_logits.weight.mul_(3.0 / float(obj.std()))
            model.rpn.bbox_pred.weight.mul_(0.3 / float(deltas.std()))
            rows = feat.permute(0, 2, 3, 1).reshape(-1, model.spec.psroi_channels)
            h = torch.relu(model.rcnn.fc(rows[:: max(1, len(rows) // 512)]))
            model.rcnn.cls_score.weight.mul_(1.5 / float(model.rcnn.cls_score(h).std()))
            model.rcnn.cls_score.bias[0] += BACKGROUND_LOGIT  # most RoIs are background, as after training
            model.rcnn.bbox_pred.weight.mul_(0.2 / float(model.rcnn.bbox_pred(h).std()))

    def prepare(self, info, checkpoint, config, class_names, trust, options):
        """The class count from the checkpoint's R-CNN classifier (C + 1 rows, background first);
        --class-names must agree with it."""
        prepared = super().prepare(info, checkpoint, config, class_names, trust, options)
        # C + 1 rows, background first
        counts = checkpoint_class_count(checkpoint, "rcnn.cls_score.weight", trust, ndim=2, extra_rows=1)
        self.count_classes(prepared, counts, class_names)
        return prepared

    def output_names(self, model, info):
        return ["rpn_objectness", "rpn_deltas", "psroi_features"]

    def extra_graphs(self, model, info, input_size):
        from litedet.models.two_stage import HeadDeploy

        f = model.spec.psroi_channels
        # features_by_rois: [1, F, N, 1], traced at two RoI counts
        return [ExtraGraph("head", HeadDeploy(model).eval(), ((1, f, TRACE_ROIS, 1), (1, f, TRACE_ROIS // 2, 1)),
                           [RCNN_SCORES, RCNN_DELTAS])]

    def default_class_names(self, n):
        return default_class_names(n)  # COCO's for 80 classes

    def deploy_spec(self, model, info, input_size: int, graph: GraphIO, class_names: list[str], options) -> DeploySpec:
        s = model.spec
        if len(graph.output_names) != 3 or "head" not in graph.extra:
            raise ValueError(f"converted two-stage model has {len(graph.output_names)} stage-1 outputs and graphs "
                             f"{sorted(graph.extra)}; expected 3 outputs and a 'head' graph")
        h = graph.extra["head"]
        obj, dlt, feat = graph.output_names
        head = HeadGraph(**asdict(h.files), layout="features_by_rois", input_blob=h.input_name,
                         in_features=s.psroi_channels,
                         scores_blob=h.output_names[0], deltas_blob=h.output_names[1])
        post = RpnPsroiSpec(
            stride=s.stride, anchor_sizes=list(s.anchor_sizes), anchor_ratios=list(s.anchor_ratios),
            anchor_offset=s.anchor_offset, rpn_box_weights=list(s.rpn_box_weights),
            rpn_pre_nms_top_n=s.rpn_pre_nms_top_n, rpn_post_nms_top_n=s.rpn_post_nms_top_n,
            rpn_nms_threshold=s.rpn_nms_threshold, rpn_min_size=s.rpn_min_size,
            rpn_score_threshold=s.rpn_score_threshold, pooled_size=s.pooled_size, psroi_groups=s.psroi_groups,
            sampling_ratio=s.sampling_ratio, rcnn_box_weights=list(s.rcnn_box_weights),
            box_clip=s.box_clip, score_threshold=s.score_threshold, nms_threshold=s.nms_threshold,
            max_detections=s.max_detections, min_size=s.min_size, class_agnostic_boxes=s.class_agnostic_boxes,
            head=head)
        return DeploySpec(
            task="detection",
            input=InputSpec(graph.input_name, "rgb", list(IMAGENET_MEAN_RGB), [1.0 / v for v in IMAGENET_STD_RGB]),
            resize=ResizeSpec(target=input_size, pad_multiple=32,
                              pad_mode="stride_multiple" if graph.dynamic else "fixed", pad_value=0.0),
            outputs=[OutputSpec(obj, "rpn_objectness", s.stride, s.num_anchors),
                     OutputSpec(dlt, "rpn_deltas", s.stride, 4 * s.num_anchors),
                     OutputSpec(feat, "psroi_features", s.stride, s.psroi_channels)],
            postprocess=post,
            class_names=list(class_names),
        )

    def check_graph(self, runner, deploy: DeploySpec, input_size: int) -> None:
        """Stage 1 follows the input size both ways; the head takes any number of rows."""
        import numpy as np

        if runner.manifest.resize.pad_mode != "fixed":
            for w, h in ((input_size, input_size - 64), (input_size - 64, input_size)):
                outs = runner.run_stage1_array(np.zeros((3, h, w), np.float32))
                for o in deploy.outputs:
                    want = o.channels * -(-w // o.stride) * -(-h // o.stride)
                    if outs[o.blob].size != want:
                        raise ValueError(f"converted graph is not shape-agnostic: output {o.blob} has "
                                         f"{outs[o.blob].shape} for a {w}x{h} input")
        from litedet.runtime.kinds.rpn_psroi import head_input

        f = deploy.postprocess.head.in_features
        for rows in (1, 37):
            got = runner.run_graph("head", head_input(np.zeros((rows, f), np.float32)))
            n = got[deploy.postprocess.head.scores_blob].size // (len(deploy.class_names) + 1)
            if n != rows:
                raise ValueError(f"the converted head gives scores for {n} RoIs when given {rows}")


register_adapter(TwoStageAdapter())
