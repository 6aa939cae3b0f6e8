"""RefineDet (VGG16, ResNeSt-50): four concatenated outputs, postprocess kind ``ssd_refine``.

Preprocessing as RefineDet.PyTorch trains and tests: BGR, its mean (104, 117, 123) subtracted, no
std, the image stretched to input x input (BaseTransform: cv2.resize to a square); the priors are
the model's (``RefineDetSpec``), computed by the runtime from the manifest.
"""

from __future__ import annotations

import math

from litedet.datasets import voc_class_names
from litedet.runtime.kinds.ssd_refine import SsdRefineSpec
from litedet.runtime.manifest import InputSpec, OutputSpec, ResizeSpec

from ..verify.checks import DetectionCheck
from .base import (DeploySpec, FamilyAdapter, GraphIO, Prepared, calibration_batch, checkpoint_class_count,
                   register_adapter)

# seeded weights: the spread of each head's outputs (untrained VGG without BatchNorm gives offsets
# in the hundreds, which exp() turns into boxes of infinite size) and the background's lead, so
# that a few dozen (anchor, class) pairs pass 0.01 as after training
SEED_STD = {"arm_loc": 0.5, "arm_conf": 3.0, "odm_loc": 0.5, "odm_conf": 1.5}
BACKGROUND_LOGIT = 9.0  # plus ln(classes): more classes, more pairs to pass


def model_spec():
    from litedet.models.refinedet import REFINEDET_SPEC

    return REFINEDET_SPEC


class RefineDetAdapter(FamilyAdapter):
    family = "refinedet"
    kind = "ssd_refine"
    check = DetectionCheck()
    input_multiple = 64

    def seed(self, model, info, seed, input_size):
        """Random convs (BatchNorm calibrated in the ResNeSt backbone), every conv without a
        BatchNorm after it brought to unit-spread outputs on the reference card
        (``unit_output_convs``), then each head's outputs spread to SEED_STD and the background
        given its lead."""
        import torch
        from torch import nn

        from litedet.models.init import BN_BIAS_SHIFT, seeded_random_weights, unit_output_convs

        size = min(input_size, 320) // 64 * 64 or 64
        batch = calibration_batch(model.spec.mean_bgr, (1.0, 1.0, 1.0), size)
        seeded_random_weights(model, seed, batch)
        with_bn = {id(m) for name, m in model.named_modules() if name.startswith("model.")}
        convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and id(m) not in with_bn]
        model.eval()
        unit_output_convs(convs, lambda: model(batch))
        with torch.no_grad():
            for name, std in SEED_STD.items():
                for conv in getattr(model, name):
                    conv.weight.mul_(std)
                    conv.bias.sub_(BN_BIAS_SHIFT).mul_(std)  # centred
            a, c = model.spec.anchors_per_cell, model.num_classes + 1
            lead = BACKGROUND_LOGIT + math.log(model.num_classes)
            for conv in model.odm_conf:
                conv.bias.view(a, c)[:, 0] += lead  # most anchors are background, as after training

    def prepare(self, info, checkpoint, config, class_names, trust, options) -> Prepared:
        """The class count from the checkpoint's ODM classifier (anchors x (C + 1) rows, background
        first); --class-names must agree."""
        prepared = super().prepare(info, checkpoint, config, class_names, trust, options)
        counts = checkpoint_class_count(checkpoint, "odm_conf.0.weight", trust, ndim=4, extra_rows=1,
                                        rows_per_class=model_spec().anchors_per_cell)
        self.count_classes(prepared, counts, class_names)
        return prepared

    def default_class_names(self, n):
        return voc_class_names(n)  # VOC's for 20 classes (RefineDet's data set)

    def output_names(self, model, info):
        return [role for role, _ in info.outputs]

    def deploy_spec(self, model, info, input_size: int, graph: GraphIO, class_names: list[str], options) -> DeploySpec:
        if len(graph.output_names) != 4:
            raise ValueError(f"converted RefineDet graph has {len(graph.output_names)} outputs; expected 4 "
                             "(arm_loc, arm_conf, odm_loc, odm_conf)")
        if input_size % self.input_multiple:
            raise ValueError(f"--input-size {input_size}: RefineDet needs a multiple of {self.input_multiple} "
                             "(its four levels, strides 8 to 64)")
        s = model.spec
        chans = (4, 2, 4, len(class_names) + 1)
        return DeploySpec(
            task="detection",
            input=InputSpec(graph.input_name, "bgr", list(s.mean_bgr), [1.0, 1.0, 1.0]),
            resize=ResizeSpec(target=input_size, pad_multiple=self.input_multiple, pad_mode="fixed", policy="stretch"),
            outputs=[OutputSpec(b, role, 0, n) for b, (role, _), n in zip(graph.output_names, info.outputs, chans)],
            postprocess=SsdRefineSpec(steps=list(s.steps), min_sizes=list(s.min_sizes),
                                      aspect_ratios=list(s.aspect_ratios), variances=list(s.variances), clip=s.clip,
                                      objectness_threshold=s.objectness_threshold, score_threshold=s.score_threshold,
                                      nms_threshold=s.nms_threshold, pre_nms_top_k=s.pre_nms_top_k,
                                      max_detections=s.max_detections),
            class_names=list(class_names),
        )


register_adapter(RefineDetAdapter())
