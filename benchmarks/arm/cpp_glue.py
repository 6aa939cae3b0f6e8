"""The C++ glue of a kind with glue between its graphs, counted under qemu-aarch64 (`litedet bench
--qemu`): the phone runs the C++ core's glue, not the numpy one the Python runtime counts, so a
kind registers a small static program over its core steps (rpn_psroi: ``two_stage_glue.cpp``,
proposals + PSRoIAlign) and the stage-1 outputs it reads. The count is ``run - load`` of one
process on the stage-1 outputs of the bench's input, repeated to show it repeats exactly.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from litedet.registry import Registry

HERE = Path(__file__).resolve().parent

__all__ = ["GlueProgram", "register_glue_program", "glue_program", "count_cpp_glue"]


@dataclass(frozen=True)
class GlueProgram:
    """``source`` takes ``NAME.cfg``, one float32 file per role in ``roles`` (the stage-1 outputs, in
    that order), the input width and height, and ``load`` or ``run``."""

    source: Path
    roles: tuple[str, ...]


_PROGRAMS: Registry[GlueProgram] = Registry("kind with a C++ glue program")
register_glue_program = _PROGRAMS.add


def glue_program(kind: str) -> GlueProgram | None:
    return _PROGRAMS.get(kind) if kind in _PROGRAMS.names() else None


def build_glue(prog: GlueProgram, cache_dir: Path) -> Path:
    """The program + the C++ core, static for aarch64 with the phone's flags (cached by source hash)."""
    from litedet.convert.verify.cpp_core import CPP_DIR, core_sources

    sources = [prog.source, *(CPP_DIR / s for s in core_sources())]
    headers = sorted(CPP_DIR.glob("litedet_*.h")) + sorted(prog.source.parent.glob("*.h"))
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources + headers)).hexdigest()[:16]
    out = cache_dir / "bin" / f"{prog.source.stem}-{digest}"
    if out.is_file():
        return out
    cxx = shutil.which("aarch64-linux-gnu-g++")
    if cxx is None:
        raise RuntimeError("aarch64-linux-gnu-g++ not found: run scripts/setup_arm.sh")
    out.parent.mkdir(parents=True, exist_ok=True)
    # ARMv8.2-A, no FMA contraction (the core's float policy, litedet_boxes.h)
    subprocess.run([cxx, "-O2", "-std=c++17", "-static", "-march=armv8.2-a+fp16", "-ffp-contract=off",
                    f"-I{CPP_DIR}", "-o", f"{out}.tmp", *map(str, sources)], check=True, capture_output=True)
    Path(f"{out}.tmp").replace(out)
    return out


def count_cpp_glue(bundle, env, x: np.ndarray, repeats: int, cpu: str) -> dict | None:
    """Guest instructions of the kind's C++ glue on the stage-1 outputs of ``x`` ([3, H, W], the
    bench's input, run here by the fp32 runtime); None when the kind registers no program."""
    from litedet.benchmarks.arm.icount import count_insns
    from litedet.runtime import open_bundle
    from litedet.runtime.devconfig import device_config_text

    m = bundle.manifest
    prog = glue_program(m.postprocess.kind)
    if prog is None:
        return None
    exe = build_glue(prog, env.cache_dir)
    out = open_bundle(bundle, threads=1, fp16=False).run_stage1_array(x)
    h, w = x.shape[1:]
    with tempfile.TemporaryDirectory(prefix="litedet-glue-") as tmp:
        files = []
        for role in prog.roles:
            f = Path(tmp) / f"{role}.bin"
            np.ascontiguousarray(out[m.outputs_with_role(role)[0].blob], np.float32).tofile(f)
            files.append(str(f))
        cfg = Path(tmp) / "m.cfg"
        cfg.write_text(device_config_text(m, "m.param", "m.bin"))
        counts = {mode: [count_insns(env, [str(exe), str(cfg), *files, str(w), str(h), mode], cpu=cpu)[0]
                         for _ in range(repeats)] for mode in ("load", "run")}
    return {"glue_insns": counts["run"][0] - counts["load"][0],
            "repeatable": all(len(set(v)) == 1 for v in counts.values())}


register_glue_program("rpn_psroi", GlueProgram(HERE / "two_stage_glue.cpp",
                                               ("rpn_objectness", "rpn_deltas", "psroi_features")))
register_glue_program("ssd_refine", GlueProgram(HERE / "detect_post.cpp", ("arm_loc", "arm_conf", "odm_loc", "odm_conf")))
register_glue_program("topk", GlueProgram(HERE / "detect_post.cpp", ("scores", "ltrb")))
