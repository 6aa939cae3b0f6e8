"""Parity records and their reports: JSON + a text table + an error chart,
shared by torch <-> ncnn and x86 <-> ARM parity."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .compare import CppMatch, TensorStats

__all__ = ["ImageParity", "ParityReport", "write_report", "format_table", "error_chart"]


@dataclass
class ImageParity:
    image: str
    size: list[int]  # [w, h]
    input_size: list[int]  # [w, h] of the network input
    # comparison ("ncnn_fp32", "ncnn_fp16", "arm_fp16_vs_torch", ...) -> per-output stats
    tensors: dict[str, list[TensorStats]] = field(default_factory=dict)
    # comparison -> the kind's result record (DetectionMatch, TopKMatch, ...)
    results: dict[str, Any] = field(default_factory=dict)
    reference_results: list[dict] = field(default_factory=list)  # torch's (or x86 fp32's) results
    test_results: dict[str, list[dict]] = field(default_factory=dict)  # comparison -> the tested side's results
    cpp: CppMatch | None = None


@dataclass
class ParityReport:
    bundle: str
    architecture: str
    kind: str  # the bundle's postprocess kind: which check compared the results
    weights: str
    images: list[ImageParity]
    thresholds: Any
    failures: list[str]
    notes: list[str]
    environment: dict[str, Any] = field(default_factory=dict)  # the ARM side's versions, options and timings

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def write_report(out_dir: str | Path, stem: str, data: dict, text: str) -> None:
    """STEM.json and STEM.txt side by side in ``out_dir``."""
    from litedet.atomic import replace_files

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    replace_files([(out / f"{stem}.json", lambda p: p.write_text(json.dumps(data, indent=2) + "\n")),
                   (out / f"{stem}.txt", lambda p: p.write_text(text + "\n"))])


def format_table(r: ParityReport, check, keys: list[str], title: list[str], key_width: int = 10) -> str:
    """One row per image and comparison: tensor errors, then the kind's result columns."""
    lines = [*title, ""]
    lines.append(f"{'image':<16} {'size':>9} {'input':>9} {'comparison':<{key_width}} {'worst cosine':>13} {'max rel':>9} "
                 f"{'max abs':>9}  {check.header}")
    for ip in r.images:
        for key in keys:
            if key not in ip.tensors:
                continue
            st = ip.tensors[key]
            lines.append(
                f"{ip.image:<16} {'x'.join(map(str, ip.size)):>9} {'x'.join(map(str, ip.input_size)):>9} "
                f"{key:<{key_width}} {min(s.cosine for s in st):>13.7f} {max(s.max_rel for s in st):>9.2e} "
                f"{max(s.max_abs for s in st):>9.2e}  {check.row(ip.results[key]) if key in ip.results else ''}")
    if any(ip.cpp for ip in r.images):
        lines.append("")
        lines.append(f"{'image':<16} {'C++ vs Python (same ncnn fp16 outputs)':<40} {'results py/c++':>14} "
                     f"{'max box diff':>13} {'max score diff':>15}")
        for ip in r.images:
            c = ip.cpp
            if c:
                lines.append(f"{ip.image:<16} {'identical' if c.identical else 'DIFFERENT':<40} {c.python:>6}/{c.cpp:<7} "
                             f"{c.max_box_diff:>13.2e} {c.max_score_diff:>15.2e}")
                if c.details:  # the two-stage glue, step by step
                    lines.append(f"{'':<16}   " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                                                            for k, v in c.details.items()))
    lines.append("")
    lines += [f"note: {n}" for n in r.notes]
    lines.append("PASS" if r.passed else "FAIL:\n  " + "\n  ".join(r.failures))
    return "\n".join(lines)


def error_chart(r: ParityReport, path: Path, keys: list[str], limit: float | None) -> None:
    """Worst max-rel error per output over all images, one bar per comparison, on a log axis."""
    from ..charts import log_bar_chart

    first = r.images[0].tensors
    keys = [k for k in keys if k in first]
    labels = [f"{s.blob} {s.role}" + (f"/{s.stride}" if s.stride else "") for s in first[keys[0]]]
    series = {k: [max(ip.tensors[k][i].max_rel for ip in r.images if k in ip.tensors) for i in range(len(labels))]
              for k in keys}
    log_bar_chart(path, f"{r.architecture}: worst max rel error over {len(r.images)} images",
                  labels, series, limit=limit, limit_label="fp32 limit")
