"""No import loop inside a folder: modules of one layer form a DAG, so each can be read (and
replaced) from the bottom up. A submodule importing its own package's ``__init__`` (a registry's
``from . import register_kind``) is how a package registers its members, not a loop between
modules, and is left out. The checker is tested on a planted loop."""

from __future__ import annotations

import ast
from pathlib import Path

from test_layering import PACKAGES, ROOT, _module_name, imports


def runtime_imports(root: Path, path: Path) -> set[str]:
    """``imports`` without those under ``if TYPE_CHECKING:`` (annotations only: never run)."""
    tree = ast.parse(path.read_text())
    typing_only = [n for n in ast.walk(tree) if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test)]
    for n in typing_only:
        n.body = [ast.Pass()]
    return imports(root, path, tree=tree)


def module_graph(root: Path, folder: str) -> dict[str, set[str]]:
    mods = {_module_name(root, p): p for p in (root / folder).rglob("*.py")}
    graph = {}
    for name, path in mods.items():
        pkgs = {name.rsplit(".", k)[0] for k in range(1, name.count(".") + 1)}  # its ancestors
        deps = {d for d in runtime_imports(root, path) if d in mods and d != name and d not in pkgs}
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_loop_inside_any_folder():
    found = {f: cycles(module_graph(ROOT, f)) for f in PACKAGES}
    assert not any(found.values()), {f: c for f, c in found.items() if c}


def test_the_checker_finds_a_planted_loop(tmp_path):
    pkg = tmp_path / "convert"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import x\n")
    (pkg / "b.py").write_text("def x():\n    from .a import y\n")
    assert cycles(module_graph(tmp_path, "convert")) == [["litedet.convert.a", "litedet.convert.b"]]
