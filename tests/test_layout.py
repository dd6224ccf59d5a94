"""The package's shape: subpackages along the stages, no private name crossing a module, no
import error swallowed, and every subpackage shipped in the wheel."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted([*(ROOT / "lawlab").rglob("*.py"), *(ROOT / "plugins").rglob("*.py")])


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def test_no_module_imports_another_modules_private_name():
    crossings = []
    for path in SOURCES:
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(("lawlab", "lawlab_plugins")):
                crossings += [f"{path.relative_to(ROOT)}:{node.lineno} {node.module}.{a.name}"
                              for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
    assert crossings == []


def _swallows(handler: ast.ExceptHandler) -> bool:
    """An ``except ImportError`` whose body never raises turns a bug into missing output."""
    names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    catches = any(isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError") for n in names)
    return catches and not any(isinstance(n, ast.Raise) for n in ast.walk(handler))


def test_no_import_error_is_swallowed_in_the_core():
    found = [f"{p.relative_to(ROOT)}:{n.lineno}" for p in (ROOT / "lawlab").rglob("*.py")
             for n in ast.walk(_tree(p)) if isinstance(n, ast.ExceptHandler) and _swallows(n)]
    assert found == []


def test_the_law_and_pack_commands_are_always_there():
    from lawlab.cli.main import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert {"fit", "compare", "critical", "findings", "packs", "fetch"} <= set(sub.choices)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib is in the standard library from 3.11")
def test_every_subpackage_is_in_the_wheel():
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "lawlab").rglob("__init__.py")}
    assert found <= listed


def test_every_public_name_resolves_and_import_stays_cheap():
    import subprocess

    import lawlab

    missing = [n for n in lawlab.__all__ if getattr(lawlab, n, None) is None]
    assert missing == []
    # a plugin's `from lawlab import hookimpl` loads neither pydantic nor torch
    probe = "import sys, lawlab; print(sorted(m for m in ('pydantic', 'torch', 'numpy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_one_jsonable_and_one_slug_for_every_writer():
    import json

    import numpy as np

    from lawlab.files import jsonable, slug

    value = {1: (np.float32(0.5), np.array([[1, 2]])), "x": [float("nan"), np.float64(float("inf")), np.int64(3)]}
    assert jsonable(value) == {"1": [0.5, [[1, 2]]], "x": [None, None, 3]}
    json.dumps(jsonable(value), allow_nan=False)  # strict JSON: no NaN token
    assert slug("compression-law: eq.1 (pooled)") == "compression-law__eq_1__pooled_"


def test_plugins_use_of_the_run_stage_is_the_executor_contract():
    """Of ``lawlab.run`` a plugin imports its memory helpers and the names that
    ``lawlab.api.EXECUTOR_KIT`` lists, nothing else: the executor contract is written down."""
    from lawlab.api import EXECUTOR_KIT

    beyond = []
    for path in sorted((ROOT / "plugins").rglob("*.py")):
        for node in ast.walk(_tree(path)):
            if not isinstance(node, ast.ImportFrom) or not (node.module or "").startswith("lawlab.run"):
                continue
            if node.module == "lawlab.run.memory":
                continue
            allowed = EXECUTOR_KIT.get(node.module or "", ())
            beyond += [f"{path.name}:{node.lineno} {node.module}.{a.name}" for a in node.names if a.name not in allowed]
    assert beyond == []
    # and every name the contract lists is there
    import importlib

    missing = [f"{m}.{n}" for m, names in EXECUTOR_KIT.items() for n in names
               if not hasattr(importlib.import_module(m), n)]
    assert missing == []


def test_a_plugin_uses_a_sibling_only_by_subclassing_it():
    """From another plugin module a plugin imports only the classes it subclasses; its own
    private modules (``lawlab_plugins._name``) are its own, and import no plugin back.
    Helpers several plugins share live in the core."""
    borrowed = []
    for path in sorted((ROOT / "plugins").rglob("*.py")):
        tree = _tree(path)
        bases = {b.id for n in ast.walk(tree) if isinstance(n, ast.ClassDef) for b in n.bases if isinstance(b, ast.Name)}
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom) or not (node.module or "").startswith("lawlab_plugins."):
                continue
            if node.module.split(".")[1].startswith("_"):
                continue  # a plugin's own private module
            borrowed += [f"{path.name}:{node.lineno} {node.module}.{a.name}" for a in node.names
                         if path.name.startswith("_") or a.name not in bases]
    assert borrowed == []


def test_the_testing_kit_names_no_plugin_module():
    text = (ROOT / "lawlab" / "testing.py").read_text()
    assert "lawlab_plugins." not in text
