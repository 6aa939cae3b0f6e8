"""NanoDet (legacy head): GFL outputs per stride, postprocess kind ``gfl``."""

from __future__ import annotations

from litedet.runtime.kinds.gfl import GflSpec
from litedet.runtime.manifest import InputSpec, OutputSpec, ResizeSpec

from ..verify.checks import DetectionCheck
from .base import DeploySpec, FamilyAdapter, GraphIO, calibration_batch, register_adapter


class NanoDetAdapter(FamilyAdapter):
    family = "nanodet"
    kind = "gfl"
    check = DetectionCheck()

    def seed(self, model, info, seed, input_size, logit_std: float = 1.0):
        """Random convs, BatchNorm statistics calibrated on the reference card, class
        logits scaled to ``logit_std`` around upstream's 0.01 prior, so a few dozen
        cells pass the score threshold (as with a trained model) instead of every one or none."""
        import torch

        from litedet.models.init import seeded_random_weights

        batch = calibration_batch(model.spec.mean_bgr, model.spec.std_bgr, input_size)
        seeded_random_weights(model, seed, batch)
        head = model.head
        with torch.no_grad():
            for conv in head.gfl_cls:
                conv.bias.zero_()
            cls_logits, _ = model.eval()(batch)
            std = float(torch.cat([c.flatten() for c in cls_logits]).std())
            for conv in head.gfl_cls:
                conv.weight[: head.num_classes] *= logit_std / std
        head.reset_class_prior()

    def class_names(self, model, info, given):
        spec = model.spec
        if given is None:
            return list(spec.class_names)
        if len(given) != spec.num_classes:
            raise ValueError(f"{len(given)} class names given; {info.name} has {spec.num_classes} classes")
        return list(given)

    def output_names(self, model, info):
        return model.deploy_output_names()

    def deploy_spec(self, model, info, input_size: int, graph: GraphIO, class_names: list[str]) -> DeploySpec:
        return gfl_deploy_spec(model.spec, info.name, input_size, graph, class_names)

    def check_graph(self, runner, deploy: DeploySpec, input_size: int) -> None:
        """Every output must follow the input in both directions (one bundle, every aspect ratio)."""
        if runner.manifest.resize.pad_mode == "fixed":
            return
        import numpy as np

        big = max(deploy.postprocess.strides)
        for w, h in ((input_size, input_size - 2 * big), (input_size - 2 * big, input_size)):
            outs = runner.run_array(np.zeros((3, h, w), np.float32))
            for o in deploy.outputs:
                rows = outs[o.blob].reshape(-1, o.channels).shape[0]
                if rows != (w // o.stride) * (h // o.stride):
                    raise ValueError(f"converted graph is not shape-agnostic: output {o.blob} has {rows} rows for a "
                                     f"{w}x{h} input, expected {(w // o.stride) * (h // o.stride)}")


def gfl_deploy_spec(spec, arch: str, input_size: int, graph: GraphIO, class_names: list[str]) -> DeploySpec:
    """The manifest sections of a NanoDet graph (converted here, or wrapped from ncnn)."""
    strides = list(spec.strides)
    n = len(strides)
    if len(graph.output_names) != 2 * n:
        raise ValueError(f"converted graph has {len(graph.output_names)} outputs; {arch} needs {2 * n}")
    chans = 4 * (spec.reg_max + 1)
    blobs = graph.output_names
    outputs = [OutputSpec(b, "cls_scores", s, len(class_names), "sigmoid") for b, s in zip(blobs[:n], strides)]
    outputs += [OutputSpec(b, "dist_logits", s, chans) for b, s in zip(blobs[n:], strides)]
    return DeploySpec(
        task="detection",
        input=InputSpec(graph.input_name, "bgr", list(spec.mean_bgr), [1.0 / s for s in spec.std_bgr]),
        resize=ResizeSpec(target=input_size, pad_multiple=max(strides),
                          pad_mode="stride_multiple" if graph.dynamic else "fixed", pad_value=0.0),
        outputs=outputs,
        postprocess=GflSpec(strides=strides, reg_max=spec.reg_max, center_offset=spec.center_offset),
        class_names=list(class_names),
    )


register_adapter(NanoDetAdapter())
