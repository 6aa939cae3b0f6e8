"""The aarch64 side of icount.py: load a bundle, and in ``run`` mode run one inference.

Run by the emulated python (numpy + ncnn + litedet.runtime only):

    python3.11 icount_child.py BUNDLE INPUT.npy fp16|fp32 load|stage1|glue|run|layers

``load`` (the baseline) does everything ``run`` does except ``run_array``,
so the difference of their instruction counts is one inference. For a two-stage
bundle the modes stop after the first graph (``stage1``), after the glue between the
graphs (``glue``: proposals + PSRoIAlign in numpy) or after everything (``run``), so
differences of consecutive modes count each part.

``layers`` (run with the plugin's marks=PATH) runs the main graph one layer at a time: before and
after extracting each layer's output, and after extracting it a second time, it calls getppid,
which the plugin records; the first difference minus the second (the extract call and the
output's conversion alone) is the layer's cost (icount.layer_costs).

BUNDLE may instead be a bare ncnn ``.param`` (ncnn's benchmark graphs, or a bundle's own
graph), loaded with empty weights as benchncnn does; ``run`` then extracts every output.
"""

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _bootstrap_litedet(root: Path) -> None:
    """litedet -> root/litedet, litedet.runtime -> root/runtime (as the editable install maps them)."""
    spec = importlib.util.spec_from_file_location("litedet", root / "litedet" / "__init__.py",
                                                  submodule_search_locations=[str(root / "litedet"), str(root)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules["litedet"] = mod
    spec.loader.exec_module(mod)


def main(argv: list[str]) -> int:
    bundle, input_path, precision, mode = argv
    if precision not in ("fp16", "fp32") or mode not in ("load", "stage1", "glue", "run", "layers"):
        sys.exit("usage: icount_child.py BUNDLE INPUT.npy fp16|fp32 load|stage1|glue|run|layers")
    _bootstrap_litedet(ROOT)
    import ncnn
    import numpy as np

    from litedet.runtime import open_bundle

    x = np.load(input_path)
    if bundle.endswith(".param"):
        return _empty_graph(ncnn, bundle, x, precision == "fp16", mode)
    det = open_bundle(bundle, threads=1, fp16=precision == "fp16")  # any kind: detector, classifier, ...
    shapes = {}
    if mode == "layers":
        return _layers(ncnn, det, x)
    if mode == "run":
        shapes = {k: list(v.shape) for k, v in det.run_array(x).items()}
    elif mode in ("stage1", "glue"):
        out = det.run_stage1_array(x)
        if mode == "glue":  # the two-stage glue without the head graph
            from litedet.runtime.kinds.rpn_psroi import pool_rois, proposals_of

            props = proposals_of(det.manifest, out, x.shape[2], x.shape[1])
            out = {"pooled": pool_rois(det.manifest, out, props.boxes, x.shape[2], x.shape[1])}
        shapes = {k: list(v.shape) for k, v in out.items()}
    o = det.net.opt
    print(json.dumps({"asimdhp": bool(ncnn.cpu_support_arm_asimdhp()), "input": list(x.shape), "outputs": shapes,
                      "opt": {k: bool(getattr(o, k)) for k in ("use_fp16_storage", "use_fp16_packed",
                                                                "use_fp16_arithmetic")}}))
    return 0


def _layers(ncnn, det, x) -> int:
    import os

    from litedet.ncnn_param import parse_param

    layers = [la for la in parse_param(Path(det.bundle_dir) / det.manifest.param) if la.type != "Input"]
    with det.net.create_extractor() as ex:
        ex.set_light_mode(False)  # every blob kept: each layer runs once, when its output is first asked for
        ex.input(det.manifest.input.blob, ncnn.Mat(x).clone())
        for la in layers:
            os.getppid()
            ex.extract(la.outputs[0])
            os.getppid()
            ex.extract(la.outputs[0])
            os.getppid()
    print(json.dumps({"layers": [[la.name, la.type] for la in layers]}))
    return 0


def _empty_graph(ncnn, param: str, x, fp16: bool, mode: str) -> int:
    net = ncnn.Net()
    o = net.opt
    o.num_threads = 1
    o.use_fp16_storage = o.use_fp16_packed = o.use_fp16_arithmetic = fp16
    net.load_param(param)
    net.load_model(ncnn.DataReaderFromEmpty())
    shapes = {}
    if mode == "run":
        with net.create_extractor() as ex:
            ex.input(net.input_names()[0], ncnn.Mat(x).clone())
            for name in net.output_names():
                _, m = ex.extract(name)
                shapes[name] = [m.c, m.h, m.w]
    print(json.dumps({"asimdhp": bool(ncnn.cpu_support_arm_asimdhp()), "input": list(x.shape), "outputs": shapes,
                      "opt": {k: bool(getattr(o, k)) for k in ("use_fp16_storage", "use_fp16_packed",
                                                                "use_fp16_arithmetic")}}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
