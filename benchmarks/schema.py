"""One result format for `litedet bench`, wherever it measured: the desktop, qemu-aarch64,
a phone over adb, a board over ssh (stdlib only: the board's runner ships it).

A results file is ``{"schema": SCHEMA, "place", "created", "machine", "partial", "errors",
"records": [Record, ...]}``; a record is one model measured one way (runtime, precision,
threads) in one place. Latencies are milliseconds ``{"min", "median", "max", "runs"}``;
qemu records count guest instructions instead (``unit: "instructions"``).
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

SCHEMA = "litedet-bench/1"
PLACES = ("desktop", "qemu", "adb", "ssh")
# ncnn: the Python runtime (litedet.runtime); ncnn-empty: a graph with empty weights
# (reference graphs, as benchncnn runs them); litedet_cpp: the app's C++ pipeline;
# benchncnn: ncnn's own benchmark tool on a device; litedet-convert: `litedet convert` itself
# (latency_ms is the wall time of one conversion, convert_steps_ms its steps)
RUNTIMES = ("ncnn", "ncnn-empty", "onnxruntime", "torch", "litedet_cpp", "benchncnn", "litedet-convert")
# fp16-planned: fp16 with an ARM precision plan (some layers fp32); fp16-uniform: that graph without it;
# int8: an int8 bundle with fp16 on for its float layers, int8-fp32 with fp16 off
PRECISIONS = ("fp32", "fp16", "fp16-planned", "fp16-uniform", "int8", "int8-fp32")
SHIPPED = ("fp16", "fp16-planned", "int8")  # the precisions a bundle ships with (what the plot shows)
UNITS = ("ms", "instructions")
STAGES = ("pre", "inference", "glue", "post")


class SchemaError(ValueError):
    """A results file or record that does not follow SCHEMA."""


def stats(samples: list[float]) -> dict[str, float]:
    """min / median / max / runs of timing samples (ms)."""
    if not samples:
        raise SchemaError("no timing samples")
    return {"min": round(min(samples), 4), "median": round(statistics.median(samples), 4),
            "max": round(max(samples), 4), "runs": len(samples)}


@dataclass
class Record:
    model: str                         # registry name, or the bundle's architecture
    place: str                         # PLACES
    runtime: str                       # RUNTIMES
    precision: str                     # PRECISIONS (ncnn fp16 = fp16 storage + arithmetic where the CPU has it)
    threads: int
    unit: str = "ms"                   # UNITS
    device: str = ""                   # CPU model / phone model / board
    input: list[int] | None = None     # [C, H, W] of the network input
    image: str = ""                    # the photo it ran on (scikit-image's name), where one did
    latency_ms: dict | None = None     # stats() of one whole inference (or pipeline, see stages_ms)
    stages_ms: dict | None = None      # STAGES -> stats() (None where a stage does not apply)
    instructions: int | None = None    # unit "instructions": one inference
    stage_instructions: dict | None = None  # inference, glue (numpy), glue_cpp (the app's C++ glue)
    repeats_identical: bool | None = None  # qemu: every repeat gave the same count
    params: int | None = None
    macs: int | None = None            # multiply-accumulates (two-stage: stage 1 + head on its RoIs)
    paper_macs: int | None = None      # the published figure at the model's standard input (the registry's)
    bin_bytes: int | None = None       # the shipped (fp16) weights, all graphs
    peak_rss_bytes: int | None = None  # one process that loads the bundle and runs it (this runtime)
    reference_graph: str | None = None  # ncnn's benchmark graph of the same network
    reference_ratio: float | None = None  # ours / the reference graph's, same measurement, same run
    convert_steps_ms: dict | None = None  # litedet-convert: step (load, trace, pnnx, ...) -> stats()
    partial: bool = False              # the measurement was cut short (e.g. the device went away)
    note: str = ""

    @classmethod
    def from_dict(cls, d: Any, where: str = "record") -> "Record":
        if not isinstance(d, dict):
            raise SchemaError(f"{where}: expected an object, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise SchemaError(f"{where}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        missing = [k for k in ("model", "place", "runtime", "precision", "threads") if k not in d]
        if missing:
            raise SchemaError(f"{where}: missing field(s) {', '.join(missing)}")
        r = cls(**d)
        r.validate(where)
        return r

    def validate(self, where: str = "record") -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise SchemaError(f"{where} ({self.model!r}): {msg}")

        need(isinstance(self.model, str) and self.model != "", "model must be a non-empty string")
        for name, allowed in (("place", PLACES), ("runtime", RUNTIMES), ("precision", PRECISIONS), ("unit", UNITS)):
            need(getattr(self, name) in allowed, f"{name} {getattr(self, name)!r} is not one of {', '.join(allowed)}")
        need(isinstance(self.threads, int) and self.threads >= 1, f"threads must be an integer >= 1, got {self.threads!r}")
        if self.unit == "ms":
            need(self.latency_ms is not None, "a 'ms' record needs latency_ms")
            _check_stats(self.latency_ms, f"{where} ({self.model!r}) latency_ms")
            for k, v in (self.stages_ms or {}).items():
                need(k in STAGES, f"stage {k!r} is not one of {', '.join(STAGES)}")
                if v is not None:
                    _check_stats(v, f"{where} ({self.model!r}) stages_ms.{k}")
        else:
            need(isinstance(self.instructions, int) and self.instructions > 0,
                 "an 'instructions' record needs a positive integer instructions")
        for k, v in (self.convert_steps_ms or {}).items():
            _check_stats(v, f"{where} ({self.model!r}) convert_steps_ms.{k}")
        for k in ("params", "macs", "paper_macs", "bin_bytes", "peak_rss_bytes"):
            v = getattr(self, k)
            need(v is None or (isinstance(v, int) and v >= 0), f"{k} must be a non-negative integer or null")
        need(isinstance(self.image, str), "image must be a string (a photo's name)")
        need(self.input is None or (isinstance(self.input, list) and all(isinstance(v, int) for v in self.input)),
             "input must be a list of integers [C, H, W]")
        need(self.reference_ratio is None or (isinstance(self.reference_ratio, (int, float))
                                              and math.isfinite(self.reference_ratio) and self.reference_ratio > 0),
             "reference_ratio must be a positive number or null")

    @property
    def value(self) -> float:
        """The number plotted and compared: the median ms, or the instruction count."""
        if self.unit == "ms":
            return float(self.latency_ms.get("median", self.latency_ms.get("mean")))
        return float(self.instructions)


def _check_stats(s: Any, where: str) -> None:
    # benchncnn reports min / max / avg: such a record has "mean" instead of "median", never a made-up median
    if not isinstance(s, dict) or set(s) not in ({"min", "median", "max", "runs"}, {"min", "mean", "max", "runs"}):
        raise SchemaError(f"{where}: expected {{min, median, max, runs}} (or mean for tools that report no median), "
                          f"got {s!r}")
    lo, med, hi, n = s["min"], s.get("median", s.get("mean")), s["max"], s["runs"]
    if not all(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 for v in (lo, med, hi)):
        raise SchemaError(f"{where}: min/median/max must be finite non-negative numbers, got {s!r}")
    if not (lo <= med <= hi) or not isinstance(n, int) or n < 1:
        raise SchemaError(f"{where}: needs min <= median <= max and runs >= 1, got {s!r}")


@dataclass
class Results:
    place: str
    machine: dict
    records: list[Record] = field(default_factory=list)
    created: str = ""
    partial: bool = False
    errors: list[str] = field(default_factory=list)
    schema: str = SCHEMA

    def to_dict(self) -> dict:
        return {"schema": self.schema, "place": self.place, "created": self.created, "machine": self.machine,
                "partial": self.partial, "errors": self.errors, "records": [asdict(r) for r in self.records]}

    @classmethod
    def from_dict(cls, d: Any, where: str = "results") -> "Results":
        if not isinstance(d, dict):
            raise SchemaError(f"{where}: expected a JSON object")
        if d.get("schema") != SCHEMA:
            raise SchemaError(f"{where}: schema is {d.get('schema')!r}; expected {SCHEMA!r} (a litedet bench results.json)")
        place = d.get("place")
        if place not in PLACES + ("merged",):
            raise SchemaError(f"{where}: place {place!r} is not one of {', '.join(PLACES)}, merged")
        recs = d.get("records")
        if not isinstance(recs, list):
            raise SchemaError(f"{where}: records must be a list")
        return cls(place=place, machine=d.get("machine") or {}, created=d.get("created", ""),
                   partial=bool(d.get("partial", False)), errors=list(d.get("errors") or []),
                   records=[Record.from_dict(r, f"{where} record {i}") for i, r in enumerate(recs)])


def load_results(path: str | Path) -> Results:
    p = Path(path)
    if p.is_dir():
        p = p / "results.json"
    try:
        d = json.loads(p.read_text())
    except FileNotFoundError:
        raise SchemaError(f"{p}: no such file (expected a results.json written by litedet bench)") from None
    except json.JSONDecodeError as e:
        raise SchemaError(f"{p}: not JSON ({e.msg} at line {e.lineno})") from None
    except UnicodeDecodeError as e:
        raise SchemaError(f"{p}: not UTF-8 text (byte {e.start}: {e.reason}); expected a results.json") from None
    except IsADirectoryError:
        raise SchemaError(f"{p}: a directory without results.json") from None
    return Results.from_dict(d, str(p))


def merge(results: list[Results]) -> Results:
    """One table of several places' results (each record keeps its place and device)."""
    recs = [r for res in results for r in res.records]
    machines = {f"{res.place}:{i}": res.machine for i, res in enumerate(results)}
    return Results(place="merged", machine=machines, records=recs, partial=any(r.partial for r in results),
                   errors=[e for r in results for e in r.errors])


# -- presentation ----------------------------------------------------------------
def _si(v: float | None, unit: str = "") -> str:
    if v is None:
        return ""
    for div, s in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.2f} {s}{unit}"
    return f"{v:.0f} {unit}".strip()


def _ms(s: dict | None) -> str:
    return "" if not s else f"{s.get('median', s.get('mean')):.2f}" + ("" if "median" in s else " avg")


def _steps(steps: dict | None) -> str:
    if not steps:
        return ""
    return "; steps (median s): " + ", ".join(f"{k} {v['median'] / 1e3:.2f}" for k, v in steps.items())


def markdown_table(res: Results) -> str:
    """One table: a row per record."""
    head = ["model", "place", "device", "runtime", "prec", "thr", "input", "median", "min–max", "pre", "inference",
            "glue", "post", "params", "MACs", "fp16 bin", "peak RSS", "÷ ref", "note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" if i < 7 else "---:" for i in range(len(head))) + "|"]
    for r in res.records:
        st = r.stages_ms or {}
        stage_cells = [_ms(st.get(k)) for k in STAGES]
        if r.unit == "instructions":
            stage_cells = [_si((r.stage_instructions or {}).get(k)) for k in STAGES]
        if r.unit == "ms":
            med, rng = f"{_ms(r.latency_ms)} ms", f"{r.latency_ms['min']:.2f}–{r.latency_ms['max']:.2f}"
        else:
            med, rng = f"{r.instructions:,} insns", "identical" if r.repeats_identical else "DIFFER"
        ref = f"{r.reference_ratio:.3f} ({r.reference_graph})" if r.reference_ratio else ""
        note = ("PARTIAL " if r.partial else "") + r.note + _steps(r.convert_steps_ms)
        lines.append("| " + " | ".join([
            r.model, r.place, r.device, r.runtime, r.precision, str(r.threads),
            ("x".join(map(str, r.input)) if r.input else "") + (f" ({r.image})" if r.image else ""), med, rng,
            *stage_cells, _si(r.params), _si(r.macs) + (f" (paper {_si(r.paper_macs)})" if r.paper_macs else ""),
            _si(r.bin_bytes, "B"),
            _si(r.peak_rss_bytes, "B"), ref, note.replace("|", "/")]) + " |")
    return "\n".join(lines) + "\n"


def _plotted(r: Record) -> str | None:
    """The series a record goes in, or None: per place the shipped way (ncnn fp16, 1 thread;
    on a phone benchncnn and litedet_cpp), and the empty-weight pairs of the reference graphs."""
    if r.unit != "ms" or not r.macs or r.threads != 1 or r.runtime == "litedet-convert":
        return None
    if r.runtime == "ncnn-empty":
        return "ncnn's reference graphs (empty weights)" if r.model.startswith("ref:") else \
            f"{r.place} ours, empty weights"
    if r.precision in SHIPPED and (r.runtime in ("ncnn", "benchncnn") or (r.runtime == "litedet_cpp"
                                                                           and r.place != "desktop")):
        return f"{r.place} {r.runtime} fp16 1 thread"
    return None


def plot_latency_vs_macs(res: Results, path: str | Path) -> int:
    """latency (ms) vs MACs on log axes, one point per model and series (see _plotted); the
    reference graphs hollow. Returns the number of points (0: nothing to plot, no file written)."""
    from litedet.convert.charts import log_scatter_chart

    series: dict[str, list[tuple[float, float, str]]] = {}
    for r in res.records:
        name = _plotted(r)
        if name is not None:
            series.setdefault(name, []).append((float(r.macs), r.value, r.model.removeprefix("ref:")))
    n = sum(len(v) for v in series.values())
    if n:
        log_scatter_chart(path, "latency vs MACs, 1 thread (median; log axes; hollow: ncnn's reference graphs)",
                          "MACs", "ms", series, hollow={k for k in series if k.startswith("ncnn's reference")})
    return n
