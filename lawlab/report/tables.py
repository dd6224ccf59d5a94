"""The report's tables and sections, built from the gathered study: the fitted laws (the
paper's Tables 1–4 and 6), the form comparison, the critical ratios, the findings, and the
provenance (status, plan, ratio accounting, environment, sources, runs).
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from lawlab.files import slug
from lawlab.findings.answers import TITLES, Findings
from lawlab.report.document import (
    Section,
    Table,
    beyond_null_text,
    feasible_text,
    fitted_function,
    fmt,
    fmt_ci,
    fmt_f,
    r2_text,
    when,
)
from lawlab.report.figures import GREEK, Drawing, fits_for, preferred
from lawlab.report.hybrid import hybrid_section

if TYPE_CHECKING:  # pragma: no cover
    from lawlab.laws.compare import ComparisonTable
    from lawlab.laws.results import FitResult
    from lawlab.report.gather import StudyData

SIGMAS = {"extrinsic": (0.5, 0.6, 0.7, 0.8, 0.9), "intrinsic": (1.1, 1.25, 1.5, 2.0, 3.0)}
LISTED_CELLS = 40  # cells left or failed shown by name; the rest are counted


# --------------------------------------------------------------------------- laws


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


def fit_table(name: str, title: str, fits: Sequence[FitResult], caption: str, *, by_column: str) -> Table:
    """One row per fit: the group, the written-out law, each coefficient with its 95% CI,
    adjusted R², F, rows and feasibility (the shape of the paper's Tables 1–4 and 6)."""
    names = _param_names([f for f in fits if not f.skipped])
    header = [by_column, "fit", "fitted function", *[f"{GREEK.get(n, n)} [95% CI]" for n in names],
              "adj. R²", "centred adj. R²", "R² beyond L0; held-out log RMSE vs L = L0", "F", "n", "feasible"]
    cells = []
    for f in fits:
        group = str(f.group.get("value")) if f.group.get("by") != "pooled" else f.law
        if f.skipped:
            cells.append([group, f.method, "not fitted: " + f.skipped, *[""] * len(names), "", "", "", "", str(f.n),
                          ""])
            continue
        cells.append([group, f.method.upper(), fitted_function(f), *[_coef_cell(f, n) for n in names], r2_text(f),
                      fmt(f.r2_centred_adj), beyond_null_text(f), fmt_f(f.fstat), str(f.n), feasible_text(f)])
    return Table(name, title, header, cells, [_fit_record(f) for f in fits], caption, formula_columns=(2,))


def law_tables(study: StudyData) -> list[Table]:
    fits = sorted(study.fits, key=lambda f: (study.law_order(f.law), f.method != "ols"))
    conv = ("R² (u): uncentred, of a regression through the origin (as statsmodels reports it); otherwise centred. "
            "Intervals: t intervals at 95%; 'boot': bootstrap percentile intervals where the law asked for them.")
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
    # held-out columns: one model out and one ratio out always; one axis setting out where the
    # rows are quantised (the cross-axis comparison)
    schemes = {"leave-one-model-out": "LOMO", "leave-one-ratio-out": "LORO"}
    if any(r.cv.get("leave-one-axis-setting-out", {}).get("folds") for r in table.rows):
        schemes["leave-one-axis-setting-out"] = "LOASO"
    header = ["rank", "form", "in spec", "fit", "k", "fitted function", "adj. R²", "adj. R² (centred)", "F", "AIC",
              "BIC", *[f"{short} RMSE" for short in schemes.values()], "feasible"]
    cells, records = [], []
    for i, row in enumerate(table.rows, 1):
        f = row.fit
        held = {short: row.cv.get(k, {}).get("rmse") for k, short in schemes.items()}
        in_spec = "yes" if row.form in spec_forms else ""
        if f.skipped:
            cells.append([str(i), row.form, in_spec, row.method, str(row.n_params), "not fitted: " + f.skipped,
                          *[""] * (len(header) - 6)])
        else:
            cells.append([str(i), row.form, in_spec, row.method.upper(), str(row.n_params), fitted_function(f),
                          r2_text(f), fmt(row.r2_centred_adj), fmt_f(f.fstat), fmt(f.aic, 1), fmt(f.bic, 1),
                          *[fmt(v, 4) for v in held.values()], feasible_text(f)])
        records.append({"rank": i, "in_spec": bool(in_spec), "r2_centred_adj": row.r2_centred_adj,
                        **{f"{short.lower()}_rmse": v for short, v in held.items()}, **_fit_record(f)})
    what = (f"{table.metric_kind} rows, quantised variants included (the forms that declare the quantisation axis)"
            if kind != table.metric_kind else f"{kind} rows")
    caption = (f"Every form fitted to the same pooled {what}, ranked by {table.rank_by} cross-validated RMSE "
               "(in the metric's units; LOMO: leave one model out, LORO: leave one ratio out"
               + (", LOASO: leave one pruning ratio × quantisation setting out" if "LOASO" in held else "")
               + ")." + _null_text(table) + " The centred adjusted R² uses one convention for all forms, so it "
               "compares across them. "
               + " ".join(table.notes))
    return Table(f"form_comparison_{kind}", f"Law forms compared: {kind} (Table 1 ablations)", header, cells, records,
                 caption.strip(), formula_columns=(5,))


def _null_text(table: ComparisonTable) -> str:
    """What "no change" (L = L0) scores, held out the way the ranking is, and which forms beat it."""
    held = [r.cv.get(table.rank_by, {}) for r in table.rows]
    null = next((h["null_rmse"] for h in held if h.get("null_rmse") is not None), None)
    if null is None:
        return ""
    beat = [r.form for r, h in zip(table.rows, held, strict=True) if h.get("beats_null")]
    log = next((h["null_rmse_log"] for h in held if h.get("null_rmse_log") is not None), None)
    return (f" \"No change\" (L = L0), held out the same way ({table.rank_by}): RMSE {fmt(null, 4)}, log RMSE "
            f"{fmt(log, 4)}; " + (f"beaten in log RMSE by {', '.join(beat)}." if beat else "no form beats it."))


def critical_table(study: StudyData) -> Table | None:
    from lawlab.laws.critical import CriticalRangeError, r_crit_from_fit

    header = ["metric", "fit", "β [95% CI]", "2^β", *[f"σ = {s:g} / {t:g}" for s, t in zip(*SIGMAS.values(),
                                                                                          strict=True)]]
    cells, records = [], []
    for kind in ("extrinsic", "intrinsic"):
        fits = fits_for(study, kind, "model", needs=["beta"]) or fits_for(study, kind, "pooled", needs=["beta"])
        for f in fits:
            row = [kind, f"{f.law} · {f.group_label}", _coef_cell(f, "beta"), fmt(2 ** f.theta["beta"])]
            for s in SIGMAS[kind]:
                try:
                    iv = r_crit_from_fit(f, s)
                    text = fmt(iv.value) + (f" [{fmt(iv.low)}, {fmt(iv.high)}]" if iv.low is not None else "")
                    reason = ""
                except CriticalRangeError as exc:
                    iv, text, reason = None, "none", str(exc)
                row.append(text)
                records.append({"metric": kind, "law": f.law, "group": f.group_label, "beta": f.theta["beta"],
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
    seen: dict[tuple[str, str, str], tuple[str, str]] = {}
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
        cells.append([str(r["id"]), when(r["started"]), when(r["ended"]), str(r["status"]), fmt(took, 1)])
        records.append({"run": r["id"], "started": r["started"], "ended": r["ended"], "status": r["status"],
                        "seconds": took})
    cell_seconds = sum(c["seconds"] or 0 for c in study.cells)
    run_seconds = sum(rec["seconds"] or 0 for rec in records)
    caption = (f"Total: {fmt(run_seconds, 1)} s over {len(records)} run(s); {fmt(cell_seconds, 1)} s inside cells "
               f"(excluding rebuilding models whose artifacts were not kept).")
    return Table("runs", "Runs and time", ["run", "started", "ended", "status", "seconds"], cells, records, caption)


# --------------------------------------------------------------------------- building the sections


def build(study: StudyData, drawings: list[Drawing]) -> tuple[list[Section], list[Table]]:
    """The report's sections in order, and every table in them (each is also written as CSV)."""
    sections: list[Section] = []
    tables: list[Table] = []
    if study.findings is not None:
        sec, table = findings_section(study.findings)
        sections.append(sec)
        tables.append(table)
    sections.append(summary_section(study, drawings))
    figs = Section("figures", "Figures")
    for d in drawings:
        figs.figure(d)
    sections.append(figs)
    hybrid = hybrid_section(study.rows)
    if hybrid is not None:
        sections.append(hybrid[0])
        tables += hybrid[1]
    for section, section_tables in (laws_section(study), provenance_section(study)):
        sections.append(section)
        tables += section_tables
    return sections, tables


def summary_section(study: StudyData, drawings: list[Drawing]) -> Section:
    counts = study.status["counts"]
    total = sum(counts.values())
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
    head.items([f"{f.law}: {fitted_function(f)} (adj. R² {r2_text(f)}, F {fmt_f(f.fstat)}, n = {f.n}"
                + (", sign rule broken" if f.feasibility else "") + ")" for f in pooled])
    return head


def laws_section(study: StudyData) -> tuple[Section, list[Table]]:
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
    return laws, law_tabs


def provenance_section(study: StudyData) -> tuple[Section, list[Table]]:
    prov = Section("provenance", "Provenance")
    prov_tabs = [status_table(study), plan_table(study), accounting_table(study), *environment_tables(study),
                 sources_table(study), runs_table(study)]
    for t in prov_tabs:
        prov.table(t)
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
    return prov, prov_tabs


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
