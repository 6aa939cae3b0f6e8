"""DESIGN.md's dependency direction, checked on the source: nothing goes back upstream."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# folder -> top-level imports it must never make
FORBIDDEN = {
    "runtime": {"torch", "torchvision", "onnx", "onnxsim", "pnnx", "litedet.models", "litedet.convert"},
    "models": {"litedet.runtime", "litedet.convert", "ncnn", "onnx", "pnnx"},
    "convert": set(),
}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_folder_does_not_import_upstream(folder):
    bad = []
    for py in sorted((ROOT / folder).glob("*.py")):
        for name in _imports(py):
            if any(name == f or name.startswith(f + ".") for f in FORBIDDEN[folder]):
                bad.append(f"{py.name}: {name}")
    assert not bad, f"{folder}/ imports what DESIGN.md forbids: {bad}"
