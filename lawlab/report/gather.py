"""Gathering a study for the report: everything it shows, read from the store once.

The store is read only through :class:`lawlab.run.store.Store`'s methods and the table
loaders of :mod:`lawlab.run.store`; the fits, the form comparison and the findings are the
study's one analysis (:mod:`lawlab.analysis`, ``analysis.json``): the report computes none
of them itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lawlab.analysis import ANALYSIS_FILE, Analysis, prepare_rows, study_analysis
from lawlab.findings.answers import Findings

if TYPE_CHECKING:  # pragma: no cover
    from lawlab.laws.compare import ComparisonTable
    from lawlab.laws.results import FitResult
    from lawlab.registry import Registry
    from lawlab.spec.models import LawEntry


@dataclass
class StudyData:
    """Everything the report shows, read from the store once."""

    root: Path
    name: str
    spec: dict[str, Any]
    rows: list[dict[str, Any]]
    models: list[str]
    methods: list[str]
    calibration: dict[str, str]
    laws: list[LawEntry]
    fits: list[FitResult]
    fits_source: str
    comparisons: dict[str, ComparisonTable]
    status: dict[str, Any]
    meta: dict[str, Any]
    cells: list[dict[str, Any]]  # every stored cell row, provenance parsed
    plan: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    findings: Findings | None = None
    analysis: Analysis | None = None
    law_rows: list[dict[str, Any]] = field(default_factory=list)  # the rows the analysis fitted (chance rule applied)

    def law_order(self, key: str) -> int:
        keys = [law.key for law in self.laws]
        return keys.index(key) if key in keys else len(keys)


def gather(output_dir: str | Path, registry: Registry | None = None) -> StudyData:
    from lawlab.run.store import Store, load_table, study_status
    from lawlab.spec.models import LawEntry

    root = Path(output_dir)
    if registry is None:
        from lawlab.registry import get_registry

        registry = get_registry()
    rows = load_table(root)
    with Store(root) as store:
        meta = {k: store.meta(k) for k in ("spec", "spec_hash", "experiments", "skipped", "families", "calibration",
                                           "last_run_seconds")}
        cells = store.cell_rows()
        plan = [{**dict(r), "cell": json.loads(r["cell"])} for r in store.plan_rows()]
    spec = meta["spec"] or {}
    laws = [LawEntry.model_validate(law) for law in spec.get("laws", [])]
    present_models = {r["model"] for r in rows}
    models = [m["name"] for m in spec.get("models", []) if m["name"] in present_models]
    models += sorted(present_models - set(models))
    present_methods = {r["method"] for r in rows if r["method"]}
    methods = [m.get("label") or m["method"] for m in spec.get("methods", [])]
    methods = [m for m in dict.fromkeys(methods) if m in present_methods] + sorted(present_methods - set(methods))
    study = StudyData(
        root=root, name=spec.get("study", {}).get("name", root.name), spec=spec, rows=rows, models=models,
        methods=methods, calibration=meta["calibration"] or {}, laws=laws, fits=[], fits_source="",
        comparisons={}, status=study_status(root), meta=meta, cells=cells, plan=plan,
    )
    study.analysis = study_analysis(root, registry)
    study.law_rows = prepare_rows(rows)[0]
    study.fits = study.analysis.fits
    study.fits_source = (f"read from {ANALYSIS_FILE}, the study's one analysis (rows and laws digest "
                         f"{study.analysis.key[:12]})")
    study.comparisons = study.analysis.comparisons
    study.findings = study.analysis.findings
    return study
