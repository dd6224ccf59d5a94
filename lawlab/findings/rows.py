"""The rows a finding reads: a study's results cleaned, named by series, with the tasks
that measure nothing (not above chance) left out of the means they were part of."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lawlab.errors import UsageError
from lawlab.findings.stats import ALPHA


def read_rows(source: str | Path) -> list[dict[str, Any]]:
    """The tidy rows of a study folder or of a results CSV, with numbers as numbers."""
    path = Path(source)
    if path.is_dir():
        from lawlab.run.store import load_table

        rows = load_table(path)
    elif path.is_file():
        from lawlab.laws.data import read_results_csv
        from lawlab.laws.forms import LawFitError

        try:
            rows = read_results_csv(path)
        except LawFitError as exc:
            raise UsageError(str(exc)) from None
    else:
        raise UsageError(f"{path}: no such study folder or results CSV")
    return [clean_row(r) for r in rows]


def clean_row(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    for key in ("ratio", "D", "value", "L0", "params_kept", "params_original"):
        out[key] = to_float(row.get(key))
    out["ratio"], out["D"] = out["ratio"] or 0.0, out["D"] or 0.0
    for key in ("model", "method", "calibration", "kind", "metric", "dataset", "rft_dataset", "evaluator"):
        out[key] = str(row.get(key) or "")
    # what one number measures: two evaluators of a kind (lm-eval on five tasks, another on MMLU)
    # both give a "mean", and each has its own L0
    details = row.get("details")
    if isinstance(details, str):
        try:
            details = json.loads(details) if details else {}
        except ValueError:
            details = {}
    out["details"] = details if isinstance(details, dict) else {}
    out["series"] = series_of(out)
    for key in ("chance", "stderr", "n"):  # a CSV may carry them as columns rather than in details
        if key not in out["details"] and to_float(row.get(key)) is not None:
            out["details"][key] = to_float(row.get(key))
    return out


def series_of(row: dict[str, Any]) -> str:
    """What one number measures. An average names the tasks it holds (two lm-eval entries, the
    five tasks and MMLU, both store a "mean", and they are different things)."""
    name = row["dataset"]
    tasks = row["details"].get("tasks")
    if isinstance(tasks, list) and tasks and name in ("mean", "average"):
        name = tasks[0] if len(tasks) == 1 else f"{name}({'+'.join(map(str, tasks))})"
    return f"{row['evaluator']}:{name}" if row["evaluator"] else name


def to_float(v: Any) -> float | None:
    if v is None or v == "":
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def above_chance_tasks(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """(model, evaluator, task) -> the unpruned model's accuracy against the task's chance
    level, for every task whose result records one (``details.chance``): its accuracy, the
    questions, the one-sided p value of "above chance", and whether it is (p < ALPHA)."""
    from lawlab.findings.stats import above_chance

    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    for r in rows:
        chance = to_float(r["details"].get("chance"))
        if r["method"] or r["D"] or r["kind"] != "extrinsic" or chance is None or r["value"] is None:
            continue
        if r.get("metric") not in (None, "", "accuracy") or _is_mean(r):
            continue  # a task's accuracy is tested; its task loss is no accuracy, and a mean is no task
        n = r["details"].get("n")
        p = above_chance(r["value"], chance, n=int(n) if n else None, stderr=to_float(r["details"].get("stderr")))
        out[(r["model"], r["evaluator"], r["dataset"])] = {
            "accuracy": r["value"], "chance": chance, "n": n, "p": p, "above": bool(p < ALPHA)}
    return out


def _is_mean(row: dict[str, Any]) -> bool:
    tasks = row["details"].get("tasks")
    return isinstance(tasks, list) and len(tasks) > 1


def chance_rule(rows: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The extrinsic law's inputs without the tasks that measure nothing: a task whose
    unpruned model is not above chance (one-sided binomial test at ALPHA) leaves every mean
    of that model it was part of, which is recomputed from the remaining tasks' own rows; a
    mean left with no task is dropped. Returns the rows and what was left out, and why."""
    tests = above_chance_tasks(rows)
    out_tasks = {k for k, t in tests.items() if not t["above"]}
    several = len({ev for _, ev, _ in tests}) > 1  # name the evaluator where two score the same task

    def name(m: str, ev: str, task: str) -> str:
        return f"{m} · {task}" + (f" ({ev})" if several else "")

    report: dict[str, Any] = {"tested": {name(*k): t for k, t in sorted(tests.items())},
                              "left_out": sorted(name(*k) for k in out_tasks), "means": []}
    if not out_tasks:
        return list(rows), report
    by_cell: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for r in rows:
        if r.get("cell_key"):
            by_cell.setdefault((r["cell_key"], r["metric"]), {})[r["dataset"]] = r
    base_of: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for r in rows:
        if not r["method"] and not r["D"] and r["kind"] == "extrinsic":
            base_of[(r["model"], r["evaluator"], r["metric"], r["dataset"])] = r
    kept = []
    for r in rows:
        tasks = r["details"].get("tasks")
        if r["kind"] != "extrinsic" or not r.get("law_input", True):
            kept.append(r)
            continue
        if not isinstance(tasks, list):  # one task is the law's input itself (MMLU)
            if (r["model"], r["evaluator"], r["dataset"]) in out_tasks:
                report["means"].append({"model": r["model"], "series": r["series"], "dropped": True})
            else:
                kept.append(r)
            continue
        drop = [t for t in tasks if (r["model"], r["evaluator"], t) in out_tasks]
        if not drop:
            kept.append(r)
            continue
        keep = [t for t in tasks if t not in drop]
        siblings = by_cell.get((r.get("cell_key", ""), r["metric"]), {})
        base = [base_of.get((r["model"], r["evaluator"], r["metric"], t)) for t in keep]
        if not keep or any(t not in siblings for t in keep) or any(b is None for b in base):
            report["means"].append({"model": r["model"], "series": r["series"], "dropped": True})
            continue  # nothing above chance left, or the tasks' own rows are not in the results
        chances = [to_float(siblings[t]["details"].get("chance")) for t in keep]
        chance = sum(chances) / len(keep) if all(c is not None for c in chances) else None  # type: ignore[misc]
        new = dict(r, details={**r["details"], "tasks": keep, "left_out_below_chance": drop, "chance": chance})
        new["value"] = sum(siblings[t]["value"] for t in keep) / len(keep)
        new["L0"] = sum(b["value"] for b in base) / len(keep)  # type: ignore[index]
        new["series"] = series_of(dict(new, details={**r["details"]}))  # the series keeps its name
        kept.append(new)
    return kept, report


def points(rows: Sequence[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The law's numbers of one kind for compressed variants (value and L0 known)."""
    return [r for r in rows if r["kind"] == kind and r.get("law_input", True) and r["method"]
            and r["value"] is not None and r["L0"] is not None and r["L0"] > 0]


def param_counts(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for r in rows:
        if r.get("params_original"):
            out[r["model"]] = max(out.get(r["model"], 0.0), r["params_original"])
    return out


MATCH_TOLERANCE = 0.10  # two variants are "of a size" when their kept sizes differ by at most 10%


SIZE_MEASURE = "non-embedding parameters kept"


def size_of(row: dict[str, Any], originals: dict[str, float]) -> float | None:
    """A variant's non-embedding parameters kept; an unpruned model's from its pruned rows."""
    kept = to_float(row.get("params_kept_no_embed"))
    if kept is not None and row["method"]:
        return kept
    return originals.get(row["model"]) if not row["method"] else None


def original_sizes(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for r in rows:
        kept, removed = to_float(r.get("params_kept_no_embed")), to_float(r.get("fraction_removed_no_embed"))
        if r["method"] and kept and removed is not None and removed < 1:
            out[r["model"]] = kept / (1 - removed)
    return out


def l0_errors(rows: Sequence[dict[str, Any]], series: str) -> dict[str, float]:
    """Each model's relative standard error of L0 for one series: the unpruned cell's own
    stderr, or that of a mean from its tasks' stderrs (independent tasks), where recorded."""
    out: dict[str, float] = {}
    base = [r for r in rows if not r["method"] and not r["D"] and r["value"]]
    for r in base:
        if r["series"] != series:
            continue
        se = to_float(r["details"].get("stderr"))
        tasks = r["details"].get("tasks")
        if se is None and isinstance(tasks, list) and tasks:
            parts = [to_float(t["details"].get("stderr")) for t in base
                     if t.get("cell_key") == r.get("cell_key") and t["dataset"] in tasks and t["metric"] == r["metric"]]
            if len(parts) == len(tasks) and all(p is not None for p in parts):
                se = math.sqrt(sum(p * p for p in parts)) / len(parts)  # type: ignore[operator]
        if se is not None and r["value"] > 0:
            out[r["model"]] = se / r["value"]
    return out


def with_l0_errors(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows, each compressed variant's with ``L0_rel_se``: the relative standard error of
    the L0 it is measured against (:func:`l0_errors`), where recorded. The law fits propagate it."""
    errors = {s: l0_errors(rows, s) for s in {r["series"] for r in rows}}
    out = []
    for r in rows:
        se = errors[r["series"]].get(r["model"]) if (r["method"] or r["D"]) else None
        out.append({**r, "L0_rel_se": se} if se else r)
    return out


def cluster(p: dict[str, Any]) -> str:
    """A row's cluster: its pruned model (model, method, r, seed)."""
    from lawlab.laws.fit import cluster_of

    return cluster_of(p)
