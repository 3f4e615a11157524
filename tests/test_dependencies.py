"""Every third-party module that nnexp imports is a declared dependency (a test environment may hold more).

The fault this guards against: tqdm was imported for the progress bar, which only appears on a terminal,
but not declared; every job of a fresh install failed at a terminal while the suite (never a terminal) passed.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_modules() -> dict[str, set[str]]:
    """Top-level third-party module -> files of nnexp/ that import it (anywhere, lazily or not)."""
    out: dict[str, set[str]] = {}
    for path in (ROOT / "nnexp").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "nnexp":
                    out.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return out


def declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    reqs = list(project["dependencies"])
    return {canonical(re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0]) for r in reqs}


def test_every_imported_module_is_a_declared_dependency():
    dists = packages_distributions()
    base = declared()
    missing = {}
    for module, files in imported_modules().items():
        names = {canonical(d) for d in dists.get(module, [module])}
        if not names & base:
            missing[module] = sorted(files)
    assert not missing, f"imported but not in [project] dependencies of pyproject.toml: {missing}"


def test_the_check_sees_lazy_imports():
    mods = imported_modules()
    assert "tqdm" in mods and "nnexp/app.py" in mods["tqdm"]  # imported inside a function
    assert "sklearn" in mods  # import name differs from the distribution name (scikit-learn)
