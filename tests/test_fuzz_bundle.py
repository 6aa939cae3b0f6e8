"""Fuzzing a real bundle's manifest and param file (hypothesis).

Each example mutates one thing (a manifest value's type, a missing key, NaN / inf / huge numbers,
unicode, lengths; a param token, line or count, with the manifest's sha256 fixed so the mutation
reaches ncnn), then opens and runs the bundle in a forked child. Asserted: no process crash (the
child exits, never dies by a signal), no exception but the project's own error types, and every
number set outside its documented range is refused when the manifest is read.

LITEDET_FUZZ_EXAMPLES sets the example count (CI-sized by default)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import traceback
import typing
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

EXAMPLES = int(os.environ.get("LITEDET_FUZZ_EXAMPLES", "40"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

ODD_VALUES = [None, True, False, "", "x" * 5000, "\udcff", "猫", "a,b", "\n", -1, 0, 1, 2 ** 63, -(2 ** 63), 1e308,
              float("nan"), float("inf"), -float("inf"), 0.5, [], {}, [1, 2], {"a": 1}, [float("nan")]]


def project_errors() -> tuple[type, ...]:
    from litedet.runtime.kinds import BundleError
    from litedet.runtime.runner import ImageError, InferenceError

    return BundleError, ImageError, InferenceError


def in_child(fn) -> tuple[int, str]:
    """Run ``fn`` in a forked child: (exit status or -signal, what the child wrote)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        code, msg = 0, ""
        try:
            fn()
        except project_errors() as e:
            code, msg = 3, str(e)
        except BaseException:  # noqa: BLE001 - reported to the parent as a failure
            code, msg = 4, traceback.format_exc()
        os.write(w, msg.encode("utf-8", "replace")[:4000])
        os._exit(code)
    os.close(w)
    chunks = []
    while True:
        b = os.read(r, 65536)
        if not b:
            break
        chunks.append(b)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return code, b"".join(chunks).decode()


@pytest.fixture(scope="module")
def base(seeded_bundle) -> Path:
    return seeded_bundle


def copy_bundle(src: Path, dst: Path) -> Path:
    """A copy whose big files are hard links (no symlinks: those are refused as links out)."""
    dst.mkdir()
    for p in src.rglob("*"):
        q = dst / p.relative_to(src)
        if p.is_dir():
            q.mkdir(exist_ok=True)
        elif p.name in ("manifest.json", "model.ncnn.param"):
            shutil.copyfile(p, q)
        else:
            os.link(p, q)
    return dst


def paths_of(d, prefix=()):
    """Every path in a JSON tree (dict keys and list indices)."""
    yield prefix
    if isinstance(d, dict):
        for k, v in d.items():
            yield from paths_of(v, prefix + (k,))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            yield from paths_of(v, prefix + (i,))


def set_path(d, path, value, delete=False):
    cur = d
    for k in path[:-1]:
        cur = cur[k]
    if delete:
        del cur[path[-1]]
    else:
        cur[path[-1]] = value


def ranged_fields(m) -> list[tuple[tuple, tuple[float, float], bool]]:
    """(path, (lo, hi), is_int) of every number field with a documented range in a loaded manifest."""
    out = []

    def walk(obj, prefix):
        hints = typing.get_type_hints(type(obj))
        for f in dataclasses.fields(obj):
            v = getattr(obj, f.name)
            if dataclasses.is_dataclass(v):
                walk(v, prefix + (f.name,))
            elif "range" in f.metadata:
                t = hints[f.name]
                is_int = t is int or typing.get_args(t) == (int,)
                if isinstance(v, list):
                    out.extend((prefix + (f.name, i), f.metadata["range"], is_int) for i in range(len(v)))
                else:
                    out.append((prefix + (f.name,), f.metadata["range"], is_int))
        return out

    walk(m, ())
    return [(p, r, i) for p, r, i in out if p[0] != "outputs"] + [
        (("outputs", j, k), r, True) for j in range(len(m.outputs)) for (k,), r, _ in
        [((f.name,), f.metadata["range"], None) for f in dataclasses.fields(m.outputs[0]) if "range" in f.metadata]]


def open_and_run(d: Path, image: np.ndarray):
    from litedet.runtime.runner import open_bundle

    def go():
        open_bundle(d).run(image)
    return go


@pytest.fixture(scope="module")
def photo(photos):
    return photos["coffee"]


@SETTINGS
@given(data=st.data())
def test_fuzzed_manifests_never_crash_and_fail_only_with_our_errors(base, photo, tmp_path_factory, data):
    d = json.loads((base / "manifest.json").read_text())
    paths = [p for p in paths_of(d) if p]
    path = data.draw(st.sampled_from(paths), label="path")
    how = data.draw(st.sampled_from(["delete", "replace"]), label="how")
    value = data.draw(st.sampled_from(ODD_VALUES), label="value")
    set_path(d, path, value, delete=how == "delete")
    dst = copy_bundle(base, tmp_path_factory.mktemp("fm") / "b")
    (dst / "manifest.json").write_text(json.dumps(d))
    code, msg = in_child(open_and_run(dst, photo))
    assert code in (0, 3), f"{path} {how} {value!r}: exit {code}\n{msg}"


@SETTINGS
@given(data=st.data())
def test_every_number_outside_its_range_is_refused_at_load(base, tmp_path_factory, data):
    from litedet.runtime.manifest import ManifestError, Manifest

    d = json.loads((base / "manifest.json").read_text())
    m = Manifest.from_dict(d)
    path, (lo, hi), is_int = data.draw(st.sampled_from(ranged_fields(m)), label="field")
    span = max(abs(hi - lo), 1.0)
    bad = data.draw(st.sampled_from([lo - span, hi + span, lo - 1 if is_int else lo - 1e-3 * span,
                                     hi + 1 if is_int else hi + 1e-3 * span, float("nan"), float("inf")]), label="bad")
    if is_int and math.isfinite(bad):
        bad = int(math.floor(bad)) if bad < lo else int(math.ceil(bad))
    set_path(d, path, bad)
    with pytest.raises(ManifestError):
        Manifest.from_dict(d)


PARAM_TOKENS = ["nan", "inf", "-inf", "99999999999", "-1", "0", "1e30", "猫", "", "0=", "=1", "a=b", "1,2,3", "-23310=9,1"]


@SETTINGS
@given(data=st.data())
def test_fuzzed_param_files_never_crash_and_fail_only_with_our_errors(base, photo, tmp_path_factory, data):
    from litedet.hashing import sha256_file

    lines = (base / "model.ncnn.param").read_text().splitlines()
    i = data.draw(st.integers(0, len(lines) - 1), label="line")
    how = data.draw(st.sampled_from(["token", "drop_token", "drop_line", "dup_line", "digit"]), label="how")
    toks = lines[i].split()
    j = data.draw(st.integers(0, max(len(toks) - 1, 0)), label="token")
    if how == "token" and toks:
        toks[j] = data.draw(st.sampled_from(PARAM_TOKENS), label="new")
        lines[i] = " ".join(toks)
    elif how == "drop_token" and toks:
        del toks[j]
        lines[i] = " ".join(toks)
    elif how == "drop_line":
        del lines[i]
    elif how == "dup_line":
        lines.insert(i, lines[i])
    elif how == "digit":
        digits = [k for k, c in enumerate(lines[i]) if c.isdigit()]
        if digits:
            k = data.draw(st.sampled_from(digits), label="pos")
            lines[i] = lines[i][:k] + str((int(lines[i][k]) + 1) % 10) + lines[i][k + 1:]
    dst = copy_bundle(base, tmp_path_factory.mktemp("fp") / "b")
    (dst / "model.ncnn.param").write_text("\n".join(lines) + "\n")
    d = json.loads((dst / "manifest.json").read_text())
    d["param_sha256"] = sha256_file(dst / "model.ncnn.param")  # so the mutation reaches ncnn
    (dst / "manifest.json").write_text(json.dumps(d))
    code, msg = in_child(open_and_run(dst, photo))
    assert code in (0, 3), f"line {i} {how}: exit {code}\n{msg}"
    assert "pool allocator" not in msg
