"""OneNet (ResNet-18 / ResNet-50, no deformable convs): a score map and a distance map at stride 4,
postprocess kind ``topk`` (no NMS).

Preprocessing as OneNet (detectron2) trains and tests: RGB, ImageNet mean and std, the image
scaled and padded at the bottom right to a multiple of 32 with zeros after normalisation
(``letterbox_top_left``, pad_normalized). detectron2 scales the short side to 512 (long side at
most 853); a phone app fixes the long side instead: the input size is the long side here.
"""

from __future__ import annotations

from litedet.datasets import default_class_names
from litedet.runtime.kinds.topk import TopkSpec
from litedet.runtime.manifest import InputSpec, OutputSpec, ResizeSpec

from ..verify.checks import DetectionCheck
from .base import DeploySpec, FamilyAdapter, GraphIO, Prepared, calibration_batch, checkpoint_class_count, register_adapter

# seeded weights: class logits with this spread, centred low enough that a few dozen of the
# C x H x W pairs pass the 0.3 threshold (fewer than k, as a trained OneNet), and box distances
# of a few tens of pixels
SEED_LOGIT_STD, SEED_LOGIT_MEAN = 1.5, -4.5
SEED_LTRB_STD, SEED_LTRB_MEAN = 12.0, 24.0


class OneNetAdapter(FamilyAdapter):
    family = "onenet"
    kind = "topk"
    check = DetectionCheck()

    def seed(self, model, info, seed, input_size):
        import torch

        from litedet.models.init import seeded_random_weights

        size = min(input_size, 320) // 32 * 32 or 32
        batch = calibration_batch(model.spec.mean_rgb, model.spec.std_rgb, size, rgb=True)
        seeded_random_weights(model, seed, batch)
        head = model.head
        with torch.no_grad():
            model.eval()
            feat = torch.relu(head.feat1(head.deconv(model.backbone(batch))))
            for conv, std, mean in ((head.cls_score, SEED_LOGIT_STD, SEED_LOGIT_MEAN),
                                    (head.ltrb_pred, SEED_LTRB_STD, SEED_LTRB_MEAN)):
                out = conv(feat)
                k = std / float(out.std())
                conv.weight.mul_(k)
                conv.bias.copy_(mean - out.mean(dim=(0, 2, 3)) * k + conv.bias * k)

    def prepare(self, info, checkpoint, config, class_names, trust, options) -> Prepared:
        """The class count from the checkpoint's head.cls_score (one row per class); --class-names
        must agree."""
        prepared = super().prepare(info, checkpoint, config, class_names, trust, options)
        self.count_classes(prepared, checkpoint_class_count(checkpoint, "head.cls_score.weight", trust, ndim=4),
                           class_names)
        return prepared

    def default_class_names(self, n):
        return default_class_names(n)  # COCO's for 80 classes

    def trace_shapes(self, info, input_size):
        """Both sides move by multiples of 32 (the backbone's stride; the map itself is at stride 4)."""
        return (1, 3, input_size, input_size), (1, 3, max(32, input_size - 64), max(32, input_size - 32))

    def output_names(self, model, info):
        return [role for role, _ in info.outputs]

    def deploy_spec(self, model, info, input_size: int, graph: GraphIO, class_names: list[str], options) -> DeploySpec:
        if len(graph.output_names) != 2:
            raise ValueError(f"converted OneNet graph has {len(graph.output_names)} outputs; expected 2 (scores, ltrb)")
        s = model.spec
        scores, ltrb = graph.output_names
        return DeploySpec(
            task="detection",
            input=InputSpec(graph.input_name, "rgb", list(s.mean_rgb), [1.0 / v for v in s.std_rgb]),
            resize=ResizeSpec(target=input_size, pad_multiple=model.input_multiple,
                              pad_mode="stride_multiple" if graph.dynamic else "fixed", policy="letterbox_top_left",
                              pad_value=0.0, pad_normalized=True),
            outputs=[OutputSpec(scores, "scores", s.stride, len(class_names), "sigmoid"),
                     OutputSpec(ltrb, "ltrb", s.stride, 4)],
            postprocess=TopkSpec(stride=s.stride, center_offset=s.center_offset, max_detections=s.max_detections),
            class_names=list(class_names),
        )


register_adapter(OneNetAdapter())
