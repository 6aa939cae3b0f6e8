"""ImageNet classifiers (the backbone zoo): one logits output, postprocess kind ``softmax_topk``."""

from __future__ import annotations

from litedet.runtime.kinds.softmax_topk import SoftmaxTopkSpec
from litedet.runtime.manifest import InputSpec, OutputSpec, ResizeSpec

from ..verify.checks import TopKCheck
from .base import DeploySpec, FamilyAdapter, GraphIO, calibration_batch, register_adapter

# torchvision's ImageNet recipe: RGB, mean/std in 0..255 units, resize 256 + centre crop 224
from litedet.datasets import IMAGENET_MEAN_RGB, IMAGENET_STD_RGB
CROP_FRACTION = 0.875


class ClassifierAdapter(FamilyAdapter):
    family = "classifier"
    kind = "softmax_topk"
    check = TopKCheck()
    input_multiple = 1  # global pooling: any side the layers accept (SqueezeNet v1.1 was trained at 227)

    def seed(self, model, info, seed, input_size):
        from litedet.models.init import seeded_random_weights

        seeded_random_weights(model, seed, calibration_batch(IMAGENET_MEAN_RGB, IMAGENET_STD_RGB, input_size, rgb=True))

    def deploy_spec(self, model, info, input_size: int, graph: GraphIO, class_names: list[str], options) -> DeploySpec:
        if len(graph.output_names) != 1:
            raise ValueError(f"converted classifier has {len(graph.output_names)} outputs; expected one (the logits)")
        return DeploySpec(
            task="classification",
            input=InputSpec(graph.input_name, "rgb", list(IMAGENET_MEAN_RGB), [1.0 / s for s in IMAGENET_STD_RGB]),
            resize=ResizeSpec(target=input_size, pad_multiple=1, policy="center_crop", crop_fraction=CROP_FRACTION),
            outputs=[OutputSpec(graph.output_names[0], "logits", 0, len(class_names))],
            postprocess=SoftmaxTopkSpec(top_k=5),
            class_names=list(class_names),
        )


register_adapter(ClassifierAdapter())
