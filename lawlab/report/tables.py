"""The study report: what a researcher would put in a paper, regenerated from the store.

``write_report(OUTPUT)`` reads the store (finished or not), the fits (``fits.json`` when it
is newer than every stored cell, else fitted again here), compares the law forms, and
writes under ``OUTPUT/report/``::

    index.html      one self-contained file: CSS inline, figures as base64 PNG, no scripts
    report.md       the Markdown twin, linking figures/*.png
    figures/        every figure as PNG and SVG
    tables/         every table as CSV (raw numbers, intervals in their own columns)

The document is built once as a list of sections made of a few block types (paragraph,
warning, table, figure, preformatted text) and rendered to both HTML and Markdown, so the
two never disagree. Every file is written atomically.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import re
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lawlab.files import slug, write_bytes
from lawlab.findings.answers import COMPARED_FORMS, TITLES, Findings
from lawlab.findings.stage import findings
from lawlab.report.figures import GREEK, Drawing, fits_for, preferred

if TYPE_CHECKING:  # pragma: no cover
    from lawlab.laws.compare import ComparisonTable
    from lawlab.laws.results import FitResult
    from lawlab.registry import Registry
    from lawlab.spec.models import LawEntry

SIGMAS = {"extrinsic": (0.5, 0.6, 0.7, 0.8, 0.9), "intrinsic": (1.1, 1.25, 1.5, 2.0, 3.0)}
LISTED_CELLS = 40  # cells left or failed shown by name; the rest are counted


# --------------------------------------------------------------------------- formatting


def fmt(v: Any, digits: int = 3) -> str:
    """A number as the report prints it: ``digits`` decimals in the usual range, else
    ``digits`` significant figures (small coefficients keep their precision)."""
    if v is None or v == "":
        return "–"
    if isinstance(v, str):
        return v
    v = float(v)
    if v != v:  # NaN
        return "–"
    if 0.1 <= abs(v) < 1e5:
        return f"{v:.{digits}f}"
    return "0" if v == 0 else f"{v:.{digits}g}"


def fmt_f(v: float | None) -> str:
    """The F-statistic as the paper prints it: whole numbers once it is large."""
    if v is None:
        return "–"
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.1f}"


def fmt_ci(value: float | None, ci: Sequence[float] | None) -> str:
    return fmt(value) + (f" [{fmt(ci[0])}, {fmt(ci[1])}]" if ci else "")


def fitted_function(fit: FitResult) -> str:
    """The law written out with its coefficients, as the paper's tables show it."""
    text = fit.formula
    for p in sorted(fit.params, key=lambda p: -len(p.name)):
        value = fmt(p.value, 2)
        text = text.replace(f"^{GREEK.get(p.name, p.name)}", f"^{value}")
        text = text.replace(GREEK.get(p.name, p.name), value)
    for name, value in fit.options.items():
        if name in GREEK:
            text = text.replace(GREEK[name], f"{value:g}")
    if fit.options.get("d_unit", 1) != 1:
        text += f"  (D in units of {fit.options['d_unit']:g} samples)"
    return text


def formula_html(text: str) -> str:
    """Exponents as superscripts and L0/S0 with subscripts, after escaping."""
    out = html.escape(text)
    out = re.sub(r"\^(-?\d+(?:\.\d+)?(?:e-?\d+)?|[^\s·()]+)", r"<sup>\1</sup>", out)
    return re.sub(r"\b([LS])0\b", r"\1<sub>0</sub>", out)


def group_label(fit: FitResult) -> str:
    return "pooled" if fit.group.get("by") == "pooled" else f"{fit.group.get('by')} = {fit.group.get('value')}"


# --------------------------------------------------------------------------- the document


@dataclass
class Table:
    name: str  # file stem under tables/
    title: str
    header: list[str]
    cells: list[list[str]]
    records: list[dict[str, Any]] = field(default_factory=list)  # raw values for the CSV
    caption: str = ""
    formula_columns: tuple[int, ...] = ()


@dataclass
class Section:
    id: str
    title: str
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def warn(self, text: str) -> None:
        self.blocks.append(("warn", text))

    def table(self, table: Table) -> None:
        self.blocks.append(("table", table))

    def figure(self, drawing: Drawing) -> None:
        self.blocks.append(("figure", drawing))

    def pre(self, summary: str, text: str) -> None:
        self.blocks.append(("pre", (summary, text)))

    def items(self, items: Sequence[str]) -> None:
        if items:
            self.blocks.append(("list", list(items)))


# --------------------------------------------------------------------------- gathering


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
        cells = []
        for r in store.db.execute("SELECT * FROM cells"):
            cell = dict(r)
            cell["provenance"] = json.loads(cell["provenance"] or "{}")
            cell["compression"] = json.loads(cell["compression"]) if cell["compression"] else None
            cells.append(cell)
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


# --------------------------------------------------------------------------- tables


def _param_names(fits: Sequence[FitResult]) -> list[str]:
    return list(dict.fromkeys(p.name for f in fits for p in f.params))


def _fit_record(f: FitResult) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "law": f.law, "form": f.form, "metric": f.metric_kind, "group_by": f.group.get("by"),
        "group": f.group.get("value"), "fit": f.method, "space": f.space, "ratio": f.ratio, "n": f.n, "dof": f.dof,
        "fitted_function": "" if f.skipped else fitted_function(f),
    }
    for p in f.params:
        ci, boot = p.ci or (None, None), p.bootstrap_ci or (None, None)
        rec |= {p.name: p.value, f"{p.name}_stderr": p.stderr, f"{p.name}_ci_low": ci[0], f"{p.name}_ci_high": ci[1],
                f"{p.name}_boot_low": boot[0], f"{p.name}_boot_high": boot[1]}
    rec |= {"r2": f.r2, "r2_adj": f.r2_adj, "r2_kind": f.r2_kind, "F": f.fstat, "F_pvalue": f.f_pvalue, "aic": f.aic,
            "bic": f.bic, "rmse": f.rmse, "feasible": not f.feasibility if not f.skipped else None,
            "feasibility": "; ".join(f.feasibility), "skipped": f.skipped or "", "notes": "; ".join(f.notes),
            "r2_centred_adj": f.r2_centred_adj, "r2_beyond_L0": f.r2_beyond_L0, "interval": f.cov_type,
            "clusters": f.n_clusters, "converged": f.converged,
            "heldout_scheme": (f.heldout or {}).get("scheme"), "heldout_rmse_log": (f.heldout or {}).get("rmse_log"),
            "null_rmse_log": (f.heldout or {}).get("null_rmse_log")}
    return rec


def _coef_cell(f: FitResult, name: str) -> str:
    try:
        p = f[name]
    except KeyError:
        return ""
    text = fmt_ci(p.value, p.ci)
    if p.bootstrap_ci:
        text += f" boot [{fmt(p.bootstrap_ci[0])}, {fmt(p.bootstrap_ci[1])}]"
    return text


def _r2(f: FitResult) -> str:
    return fmt(f.r2_adj) + (" (u)" if f.r2_kind == "uncentred" else "")


def _feasible(f: FitResult) -> str:
    verdict = "yes" if not f.feasibility else "NO: " + "; ".join(f.feasibility)
    return verdict if f.converged else verdict + " (the nonlinear fit did not converge)"


def _beyond_null(f: FitResult) -> str:
    """What the law explains beyond "no change" (L = L0): R² of log(L/L0), and its held-out
    log error beside that of L = L0."""
    h = f.heldout or {}
    law, null = h.get("rmse_log"), h.get("null_rmse_log")
    held = f"{law:.3g} vs {null:.3g}" if law is not None and null is not None else "-"
    return f"{fmt(f.r2_beyond_L0)}; {held}"


def fit_table(name: str, title: str, fits: Sequence[FitResult], caption: str, *, by_column: str) -> Table:
    """One row per fit: the group, the written-out law, each coefficient with its 95% CI,
    adjusted R², F, rows and feasibility (the shape of the paper's Tables 1–4 and 6)."""
    names = _param_names([f for f in fits if not f.skipped])
    header = [by_column, "fit", "fitted function", *[f"{GREEK.get(n, n)} [95% CI]" for n in names],
              "adj. R²", "centred adj. R²", "R² beyond L0; held-out log RMSE vs L = L0", "F", "n", "feasible"]
    cells = []
    for f in fits:
        group = f.group.get("value") if f.group.get("by") != "pooled" else f.law
        if f.skipped:
            cells.append([group, f.method, "not fitted: " + f.skipped, *[""] * len(names), "", "", "", "", str(f.n),
                          ""])
            continue
        cells.append([group, f.method.upper(), fitted_function(f), *[_coef_cell(f, n) for n in names], _r2(f),
                      fmt(f.r2_centred_adj), _beyond_null(f), fmt_f(f.fstat), str(f.n), _feasible(f)])
    return Table(name, title, header, cells, [_fit_record(f) for f in fits], caption, formula_columns=(2,))


def law_tables(study: StudyData) -> list[Table]:
    fits = sorted(study.fits, key=lambda f: (study.law_order(f.law), f.method != "ols"))
    conv = ("R² (u): uncentred, of a regression through the origin (as statsmodels reports it); otherwise centred. "
            "Read the centred R², the R² beyond L0 (of log L/L0) and the held-out log error against 'no change' "
            "(L = L0) first: eq. 1 has no intercept, so its uncentred R² is inflated by the level of L0. "
            "Intervals: t intervals at 95%, cluster-robust over pruned models (model, method, r, seed) unless the "
            "fit's notes say iid; 'boot': bootstrap percentile intervals where the law asked for them.")
    tables = []
    pooled = [f for f in fits if f.group.get("by") == "pooled"]
    if pooled:
        tables.append(fit_table("fits_pooled", "Fitted laws, pooled (Table 1)", pooled,
                                "Every law of the spec fitted to all its rows. " + conv, by_column="law"))
    paper = {"model": "Tables 2 and 4", "calibration": "Table 3", "method": "Table 3", "dataset": "Table 6"}
    for law in study.laws:
        for by in law.group_by:
            if by == "pooled":
                continue
            mine = [f for f in fits if f.law == law.key and f.group.get("by") == by]
            if mine:
                tables.append(fit_table(
                    f"fits_{slug(law.key)}_by_{by}", f"{law.key}: fitted per {by} ({paper.get(by, '')})", mine,
                    f"{law.form} on {law.metric} rows, one fit per {by}. " + conv, by_column=by,
                ))
    return tables


def comparison_table(kind: str, table: ComparisonTable, spec_forms: set[str]) -> Table:
    header = ["rank", "form", "in spec", "fit", "k", "fitted function", "adj. R²", "adj. R² (centred)", "F", "AIC",
              "BIC", "LOMO RMSE", "LORO RMSE", "feasible"]
    cells, records = [], []
    for i, row in enumerate(table.rows, 1):
        f = row.fit
        lomo, loro = (row.cv.get(k, {}).get("rmse") for k in ("leave-one-model-out", "leave-one-ratio-out"))
        in_spec = "yes" if row.form in spec_forms else ""
        if f.skipped:
            cells.append([str(i), row.form, in_spec, row.method, str(row.n_params), "not fitted: " + f.skipped,
                          *[""] * 8])
        else:
            cells.append([str(i), row.form, in_spec, row.method.upper(), str(row.n_params), fitted_function(f),
                          _r2(f), fmt(row.r2_centred_adj), fmt_f(f.fstat), fmt(f.aic, 1), fmt(f.bic, 1), fmt(lomo, 4),
                          fmt(loro, 4), _feasible(f)])
        records.append({"rank": i, "in_spec": bool(in_spec), "r2_centred_adj": row.r2_centred_adj,
                        "lomo_rmse": lomo, "loro_rmse": loro, **_fit_record(f)})
    caption = (f"Every form fitted to the same pooled {kind} rows, ranked by {table.rank_by} cross-validated RMSE "
               "(in the metric's units; LOMO: leave one model out, LORO: leave one ratio out). The centred adjusted R² "
               "uses one convention for all forms, so it compares across them. " + " ".join(table.notes))
    return Table(f"form_comparison_{kind}", f"Law forms compared: {kind} (Table 1 ablations)", header, cells, records,
                 caption.strip(), formula_columns=(5,))


def critical_table(study: StudyData) -> Table | None:
    from lawlab.laws.critical import CriticalRangeError, r_crit_from_fit

    header = ["metric", "fit", "β [95% CI]", "2^β", *[f"σ = {s:g} / {t:g}" for s, t in zip(*SIGMAS.values(),
                                                                                          strict=True)]]
    cells, records = [], []
    for kind in ("extrinsic", "intrinsic"):
        fits = fits_for(study, kind, "model", needs=["beta"]) or fits_for(study, kind, "pooled", needs=["beta"])
        for f in fits:
            row = [kind, f"{f.law} · {group_label(f)}", _coef_cell(f, "beta"), fmt(2 ** f.theta["beta"])]
            for s in SIGMAS[kind]:
                try:
                    iv = r_crit_from_fit(f, s)
                    text = fmt(iv.value) + (f" [{fmt(iv.low)}, {fmt(iv.high)}]" if iv.low is not None else "")
                    reason = ""
                except CriticalRangeError as exc:
                    iv, text, reason = None, "none", str(exc)
                row.append(text)
                records.append({"metric": kind, "law": f.law, "group": group_label(f), "beta": f.theta["beta"],
                                "sigma": s, "r_crit": iv.value if iv else None, "low": iv.low if iv else None,
                                "high": iv.high if iv else None, "reason": reason})
            cells.append(row)
    if not cells:
        return None
    caption = ("r_crit(σ) = σ^(1/β) − 1: from this ratio on, no RFT size reaches the recovery threshold σ on L/L0^α "
               "(Corollary 3.2). Column headings give σ for accuracy / for loss. 'none': σ is on the side of 2^β where "
               "every ratio can be recovered with enough RFT, or β breaks the sign rule (the CSV says which).")
    return Table("critical_ratios", "Critical compression ratios (Figure 5, Corollary 3.2)", header, cells, records,
                 caption)


# --------------------------------------------------------------------------- provenance


def status_table(study: StudyData) -> Table:
    by_kind: dict[str, Counter[str]] = defaultdict(Counter)
    for c in study.status["cells"]:
        by_kind[c["kind"]][c["status"]] += 1
    cells, records = [], []
    stages = ("base", "prune", "quantize", "rft", "eval") if "quantize" in by_kind else ("base", "prune", "rft", "eval")
    for kind in stages:
        n = by_kind.get(kind, Counter())
        cells.append([kind, str(n["done"]), str(n["failed"]), str(n["left"])])
        records.append({"stage": kind, **{s: n[s] for s in ("done", "failed", "left")}})
    return Table("status", "Cells of the plan by stage", ["stage", "done", "failed", "left"], cells, records)


def plan_table(study: StudyData) -> Table:
    per_model: dict[str, Counter[str]] = defaultdict(Counter)
    for p in study.plan:
        per_model[p["cell"].get("model", "")][p["kind"]] += 1
    families = study.meta.get("families") or {}
    experiments = study.meta.get("experiments") or {}
    cells, records = [], []
    for model, n in per_model.items():
        fam = families.get(model, model)
        cells.append([model, fam, str(n["prune"]), str(n["rft"]), str(n["eval"])])
        records.append({"model": model, "family": fam, "prune": n["prune"], "rft": n["rft"], "eval": n["eval"]})
    counted = ", ".join(f"{fam}: {k}" for fam, k in experiments.items()) or "none"
    caption = f"Experiments as the paper's Table 5 counts them (intrinsic and extrinsic evaluations of compressed " \
              f"variants), per family: {counted}; {sum(experiments.values())} in all."
    return Table("plan", "The plan", ["model", "family", "prune cells", "RFT cells", "evaluation cells"], cells,
                 records, caption)


def accounting_table(study: StudyData) -> Table:
    header = ["method", "calibration", "model", "nominal r", "params kept / original", "removed (all)",
              "removed (no embeddings)", "FLOPs speedup", "on disk (MB)", "prune time (s)"]
    cells, records = [], []
    prunes = [c for c in study.cells if c["kind"] == "prune" and c["status"] == "done" and c["compression"]]
    order = {m: i for i, m in enumerate(study.methods)}
    for c in sorted(prunes, key=lambda c: (order.get(c["method"], 99), c["model"] or "", c["ratio"] or 0)):
        comp = c["compression"]
        disk = comp.get("bytes_on_disk")
        cells.append([c["method"], study.calibration.get(c["method"], ""), c["model"], f"{c['ratio']:g}",
                      f"{comp['params_kept']:,} / {comp['params_original']:,}", f"{comp['fraction_removed']:.1%}",
                      f"{comp['fraction_removed_no_embed']:.1%}", f"{comp['flops_speedup']:.2f}×",
                      fmt(disk / 1e6, 1) if disk else "–", fmt(comp.get("prune_seconds"), 1)])
        records.append({"method": c["method"], "model": c["model"], "nominal_ratio": c["ratio"],
                        **{k: v for k, v in comp.items() if k != "details"}})
    caption = ("Neither method removes the fraction r of all parameters: the nominal r next to the parameters "
               "actually removed, counting the embeddings and the head or not.")
    return Table("ratio_accounting", "Ratio accounting per method", header, cells, records, caption)


def environment_tables(study: StudyData) -> list[Table]:
    libs: dict[str, set[str]] = defaultdict(set)
    devices: Counter[tuple[str, str, str]] = Counter()
    plugins: dict[tuple[str, str], dict[str, Any]] = {}
    machines: set[str] = set()
    for c in study.cells:
        prov = c["provenance"]
        for lib, version in (prov.get("libraries") or {}).items():
            libs[lib].add(str(version))
        devices[(str(prov.get("device")), str(prov.get("device_name")), str(prov.get("dtype")))] += 1
        plugin = prov.get("plugin") or {}
        if plugin:
            plugins[(c["kind"], str(plugin.get("name")))] = plugin
        machine = prov.get("machine") or {}
        if machine:
            machines.add(f"{machine.get('hostname')} ({machine.get('platform')}, {machine.get('cpu_count')} CPUs)")
    lib_rows = [[lib, ", ".join(sorted(v))] for lib, v in sorted(libs.items())]
    dev_rows = [[d, n, t, str(k)] for (d, n, t), k in devices.most_common()]
    plug_rows = [[kind, name, str(p.get("distribution", "")), str(p.get("version", ""))]
                 for (kind, name), p in sorted(plugins.items())]
    more = " Several versions in one row: cells were run with different installations." if any(
        len(v) > 1 for v in libs.values()) else ""
    return [
        Table("libraries", "Library versions", ["library", "version(s)"], lib_rows,
              [{"library": a, "versions": b} for a, b in lib_rows], "As recorded in every cell's provenance." + more),
        Table("devices", "Devices", ["device", "name", "dtype", "cells"], dev_rows,
              [dict(zip(("device", "name", "dtype", "cells"), r, strict=True)) for r in dev_rows],
              "Machines: " + ("; ".join(sorted(machines)) or "none recorded")),
        Table("plugins", "Plugin versions", ["stage", "plugin", "distribution", "version"], plug_rows,
              [dict(zip(("stage", "plugin", "distribution", "version"), r, strict=True)) for r in plug_rows]),
    ]


def sources_table(study: StudyData) -> Table:
    seen: dict[tuple[str, str, str], str] = {}
    for c in study.cells:
        prov = c["provenance"]
        if c["kind"] == "base" and prov.get("model"):
            m = prov["model"]
            keys = ("source", "id", "revision", "endpoint", "pack", "pypi", "path")  # hub: id@revision, commit below
            where = " ".join(f"{k}={m[k]}" for k in keys if m.get(k) and not (k == "path" and m.get("id")))
            seen[("model", c["model"] or "", where)] = (weights_text(m),
                                                        str(m.get("sha256") or m.get("gguf_sha256") or m.get("commit") or ""))
        if c["kind"] == "rft" and prov.get("dataset"):
            d = prov["dataset"]
            seen[(f"RFT training ({d.get('split')})", str(d.get("name")), str(d.get("source")))] = ("", str(d.get("checksum")))
    for r in study.rows:
        det = r["details"] or {}
        if r["kind"] == "rft":
            continue  # training data: the RFT cells' own rows above
        if "dataset_checksum" in det or "dataset_source" in det:
            seen[(f"test: {r['evaluator']}", r["dataset"], str(det.get("dataset_source")))] = (
                "", str(det.get("dataset_checksum") or ""))
        elif r["kind"] == "extrinsic" and det.get("source"):
            seen.setdefault((f"test: {r['evaluator']}", r["dataset"], str(det["source"])), ("", ""))
    rows = [[*k, *v] for k, v in sorted(seen.items())]
    header = ["use", "name", "source", "weights", "checksum"]
    return Table("data_sources", "Models and data sources", header, rows,
                 [dict(zip(header, r, strict=True)) for r in rows],
                 "Where every model and dataset came from (hub or offline pack), with the checksum recorded. "
                 "Weights: the checkpoint as loaded (instruct or base, its quantisation).")


def weights_text(prov: dict[str, Any]) -> str:
    """A model's weights as they are: the checkpoint, instruct or base, and quantisation."""
    name = str(prov.get("weights") or "")
    if not name and prov.get("pack"):  # a store from before packs recorded it: the pack says
        from lawlab.registry import get_registry

        registry = get_registry()
        if registry.has("packs", str(prov["pack"])):
            name = registry.get("packs", str(prov["pack"])).description
    name = name or str(prov.get("id") or prov.get("path") or "")
    tuned = re.search(r"instruct|chat|(^|[-_/ ])it($|[-_ ])", name, re.IGNORECASE)
    quant = str(prov.get("quantisation") or "")
    parts = [name, "instruct-tuned" if tuned else "base (pretrained)",
             "not quantised" if quant in ("", "none") else quant]
    return "; ".join(p for p in parts if p)


def runs_table(study: StudyData) -> Table:
    cells, records = [], []
    for r in study.status["runs"]:
        took = (r["ended"] - r["started"]) if r["ended"] else None
        cells.append([str(r["id"]), _when(r["started"]), _when(r["ended"]), str(r["status"]), fmt(took, 1)])
        records.append({"run": r["id"], "started": r["started"], "ended": r["ended"], "status": r["status"],
                        "seconds": took})
    cell_seconds = sum(c["seconds"] or 0 for c in study.cells)
    run_seconds = sum(rec["seconds"] or 0 for rec in records)
    caption = (f"Total: {fmt(run_seconds, 1)} s over {len(records)} run(s); {fmt(cell_seconds, 1)} s inside cells "
               f"(excluding rebuilding models whose artifacts were not kept).")
    return Table("runs", "Runs and time", ["run", "started", "ended", "status", "seconds"], cells, records, caption)


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "–"


# --------------------------------------------------------------------------- building the sections


def build(study: StudyData, drawings: list[Drawing]) -> tuple[list[Section], list[Table]]:  # noqa: C901 (split pending with the one-analysis change)
    sections: list[Section] = []
    tables: list[Table] = []
    counts = study.status["counts"]
    total = sum(counts.values())

    if study.findings is not None:
        sec, table = findings_section(study.findings)
        sections.append(sec)
        tables.append(table)
    elif study.findings_error:
        sections.append(Section("findings", "Findings: the paper's questions", [("warn", study.findings_error)]))

    head = Section("summary", "Summary")
    desc = study.spec.get("study", {}).get("description")
    if desc:
        head.p(desc)
    head.p(f"{counts['done']} of {total} cells done, {counts['failed']} failed, {counts['left']} left. "
           f"{len([r for r in study.rows if r['law_input']])} law measurements stored. Fits: {study.fits_source}.")
    missing = missing_items(study)
    if missing:
        head.warn("This report is incomplete. What is missing: " + " ".join(missing))
    absent = [f"{d.title}: {d.missing}" for d in drawings if d.figure is None]
    if absent:
        head.p(f"{len(absent)} figure(s) not drawn:")
        head.items(absent)
    pooled = [f for f in preferred(study.fits) if f.group.get("by") == "pooled"]
    head.items([f"{f.law}: {fitted_function(f)} (adj. R² {_r2(f)}, F {fmt_f(f.fstat)}, n = {f.n}"
                + (", sign rule broken" if f.feasibility else "") + ")" for f in pooled])
    sections.append(head)

    figs = Section("figures", "Figures")
    for d in drawings:
        figs.figure(d)
    sections.append(figs)

    laws = Section("laws", "Fitted laws")
    law_tabs = law_tables(study)
    if not study.laws:
        laws.p("The spec asks for no laws; the form comparison below fits the paper's forms anyway.")
    elif not law_tabs:
        laws.warn("No law could be fitted yet.")
    spec_forms = {law.form for law in study.laws}
    for kind, table in study.comparisons.items():
        law_tabs.append(comparison_table(kind, table, spec_forms))
    crit = critical_table(study)
    if crit is not None:
        law_tabs.append(crit)
    for t in law_tabs:
        laws.table(t)
    tables += law_tabs
    sections.append(laws)

    prov = Section("provenance", "Provenance")
    prov_tabs = [status_table(study), plan_table(study), accounting_table(study), *environment_tables(study),
                 sources_table(study), runs_table(study)]
    for t in prov_tabs:
        prov.table(t)
    tables += prov_tabs
    skipped = study.meta.get("skipped") or []
    if skipped:
        prov.p("Skipped at plan time (the method cannot prune the architecture):")
        prov.items([f"{s.get('method')} on {s.get('model')}: {s.get('reason')}" for s in skipped])
    failed_cells = [c for c in study.status["cells"] if c["status"] == "failed"]
    if failed_cells:
        prov.warn(f"{len(failed_cells)} cell(s) failed (rerun with `lawlab run --retry-failed`):")
        for c in failed_cells[:LISTED_CELLS]:
            trace = (study.status["failed"].get(c["key"]) or "").strip()
            prov.pre(f"{c['label']}: {trace.splitlines()[-1] if trace else ''}", trace)
    left = [c for c in study.status["cells"] if c["status"] == "left"]
    if left:
        prov.p(f"{len(left)} cell(s) not run yet" + (f" (the first {LISTED_CELLS} listed)" if len(left) > LISTED_CELLS
                                                      else "") + ":")
        prov.items([c["label"] for c in left[:LISTED_CELLS]])
    prov.pre(f"The spec (hash {study.meta.get('spec_hash') or '?'})", json.dumps(study.spec, indent=2))
    sections.append(prov)
    return sections, tables


def findings_section(f: Findings) -> tuple[Section, Table]:
    """The paper's questions answered for this study: a verdict table, then each answer's parts."""
    sec = Section("findings", "Findings: the paper's questions")
    sec.p("Each row tests one of the paper's claims on this study's numbers: consistent, inconsistent, or "
          "undetermined with the reason (docs/findings.md says how each is decided). The same answers, with all "
          "their numbers, are in findings.json and come from `lawlab findings`.")
    cells, records = [], []
    for key, a in f.answers.items():
        cells.append([TITLES[key], a.verdict, a.claim, a.reason])
        records.append({"question": key, "verdict": a.verdict, "claim": a.claim, "reason": a.reason,
                        "intervals": a.ci})
    table = Table("findings", "Verdicts", ["question", "verdict", "the paper's claim", "reason"], cells, records,
                  "Verdicts against the paper's claims; intervals are described under each answer.")
    sec.table(table)
    for key, a in f.answers.items():
        sec.p(f"{TITLES[key]}: {a.verdict}.")
        sec.items([f"{p.name} ({p.verdict}): {p.summary}" for p in a.parts] + list(a.notes)
                  + ([f"Intervals: {a.ci}."] if a.ci else []))
    for n in f.notes:
        sec.warn(n)
    return sec, table


def missing_items(study: StudyData) -> list[str]:
    c = study.status["counts"]
    out = []
    if c["left"]:
        out.append(f"{c['left']} cell(s) of the plan have not run.")
    if c["failed"]:
        out.append(f"{c['failed']} cell(s) failed.")
    skipped = [f for f in study.fits if f.skipped]
    if skipped:
        out.append(f"{len(skipped)} fit(s) could not be made (see the law tables).")
    stuck = [f for f in study.fits if not f.skipped and not f.converged]
    if stuck:
        out.append(f"{len(stuck)} nonlinear fit(s) did not converge; their coefficients are where the optimiser "
                   "stopped (see the law tables).")
    return out


# --------------------------------------------------------------------------- rendering

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1180px;margin:2em auto;padding:0 1em;
color:#1a1a1a;line-height:1.45}
h1{font-size:1.7em;margin-bottom:.2em}h2{border-bottom:2px solid #0072B2;padding-bottom:.2em;margin-top:2em}
h3{margin-top:1.6em}nav a{margin-right:1em}.meta{color:#555}
table{border-collapse:collapse;margin:.6em 0 .3em;font-size:.86em}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#eef3f8}tr:nth-child(even) td{background:#fafafa}td:first-child{white-space:nowrap}
.scroll{overflow-x:auto}.caption{font-size:.86em;color:#444;margin:.2em 0 1em}
.warn{background:#fff4e5;border-left:4px solid #D55E00;padding:.6em .9em;margin:1em 0}
figure{margin:1.2em 0;page-break-inside:avoid}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.88em;color:#333}.formula{font-family:"STIX Two Math","Cambria Math",serif;white-space:nowrap}
pre{background:#f6f8fa;padding:.7em;overflow-x:auto;font-size:.8em}details{margin:.4em 0}
td.formula{white-space:normal}td.long{word-break:break-all;min-width:12em}.wide table{font-size:.78em}
.scroll{box-shadow:inset -10px 0 8px -8px rgba(0,0,0,.25)}
@media print{nav{display:none}body{max-width:none;margin:0}.scroll{overflow:visible;box-shadow:none}
table{width:100%;table-layout:fixed;font-size:.72em}td,th{overflow-wrap:anywhere}td:first-child{white-space:normal}}
"""


def render_html(study: StudyData, sections: list[Section], pngs: dict[str, bytes]) -> str:
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{html.escape(study.name)}: compression-law study report</title>",
           f"<style>{CSS}</style></head><body>",
           f"<h1>{html.escape(study.name)}</h1>",
           f'<p class="meta">Compression-law study report, generated {_when(time.time())} from '
           f"{html.escape(str(study.root))} by lawlab.</p>",
           "<nav>" + "".join(f'<a href="#{s.id}">{html.escape(s.title)}</a>' for s in sections) + "</nav>"]
    for s in sections:
        out.append(f'<h2 id="{s.id}">{html.escape(s.title)}</h2>')
        for kind, value in s.blocks:
            out.append(_html_block(kind, value, pngs))
    out.append("</body></html>")
    return "\n".join(out)


def _html_block(kind: str, value: Any, pngs: dict[str, bytes]) -> str:
    if kind == "p":
        return f"<p>{html.escape(value)}</p>"
    if kind == "warn":
        return f'<div class="warn">{html.escape(value)}</div>'
    if kind == "list":
        return "<ul>" + "".join(f"<li>{formula_html(v)}</li>" for v in value) + "</ul>"
    if kind == "pre":
        summary, text = value
        return f"<details><summary>{html.escape(summary)}</summary><pre>{html.escape(text)}</pre></details>"
    if kind == "figure":
        d: Drawing = value
        head = f'<h3 id="fig-{d.name}">{html.escape(d.title)}</h3>'
        if d.figure is None:
            return head + f'<div class="warn">Not drawn: {html.escape(d.missing or "")}</div>'
        data = base64.b64encode(pngs[d.name]).decode()
        return (head + f'<figure><img alt="{html.escape(d.title)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{html.escape(d.caption)} Files: figures/{d.name}.png, figures/{d.name}.svg."
                "</figcaption></figure>")
    t: Table = value
    rows = []
    for row in t.cells:
        tds = "".join(f'<td class="formula">{formula_html(c)}</td>' if i in t.formula_columns
                      else f'<td class="long">{html.escape(c)}</td>' if _unbreakable(c)
                      else f"<td>{html.escape(c)}</td>" for i, c in enumerate(row))
        rows.append(f"<tr>{tds}</tr>")
    body = "".join(rows) or f'<tr><td colspan="{len(t.header)}">nothing recorded yet</td></tr>'
    scroll = "scroll wide" if len(t.header) >= 10 else "scroll"  # many columns: smaller type before scrolling
    return (f'<h3 id="table-{t.name}">{html.escape(t.title)}</h3><div class="{scroll}"><table>'
            f"<thead><tr>{''.join(f'<th>{html.escape(h)}</th>' for h in t.header)}</tr></thead>"
            f"<tbody>{body}</tbody></table></div>"
            f'<p class="caption">{html.escape(t.caption)} CSV: tables/{t.name}.csv.</p>')


def _unbreakable(cell: str) -> bool:
    """A cell with a word too long to sit in a column (a checksum, a path): it may break anywhere."""
    return any(len(word) > 32 for word in cell.split())


def render_markdown(study: StudyData, sections: list[Section]) -> str:
    out = [f"# {study.name}", "", f"Compression-law study report, generated {_when(time.time())} from "
           f"`{study.root}` by lawlab.", ""]
    for s in sections:
        out += [f"## {s.title}", ""]
        for kind, value in s.blocks:
            out += [*_md_block(kind, value), ""]
    return "\n".join(out)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_block(kind: str, value: Any) -> list[str]:
    if kind == "p":
        return [value]
    if kind == "warn":
        return [f"> **Warning.** {value}"]
    if kind == "list":
        return [f"- {v}" for v in value]
    if kind == "pre":
        summary, text = value
        return [f"<details><summary>{html.escape(summary)}</summary>", "", "```", text, "```", "", "</details>"]
    if kind == "figure":
        d: Drawing = value
        if d.figure is None:
            return [f"### {d.title}", "", f"Not drawn: {d.missing}"]
        return [f"### {d.title}", "", f"![{d.title}](figures/{d.name}.png)", "",
                f"*{d.caption}* ([SVG](figures/{d.name}.svg))"]
    t: Table = value
    lines = [f"### {t.title}", "", "| " + " | ".join(_md_cell(h) for h in t.header) + " |",
             "|" + "---|" * len(t.header)]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in t.cells]
    if not t.cells:
        lines.append("| nothing recorded yet |" + " |" * (len(t.header) - 1))
    return [*lines, "", f"{t.caption} CSV: [tables/{t.name}.csv](tables/{t.name}.csv)".strip()]


# --------------------------------------------------------------------------- files


def table_csv(table: Table) -> str:
    records = table.records or [dict(zip(table.header, row, strict=True)) for row in table.cells]
    columns = list(dict.fromkeys(k for r in records for k in r)) or table.header
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    w.writeheader()
    for r in records:
        w.writerow({k: "" if v is None else v for k, v in r.items()})
    return buf.getvalue()


def save_figures(drawings: list[Drawing], folder: Path) -> dict[str, bytes]:
    """PNG and SVG of every drawn figure; returns the PNG bytes for embedding."""
    pngs = {}
    for d in drawings:
        if d.figure is None:
            continue
        for ext in ("png", "svg"):
            buf = io.BytesIO()
            # tight: the image grows to hold every label and the legend below the panels, none clipped
            d.figure.savefig(buf, format=ext, dpi=150, metadata={"Date": None} if ext == "svg" else None,
                             bbox_inches="tight", pad_inches=0.08)
            write_bytes(folder / f"{d.name}.{ext}", buf.getvalue())
            if ext == "png":
                pngs[d.name] = buf.getvalue()
    return pngs


def write_report(output_dir: str | Path, registry: Registry | None = None, console: Any = None) -> Path:
    """Write OUTPUT/report/ (HTML, Markdown, figures, tables) from the store; returns the HTML path."""
    from matplotlib import rc_context

    from lawlab.report.figures import STYLE, all_figures

    study = gather(output_dir, registry)
    folder = Path(output_dir) / "report"
    with rc_context(STYLE):
        drawings = all_figures(study)
        pngs = save_figures(drawings, folder / "figures")
    sections, tables = build(study, drawings)
    for t in tables:
        write_bytes(folder / "tables" / f"{t.name}.csv", table_csv(t))
    write_bytes(folder / "report.md", render_markdown(study, sections))
    if study.findings is not None:
        write_bytes(folder / "findings.json", json.dumps(study.findings.to_dict(), indent=2))
    path = folder / "index.html"
    write_bytes(path, render_html(study, sections, pngs))
    if console is not None:
        drawn = sum(d.figure is not None for d in drawings)
        console.print(f"report: {drawn} figure(s), {len(tables)} table(s) → {path}")
    return path


def print_summary(output_dir: str | Path, console: Any) -> None:
    """A terminal summary: the pooled fits, the form ranking, and what is missing."""
    from rich.table import Table as RichTable

    study = gather(output_dir)  # the run's own closing line gives the cell counts
    pooled = [f for f in preferred(study.fits) if f.group.get("by") == "pooled"]
    if pooled:
        t = RichTable(title="main fits (pooled)", title_justify="left")
        for col in ("law", "fitted function", "adj. R²", "F", "n", "feasible"):
            t.add_column(col)
        for f in pooled:
            t.add_row(f.law, fitted_function(f), _r2(f), fmt_f(f.fstat), str(f.n), _feasible(f))
        console.print(t)
    else:
        if not study.laws:
            why = study.fits_source
        elif not any("pooled" in law.group_by for law in study.laws):
            why = f"the spec's laws are fitted by group only (`lawlab fit {output_dir}` shows them)"
        else:
            why = "no law could be fitted to the stored cells yet"
        console.print(f"no pooled fits: {why}", highlight=False)
    unranked: dict[str, str] = {}  # rank_by -> why it cannot rank, said once for every kind
    for kind, table in study.comparisons.items():
        best = next((r for r in table.rows if not r.fit.skipped), None)
        if best is not None:
            cv = best.cv.get(table.rank_by, {})
            if cv.get("rmse") is None and cv.get("reason"):
                unranked[table.rank_by] = cv["reason"]
                continue
            console.print(f"{kind}: best form by {table.rank_by} RMSE is {best.form} ({fmt(cv.get('rmse'), 4)})")
    for rank_by, reason in unranked.items():
        console.print(f"law forms not ranked by {rank_by} RMSE: {reason} "
                      f"(`lawlab compare {output_dir} --kind KIND --rank-by leave-one-ratio-out` ranks them "
                      "by held-out ratios)", highlight=False)
