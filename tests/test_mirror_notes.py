"""Every note in the C++ core and the demo that says which Python it mirrors points at a file
(and, when it names one, a function or class) that exists: a rename on one side cannot leave
the other side's reader following a dead reference."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CPP = ROOT / "android_demo" / "app" / "src" / "main" / "cpp"
# runtime/kinds/gfl.py:postprocess_outputs, convert/verify/cpp_core.py, ...
NOTE = re.compile(r"\b((?:runtime|convert|models|benchmarks|litedet)/[\w/]+\.py)(?::(\w+))?")


def notes() -> list[tuple[Path, str, str | None]]:
    out = []
    for f in sorted(CPP.glob("*")) + [ROOT / "android_demo" / "README.md", ROOT / "android_demo" / "host_tests" / "litedet_cpp.cpp"]:
        if f.suffix in (".h", ".cpp", ".md"):
            out += [(f, m.group(1), m.group(2)) for m in NOTE.finditer(f.read_text())]
    return out


def defined_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}


def test_there_are_mirror_notes_to_check():
    assert len(notes()) >= 10


def test_every_mirror_note_points_at_code_that_exists():
    dead = []
    for where, path, name in notes():
        target = ROOT / path
        if not target.is_file():
            dead.append(f"{where.name}: {path} does not exist")
        elif name and name not in defined_names(target):
            dead.append(f"{where.name}: {path} has no function or class {name}")
    assert not dead, "\n".join(dead)
