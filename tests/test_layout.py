"""The layout of the jaxrrm package, read from its source with ``ast`` (nothing is imported):
the import graph between its modules has no cycle, no module uses another module's private
(underscore) names, and the library imports neither argparse, nor the entry points
(``experiments``, ``benchmarks``), nor matplotlib.

What counts as an import of module ``A`` by module ``B``: any ``import`` / ``from ... import``
statement in ``B``'s file, at module level or inside a function (a deferred import is still a
dependency), resolved to a module of the package: ``from jaxrrm.x import name`` (or the relative
``from .x import name``) is an edge to ``jaxrrm.x.name`` when that is a module of the package,
else to ``jaxrrm.x``. The implicit import of a module's enclosing packages (``import
jaxrrm.data.storage`` runs ``jaxrrm/data/__init__.py`` first) is not an edge: a package's
``__init__`` that imports its own submodules is no cycle.

A private use is ``mod._name`` where ``mod`` is bound to another jaxrrm module (``from jaxrrm
import env``, ``from . import env as envlib``, ``import jaxrrm.env``), or ``from jaxrrm.x import
_name`` (relative too); dunder names (``__version__``) are not private.

Run as a script (``python tests/test_layout.py``) it prints the graph, its cycles and the
private uses.
"""

from __future__ import annotations

import ast
import sys
import warnings
from pathlib import Path
from typing import Dict, List, Set, Tuple

PACKAGE = "jaxrrm"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

#: Private uses that cannot be removed in the scope of the data / distributed restructuring,
#: as ``(using module, "used_module._name"): reason``. An entry that is no longer found fails
#: the test (remove it).
ALLOWED_PRIVATE: Dict[Tuple[str, str], str] = {}

#: Import cycles allowed, as sorted tuples of the modules of a strongly connected component.
ALLOWED_CYCLES: Dict[Tuple[str, ...], str] = {}


def modules(root: Path = ROOT) -> Dict[str, Path]:
    """``{dotted module name: file}`` of every ``.py`` file of the package."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _parse(path: Path) -> ast.Module:
    """The syntax tree of ``path`` (escape-sequence warnings of its docstrings silenced: they
    are another check's business)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (DeprecationWarning, SyntaxWarning))
        return ast.parse(path.read_text(encoding="utf-8"), str(path))


def _base(mod: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute module name ``from <base> import ...`` names (relative ones resolved)."""
    if not node.level:
        return node.module or ""
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def scan(mods: Dict[str, Path]) -> Tuple[Dict[str, Set[str]], List[Tuple[str, str, int]]]:
    """The import graph ``{module: {imported modules}}`` and the private uses
    ``[(module, "other_module._name", line)]`` of the package's modules."""
    graph: Dict[str, Set[str]] = {m: set() for m in mods}
    private: List[Tuple[str, str, int]] = []
    for mod, path in mods.items():
        tree = _parse(path)
        bound: Dict[str, str] = {}   # local name -> jaxrrm module it refers to
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] != PACKAGE:
                        continue
                    if a.name in mods:
                        graph[mod].add(a.name)
                    if a.asname:
                        bound[a.asname] = a.name
                    else:
                        bound[PACKAGE] = PACKAGE
            elif isinstance(node, ast.ImportFrom):
                base = _base(mod, path, node)
                if base.split(".")[0] != PACKAGE:
                    continue
                for a in node.names:
                    sub = f"{base}.{a.name}"
                    if sub in mods:
                        graph[mod].add(sub)
                        bound[a.asname or a.name] = sub
                    elif base in mods:
                        graph[mod].add(base)
                        if _is_private(a.name) and base != mod:
                            private.append((mod, f"{base}.{a.name}", node.lineno))

        def resolve(expr) -> str:
            """The jaxrrm module an expression names, or ''."""
            if isinstance(expr, ast.Name):
                return bound.get(expr.id, "")
            if isinstance(expr, ast.Attribute):
                owner = resolve(expr.value)
                return f"{owner}.{expr.attr}" if owner and f"{owner}.{expr.attr}" in mods else ""
            return ""

        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and _is_private(node.attr):
                owner = resolve(node.value)
                if owner and owner != mod:
                    private.append((mod, f"{owner}.{node.attr}", node.lineno))
        graph[mod].discard(mod)
    return graph, private


def cycles(graph: Dict[str, Set[str]]) -> List[Tuple[str, ...]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on: Set[str] = set()
    out: List[Tuple[str, ...]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
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
                out.append(tuple(sorted(comp)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def test_no_import_cycles():
    graph, _ = scan(modules())
    found = {c: None for c in cycles(graph)}
    unexpected = [c for c in found if c not in ALLOWED_CYCLES]
    assert not unexpected, f"import cycles between jaxrrm modules: {unexpected}"
    stale = [c for c in ALLOWED_CYCLES if c not in found]
    assert not stale, f"allowed cycles no longer present (remove them): {stale}"


def test_no_private_names_of_other_modules():
    _, private = scan(modules())
    found = {(m, name) for m, name, _ in private}
    unexpected = sorted((m, name, line) for m, name, line in private
                        if (m, name) not in ALLOWED_PRIVATE)
    assert not unexpected, ("modules using another module's private names (make the name "
                            f"public in its module): {unexpected}")
    stale = sorted(k for k in ALLOWED_PRIVATE if k not in found)
    assert not stale, f"allow-listed private uses no longer present (remove them): {stale}"


def test_library_does_not_parse_command_lines():
    """argparse belongs to the entry points (experiments/, benchmarks/), not the library."""
    users = []
    for mod, path in modules().items():
        for node in ast.walk(_parse(path)):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n.split(".")[0] == "argparse" for n in names):
                users.append(mod)
    assert not users, f"jaxrrm modules importing argparse: {sorted(set(users))}"


def test_library_imports_no_entry_point_and_draws_nothing():
    """The library is what other code imports: it never imports the entry points
    (``experiments``, ``benchmarks``: the import would only work from the repository root, and
    would turn the line between them around) nor ``matplotlib`` (figures are
    ``experiments/plots.py``'s)."""
    forbidden = ("experiments", "benchmarks", "matplotlib")
    users = []
    for mod, path in modules().items():
        for node in ast.walk(_parse(path)):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom)
                     and not node.level else [])
            users += [(mod, n) for n in names if n.split(".")[0] in forbidden]
    assert not users, f"jaxrrm modules importing entry points or matplotlib: {sorted(set(users))}"


def test_scanner_sees_edges_and_private_uses(tmp_path):
    """The scanner on a tiny package: relative, absolute and deferred imports are edges; a
    cycle is found; ``mod._x`` and ``from .mod import _x`` are private uses, dunders are not."""
    pkg = tmp_path / PACKAGE
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("__version__ = '0'\nfrom . import a\n")
    (pkg / "a.py").write_text("from . import b as bee\nx = bee._hidden\n"
                              "from . import __version__\n")
    (pkg / "b.py").write_text("def f():\n    import jaxrrm.sub.c\n    return jaxrrm.sub.c._y\n")
    (pkg / "sub" / "__init__.py").write_text("from .c import z\n")
    (pkg / "sub" / "c.py").write_text("from ..a import _q\n_y = 1\nz = 2\n")
    mods = modules(pkg)
    graph, private = scan(mods)
    assert graph["jaxrrm"] == {"jaxrrm.a"}
    assert graph["jaxrrm.a"] == {"jaxrrm.b", "jaxrrm"}
    assert graph["jaxrrm.b"] == {"jaxrrm.sub.c"}
    assert graph["jaxrrm.sub"] == {"jaxrrm.sub.c"}
    assert cycles(graph) == [("jaxrrm", "jaxrrm.a", "jaxrrm.b", "jaxrrm.sub.c")]
    assert sorted((m, n) for m, n, _ in private) == [
        ("jaxrrm.a", "jaxrrm.b._hidden"), ("jaxrrm.b", "jaxrrm.sub.c._y"),
        ("jaxrrm.sub.c", "jaxrrm.a._q")]


def main() -> int:
    graph, private = scan(modules())
    for mod in sorted(graph):
        deps = sorted(d for d in graph[mod])
        print(f"{mod} -> {', '.join(deps) if deps else '(none)'}")
    print("cycles:", cycles(graph) or "none")
    print("private uses:")
    for m, name, line in sorted(private):
        mark = " (allowed)" if (m, name) in ALLOWED_PRIVATE else ""
        print(f"  {m}:{line} uses {name}{mark}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
