"""Write without losing anything (stdlib only, used by every layer that writes).

Output is built beside its destination and renamed into place, so a failure
or a kill leaves the destination as it was. Temp names carry an owner record
(pid and process start time), so a later run can tell the leftovers of a dead
run from those of a live one and remove only ours, only when their owner is
gone, and put back a bundle that a killed run had moved aside.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable

__all__ = ["OWNER_FILE", "temp_dir_path", "make_temp_dir", "mark_owned", "owner_alive", "cleanup_stale_dirs", "replace_files",
           "write_bytes", "write_text", "output_dir"]

OWNER_FILE = ".litedet-owner"


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]


def _owner() -> dict:
    return {"pid": os.getpid(), "start": _start_time(os.getpid())}


def owner_alive(rec: dict) -> bool:
    """Whether the process that wrote ``rec`` still runs (a reused pid has another start time)."""
    pid = rec.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    start = _start_time(pid)
    return rec.get("start") is None or start is None or start == rec.get("start")


def mark_owned(d: Path) -> None:
    (d / OWNER_FILE).write_text(json.dumps(_owner()))


def _read_owner(d: Path) -> dict | None:
    try:
        rec = json.loads((d / OWNER_FILE).read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def cleanup_stale_dirs(parent: Path, name: str) -> list[Path]:
    """Remove ``.NAME.tmp-*`` dirs of dead litedet runs beside ``parent/NAME``; a
    ``.NAME.old-*`` (the previous bundle, moved aside by a run killed before the
    new one took its place) is renamed back when NAME is missing, else removed."""
    done = []
    for d in sorted(parent.glob(f".{name}.tmp-*")) + sorted(parent.glob(f".{name}.old-*")):
        rec = _read_owner(d) if d.is_dir() and not d.is_symlink() else None
        if rec is None or owner_alive(rec):
            continue  # not ours, or its run is still going
        target = parent / name
        if ".old-" in d.name and not target.exists():
            d.rename(target)
            (target / OWNER_FILE).unlink(missing_ok=True)
        else:
            shutil.rmtree(d, ignore_errors=True)
        done.append(d)
    return done


def temp_dir_path(parent: Path, name: str) -> Path:
    """A fresh ``.NAME.tmp-*`` path in ``parent`` (not created: see make_temp_dir)."""
    import secrets

    while True:
        d = Path(parent) / f".{name}.tmp-{secrets.token_hex(4)}"
        if not d.exists():
            return d


def make_temp_dir(d: Path) -> Path:
    """Create ``d`` (from temp_dir_path) and mark it with its owner. Call it inside the ``try``
    whose ``finally`` removes ``d``: the path is known before the directory exists, so a Ctrl-C
    at any point after the mkdir still has it removed."""
    d.mkdir(mode=0o755)
    mark_owned(d)
    return d


def replace_files(items: list[tuple[Path, Callable[[Path], None]]]) -> list[Path]:
    """Write a set of files all-or-nothing: each ``write(tmp_path)`` fills a temp
    beside its destination; only when all are written are they renamed into
    place, and a failure while renaming puts every replaced file back."""
    dests = [Path(d) for d, _ in items]
    for d in dests:
        if d.exists() and not d.is_file():
            raise FileExistsError(f"{d} exists and is not a file; refusing to replace it")
    pid = os.getpid()
    tmps = [d.with_name(f".{d.name}.tmp-{pid}") for d in dests]
    baks = [d.with_name(f".{d.name}.bak-{pid}") for d in dests]
    moved: list[int] = []  # indices whose old file is in its backup
    placed: list[int] = []
    try:
        for (_, write), t in zip(items, tmps):
            write(t)
        for i, (d, t, b) in enumerate(zip(dests, tmps, baks)):
            if d.exists():
                os.replace(d, b)
                moved.append(i)
            os.replace(t, d)
            placed.append(i)
    except BaseException:
        for i in placed:
            if i not in moved:
                dests[i].unlink(missing_ok=True)  # it did not exist before
        for i in moved:
            os.replace(baks[i], dests[i])
        raise
    finally:
        for p in tmps + [baks[i] for i in moved if baks[i].exists() and dests[i].exists()]:
            p.unlink(missing_ok=True)
    return dests


def write_bytes(path: str | Path, data: bytes) -> Path:
    """``data`` into ``path`` through a temp file and a rename: the old file stays until the new one
    is whole. A path that exists and is not a regular file (a FIFO, a device) is refused."""
    from litedet.paths import check_output_file

    p = check_output_file(path, "output")
    return replace_files([(p, lambda t: t.write_bytes(data))])[0]


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


class output_dir:
    """``with output_dir(path):`` creates the folder (and missing parents) when the work starts, and
    removes the folders it created when the body fails before writing anything into them: a refused
    run leaves no empty folder behind."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.created: list[Path] = []

    def __enter__(self) -> Path:
        if self.path.exists() and not self.path.is_dir():
            raise FileExistsError(f"{self.path} exists and is not a directory; an output folder is needed there")
        missing = [p for p in [self.path, *self.path.parents] if not p.exists()]
        for p in reversed(missing):
            p.mkdir()
            self.created.append(p)
        return self.path

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None or not self.created:
            return
        top = self.created[0]  # the outermost folder this run made
        if not any(p.is_file() or p.is_symlink() for p in top.rglob("*")):  # only empty folders in it
            shutil.rmtree(top, ignore_errors=True)
