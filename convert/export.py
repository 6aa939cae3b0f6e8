"""Trace the deploy forward and turn it into ncnn param/bin with pnnx.

Two routes, both ending in pnnx's ncnn writer:
- ``pnnx``: torch.jit.trace -> pnnx (TorchScript), converted with two input
  shapes so the graph stays shape-agnostic (one bundle serves every
  letterboxed aspect ratio);
- ``onnx``: torch.onnx.export -> onnxsim -> pnnx (ONNX). pnnx 20261020
  crashes on a dynamic-shape ONNX with a second input shape (segfault in
  pass_level5), so this route converts at the fixed target size and the
  manifest says ``pad_mode: fixed``.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from litedet.ncnn_param import parse_param

__all__ = ["DeployWrapper", "PnnxError", "ExportResult", "trace_deploy", "run_pnnx", "export_onnx", "pnnx_binary",
           "unconverted_ops"]


class PnnxError(RuntimeError):
    """pnnx failed or left ops that ncnn cannot run."""


class DeployWrapper(nn.Module):
    """Calls ``model.forward_deploy`` (detectors) or ``model.forward`` (classifier
    logits), so tracing never edits the model itself."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        deploy = getattr(self.model, "forward_deploy", None)
        return tuple(deploy(x)) if deploy is not None else (self.model(x),)


@dataclass
class ExportResult:
    param: Path
    bin: Path
    log: str
    input_name: str
    output_names: list[str]
    dynamic_shape: bool


def pnnx_binary() -> Path:
    import pnnx

    exe = Path(pnnx.__file__).parent / "pnnx"
    if not exe.is_file():
        raise PnnxError(f"the pnnx executable is missing from the pnnx package ({exe}); reinstall pnnx")
    return exe


def trace_deploy(model: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    wrapper = DeployWrapper(model).eval()
    with torch.no_grad():
        return torch.jit.trace(wrapper, example, check_trace=False)


_UNCONVERTED = re.compile(r"^(pnnx\.|aten::|F\.|torch\.|Tensor\.|nn\.|prim::)")


def unconverted_ops(param: Path) -> list[str]:
    """Layer types pnnx left as PyTorch ops (ncnn would refuse to load them)."""
    return [f"{layer.type} ({layer.name})" for layer in parse_param(param) if _UNCONVERTED.match(layer.type)]


def _shape_arg(shape: tuple[int, ...]) -> str:
    return "[" + ",".join(str(s) for s in shape) + "]f32"


def run_pnnx(model_file: Path, workdir: Path, shape: tuple[int, ...], shape2: tuple[int, ...] | None,
             fp16: bool, stem: str = "model") -> ExportResult:
    """Run the pnnx executable; on failure raise PnnxError with its log tail."""
    model_file, workdir = Path(model_file).resolve(), Path(workdir).resolve()
    param, binf = workdir / f"{stem}.ncnn.param", workdir / f"{stem}.ncnn.bin"
    args = [str(pnnx_binary()), str(model_file), f"inputshape={_shape_arg(shape)}", f"fp16={int(fp16)}",
            f"ncnnparam={param}", f"ncnnbin={binf}", f"ncnnpy={workdir / (stem + '_ncnn.py')}",
            f"pnnxparam={workdir / (stem + '.pnnx.param')}", f"pnnxbin={workdir / (stem + '.pnnx.bin')}",
            f"pnnxpy={workdir / (stem + '_pnnx.py')}", f"pnnxonnx={workdir / (stem + '.pnnx.onnx')}"]
    if shape2 is not None:
        args.insert(3, f"inputshape2={_shape_arg(shape2)}")
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    proc = subprocess.run(args, cwd=workdir, capture_output=True, text=True, env=env)
    log = proc.stdout + proc.stderr
    (workdir / f"{stem}.pnnx.log").write_text(log)
    tail = "\n".join(ln for ln in log.splitlines() if not ln.startswith("convert reshape expression"))[-2000:]
    if proc.returncode != 0 or not param.is_file() or not binf.is_file():
        why = f"exit code {proc.returncode}" + (" (crashed)" if proc.returncode < 0 else "")
        raise PnnxError(f"pnnx failed on {model_file.name} ({why}); last lines of its log:\n{tail}")
    bad = unconverted_ops(param)
    if bad:
        raise PnnxError(f"pnnx could not convert these ops to ncnn layers: {', '.join(bad[:10])}; "
                        f"last lines of its log:\n{tail}")
    layers = parse_param(param)
    inputs = [layer.name for layer in layers if layer.type == "Input"]
    consumed = {b for layer in layers for b in layer.inputs}
    # pnnx names the graph outputs out0, out1, ... in the order the traced forward returns them
    outputs = sorted((b for layer in layers for b in layer.outputs if b not in consumed and b.startswith("out")),
                     key=lambda b: int(b[3:]))
    if len(inputs) != 1:
        raise PnnxError(f"converted graph has {len(inputs)} inputs; expected exactly one")
    return ExportResult(param, binf, log, inputs[0], outputs, shape2 is not None)


def _channel_shuffle_symbolic(g, x, groups):
    # aten::channel_shuffle has no ONNX symbolic; emit reshape/transpose/reshape
    # that works for any H x W: [N, g, C/g, H, W] via Reshape's "copy dim 0".
    from torch.onnx import symbolic_helper as sh

    groups = sh._get_const(groups, "i", "groups")
    shape = g.op("Shape", x)
    hw = g.op("Slice", shape, g.op("Constant", value_t=torch.tensor([2])), g.op("Constant", value_t=torch.tensor([4])))
    target = g.op("Concat", g.op("Constant", value_t=torch.tensor([0, groups, -1])), hw, axis_i=0)
    y = g.op("Transpose", g.op("Reshape", x, target), perm_i=[0, 2, 1, 3, 4])
    return g.op("Reshape", y, shape)


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path, output_names: list[str],
                simplify: bool = True) -> Path:
    """torch.onnx.export (TorchScript exporter, opset 13) then onnxsim."""
    import warnings

    import onnx

    torch.onnx.register_custom_op_symbolic("aten::channel_shuffle", _channel_shuffle_symbolic, 9)
    wrapper = DeployWrapper(model).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, (example,), str(path), dynamo=False, opset_version=13,
                          input_names=["input"], output_names=output_names)
    if simplify:
        import onnxsim

        simplified, ok = onnxsim.simplify(onnx.load(str(path)))
        if not ok:
            raise PnnxError("onnxsim could not validate the simplified ONNX model")
        onnx.save(simplified, str(path))
    return path


def onnx_from_torchscript(ts_path: str | Path, shape: tuple[int, ...], path: Path) -> Path:
    """A bundle's TorchScript (reference/*.torchscript.pt) as ONNX at one input shape, for
    timing onnxruntime on the same graph (TorchScript exporter, opset 13, then onnxsim)."""
    import warnings

    import onnx
    import onnxsim

    torch.onnx.register_custom_op_symbolic("aten::channel_shuffle", _channel_shuffle_symbolic, 9)
    ts = torch.jit.load(str(ts_path), map_location="cpu").eval()
    example = torch.zeros(shape)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        out = ts(example)
        n_out = len(out) if isinstance(out, (tuple, list)) else 1
        torch.onnx.export(ts, (example,), str(path), dynamo=False, opset_version=13, input_names=["input"],
                          output_names=[f"out{i}" for i in range(n_out)])
    simplified, ok = onnxsim.simplify(onnx.load(str(path)))
    if not ok:
        raise PnnxError("onnxsim could not validate the simplified ONNX model")
    onnx.save(simplified, str(path))
    return path
