"""What a path is, said the way a user would (stdlib only, used by every layer): inputs and
outputs that are not regular files (a FIFO would block a reader or a writer forever, a device
would be read as an image) are refused up front and named as what they are."""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["file_kind", "check_input_file", "check_output_file", "same_file"]

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISREG, "a regular file"))


def file_kind(path: str | Path) -> str:
    """'a regular file', 'a directory', 'a FIFO (named pipe)', ... or 'missing' (links are followed)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return "missing"
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def check_input_file(path: str | Path, what: str, expect: str = "a file", error: type[Exception] | None = None) -> Path:
    """``path`` as an existing regular file; otherwise an error naming what it is instead
    (``error``, default FileNotFoundError when missing and ValueError when of another kind)."""
    p = Path(path)
    kind = file_kind(p)
    if kind == "missing":
        raise (error or FileNotFoundError)(f"{what} not found: {p}")
    if kind != "a regular file":
        raise (error or ValueError)(f"{what} {p} is {kind}, not {expect}")
    return p


def check_output_file(path: str | Path, what: str) -> Path:
    """An output path that is missing (to be created) or a regular file (to be replaced)."""
    p = Path(path)
    kind = file_kind(p)
    if kind not in ("missing", "a regular file"):
        raise ValueError(f"{what} {p} is {kind}; give a regular file's path")
    if not p.parent.is_dir():
        raise FileNotFoundError(f"{what} {p}: the folder {p.parent} does not exist")
    return p


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name one file (through links too)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).absolute() == Path(b).absolute()
