"""The aarch64 child of ``protocol.py``, run by the emulated python under qemu.

    python3.11 child.py JOB.json

It needs numpy, ncnn and litedet.runtime only (never torch): the checkout's
litedet is made importable without installing anything into the aarch64 python.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[3]


def _bootstrap_litedet(root: Path) -> None:
    """Make ``litedet.*`` importable as the editable install maps it
    (litedet -> root/litedet, litedet.runtime -> root/runtime, ...) without
    installing anything into the aarch64 python."""
    import importlib.util

    if "litedet" in sys.modules:
        return
    spec = importlib.util.spec_from_file_location("litedet", root / "litedet" / "__init__.py",
                                                  submodule_search_locations=[str(root / "litedet"), str(root)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules["litedet"] = mod
    spec.loader.exec_module(mod)


def _child_main(job_path: str) -> int:
    import platform

    import os

    t0 = time.perf_counter()
    os.environ["LITEDET_PROBE_CHILD"] = "0"  # litedet is not installed in this python: no probe child
    _bootstrap_litedet(ROOT)
    import ncnn

    from litedet.runtime.runner import open_bundle

    job = json.loads(Path(job_path).read_text())
    threads = int(job["threads"])
    meta: dict[str, Any] = {"machine": platform.machine(), "python": platform.python_version(), "ncnn": ncnn.__version__,
                            "numpy": np.__version__, "asimdhp": bool(ncnn.cpu_support_arm_asimdhp()),
                            "threads": threads, "import_s": round(time.perf_counter() - t0, 2), "variants": {}}
    out: dict[str, np.ndarray] = {}
    with np.load(job["inputs"]) as z:
        xs = [z[f"x{i}"] for i in range(len(job["names"]))]
    refs: dict[int, dict[str, np.ndarray]] = {}
    if job.get("references"):
        with np.load(job["references"]) as z:
            for k in z.files:
                i, key = k.split("|", 1)
                refs.setdefault(int(i), {})[key] = z[k]
    for v in job["variants"]:
        t = time.perf_counter()
        det = open_bundle(job["bundle"], threads=threads, fp16=v["fp16"], bin_override=v["bin_override"])
        o = det.net.opt
        vm = {"opt": {k: bool(getattr(o, k)) for k in ("use_fp16_storage", "use_fp16_packed", "use_fp16_arithmetic",
                                                        "use_bf16_storage")},
              "load_s": round(time.perf_counter() - t, 3), "run_s": []}
        for i, x in enumerate(xs):
            t = time.perf_counter()
            res = det.run_array(x)
            vm["run_s"].append(round(time.perf_counter() - t, 3))
            print(f"DONE {v['key']} {i}", flush=True)  # the parent's progress bar counts these
            for blob, a in res.items():
                out[f"{v['key']}|{i}|{blob}"] = a
            if i in refs and det.kind.complete is not None:  # the later stages on the other side's RoIs too
                same = det.complete(res, x.shape[2], x.shape[1], reference=refs[i])
                stage1 = {o.blob for o in det.manifest.outputs}
                for key, a in same.items():
                    if key not in stage1:
                        out[f"{v['key']}|{i}|same/{key}"] = a
        meta["variants"][v["key"]] = vm
    np.savez(job["outputs"], **out)
    Path(job["meta"]).write_text(json.dumps(meta))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 2:
        sys.exit(_child_main(sys.argv[1]))
    sys.exit("usage: python child.py JOB.json (internal: run by litedet.convert.verify.arm under qemu-aarch64)")
