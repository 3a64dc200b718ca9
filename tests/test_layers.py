"""The import map of se_multi has no circle: read from the source (every import statement,
module level and inside functions alike, since a lazy import is still a dependency), so a reader
can see the layering by running this file, and a change that closes a circle fails here."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: the installed package -> the folder it comes from (pyproject's package-dir)
PACKAGES = {"se_multi": ROOT / "se_multi", "se_multi.backends": ROOT / "backends"}


def modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = [p for p in path.relative_to(folder).with_suffix("").parts if p != "__init__"]
            found[".".join([package, *parts])] = path
    return found


def import_map() -> dict[str, set[str]]:
    """module -> the se_multi modules it imports (``from pkg import sub`` counts as ``pkg.sub``)."""
    mods = modules()
    edges: dict[str, set[str]] = {}
    for name, path in mods.items():
        out = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                subs = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in mods]
                out.update(subs if len(subs) == len(node.names) else [node.module, *subs])
            elif isinstance(node, ast.Import):
                out.update(a.name for a in node.names)
        edges[name] = {m for m in out if m in mods and m != name}
    return edges


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_map_is_read():
    edges = import_map()
    assert "se_multi.backends.numpy_backend" in edges and "se_multi.shapes" in edges["se_multi.reference"]


def test_the_import_map_has_no_circle():
    assert circles(import_map()) == []


def test_the_size_rules_are_a_leaf():
    """Third-party backends and every floor use se_multi.shapes: it imports nothing of se_multi."""
    assert import_map()["se_multi.shapes"] == set()


def test_a_circle_is_found():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_op_table_and_the_dtype_table_sit_under_the_backend_contract():
    """The op table reads the size rules and the reference only; the dtype table reads nothing of
    se_multi; the backend contract is derived from both, so every adapter can read them."""
    edges = import_map()
    assert edges["se_multi.op_table"] == {"se_multi.shapes", "se_multi.reference"}
    assert edges["se_multi.dtypes"] == set()
    assert {"se_multi.op_table", "se_multi.dtypes"} <= edges["se_multi.backend"]
