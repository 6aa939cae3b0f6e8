"""DESIGN.md's dependency direction, checked on the source of every folder,
recursively: nothing goes back upstream. The checker is itself tested on
planted violations, so a rule that silently stopped matching would show."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# folder -> its import name, as pyproject.toml maps it
PACKAGES = {"litedet": "litedet", "models": "litedet.models", "convert": "litedet.convert",
            "runtime": "litedet.runtime", "benchmarks": "litedet.benchmarks"}
_TOOLS = {"torch", "torchvision", "onnx", "onnxsim", "onnxruntime", "pnnx"}
# folder -> imports it must never make (a name or any of its submodules)
FORBIDDEN = {
    "runtime": _TOOLS | {"tqdm", "skimage", "litedet.models", "litedet.convert", "litedet.benchmarks"},
    "models": {"ncnn", "onnx", "onnxsim", "pnnx", "litedet.runtime", "litedet.convert", "litedet.benchmarks"},
    "convert": {"litedet.benchmarks"},
    "benchmarks": {"litedet.models"},
    # the shared helpers (hashing, the param parser, the photos) serve every layer
    "litedet": _TOOLS | {"ncnn", "litedet.models", "litedet.convert", "litedet.runtime", "litedet.benchmarks"},
}
# the CLI reaches every layer, but only inside its commands, so `litedet detect` runs without torch
TOP_LEVEL_ONLY = {"litedet/cli.py"}


def _module_name(root: Path, path: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = [PACKAGES[rel.parts[0]], *rel.parts[1:]]
    return ".".join(p for p in parts if p != "__init__")


def imports(root: Path, path: Path, top_level_only: bool = False, tree: ast.Module | None = None) -> set[str]:
    """Absolute names a module imports (relative imports resolved to litedet.*); ``tree``: its
    parsed source when the caller edited it."""
    tree = tree or ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    mod = _module_name(root, path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                names.add(node.module)
            else:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
                names.add(target)
                if not node.module:  # from . import x: x is a submodule
                    names.update(f"{target}.{a.name}" for a in node.names)
    return names


def violations(root: Path) -> list[str]:
    bad = []
    for folder, forbidden in FORBIDDEN.items():
        for py in sorted((root / folder).rglob("*.py")):
            rel = py.relative_to(root).as_posix()
            rules = {"torch", "ncnn", "litedet.models", "litedet.convert"} if rel in TOP_LEVEL_ONLY else forbidden
            for name in imports(root, py, top_level_only=rel in TOP_LEVEL_ONLY):
                if any(name == f or name.startswith(f + ".") for f in rules):
                    bad.append(f"{rel}: {name}")
    return bad


def test_no_folder_imports_upstream():
    assert violations(ROOT) == [], "imports that DESIGN.md forbids"


def test_every_folder_is_checked():
    for folder in PACKAGES:
        assert list((ROOT / folder).rglob("*.py")), folder
    assert any(p.parent.name == "kinds" for p in (ROOT / "runtime").rglob("*.py"))  # recursion reaches subpackages


@pytest.fixture
def tree(tmp_path):
    for folder in PACKAGES:
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    assert violations(tmp_path) == []
    return tmp_path


@pytest.mark.parametrize("rel,code,expected", [
    ("runtime/kinds/planted.py", "import torch\n", "runtime/kinds/planted.py: torch"),
    ("runtime/planted.py", "def f():\n    from torch import nn\n", "runtime/planted.py: torch"),
    ("runtime/kinds/planted.py", "from ...convert import pipeline\n", "runtime/kinds/planted.py: litedet.convert"),
    ("benchmarks/arm/planted.py", "from litedet.models import create_model\n", "benchmarks/arm/planted.py: litedet.models"),
    ("models/planted.py", "from .. import runtime\n", "models/planted.py: litedet.runtime"),
    ("litedet/planted.py", "import litedet.models\n", "litedet/planted.py: litedet.models"),
    ("litedet/cli.py", "import torch\n", "litedet/cli.py: torch"),
])
def test_a_planted_violation_is_found(tree, rel, code, expected):
    path = tree / rel
    path.write_text(code + (path.read_text() if path.exists() else ""))
    assert expected in violations(tree)


def test_lazy_imports_in_the_cli_are_allowed(tree):
    (tree / "litedet" / "cli.py").write_text("def f():\n    import torch\n")
    assert violations(tree) == []
