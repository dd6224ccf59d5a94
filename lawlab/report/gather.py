"""Gathering a study for the report: everything it shows, read from the store once.

The store is read only through :class:`lawlab.run.store.Store`'s methods and the table
loaders of :mod:`lawlab.run.store`; the fits come from ``fits.json`` when it is newer than
every stored cell, else they are fitted again here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lawlab.findings.answers import COMPARED_FORMS, Findings
from lawlab.findings.stage import findings

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
    findings_error: str | None = None  # why there are no findings, when they failed

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
    study.fits, study.fits_source = load_fits(study, registry)
    study.comparisons = compare_all(study, registry)
    try:
        study.findings = findings(rows, source=str(root), seed=int(spec.get("study", {}).get("seed", 0)))
    except Exception as exc:  # the report must still be written; it says what went wrong
        study.findings_error = f"The findings could not be computed: {type(exc).__name__}: {exc}"
    return study


def load_fits(study: StudyData, registry: Registry) -> tuple[list[FitResult], str]:
    """fits.json when it is at least as new as the newest stored cell, else fit again."""
    from lawlab.laws.fit import fit_study
    from lawlab.laws.results import FitResult

    if not study.laws:
        return [], "the spec has no laws"
    path = study.root / "fits.json"
    newest = max((c["ended"] or 0 for c in study.cells), default=0)
    if path.is_file() and path.stat().st_mtime >= newest:
        fits = [FitResult.from_dict(d) for d in json.loads(path.read_text())]
        source = f"read from {path.name} (written after the last stored cell)"
    else:
        seed = int(study.spec.get("study", {}).get("seed", 0))
        fits = fit_study(study.rows, study.laws, registry, seed=seed)
        source = ("fitted by the report: " + (f"{path.name} is older than the newest stored cell"
                                              if path.is_file() else f"there is no {path.name} yet"))
    for f in fits:
        if registry.has("law_forms", f.form):
            f._form = registry.get("law_forms", f.form)
            f._options = f._form.Params.model_validate(f.options)
    return fits, source


def compare_all(study: StudyData, registry: Registry) -> dict[str, ComparisonTable]:
    """The form comparison (Table 1's rows and ranking) for each metric kind with data:
    the spec's forms for that metric and the paper's alternatives, on the same rows."""
    from lawlab.laws.compare import compare_forms
    from lawlab.laws.data import law_rows

    out = {}
    for kind in ("intrinsic", "extrinsic", "runtime"):
        rows = law_rows(study.rows, kind)
        if not rows:
            continue
        mine = [law for law in study.laws if law.metric == kind]
        names = list(dict.fromkeys([law.form for law in mine] + list(COMPARED_FORMS[kind])))
        forms = [registry.get("law_forms", n) for n in names if registry.has("law_forms", n)]
        options = {law.form: law.params for law in mine}
        ratio = mine[0].ratio if mine else "nominal"
        out[kind] = compare_forms(rows, forms, metric_kind=kind, ratio=ratio, options=options, registry=registry,
                                  seed=int(study.spec.get("study", {}).get("seed", 0)))
    return out
