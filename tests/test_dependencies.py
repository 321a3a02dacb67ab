"""The declared dependencies match the code and the tested minimums.

* every ``>=`` lower bound in ``[project.dependencies]`` equals its pin in
  ``ci/min-versions.txt`` (the versions ``.ci/run``'s ``.venv-min`` tests), and every pin there
  is the lower bound of a declared requirement (core or an extra);
* every third-party module ``jaxrrm/`` imports (``jaxrrm/integrations/`` aside: they use the
  optional extras) is declared in ``[project.dependencies]``, and nothing declared there is
  unused by ``jaxrrm/``;
* every module of ``jaxrrm/`` (integrations aside) imports with the installed versions.
"""

from __future__ import annotations

import ast
import importlib
import pathlib
import sys
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "jaxrrm"
OPTIONAL = PACKAGE / "integrations"  # imports the jaxmarl / ogmarl extras
CONSTRAINTS = ROOT / "ci" / "min-versions.txt"

#: Import name -> distribution name, for every third-party module jaxrrm/ may import.
IMPORT_TO_DIST = {
    "jax": "jax",
    "flax": "flax",
    "optax": "optax",
    "numpy": "numpy",
    "scipy": "scipy",
    "orbax": "orbax-checkpoint",
    "tqdm": "tqdm",
}

#: Distributions declared without being imported, and the import that needs each.
IMPLIED_BY = {
    "jaxlib": "jax",  # jax's compiled runtime; declared so both ends get the same bounds
}


def _pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as fh:
        return tomllib.load(fh)


def _core() -> dict:
    return {canonicalize_name(r.name): r
            for r in map(Requirement, _pyproject()["project"]["dependencies"])}


def _all_declared() -> list:
    proj = _pyproject()["project"]
    reqs = [Requirement(s) for s in proj["dependencies"]]
    for extra in proj.get("optional-dependencies", {}).values():
        reqs += [Requirement(s) for s in extra]
    return [r for r in reqs if canonicalize_name(r.name) != "jaxrrm"]


def _lower_bound(req: Requirement):
    lows = [Version(s.version) for s in req.specifier if s.operator == ">="]
    return max(lows) if lows else None


def _pins() -> dict:
    pins = {}
    for n, line in enumerate(CONSTRAINTS.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        assert sep and version.strip(), f"{CONSTRAINTS.name}:{n}: expected NAME==VERSION, " \
                                        f"got {line!r}"
        key = canonicalize_name(name.strip())
        assert key not in pins, f"{CONSTRAINTS.name}:{n}: {name} pinned twice"
        pins[key] = Version(version.strip())
    return pins


def _sources(with_optional: bool = False) -> list:
    return sorted(p for p in PACKAGE.rglob("*.py")
                  if with_optional or OPTIONAL not in p.parents)


def _third_party_imports() -> dict:
    """Top-level name of every absolute import in jaxrrm/ (integrations aside), including the
    lazy ones inside functions, other than the standard library and jaxrrm -> files."""
    found = {}
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top in ("jaxrrm", "__future__"):
                    continue
                found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def test_core_lower_bounds_equal_the_tested_pins():
    pins = _pins()
    for key, req in _core().items():
        low = _lower_bound(req)
        assert low is not None, f"{req}: no >= lower bound"
        assert key in pins, f"{req.name} has no pin in {CONSTRAINTS.relative_to(ROOT)}"
        assert pins[key] == low, (f"{req.name}: pyproject.toml says >={low}, "
                                  f"{CONSTRAINTS.relative_to(ROOT)} tests {pins[key]}")


def test_every_pin_is_a_declared_lower_bound():
    lows = {}
    for req in _all_declared():
        low = _lower_bound(req)
        if low is not None:
            lows.setdefault(canonicalize_name(req.name), set()).add(low)
    for key, version in _pins().items():
        assert key in lows, f"{key}=={version} is pinned but not declared with a >= bound"
        assert lows[key] == {version}, (f"{key}: pinned {version}, declared lower bound(s) "
                                        f"{sorted(map(str, lows[key]))}")


def test_every_import_is_declared():
    core = _core()
    for top, files in sorted(_third_party_imports().items()):
        assert top in IMPORT_TO_DIST, (f"jaxrrm imports {top!r} ({sorted(files)}): map it to "
                                       f"its distribution in IMPORT_TO_DIST")
        dist = canonicalize_name(IMPORT_TO_DIST[top])
        assert dist in core, (f"jaxrrm imports {top!r} ({sorted(files)}) but {dist} is not in "
                              f"[project.dependencies]")


def test_nothing_declared_is_unused():
    imported = _third_party_imports()
    used = {canonicalize_name(IMPORT_TO_DIST[t]) for t in imported if t in IMPORT_TO_DIST}
    used |= {canonicalize_name(d) for d, needed in IMPLIED_BY.items() if needed in imported}
    unused = sorted(set(_core()) - used)
    assert not unused, (f"declared in [project.dependencies] but not imported by jaxrrm/: "
                        f"{unused} (move them to an extra, or drop them)")


def test_requires_python_is_the_running_floor():
    spec = _pyproject()["project"]["requires-python"]
    assert spec.startswith(">="), spec
    assert sys.version_info[:2] >= tuple(int(x) for x in spec[2:].split(".")[:2])


@pytest.mark.parametrize(
    "module", [".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
               for p in _sources()])
def test_module_imports(module):
    importlib.import_module(module)
