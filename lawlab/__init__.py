"""lawlab: compression-law studies of large language models.

The names below are the public surface for a script or a plugin; anything else may move.
They load on first use, so ``import lawlab`` (and ``from lawlab import hookimpl`` in every
plugin) stays as cheap as the hook marker itself.

A plugin may import ``lawlab`` (these names), ``lawlab.api`` (the classes it implements),
``lawlab.hookspecs``, ``lawlab.accounting``, ``lawlab.environment``, ``lawlab.files``,
``lawlab.models.loading``, ``lawlab.models.hub``, ``lawlab.models.tokens``, ``lawlab.run.memory``,
``lawlab.laws.forms`` and ``lawlab.testing``; and, for an executor, the names that
``lawlab.api.EXECUTOR_KIT`` lists. It never imports a sibling plugin's helpers (subclassing a
public plugin class is fine).
"""

from __future__ import annotations

import importlib
from typing import Any

from lawlab.hookspecs import hookimpl

__version__ = "0.1.0"

# public name → the module that defines it
_HOMES = {
    # the plugin contract
    "Params": "lawlab.api", "NoParams": "lawlab.api", "CheckFailed": "lawlab.api",
    "CannotRunHere": "lawlab.api", "CheckContext": "lawlab.api", "RunContext": "lawlab.api",
    "LoadedModel": "lawlab.api", "Compression": "lawlab.api", "TextData": "lawlab.api",
    "Measurement": "lawlab.api", "MemoryTerms": "lawlab.api", "ModelSource": "lawlab.api",
    "ArchitectureAdapter": "lawlab.api", "Dataset": "lawlab.api", "Pruner": "lawlab.api",
    "RFTRecipe": "lawlab.api", "Evaluator": "lawlab.api", "LawForm": "lawlab.api",
    "LawParameter": "lawlab.api", "Pack": "lawlab.api", "Executor": "lawlab.api",
    "ExecutionSummary": "lawlab.api", "Quantizer": "lawlab.api", "Precision": "lawlab.api",
    # errors a user sees as one line and exit code 2
    "SpecError": "lawlab.spec.issues", "PluginError": "lawlab.registry", "UsageError": "lawlab.errors",
    # the stages, for scripts
    "get_registry": "lawlab.registry", "load_spec": "lawlab.spec.load", "make_plan": "lawlab.run.plan",
    "run_study": "lawlab.run.study", "load_table": "lawlab.run.store",
    "read_results_csv": "lawlab.laws.data", "law_form": "lawlab.laws.forms", "fit_law": "lawlab.laws.fit",
    "fit_study": "lawlab.laws.fit", "FitResult": "lawlab.laws.results",
    "compare_forms": "lawlab.laws.compare", "study_findings": "lawlab.findings.stage",
    "write_report": "lawlab.report.render",
}

__all__ = ["__version__", "hookimpl", *_HOMES]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'lawlab' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
