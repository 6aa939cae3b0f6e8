"""`litedet bench`: every model measured the same way, in one result format (schema.py).

Desktop (default): for each model (a registered name, converted with seeded weights into
OUT/bundles/, or a bundle directory): ncnn fp32 and fp16 at each thread count through the
Python runtime (stages pre / inference / glue / post), onnxruntime and torch at 1 thread on
the same network input, all interleaved in one loop after a warm-up; params and MACs
counted on the ncnn graph, the fp16 bin size, the peak RSS of one runtime process; with
--reference-graphs, ncnn's benchmark graphs and ours with empty weights in the same run.
--cpp adds the app's C++ pipeline (litedet_cpp), --photos measures on each of the four
scikit-image photos (stage costs per photo, e.g. a two-stage model's glue), --convert-runs N
times N fresh conversions of each registered model. --qemu counts aarch64 guest instructions
instead (a kind's C++ glue too, benchmarks/arm/cpp_glue.py). --adb and --ssh measure on a
device (remote.py). --merge joins results files.

Output (written atomically): OUT/results.json, OUT/results.md, OUT/latency_vs_macs.png,
OUT/machine.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from litedet.atomic import replace_files
from litedet.benchmarks.reference_graphs import PAIRS
from litedet.benchmarks.machine import loadavg, machine_info
from litedet.runtime.bundle import MAIN_GRAPH, Bundle
from litedet.benchmarks.schema import Record, Results, SchemaError, load_results, markdown_table, merge, \
    plot_latency_vs_macs, stats

# ours -> (ncnn's benchmark graph, the input side it was made for): reference_graphs.py's pairs of
# registered names, and NanoDet-m, whose graph ncnn's benchmark also ships
REFERENCE_PAIRS = {"nanodet_m": ("nanodet_m", 320), **{k: v for k, v in PAIRS.items() if ":" not in k}}


class BenchError(ValueError):
    """Bad input to litedet bench (one line: what is wrong, what would be right)."""


STANDARD_PHOTO = "astronaut"


def bench_photos(every: bool = False) -> dict[str, np.ndarray]:
    """The photos the desktop measures on (BGR): scikit-image's astronaut (512x512, square, so each
    model gets its standard square input: 320x320, 224x224, ...), or with ``every`` all four
    (astronaut, chelsea, coffee, motorcycle: landscape ones letterbox to smaller inputs)."""
    from litedet.photos import default_images

    imgs = dict(default_images())
    if STANDARD_PHOTO not in imgs:
        raise BenchError("litedet bench measures on scikit-image's photos: pip install 'litedet[photos]'")
    return imgs if every else {STANDARD_PHOTO: imgs[STANDARD_PHOTO]}


def standard_image() -> np.ndarray:
    """The input every model is measured on where one photo is: the astronaut (bench_photos)."""
    return bench_photos()[STANDARD_PHOTO]


# -- targets -------------------------------------------------------------------
def resolve_targets(names: list[str], all_models: bool, work: Path, progress: bool = True) -> list[tuple[str, Bundle]]:
    """(label, opened bundle) per target: a bundle directory as given, a registered name converted
    (seeded weights) into work/NAME unless a bundle of it is already there. Each bundle is opened
    (manifest validated, graphs sha256-checked) once, here."""
    from litedet.convert.bundle import is_bundle
    from litedet.convert.pipeline import convert_model, registered_models

    known = {m["name"] for m in registered_models()}
    if all_models:
        names = sorted(known) + [n for n in names if n not in known]
    if not names:
        raise BenchError("name the models to measure (registered names or bundle directories), or pass --all")
    out = []
    for n in names:
        p = Path(n)
        if p.is_dir():
            if not is_bundle(p):
                raise BenchError(f"{p} is a directory but not a litedet bundle (no manifest.json): pass a bundle "
                                 "`litedet convert` wrote, or a registered name")
            out.append((p.name, Bundle.open(p)))
            continue
        if n not in known:
            raise BenchError(f"{n!r} is neither a bundle directory nor a registered model; known: "
                             f"{', '.join(sorted(known))}")
        b = work / n
        if not is_bundle(b):
            if progress:
                print(f"converting {n} (seeded weights) into {b}", file=sys.stderr, flush=True)
            convert_model(n, b, progress=False, force=b.exists())
        out.append((n, Bundle.open(b)))
    return out


# -- graph facts -----------------------------------------------------------------
def graph_shape(m, name: str) -> tuple[int, int, int]:
    """The input shape a further graph of the bundle is costed on: its kind says."""
    from litedet.runtime.kinds import postprocess_kind

    kind = postprocess_kind(m.postprocess.kind)
    if kind.graph_shape is None:
        raise ValueError(f"postprocess kind {kind.name!r} has a graph {name!r} but says no input shape for it")
    return kind.graph_shape(m, name)


def graph_facts(bundle: Bundle, chw_shape: list[int]) -> dict:
    """params and MACs counted on the ncnn graphs (stage 1 on the network input, every further
    graph on the shape its kind costs it on) and the size of the shipped weights."""
    from litedet.benchmarks.pyrunner import bin_bytes
    from litedet.benchmarks.reference_graphs import count_graph

    params = macs = 0
    for name, g in bundle.graph_files().items():
        shape = tuple(chw_shape) if name == MAIN_GRAPH else graph_shape(bundle.manifest, name)
        p2, m2 = count_graph(g.param, shape)
        params, macs = params + p2, macs + m2
    return {"params": params, "macs": macs, "bin_bytes": bin_bytes(bundle),
            "paper_macs": paper_macs(bundle.manifest, chw_shape)}


def paper_macs(m, chw_shape: list[int]) -> int | None:
    """The published MACs of the bundle's architecture (models/registry.py), where the count is
    at the size the paper states (the registered standard input, square)."""
    from litedet.convert.pipeline import registered_models

    info = next((r for r in registered_models() if r["name"] == m.architecture), None)
    if info is None or list(chw_shape[1:]) != [info["input_size"]] * 2:
        return None
    return info["paper_macs"]


# -- desktop ---------------------------------------------------------------------
class _Way:
    """One way of running a model: a name for the record and a callable for one run."""

    def __init__(self, runtime: str, precision: str, threads: int, once, staged: bool) -> None:
        self.runtime, self.precision, self.threads, self.once, self.staged = runtime, precision, threads, once, staged
        self.total: list[float] = []
        self.stages: dict[str, list[float]] = {k: [] for k in ("pre", "inference", "glue", "post")}


def _ncnn_way(bundle: Bundle, image: np.ndarray, precision: str, threads: int) -> _Way:
    from litedet.benchmarks.pyrunner import pipeline_once
    from litedet.runtime import open_bundle

    runner = open_bundle(bundle, threads=threads, fp16=precision == "fp16")
    return _Way("ncnn", precision, threads, lambda: pipeline_once(runner, image)[0], True)


def _graph_inputs(bundle: Bundle, image: np.ndarray) -> list[tuple[Path, np.ndarray]]:
    """(TorchScript, input [1, ...]) of each graph on what the fp32 runtime gives it."""
    from litedet.runtime import open_bundle

    runner = open_bundle(bundle, threads=1, fp16=False)
    chw, g = runner.preprocess_array(image)
    out = [(bundle.reference("torchscript"), chw[None])]
    if runner.graphs:
        done = runner.run_array(chw)
        for name in runner.graphs:
            out.append((bundle.reference(f"{name}_torchscript"),
                        runner.kind.graph_input(runner.manifest, name, done)[None]))
    return out


def _ort_way(graphs: list[tuple[Path, np.ndarray]], work: Path) -> _Way:
    import onnxruntime as ort

    from litedet.convert.export import onnx_from_torchscript

    sessions = []
    for i, (ts, x) in enumerate(graphs):
        onnx_path = onnx_from_torchscript(ts, tuple(x.shape), work / f"g{i}.onnx")
        o = ort.SessionOptions()
        o.intra_op_num_threads, o.inter_op_num_threads = 1, 1
        o.log_severity_level = 3
        s = ort.InferenceSession(str(onnx_path), o, providers=["CPUExecutionProvider"])
        sessions.append((s, s.get_inputs()[0].name, np.ascontiguousarray(x, np.float32)))

    def once():
        t0 = time.perf_counter()
        for s, name, x in sessions:
            s.run(None, {name: x})
        return {"inference": (time.perf_counter() - t0) * 1e3}

    return _Way("onnxruntime", "fp32", 1, once, False)


def _torch_way(graphs: list[tuple[Path, np.ndarray]]) -> _Way:
    import torch

    torch.set_num_threads(1)
    mods = [(torch.jit.load(str(ts), map_location="cpu").eval(), torch.from_numpy(np.ascontiguousarray(x)))
            for ts, x in graphs]

    def once():
        t0 = time.perf_counter()
        with torch.inference_mode():
            for m, x in mods:
                m(x)
        return {"inference": (time.perf_counter() - t0) * 1e3}

    return _Way("torch", "fp32", 1, once, False)


class _CppWay(_Way):
    """The app's C++ pipeline: one ``litedet_cpp serve`` process per way, driven a run at a time
    so it interleaves with the others; it times its own stages."""

    def __init__(self, binary: Path, assets: Path, png: Path, precision: str, threads: int) -> None:
        from litedet.benchmarks.cpp import CppError

        super().__init__("litedet_cpp", precision, threads, self._once, True)
        args = [str(binary), "serve", str(assets), str(png), "--threads", str(threads)] + \
            (["--fp32"] if precision == "fp32" else [])
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
        line = self.proc.stdout.readline()
        if not line.startswith('{"ready"'):
            self.proc.kill()
            raise CppError((self.proc.stderr.read().strip() or "litedet_cpp serve did not start").splitlines()[-1])

    def _once(self) -> dict:
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        d = json.loads(self.proc.stdout.readline())
        return {k: d[k] for k in ("pre", "inference", "glue", "post")}

    def close(self) -> int:
        """Ends the process; its peak RSS."""
        out, _ = self.proc.communicate(timeout=60)
        return json.loads(out.strip().splitlines()[-1])["peak_rss_bytes"]


def _cpp_ways(bundle: Bundle, png: Path, threads: list[int], tmp: Path, binary: Path) -> list[_CppWay]:
    """The device assets written afresh from the bundle (never a stale copy), one process per way."""
    from litedet.runtime.devconfig import export_device_assets

    assets = tmp / "assets"
    export_device_assets(bundle, assets, name="model")
    return [_CppWay(binary, assets, png, p, t) for t in threads for p in ("fp32", "fp16")]


def peak_rss_of_runtime(bundle: Bundle, image_npy: Path) -> int | None:
    """Peak RSS of one process that loads the bundle in the Python runtime and runs it (fp16, 1 thread)."""
    p = subprocess.run([sys.executable, "-m", "litedet.benchmarks.pyrunner", str(image_npy), str(bundle.path),
                        "--precisions", "fp16", "--runs", "3", "--warmup", "1", "--place", "desktop"],
                       capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        return None
    return json.loads(p.stdout.strip().splitlines()[-1])["machine"]["peak_rss_bytes"]  # the last line: machine


def measure_desktop(targets: list[tuple[str, Bundle]], *, threads: list[int], runs: int, warmup: int,
                    reference_graphs: Path | None, cpp: bool, progress: bool = True,
                    device: str = "", photos: bool = False) -> list[Record]:
    import cv2
    from tqdm import tqdm

    from litedet.benchmarks.cpp import build_litedet_cpp

    images = bench_photos(every=photos)
    binary = build_litedet_cpp("x86_64") if cpp else None
    records: list[Record] = []
    with tempfile.TemporaryDirectory(prefix="litedet-bench-") as run_tmp:
        bar = tqdm([(t, n) for t in targets for n in images], desc="litedet bench", unit="run", disable=not progress,
                   file=sys.stderr)
        for (label, bundle), photo in bar:
            bar.set_postfix_str(f"{label} on {photo}")
            with tempfile.TemporaryDirectory(dir=run_tmp) as tmp:
                image_npy, png = Path(tmp) / "image.npy", Path(tmp) / "image.png"
                np.save(image_npy, images[photo])
                cv2.imwrite(str(png), images[photo])  # PNG: ncnn's imread (litedet_cpp) and OpenCV read the same pixels
                recs = _measure_one(bundle, images[photo], image_npy, png, Path(tmp), threads, runs, warmup, binary,
                                    device, rss=photo == STANDARD_PHOTO)
                for r in recs:
                    r.image = photo
                records += recs
    if reference_graphs is not None:
        records += measure_reference_graphs([(lbl, b) for lbl, b in targets], reference_graphs, runs, warmup,
                                            device, records)
    return records


def check_convertible(targets: list[tuple[str, Bundle]], work: Path) -> None:
    """--convert-runs converts registered names (the ones resolve_targets converted into ``work``);
    a bundle directory given as such has no checkpoint here to convert again."""
    for label, bundle in targets:
        if bundle.path != work / bundle.manifest.architecture:
            raise BenchError(f"--convert-runs times `litedet convert` of registered names; {label!r} is a bundle "
                             "directory (name the architecture instead)")


def measure_conversion(targets: list[tuple[str, Bundle]], runs: int, device: str = "",
                       progress: bool = True) -> list[Record]:
    """Wall time of ``runs`` fresh conversions of each registered model (seeded weights, pnnx, fp16
    bundle, each into a new temp dir), and the median of each step (ConvertResult.timings). The
    first run also pays one-time imports; the record keeps every run (min / median / max)."""
    import torch

    from litedet.convert.pipeline import convert_model

    records = []
    for _, bundle in targets:
        arch = bundle.manifest.architecture
        walls, steps = [], {}
        for i in range(runs):
            if progress:
                print(f"converting {arch} ({i + 1}/{runs})", file=sys.stderr, flush=True)
            with tempfile.TemporaryDirectory(prefix="litedet-convert-time-") as tmp:
                t0 = time.perf_counter()
                res = convert_model(arch, Path(tmp) / arch, progress=False)
                walls.append((time.perf_counter() - t0) * 1e3)
            for k, v in res.timings.items():
                if k != "total":  # the wall time is measured here, around the whole call
                    steps.setdefault(k, []).append(v * 1e3)
        m = res.manifest
        records.append(Record(model=arch, place="desktop", runtime="litedet-convert", precision=m.weight_storage,
                              threads=torch.get_num_threads(), device=device,
                              input=[m.input.channels, m.resize.target, m.resize.target],
                              latency_ms=stats(walls), convert_steps_ms={k: stats(v) for k, v in steps.items()},
                              note=f"wall time of one `litedet convert` (seeded weights, "
                                   f"{m.provenance.get('route', 'pnnx')} route, fp32 reference and verify included), "
                                   f"{runs} fresh runs"))
    return records


def _measure_one(bundle: Bundle, image: np.ndarray, image_npy: Path, png: Path, tmp: Path, threads: list[int],
                 runs: int, warmup: int, binary: Path | None, device: str, rss: bool = True) -> list[Record]:
    """Every way of running one bundle, interleaved round by round."""
    records = []
    graphs = _graph_inputs(bundle, image)
    ways = [_ncnn_way(bundle, image, p, t) for t in threads for p in ("fp32", "fp16")]
    ways += [_ort_way(graphs, tmp), _torch_way(graphs)]
    from litedet.runtime.devconfig import device_kinds

    if binary is not None and bundle.manifest.postprocess.kind in device_kinds():  # the kinds the app's C++ runs
        ways += _cpp_ways(bundle, png, threads, tmp, binary)
    for rep in range(warmup + runs):  # interleaved: a burst of load spreads over every way
        for w in ways:
            t = w.once()
            if rep < warmup:
                continue
            w.total.append(sum(v for v in t.values() if v is not None))
            for k, v in t.items():
                if v is not None:
                    w.stages[k].append(v)
    chw = list(graphs[0][1].shape[1:])
    rois = graphs[1][1].shape[2] if len(graphs) > 1 else None
    facts = graph_facts(bundle, chw)
    rss = peak_rss_of_runtime(bundle, image_npy) if rss else None
    model = bundle.manifest.architecture
    for w in ways:
        st = {k: (stats(v) if v else None) for k, v in w.stages.items()} if w.staged else \
            {"inference": stats(w.stages["inference"])}
        if isinstance(w, _CppWay):
            peak, note = w.close(), "the app's C++ pipeline (litedet_ncnn.cpp + the C++ core)"
        else:
            peak = rss if (w.runtime, w.precision, w.threads) == ("ncnn", "fp16", 1) else None
            note = "" if w.runtime == "ncnn" else \
                f"graph{'s' if len(graphs) > 1 else ''} only (TorchScript of the bundle)" + \
                (f"; head on {rois} RoIs" if rois else "")
        shipped = w.runtime in ("ncnn", "litedet_cpp")
        records.append(Record(model=model, place="desktop", runtime=w.runtime,
                              precision=_shipped_label(bundle.manifest, w.precision) if shipped else w.precision,
                              threads=w.threads, device=device, input=chw, latency_ms=stats(w.total),
                              stages_ms=st, **facts, peak_rss_bytes=peak, note=note))
    return records


def check_reference_dir(ref_dir: Path) -> Path:
    ref_dir = Path(ref_dir)
    if not ref_dir.is_dir() or not any(ref_dir.glob("*.param")):
        raise BenchError(f"--reference-graphs {ref_dir}: not a directory of ncnn benchmark graphs (*.param; e.g. "
                         "../shared/reference/ncnn-benchmark)")
    return ref_dir


def reference_pair(bundle: Bundle, ref_dir: Path) -> tuple[str, Path, Path, int] | None:
    """(ncnn's graph name, our param, its param, its input side) when ncnn ships a benchmark graph
    of the bundle's architecture in ``ref_dir``, else None."""
    if bundle.manifest.architecture not in REFERENCE_PAIRS:
        return None
    ref, side = REFERENCE_PAIRS[bundle.manifest.architecture]
    ref_param = Path(ref_dir) / f"{ref}.param"
    return (ref, bundle.graph_files()[MAIN_GRAPH].param, ref_param, side) if ref_param.is_file() else None


def pair_records(arch: str, ref: str, ref_param: Path, side: int, ours: dict, theirs: dict,
                 records: list[Record]) -> list[Record]:
    """Our graph and ncnn's, both with empty weights (``ours`` / ``theirs``: the Record fields
    measured), as two ncnn-empty records. Ours ÷ theirs goes on ours and on our ncnn records of
    the same place and precision at 1 thread."""
    common = {"runtime": "ncnn-empty", "threads": 1, "input": [3, side, side], "reference_graph": ref}
    o = Record(model=arch, note="empty weights, reference's input side", **common, **ours)
    t = Record(model=f"ref:{ref}", note=f"ncnn's benchmark graph {ref_param.name}, empty weights", **common, **theirs)
    o.reference_ratio = round(o.value / t.value, 4)
    for r in records:
        if (r.model, r.place, r.runtime, r.precision, r.threads) == (arch, o.place, "ncnn", o.precision, 1):
            r.reference_graph, r.reference_ratio = ref, o.reference_ratio
    return [o, t]


def measure_reference_graphs(targets: list[tuple[str, Bundle]], ref_dir: Path, runs: int, warmup: int, device: str,
                             records: list[Record]) -> list[Record]:
    """Ours and ncnn's benchmark graph, both with empty weights at the reference's input side,
    interleaved (fp32 weights, 1 thread)."""
    import ncnn

    from litedet.benchmarks.reference_graphs import count_graph, load_empty_weights

    ref_dir = check_reference_dir(ref_dir)
    out = []
    for _, bundle in targets:
        pair = reference_pair(bundle, ref_dir)
        if pair is None:
            continue
        ref, ours, ref_param, side = pair
        nets = {"ours": load_empty_weights(ours), "ref": load_empty_weights(ref_param)}
        x = np.zeros((3, side, side), np.float32)
        samples = {k: [] for k in nets}
        for rep in range(warmup + runs):
            for k, net in nets.items():
                t0 = time.perf_counter()
                with net.create_extractor() as ex:
                    ex.input(net.input_names()[0], ncnn.Mat(x).clone())
                    for o in net.output_names():
                        ex.extract(o)
                if rep >= warmup:
                    samples[k].append((time.perf_counter() - t0) * 1e3)
        fields = {}
        for k, param in (("ours", ours), ("ref", ref_param)):
            params, macs = count_graph(param, (3, side, side))
            fields[k] = {"place": "desktop", "precision": "fp32", "device": device, "latency_ms": stats(samples[k]),
                         "params": params, "macs": macs}
        out += pair_records(bundle.manifest.architecture, ref, ref_param, side, fields["ours"], fields["ref"],
                            records)
    return out


# -- qemu ------------------------------------------------------------------------
def measure_qemu(targets: list[tuple[str, Bundle]], *, repeats: int, reference_graphs: Path | None,
                 progress: bool = True) -> tuple[list[Record], dict]:
    """Guest instructions of one single-threaded inference, fp32 and fp16 arithmetic, under
    qemu-aarch64 -cpu cortex-a76; two-stage models split into stage 1 / glue / head."""
    from litedet.benchmarks.arm.icount import DEFAULT_CPU, measure
    from litedet.convert.verify.arm import ArmEnv
    from litedet.runtime import open_bundle

    env = ArmEnv.from_cache(None, cpu=DEFAULT_CPU)
    if reference_graphs is not None:
        reference_graphs = check_reference_dir(reference_graphs)
    device = f"qemu-aarch64 -cpu {DEFAULT_CPU}"
    image = standard_image()
    records = []
    for label, bundle in targets:
        m = bundle.manifest
        chw, _ = open_bundle(bundle, threads=1, fp16=False).preprocess_array(image)
        two = bool(m.extra_graphs())
        modes = ("load", "stage1", "glue", "run") if two else ("load", "run")
        if progress:
            print(f"qemu: {label} ({'x'.join(map(str, chw.shape))}, {repeats} repeats)", file=sys.stderr, flush=True)
        res = measure(bundle.path, env, repeats=repeats, width=chw.shape[2], height=chw.shape[1], progress=progress,
                      modes=modes)
        counted = {_shipped_label(m, p): q for p, q in res["precisions"].items()}
        if m.precision_plan is not None:  # the same graph without the plan, for the comparison the plan is for
            counted["fp16-uniform"] = _uniform_counts(bundle, env, chw.shape, repeats, modes, progress)
        facts = graph_facts(bundle, list(chw.shape))
        # the kind's C++ glue (two graphs) or postprocessing (one graph) when it registers a program
        glue_cpp = _cpp_glue(bundle, env, chw.shape, repeats)
        for precision, q in counted.items():
            parts, note = _stage_split(q, two, glue_cpp)
            records.append(Record(model=m.architecture, place="qemu", runtime="ncnn", precision=precision, threads=1,
                                  unit="instructions", device=device, input=list(chw.shape),
                                  instructions=q["inference_insns"], stage_instructions=parts,
                                  repeats_identical=q["repeatable"], **facts,
                                  note=f"run - load, {repeats} repeats; fixed pseudo-random input{note}"))
        pair = reference_pair(bundle, reference_graphs) if reference_graphs is not None else None
        if pair is None:
            continue
        ref, ours, ref_param, side = pair
        counts = {who: measure(param, env, repeats=repeats, width=side, height=side, progress=progress)["precisions"]
                  for who, param in (("ours", ours), ("ref", ref_param))}
        for precision in ("fp32", "fp16"):
            o, t = ({"place": "qemu", "precision": precision, "unit": "instructions", "device": device,
                     "instructions": c[precision]["inference_insns"], "repeats_identical": c[precision]["repeatable"]}
                    for c in (counts["ours"], counts["ref"]))
            records += pair_records(m.architecture, ref, ref_param, side, o, t, records)
    return records, {"qemu": env.info.get("qemu_version"), "cpu": DEFAULT_CPU, "ncnn": env.info.get("ncnn")}


def _stage_split(q: dict, two: bool, glue_cpp: dict | None) -> tuple[dict | None, str]:
    """(stage_instructions, the note's tail) of one precision's counts: a two-stage model's stage 1 /
    head / numpy glue, and the app's C++ glue (two graphs) or postprocessing (one graph) when counted."""
    cpp = "" if glue_cpp is None else f"{glue_cpp['glue_insns']:,}" + ("" if glue_cpp["repeatable"] else " (repeats DIFFER)")
    if not two:
        if glue_cpp is None:
            return None, ""
        return {"inference": q["inference_insns"], "post_cpp": glue_cpp["glue_insns"]}, \
            f"; the app's C++ postprocessing {cpp}"
    parts = {"inference": q["parts"]["stage1"] + q["parts"]["run"], "glue": q["parts"]["glue"]}
    split = f" (stage 1 {q['parts']['stage1']:,}, head {q['parts']['run']:,})"
    if glue_cpp is not None:
        parts["glue_cpp"] = glue_cpp["glue_insns"]
        split += f"; the app's C++ glue {cpp}"
    return parts, f"; two-stage: inference = stage 1 + head{split}, the numpy glue apart"


def _shipped_label(m, precision: str) -> str:
    """What a count measured: fp32 (fp16 off), or the shipped graph with fp16 on, named for what it
    holds (fp16, fp16-planned with an ARM precision plan, int8); an int8 graph with fp16 off is int8-fp32."""
    if m.int8 is not None:
        return "int8" if precision == "fp16" else "int8-fp32"
    if precision == "fp16" and m.precision_plan is not None:
        return "fp16-planned"
    return precision


def _uniform_counts(bundle: Bundle, env, chw_shape, repeats: int, modes, progress: bool) -> dict:
    """The fp16 count of the bundle with its uniform (unplanned) param in place of the planned one."""
    import tempfile

    from litedet.benchmarks.arm.icount import measure
    from litedet.benchmarks.arm.plan import variant

    with tempfile.TemporaryDirectory(prefix="litedet-uniform-") as tmp:
        d = variant(bundle, Path(tmp), bundle.reference("uniform_param").read_text())
        return measure(d, env, repeats=repeats, width=chw_shape[2], height=chw_shape[1], progress=progress,
                       modes=modes, precisions=("fp16",))["precisions"]["fp16"]


def _cpp_glue(bundle: Bundle, env, chw_shape: tuple[int, ...], repeats: int) -> dict | None:
    """The kind's C++ glue (benchmarks/arm/cpp_glue.py) on the stage-1 outputs of the input
    icount.measure counts (the same fixed pseudo-random one)."""
    from litedet.benchmarks.arm.cpp_glue import count_cpp_glue
    from litedet.benchmarks.arm.icount import DEFAULT_CPU, make_input

    with tempfile.TemporaryDirectory(prefix="litedet-glue-in-") as tmp:
        x = make_input(Path(tmp) / "x.npy", chw_shape[2], chw_shape[1])
    return count_cpp_glue(bundle, env, x, repeats, DEFAULT_CPU)


# -- output ----------------------------------------------------------------------
def fill_facts(records: list[Record], targets: list[tuple[str, Bundle]]) -> None:
    """params / MACs / bin size of records measured elsewhere (a device), counted here on the same bundles."""
    by_arch = {b.manifest.architecture: b for _, b in targets}
    cache: dict[tuple, dict] = {}
    for r in records:
        base = r.model.split(":")[0]
        if r.macs is not None or base not in by_arch or not r.input or ":" in r.model:
            continue
        key = (base, tuple(r.input))
        if key not in cache:
            cache[key] = graph_facts(by_arch[base], r.input)
        f = cache[key]
        r.params, r.macs, r.bin_bytes = f["params"], f["macs"], r.bin_bytes or f["bin_bytes"]
        r.paper_macs = f["paper_macs"]


def write_outputs(out: Path, res: Results) -> list[Path]:
    """results.json, results.md, latency_vs_macs.png (when anything has MACs and ms) and
    machine.json, all or none (each built beside its destination, then renamed)."""
    out.mkdir(parents=True, exist_ok=True)
    for r in res.records:
        r.validate()
    items = [(out / "results.json", lambda p: p.write_text(json.dumps(res.to_dict(), indent=1) + "\n")),
             (out / "results.md", lambda p: p.write_text(_markdown(res))),
             (out / "machine.json", lambda p: p.write_text(json.dumps(res.machine, indent=1) + "\n"))]
    with tempfile.TemporaryDirectory(dir=out, prefix=".plot-") as tmp:
        png = Path(tmp) / "plot.png"
        if plot_latency_vs_macs(res, png):
            data = png.read_bytes()
            items.append((out / "latency_vs_macs.png", lambda p: p.write_bytes(data)))
        return replace_files(items)


def _markdown(res: Results) -> str:
    head = f"# litedet bench ({res.place}, {res.created})\n\n"
    if res.partial:
        head += "**PARTIAL**: " + "; ".join(res.errors) + "\n\n"
    return head + markdown_table(res)


def new_results(place: str, records: list[Record], machine: dict, partial: bool = False,
                errors: list[str] | None = None) -> Results:
    return Results(place=place, machine=machine, records=records, partial=partial, errors=errors or [],
                   created=datetime.now(timezone.utc).isoformat(timespec="seconds"))


def parse_threads(s: str) -> list[int]:
    try:
        t = [int(v) for v in s.split(",")]
    except ValueError:
        t = []
    if not t or any(v < 1 for v in t):
        raise BenchError(f"--threads {s!r}: expected thread counts >= 1 separated by commas, e.g. 1,2")
    return t


def run_merge(paths: list[str], out: Path) -> Results:
    try:
        res = merge([load_results(p) for p in paths])
    except SchemaError as e:
        raise BenchError(str(e)) from None
    res.created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    write_outputs(out, res)
    return res


def run(args) -> int:
    """The `litedet bench` command (arguments from litedet.cli)."""
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise BenchError(f"--out {out} exists and is not a directory")
    if args.merge:
        if args.models or args.all:
            raise BenchError("--merge joins results files; measure models in a separate run")
        from litedet.atomic import output_dir

        with output_dir(out):
            res = run_merge(args.merge, out)
        print(f"merged {len(res.records)} records from {len(args.merge)} files into {out}/results.md")
        return 0
    if args.runs < 1 or args.warmup < 0 or args.repeats < 1 or args.convert_runs < 0:
        raise BenchError("--runs and --repeats must be >= 1, --warmup and --convert-runs >= 0")
    threads = parse_threads(args.threads)
    remote = [n for n, v in (("--qemu", args.qemu), ("--adb", args.adb), ("--ssh", args.ssh)) if v]
    if len(remote) > 1:
        raise BenchError(f"{' and '.join(remote)} measure in different places: run them one at a time, then --merge")
    desktop_only = [n for n, v in (("--photos", args.photos), ("--convert-runs", args.convert_runs),
                                   ("--cpp", args.cpp)) if v]
    if remote and desktop_only:
        raise BenchError(f"{', '.join(desktop_only)} measure{'s' if len(desktop_only) == 1 else ''} on the desktop; "
                         f"drop {remote[0]} (or run them apart, then --merge)")
    bad = [p for p in args.precisions.split(",") if p not in ("fp16", "fp32")]
    if bad or not args.precisions:
        raise BenchError(f"--precisions {args.precisions!r}: expected fp16, fp32 or fp16,fp32")
    if args.reference_graphs is not None:
        check_reference_dir(args.reference_graphs)  # before any conversion
    from litedet.atomic import output_dir

    with output_dir(out):  # made when the work starts; removed again if it fails before writing
        return _measure(args, out, threads)


def _measure(args, out: Path, threads: list[int]) -> int:
    work = Path(args.bundles_dir) if args.bundles_dir else out / "bundles"
    work.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    load_start = loadavg()
    t0 = time.perf_counter()
    if args.adb or args.ssh:
        from litedet.benchmarks import remote as rm

        targets = resolve_targets(args.models, args.all, work, progress=not args.quiet)
        if args.adb:
            records, info, err = rm.bench_adb(targets, serial=args.serial, benchncnn=args.benchncnn,
                                              runs=args.runs, warmup=args.warmup, progress=not args.quiet)
            place = "adb"
        else:
            records, info, err = rm.bench_ssh(targets, args.ssh, remote_python=args.remote_python, port=args.port,
                                              identity=args.identity, options=args.ssh_option or [],
                                              runs=args.runs, warmup=args.warmup, threads=threads,
                                              precisions=tuple(args.precisions.split(",")),
                                              progress=not args.quiet)
            place = "ssh"
        machine = {"host": machine, "device": info}
        recs = [Record.from_dict(r) for r in records]
        fill_facts(recs, targets)
        res = new_results(place, recs, machine, partial=err is not None, errors=[err] if err else [])
    elif args.qemu:
        targets = resolve_targets(args.models, args.all, work, progress=not args.quiet)
        records, info = measure_qemu(targets, repeats=args.repeats, reference_graphs=args.reference_graphs,
                                     progress=not args.quiet)
        machine["qemu"] = info
        res = new_results("qemu", records, machine)
    else:
        targets = resolve_targets(args.models, args.all, work, progress=not args.quiet)
        device = machine.get("cpu_model") or ""
        if args.convert_runs:
            check_convertible(targets, work)  # before anything is measured
        records = measure_desktop(targets, threads=threads, runs=args.runs, warmup=args.warmup,
                                  reference_graphs=args.reference_graphs, cpp=args.cpp,
                                  progress=not args.quiet, device=device, photos=args.photos)
        if args.convert_runs:
            records += measure_conversion(targets, args.convert_runs, device, progress=not args.quiet)
        res = new_results("desktop", records, machine)
    machine = res.machine if "host" not in res.machine else res.machine["host"]
    machine["loadavg_start"], machine["loadavg_end"] = load_start, loadavg()
    machine["bench_wall_s"] = round(time.perf_counter() - t0, 1)
    write_outputs(out, res)
    print(markdown_table(res))
    print(f"wrote {out}/results.json, results.md, machine.json"
          + (", latency_vs_macs.png" if (out / "latency_vs_macs.png").exists() else ""))
    if res.partial:
        print(f"litedet bench: PARTIAL results ({'; '.join(res.errors)}): the models measured so far are kept",
              file=sys.stderr)
        return 1
    return 0
