"""NanoDet (legacy NanoDet-m head and NanoDet-Plus): GFL outputs per stride, postprocess kind ``gfl``.

What users bring: a checkpoint with their own class count (read from the head's
shapes), NanoDet's own ``.yml`` config (architecture, classes, input size,
normalisation, val resize), and a choice between litedet's device-style
decoding and upstream's evaluation decoding.
"""

from __future__ import annotations

from pathlib import Path

from litedet.runtime.kinds.gfl import GflSpec
from litedet.runtime.manifest import InputSpec, OutputSpec, ResizeSpec

from ..verify.checks import DetectionCheck
from .base import DeploySpec, FamilyAdapter, GraphIO, Prepared, agreed_class_count, calibration_batch, register_adapter

# decode presets: litedet's device default (one class per cell, as upstream's ncnn demo) and
# upstream's evaluation (every class score above 0.05 a candidate, NMS 0.6, 100 boxes)
DECODE = {
    "device": dict(multi_label=False, score_threshold=0.35, nms_threshold=0.6, max_detections=100),
    "upstream": dict(multi_label=True, score_threshold=0.05, nms_threshold=0.6, max_detections=100),
}
# preprocessing: litedet's centred letterbox, or upstream's val pipeline (keep_ratio: resize,
# pad at the right/bottom with 0 after normalisation; no keep_ratio: stretch to the input size)
PREPROCESS = ("letterbox", "upstream_keep_ratio", "upstream_stretch")


class NanoDetAdapter(FamilyAdapter):
    family = "nanodet"
    kind = "gfl"
    check = DetectionCheck()
    deploy_options = {"decode": tuple(DECODE), "preprocess": PREPROCESS}
    preprocess_convention = True  # every NanoDet export: BGR, upstream's mean/norm (config: normalize)

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

    def config_arch(self, config):
        from litedet.models.nanodet_config import read_nanodet_config

        return read_nanodet_config(config).arch

    def prepare(self, info, checkpoint, config, class_names, trust, options):
        """Class count from the checkpoint's head, classes / input size / normalisation /
        val resize from the config; every source that says a class count must agree."""
        from litedet.datasets import COCO_CLASSES, default_class_names
        from litedet.models import create_model

        spec = create_model(info.name).spec
        kwargs: dict = {}
        notes: list[str] = []
        counts: dict[str, int] = {}
        cfg = None
        if config is not None:
            from litedet.models.nanodet_config import read_nanodet_config

            cfg = read_nanodet_config(config)
            if cfg.arch != info.name:
                raise ValueError(f"{config} describes {cfg.arch}, not {info.name}")
            counts[f"the config {Path(config).name}"] = cfg.num_classes
            kwargs.update(mean_bgr=cfg.mean_bgr, std_bgr=cfg.std_bgr)
            if not options.get("preprocess"):
                options = {**options, "preprocess": "upstream_keep_ratio" if cfg.keep_ratio else "upstream_stretch"}
        inferred = _checkpoint_classes(checkpoint, spec.reg_max, trust) if checkpoint is not None else None
        if inferred is not None:
            counts[f"the checkpoint's head ({Path(checkpoint).name})"] = inferred
        if class_names is not None:
            counts["--class-names"] = len(class_names)
        agreed = agreed_class_count(counts)
        n = spec.num_classes if agreed is None else agreed
        names = class_names or (list(cfg.class_names) if cfg else None)
        if names is None:
            names = default_class_names(n)
            if n != len(COCO_CLASSES):
                notes.append(f"{n} classes inferred from the checkpoint; named class_0..class_{n - 1} "
                             "(pass --class-names or --config for their names)")
        kwargs.update(num_classes=n, class_names=tuple(names))
        return Prepared(kwargs, cfg.input_size if cfg else None, self.check_options(options), notes)

    def load(self, model, info, checkpoint, trust=False):
        rep = super().load(model, info, checkpoint, trust)
        if rep.kind == "onnx":  # the imported weights must reproduce the user's own exported graph
            rep.details["onnx_max_rel"] = _check_against_onnx(model, checkpoint)
        return rep

    def class_names(self, model, info, given):
        return list(model.spec.class_names)

    def output_names(self, model, info):
        return model.deploy_output_names()

    def deploy_spec(self, model, info, input_size: int, graph: GraphIO, class_names: list[str], options) -> DeploySpec:
        return gfl_deploy_spec(model.spec, info.name, input_size, graph, class_names, options)

    def check_graph(self, runner, deploy: DeploySpec, input_size: int) -> None:
        """Every output must follow the input in both directions (one bundle, every aspect ratio)."""
        if runner.manifest.resize.pad_mode == "fixed":
            return
        import numpy as np

        big = 32
        for w, h in ((input_size, input_size - 2 * big), (input_size - 2 * big, input_size)):
            outs = runner.run_array(np.zeros((3, h, w), np.float32))
            for o in deploy.outputs:
                rows = outs[o.blob].reshape(-1, o.channels).shape[0]
                want = -(-w // o.stride) * -(-h // o.stride)
                if rows != want:
                    raise ValueError(f"converted graph is not shape-agnostic: output {o.blob} has {rows} rows for a "
                                     f"{w}x{h} input, expected {want}")


def _checkpoint_classes(checkpoint, reg_max: int, trust: bool) -> int | None:
    """num_classes from the head's last conv (``head.gfl_cls``: classes + 4*(reg_max+1) outputs);
    for an exported graph (ncnn .param, ONNX), from its last convolution."""
    suffix = Path(checkpoint).suffix.lower()
    if suffix == ".param":
        from litedet.ncnn_param import parse_param

        convs = [layer for layer in parse_param(checkpoint) if layer.type in ("Convolution", "ConvolutionDepthWise")]
        out = int(convs[-1].p(0)) if convs else None
    elif suffix == ".onnx":
        from ..onnx_import import onnx_last_conv_out

        out = onnx_last_conv_out(checkpoint)
    else:
        from litedet.models.checkpoint import read_state_dict

        sd, *_ = read_state_dict(checkpoint, trust=trust)
        w = sd.get("head.gfl_cls.0.weight")
        out = int(w.shape[0]) if w is not None and w.ndim == 4 else None  # else: the key check names what is wrong
    n = None if out is None else out - 4 * (reg_max + 1)
    return n if n is not None and n > 0 else None


def _check_against_onnx(model, path, limit: float = 1e-3) -> float:
    """onnxruntime on the user's ONNX vs our model with the imported weights, on one input:
    upstream's export layout is [1, N, classes + 4*(reg_max+1)] (sigmoid on the classes,
    levels concatenated), or older exports' per-level cls/dis outputs."""
    import numpy as np
    import onnxruntime as ort
    import torch

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) and d > 0 else 320 for d in inp.shape]
    shape[0] = 1
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    outs = sess.run(None, {inp.name: x})
    was_training = model.training
    model.eval()  # BatchNorm with its running statistics, as exported
    with torch.no_grad():
        ours = [o[0].numpy() for o in model.forward_deploy(torch.from_numpy(x))]
    model.train(was_training)
    n, k = len(ours) // 2, ours[0].shape[1]
    if len(outs) == 1:
        ref = outs[0][0].astype(np.float64)
        got = np.concatenate([np.concatenate([c, d], axis=1) for c, d in zip(ours[:n], ours[n:])], axis=0)
        if ref.ndim == 2 and ref.shape[1] > k and (ref[:, :k].min() < 0 or ref[:, :k].max() > 1):
            # exported without the sigmoid (upstream's `if torch.onnx.is_in_onnx_export:` tests a
            # function object, which newer torch makes a flag that the legacy exporter leaves False)
            ref[:, :k] = 1 / (1 + np.exp(-ref[:, :k]))
    else:
        ref = np.concatenate([o.reshape(-1) for o in outs])
        got = np.concatenate([o.reshape(-1) for o in ours])
    if ref.shape != got.shape:
        raise ValueError(f"{path} outputs {ref.shape} values; {type(model).__name__} with these weights gives "
                         f"{got.shape}: not this architecture's export")
    rel = float(np.abs(ref - got).max() / max(float(np.abs(ref).max()), 1e-6))
    if rel > limit:
        raise ValueError(f"the weights imported from {path} do not reproduce its outputs (max rel {rel:.2e} > "
                         f"{limit}): the graph is not this architecture")
    return rel


def gfl_deploy_spec(spec, arch: str, input_size: int, graph: GraphIO, class_names: list[str],
                    options: dict | None = None) -> DeploySpec:
    """The manifest sections of a NanoDet graph (converted here, or wrapped from ncnn)."""
    options = {"decode": "device", "preprocess": "letterbox", **(options or {})}
    strides = list(spec.strides)
    n = len(strides)
    if len(graph.output_names) != 2 * n:
        raise ValueError(f"converted graph has {len(graph.output_names)} outputs; {arch} needs {2 * n}")
    chans = 4 * (spec.reg_max + 1)
    blobs = graph.output_names
    outputs = [OutputSpec(b, "cls_scores", s, len(class_names), "sigmoid") for b, s in zip(blobs[:n], strides)]
    outputs += [OutputSpec(b, "dist_logits", s, chans) for b, s in zip(blobs[n:], strides)]
    # pad to a multiple of 32 (a stride-64 level then has ceil(size / 64) cells, as upstream's convs give)
    multiple = min(max(strides), 32)
    pre = options["preprocess"]
    if pre == "upstream_stretch":
        resize = ResizeSpec(target=input_size, pad_multiple=multiple, pad_mode="fixed", policy="stretch")
    elif pre == "upstream_keep_ratio":
        resize = ResizeSpec(target=input_size, pad_multiple=multiple,
                            pad_mode="stride_multiple" if graph.dynamic else "fixed",
                            policy="letterbox_top_left", pad_value=0.0, pad_normalized=True)
    else:
        resize = ResizeSpec(target=input_size, pad_multiple=multiple,
                            pad_mode="stride_multiple" if graph.dynamic else "fixed", pad_value=0.0)
    return DeploySpec(
        task="detection",
        input=InputSpec(graph.input_name, "bgr", list(spec.mean_bgr), [1.0 / s for s in spec.std_bgr]),
        resize=resize,
        outputs=outputs,
        postprocess=GflSpec(strides=strides, reg_max=spec.reg_max, center_offset=spec.center_offset,
                            clamp_to_input=True, **DECODE[options["decode"]]),
        class_names=list(class_names),
    )


register_adapter(NanoDetAdapter())
