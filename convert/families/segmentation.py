"""Semantic segmentation (BiSeNet V1/V2, DFANet): one logits output, postprocess kind ``argmax_mask``.

Preprocessing as CoinCheung/BiSeNet trains and demos its models: RGB, its Cityscapes mean/std
on 0..1 pixels (here on 0..255: mean x 255, norm 1 / (std x 255)), the image stretched to its own
size rounded up to a multiple of 32 (64 for DFANet) after the long side is brought down to the
input size (resize policy ``stretch_multiple``). ``--upsample graph`` keeps the bilinear upsample
of the logits in the graph (CoinCheung's export); ``runtime`` ends the graph at the head's stride
and the runtime / C++ core upsample while taking the argmax.
"""

from __future__ import annotations


from litedet.datasets import CITYSCAPES_MEAN_RGB, CITYSCAPES_STD_RGB, palette_rgb, segmentation_class_names
from litedet.runtime.kinds.argmax_mask import MAX_SEGMENTATION_CLASSES, ArgmaxMaskSpec
from litedet.runtime.manifest import InputSpec, OutputSpec, ResizeSpec

from ..verify.mask_check import MaskCheck
from .base import (DeploySpec, FamilyAdapter, GraphIO, Prepared, calibration_batch,
                   checkpoint_class_count, register_adapter)

MEAN_255 = tuple(m * 255.0 for m in CITYSCAPES_MEAN_RGB)
STD_255 = tuple(s * 255.0 for s in CITYSCAPES_STD_RGB)
# upsample in the graph or in the runtime: the first is the default (benchmarks/segmentation.py
# measured both; see benchmarks/README.md, "Segmentation")
UPSAMPLE = ("graph", "runtime")
SEED_LOGIT_STD = 2.0  # seeded weights: the spread of the class logits (untrained ones are nearly flat)


def _classifier_key(info) -> str:
    from litedet.models import create_model

    model = create_model(info.name)
    return next(n for n, m in model.named_modules() if m is model.classifier) + ".weight"


class SegmentationAdapter(FamilyAdapter):
    family = "segmentation"
    kind = "argmax_mask"
    check = MaskCheck()
    deploy_options = {"upsample": UPSAMPLE}

    def seed(self, model, info, seed, input_size):
        """Random convs with BatchNorm calibrated on the reference card, then the classifier
        scaled so the logits spread (std SEED_LOGIT_STD) and centred per class on the card, so the
        masks hold several classes in image-dependent regions instead of one flat class."""
        import torch

        from litedet.models.init import seeded_random_weights

        size = min(input_size, 256) // 64 * 64 or 64
        batch = calibration_batch(MEAN_255, STD_255, size, rgb=True)
        seeded_random_weights(model, seed, batch)
        with torch.no_grad():
            model.eval()
            logits = model.head_logits(batch)
            cls = model.classifier
            cls.weight.mul_(SEED_LOGIT_STD / float(logits.std()))
            centred = model.head_logits(batch).mean(dim=(0, 2, 3))
            cls.bias.sub_(centred)

    def prepare(self, info, checkpoint, config, class_names, trust, options) -> Prepared:
        """The class count from the checkpoint's classifier conv (--class-names must agree); the
        upsample choice goes to the builder (it decides what the deploy forward returns)."""
        prepared = super().prepare(info, checkpoint, config, class_names, trust, options)
        n = self.count_classes(prepared, checkpoint_class_count(checkpoint, _classifier_key(info), trust, ndim=4),
                               class_names)
        if n is not None and not 1 <= n <= MAX_SEGMENTATION_CLASSES:
            raise ValueError(f"{n} classes; a segmentation mask is uint8: 1 to {MAX_SEGMENTATION_CLASSES} classes")
        prepared.model_kwargs["deploy_upsample"] = prepared.options["upsample"] == "graph"
        return prepared

    def default_class_names(self, n):
        return segmentation_class_names(n)  # Cityscapes' for 19 classes

    def trace_shapes(self, info, input_size):
        """Landscape inputs (Cityscapes' 2:1), both sides moving between the two."""
        from litedet.models import create_model

        m = create_model(info.name).input_multiple
        h = max(m, input_size // 2 // m * m)
        return (1, 3, h, input_size), (1, 3, max(m, h - m), max(m, input_size - m))

    def output_names(self, model, info):
        return ["logits"]

    def deploy_spec(self, model, info, input_size: int, graph: GraphIO, class_names: list[str], options) -> DeploySpec:
        if len(graph.output_names) != 1:
            raise ValueError(f"converted segmentation graph has {len(graph.output_names)} outputs; expected one (the logits)")
        multiple = model.input_multiple
        if input_size % multiple:
            raise ValueError(f"--input-size {input_size}: {info.name} needs a multiple of {multiple}")
        stride = 1 if model.deploy_upsample else model.head_stride
        palette = [c for rgb in palette_rgb(len(class_names)) for c in rgb]
        return DeploySpec(
            task="segmentation",
            input=InputSpec(graph.input_name, "rgb", list(MEAN_255), [1.0 / s for s in STD_255]),
            resize=ResizeSpec(target=input_size, pad_multiple=multiple, pad_mode="stride_multiple",
                              policy="stretch_multiple"),
            outputs=[OutputSpec(graph.output_names[0], "logits", stride, len(class_names))],
            postprocess=ArgmaxMaskSpec(upsample=options["upsample"], head_stride=stride, palette=palette),
            class_names=list(class_names),
        )


register_adapter(SegmentationAdapter())
