"""The package's imports point one way: no circles, and no lower layer importing a higher one.

Read from the source with ``ast`` (every import, also those inside functions), so a lazy import
cannot hide a circle. The layers are those of docs/architecture.md.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "matcher"

#: Layer of each top-level part of the package; a module may import its own layer or lower ones.
LAYERS = {
    "errors": 0, "results": 0, "atomic": 0, "outputs": 0, "evidence": 0, "testpoints": 0, "stages": 0,
    "imaging": 1, "provenance": 1,
    "hashing": 2,
    "pipeline": 3, "index": 3,
    "ingest": 4,
    "engine": 5,
    "optout": 6, "report": 6, "bench": 6,
    "cli": 7, "web": 7,
    "__main__": 8,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PKG.rglob("*.py")}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports (absolute or relative, at any depth in the file)."""
    is_pkg = path.name == "__init__.py"
    here = name.split(".") if is_pkg else name.split(".")[:-1]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:  # `from matcher.x import name`: the module is matcher.x
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def part(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_part_has_a_layer():
    missing = sorted({part(m) for m in modules() if part(m) and part(m) not in LAYERS})
    assert not missing, f"give these a layer in LAYERS and docs/architecture.md: {missing}"


def test_lower_layers_never_import_higher_ones():
    bad = []
    for mod, deps in graph().items():
        if mod == "matcher":  # the package root re-exports the public names; it is nobody's dependency
            continue
        for dep in deps:
            if dep == "matcher":  # `from matcher import __version__`
                continue
            if LAYERS[part(dep)] > LAYERS[part(mod)]:
                bad.append(f"{mod} (layer {LAYERS[part(mod)]}) imports {dep} (layer {LAYERS[part(dep)]})")
    assert not bad, "\n".join(sorted(bad))


def test_no_import_circles():
    g = graph()
    g.pop("matcher", None)
    for deps in g.values():
        deps.discard("matcher")
    # Tarjan's strongly connected components: any component of more than one module is a circle
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    circles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in g:
                continue
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
                circles.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    assert not circles, f"import circles: {circles}"


def test_the_check_sees_a_circle_and_an_upward_import(tmp_path, monkeypatch):
    """The walk finds relative, absolute and function-level imports (so the tests above can fail)."""
    pkg = tmp_path / "matcher"
    (pkg / "imaging").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "imaging" / "__init__.py").write_text("")
    (pkg / "imaging" / "a.py").write_text("def f():\n    from matcher.cli import main\n")
    (pkg / "imaging" / "b.py").write_text("from . import a\nfrom .c import x\n")
    (pkg / "imaging" / "c.py").write_text("import matcher.imaging.b\n")
    (pkg / "cli.py").write_text("")
    monkeypatch.setattr(__import__(__name__), "PKG", pkg)
    g = graph()
    assert g["matcher.imaging.a"] == {"matcher.cli"}
    assert g["matcher.imaging.b"] == {"matcher.imaging.a", "matcher.imaging.c", "matcher.imaging"}
    assert "matcher.imaging.b" in g["matcher.imaging.c"]
    with pytest.raises(AssertionError, match="circles"):
        test_no_import_circles()
