"""build_pipeline's imports go one way (issue 22): no module reaches itself through its imports, and no
part (a subpackage such as compiler/ or families/, or a top-level module) imports a part that imports it
back. Every import counts, also those inside functions: a deferred import hides a cycle from Python, not
from a reader. A package's __init__ dispatching to its own submodules is the one edge left out (the
package is their container, not their peer)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "build_pipeline"
SKIP = {"runtime_support", "__pycache__"}


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        if SKIP & set(path.relative_to(PACKAGE).parts):
            continue
        parts = ("build_pipeline",) + path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def import_edges(mods: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the build_pipeline modules it imports (`from pkg import mod` counts as pkg.mod)."""
    edges: dict[str, set[str]] = {}
    for name, path in mods.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    targets.add(sub if sub in mods else node.module)
            elif isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
        is_package = path.name == "__init__.py"
        edges[name] = {t for t in targets if t in mods and t != name and not (is_package and t.startswith(name + "."))}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def part(module: str) -> str:
    """build_pipeline.compiler.library -> build_pipeline.compiler; build_pipeline.convert stays."""
    return ".".join(module.split(".")[:2])


def test_no_module_imports_itself_back():
    assert cycles(import_edges(modules())) == []


def test_no_two_parts_import_each_other():
    parts: dict[str, set[str]] = {}
    for src, targets in import_edges(modules()).items():
        for t in targets:
            if part(src) != part(t) and part(src) != "build_pipeline":
                parts.setdefault(part(src), set()).add(part(t))
    found = cycles(parts)
    # Name the imports that close each cycle, so the message says what to move.
    detail = {
        " <-> ".join(c): sorted(
            f"{s} -> {t}"
            for s, ts in import_edges(modules()).items()
            for t in ts
            if part(s) in c and part(t) in c
            if part(s) != part(t)
        )
        for c in found
    }
    assert not found, detail


def test_the_check_finds_a_cycle():
    """The checker itself: a two-module and a three-part loop are reported."""
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert cycles({"x": {"y"}, "y": {"z"}, "z": {"x"}}) == [["x", "y", "z"]]
    assert cycles({"x": {"y"}, "y": set()}) == []
