"""The findings stage: the paper's research questions answered, with numbers, for one study.

``study_findings(RUN_OR_CSV)`` reads a study's results (its output folder, or a results
CSV in ``lawlab export``'s format) and returns :class:`Findings`: one :class:`Answer` per
question (``rq1`` … ``rq5``) and one for the laws. Each answer states the paper's claim,
the numbers it rests on, and a verdict against the claim: ``consistent``,
``inconsistent`` or ``undetermined`` (with the reason: one model only, no RFT cells...).

An answer is made of parts, each a sub-claim with its own verdict; the answer is
consistent when every part that the data can decide is, inconsistent when one of them is
not (the reason says which), and undetermined when no part can be decided.

Intervals are 95% percentile bootstrap intervals over *cells* (one cell = one compressed
variant: model, method, r, RFT data and D), or t intervals of fitted coefficients; every
answer says which in ``ci``. The core knows no method: "calibration-based" is what the
pruner plugin declares (``Pruner.calibration``), recorded in the results' ``calibration``
column.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lawlab.errors import UsageError

LEVEL = 0.95
N_BOOT = 2000
ALPHA = 0.05  # significance level of the curvature tests
SIGMA = {"extrinsic": 0.8, "intrinsic": 1.5}  # recovery thresholds for r_crit (the paper's worked example: 0.8)
# The forms the paper compares (eq. 1, its ablations) and the talk's form, per metric kind.
COMPARED_FORMS = {
    "intrinsic": ("compression-law", "ablation-r", "ablation-d", "kept-fraction-law"),
    "extrinsic": ("compression-law", "ablation-r", "ablation-d", "kept-fraction-law"),
    "runtime": ("runtime-law", "ablation-r"),
}
QUESTIONS = ("rq1", "rq2", "rq3", "rq4", "rq5", "laws", "composition")
TITLES = {"rq1": "RQ1, shape", "rq2": "RQ2, speed", "rq3": "RQ3, recovery", "rq4": "RQ4, which model to compress",
          "rq5": "RQ5, calibration", "laws": "Laws", "composition": "Composition of compressions"}
CLAIMS = {
    "rq1": "Intrinsic loss rises about quadratically with r and accuracy falls about linearly; below r = 0.5 "
           "models keep 57% of extrinsic performance without RFT and 84% with it.",
    "rq2": "Runtime falls as a power law in (1+r): 24-35% faster at r = 0.5-0.9 for models up to 7B (up to 60% "
           "for larger ones), and bigger models gain more.",
    "rq3": "RFT recovers intrinsic performance much more (up to 55-63%) than extrinsic (about 14%); beyond "
           "r_crit(σ) no RFT recovers σ of the performance.",
    "rq4": "At a similar parameter budget, compressing a smaller model at a lower ratio beats compressing a "
           "larger one at a higher ratio (by about 8%).",
    "rq5": "Calibration-based pruning is better on intrinsic loss; calibration-free pruning is better on "
           "extrinsic accuracy, especially after RFT.",
    # answered only for studies with hybrid (quantised) variants: lawlab.composition
    "composition": "Compressions compose multiplicatively (effective-parameter form, Frantar et al. 2025; Panferov "
                   "et al. 2025): what a hybrid variant keeps is the product of what each compression keeps alone.",
    "laws": "Eq. 1, L = L0^α (1+r)^β (1 + 1/(D+ε))^γ, describes the results with feasible signs (loss: β, γ > 0; "
            "accuracy: β, γ < 0), and runtime follows S = C (1+r)^β with β < 0.",
}
CELL_CI = f"{LEVEL:.0%} BCa bootstrap over cells ({N_BOOT} resamples; a cell is one variant: model, method, r, D)"
CLUSTER_CI = (f"{LEVEL:.0%} bootstrap over clusters (a cluster is one pruned model: model, method, r, seed, with its D "
              f"cells), each model's L0 drawn from its recorded standard error ({N_BOOT} resamples)")


# --------------------------------------------------------------------------- results


@dataclass
class Part:
    """One sub-claim of an answer, with its own verdict and the numbers behind it."""

    name: str
    verdict: str  # consistent | inconsistent | undetermined
    summary: str  # one line for people: the numbers and what they mean
    evidence: dict[str, Any] = field(default_factory=dict)
    reason: str = ""  # why undetermined (or inconsistent)


@dataclass
class Answer:
    key: str
    claim: str
    verdict: str
    evidence: dict[str, Any]
    reason: str
    parts: list[Part] = field(default_factory=list)
    ci: str = ""  # how the intervals were made
    notes: list[str] = field(default_factory=list)  # numbers worth reading that carry no verdict

    @classmethod
    def of(cls, key: str, parts: list[Part], ci: str = "", notes: Sequence[str] = (), **evidence: Any) -> Answer:
        decided = [p for p in parts if p.verdict != "undetermined"]
        against = [p for p in decided if p.verdict == "inconsistent"]
        if not decided:
            verdict = "undetermined"
            reason = "; ".join(f"{p.name}: {p.reason}" for p in parts if p.reason) or "no data"
        elif against:
            verdict = "inconsistent"
            reason = "does not hold: " + ", ".join(p.name for p in against)
            held = [p.name for p in decided if p.verdict == "consistent"]
            reason += ("; holds: " + ", ".join(held)) if held else ""
        else:
            verdict = "consistent"
            open_parts = [p.name for p in parts if p.verdict == "undetermined"]
            reason = ("not decided: " + ", ".join(open_parts)) if open_parts else ""
        ev = {p.name: p.evidence for p in parts} | evidence
        return cls(key, CLAIMS[key], verdict, ev, reason, parts, ci, list(notes))

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Answer:
        parts = [Part(**p) for p in d.get("parts", [])]
        return cls(d["key"], d["claim"], d["verdict"], d.get("evidence", {}), d.get("reason", ""), parts,
                   d.get("ci", ""), list(d.get("notes", [])))


@dataclass
class Findings:
    """The answers to the paper's questions for one study, by key (``rq1`` … ``rq5``, ``laws``)."""

    source: str
    answers: dict[str, Answer]
    notes: list[str] = field(default_factory=list)
    chance: dict[str, Any] = field(default_factory=dict)  # each task against chance, and what was left out

    def __getitem__(self, key: str) -> Answer:
        return self.answers[key]

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "notes": self.notes, "chance": _jsonable(self.chance),
                **{k: a.to_dict() for k, a in self.answers.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Findings:
        return cls(d.get("source", ""), {k: Answer.from_dict(d[k]) for k in QUESTIONS if k in d}, d.get("notes", []),
                   d.get("chance", {}))

    def summary(self) -> str:
        lines = [f"Findings for {self.source}", "=" * 78]
        for key, a in self.answers.items():
            lines.append(f"{TITLES[key]}: {a.verdict.upper()}" + (f" ({a.reason})" if a.reason else ""))
            lines.append(f"  paper: {a.claim}")
            for p in a.parts:
                lines.append(f"  - {p.name} [{p.verdict}]: {p.summary}" + (f" ({p.reason})" if p.reason and
                                                                          p.reason not in p.summary else ""))
            lines += [f"  · {n}" for n in a.notes]
            if a.ci:
                lines.append(f"  intervals: {a.ci}")
            lines.append("")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines).rstrip() + "\n"


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if hasattr(v, "item"):
        return _jsonable(v.item())
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


# --------------------------------------------------------------------------- reading


def read_rows(source: str | Path) -> list[dict[str, Any]]:
    """The tidy rows of a study folder or of a results CSV, with numbers as numbers."""
    path = Path(source)
    if path.is_dir():
        from lawlab.store import load_table

        rows = load_table(path)
    elif path.is_file():
        from lawlab.fit import LawFitError, read_results_csv

        try:
            rows = read_results_csv(path)
        except LawFitError as exc:
            raise UsageError(str(exc)) from None
    else:
        raise UsageError(f"{path}: no such study folder or results CSV")
    return [_clean(r) for r in rows]


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    for key in ("ratio", "D", "value", "L0", "params_kept", "params_original"):
        out[key] = _float(row.get(key))
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
        if key not in out["details"] and _float(row.get(key)) is not None:
            out["details"][key] = _float(row.get(key))
    return out


def series_of(row: dict[str, Any]) -> str:
    """What one number measures. An average names the tasks it holds (two lm-eval entries, the
    five tasks and MMLU, both store a "mean", and they are different things)."""
    name = row["dataset"]
    tasks = row["details"].get("tasks")
    if isinstance(tasks, list) and tasks and name in ("mean", "average"):
        name = tasks[0] if len(tasks) == 1 else f"{name}({'+'.join(map(str, tasks))})"
    return f"{row['evaluator']}:{name}" if row["evaluator"] else name


def _float(v: Any) -> float | None:
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
    from lawlab.stats import above_chance

    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    for r in rows:
        chance = _float(r["details"].get("chance"))
        if r["method"] or r["D"] or r["kind"] != "extrinsic" or chance is None or r["value"] is None:
            continue
        n = r["details"].get("n")
        p = above_chance(r["value"], chance, n=int(n) if n else None, stderr=_float(r["details"].get("stderr")))
        out[(r["model"], r["evaluator"], r["dataset"])] = {
            "accuracy": r["value"], "chance": chance, "n": n, "p": p, "above": bool(p < ALPHA)}
    return out


def chance_rule(rows: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The extrinsic law's inputs without the tasks that measure nothing: a task whose
    unpruned model is not above chance (one-sided binomial test at ALPHA) leaves every mean
    of that model it was part of, which is recomputed from the remaining tasks' own rows; a
    mean left with no task is dropped. Returns the rows and what was left out, and why."""
    tests = above_chance_tasks(rows)
    out_tasks = {k for k, t in tests.items() if not t["above"]}
    report: dict[str, Any] = {"tested": {f"{m} · {task}": t for (m, _, task), t in sorted(tests.items())},
                              "left_out": sorted(f"{m} · {task}" for m, _, task in out_tasks), "means": []}
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
        if r["kind"] != "extrinsic" or not r.get("law_input", True) or not isinstance(tasks, list):
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
        new = dict(r, details={**r["details"], "tasks": keep, "left_out_below_chance": drop})
        new["value"] = sum(siblings[t]["value"] for t in keep) / len(keep)
        new["L0"] = sum(b["value"] for b in base) / len(keep)  # type: ignore[index]
        new["series"] = series_of(dict(new, details={**r["details"]}))  # the series keeps its name
        kept.append(new)
    return kept, report


def points(rows: Sequence[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The law's numbers of one kind for compressed variants (value and L0 known)."""
    return [r for r in rows if r["kind"] == kind and r.get("law_input", True) and r["method"]
            and r["value"] is not None and r["L0"] is not None and r["L0"] > 0]


# --------------------------------------------------------------------------- statistics


def bootstrap_mean(values: Sequence[float], seed: int = 0, n_boot: int = N_BOOT,
                   clusters: Sequence[str] | None = None, models: Sequence[str] | None = None,
                   l0_rel_se: dict[str, float] | None = None) -> tuple[float, float, float]:
    """(mean, low, high): BCa over values, or, given their clusters, a bootstrap over clusters
    (with each model's L0 drawn from its error when ``l0_rel_se`` is given); see lawlab.stats."""
    from lawlab.stats import bca_mean, cluster_mean

    if clusters is None:
        iv = bca_mean(values, seed, n_boot)
    else:
        iv = cluster_mean(values, clusters, models=models, l0_rel_se=l0_rel_se, seed=seed, n_boot=n_boot)
    return iv.value, iv.low, iv.high


def cluster(p: dict[str, Any]) -> str:
    """A row's cluster: its pruned model (model, method, r, seed)."""
    from lawlab.fit import cluster_of

    return cluster_of(p)


def l0_errors(rows: Sequence[dict[str, Any]], series: str) -> dict[str, float]:
    """Each model's relative standard error of L0 for one series: the unpruned cell's own
    stderr, or that of a mean from its tasks' stderrs (independent tasks), where recorded."""
    out: dict[str, float] = {}
    base = [r for r in rows if not r["method"] and not r["D"] and r["value"]]
    for r in base:
        if r["series"] != series:
            continue
        se = _float(r["details"].get("stderr"))
        tasks = r["details"].get("tasks")
        if se is None and isinstance(tasks, list) and tasks:
            parts = [_float(t["details"].get("stderr")) for t in base
                     if t.get("cell_key") == r.get("cell_key") and t["dataset"] in tasks and t["metric"] == r["metric"]]
            if len(parts) == len(tasks) and all(p is not None for p in parts):
                se = math.sqrt(sum(p * p for p in parts)) / len(parts)  # type: ignore[operator]
        if se is not None and r["value"] > 0:
            out[r["model"]] = se / r["value"]
    return out


def side(low: float, high: float, expected: int) -> str:
    """The verdict for an interval against a claimed sign (+1: above 0, −1: below)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return "undetermined"
    if (low > 0 and expected > 0) or (high < 0 and expected < 0):
        return "consistent"
    if (high < 0 and expected > 0) or (low > 0 and expected < 0):
        return "inconsistent"
    return "undetermined"


def curvature(r: Sequence[float], y: Sequence[float]) -> dict[str, Any]:
    """Quadratic against linear least squares of y on r: the r² coefficient with its t test,
    R² of both fits, and the AIC of each (n log(RSS/n) + 2k)."""
    import numpy as np
    from scipy import stats

    x, y = np.asarray(r, float), np.asarray(y, float)
    n = len(x)
    out: dict[str, Any] = {"n": n}
    tss = float(np.sum((y - y.mean()) ** 2)) or 1e-300
    for name, cols in (("linear", [np.ones(n), x]), ("quadratic", [np.ones(n), x, x**2])):
        X = np.column_stack(cols)
        coef, *_ = np.linalg.lstsq(X, y, rcond=None)
        rss = float(np.sum((y - X @ coef) ** 2))
        out[f"r2_{name}"] = 1 - rss / tss
        out[f"aic_{name}"] = n * math.log(max(rss, 1e-300) / n) + 2 * X.shape[1]
        if name == "linear":
            # the slope's t test (scipy's linregress), to tell a fall from a wobble
            dof = n - 2
            se = float(math.sqrt(max((rss / dof) * np.linalg.inv(X.T @ X)[1, 1], 0.0)))
            t = coef[1] / se if se > 0 else math.copysign(math.inf, coef[1])
            out["slope"], out["slope_se"] = float(coef[1]), se
            out["slope_p"] = float(2 * stats.t.sf(abs(t), dof)) if math.isfinite(t) else 0.0
        else:
            dof = n - 3
            s2 = rss / dof
            cov = s2 * np.linalg.inv(X.T @ X)
            se = float(math.sqrt(max(cov[2, 2], 0.0)))
            out["quadratic_term"] = float(coef[2])
            out["quadratic_se"] = se
            t = coef[2] / se if se > 0 else math.copysign(math.inf, coef[2])
            out["quadratic_p"] = float(2 * stats.t.sf(abs(t), dof)) if math.isfinite(t) else 0.0
    c, p = out["quadratic_term"], out["quadratic_p"]
    out["shape"] = "convex" if c > 0 and p < ALPHA else "concave" if c < 0 and p < ALPHA else "linear"
    return out


# --------------------------------------------------------------------------- RQ1


def _curves(rows: Sequence[dict[str, Any]], kind: str) -> dict[tuple[str, str, str], dict[float, float]]:
    """(model, method, dataset) -> {r: mean value} without RFT, the unpruned L0 at r = 0."""
    acc: dict[tuple[str, str, str], dict[float, list[float]]] = {}
    for p in points(rows, kind):
        if p["D"] == 0:
            curve = acc.setdefault((p["model"], p["method"], p["series"]), {0.0: [p["L0"]]})
            curve.setdefault(p["ratio"], []).append(p["value"])
    return {k: {r: sum(v) / len(v) for r, v in sorted(c.items())} for k, c in acc.items()}


def _shape_part(rows: Sequence[dict[str, Any]], kind: str) -> Part:
    name = "intrinsic loss rises quadratically" if kind == "intrinsic" else "accuracy falls linearly"
    curves = _curves(rows, kind)
    if not curves:
        return Part(name, "undetermined", f"no {kind} results without RFT", reason=f"no {kind} results without RFT")
    tests, short = {}, []
    several = len({k[2] for k in curves}) > 1
    for (model, method, ds), curve in curves.items():
        label = f"{model} · {method}" + (f" · {ds}" if several else "")
        if len(curve) < 5:  # a quadratic needs 3 coefficients; two residual degrees of freedom at least
            short.append(label)
            continue
        tests[label] = curvature(list(curve), list(curve.values()))
    if not tests:
        reason = "a curvature test needs at least 4 ratios besides r = 0 per curve"
        return Part(name, "undetermined", reason, {"too_few_ratios": short}, reason)
    for t in tests.values():
        t["verdict"], t["why"] = _shape_verdict(t, kind)
    verdicts = [t["verdict"] for t in tests.values()]
    n_yes, n_no = verdicts.count("consistent"), verdicts.count("inconsistent")
    # A curve decides only what its noise lets it: a curvature the test could not have seen is
    # "undetermined", never "inconsistent" (a quadratic measured with large noise looks linear).
    # a curve whose accuracy rises significantly is a counterexample on its own
    rises = any(t["why"].startswith("accuracy rises") for t in tests.values())
    verdict = ("inconsistent" if rises or n_no * 2 > len(verdicts) else
               "consistent" if n_yes * 2 > len(verdicts) and not n_no else "undetermined")
    detail = "; ".join(f"{k}: {t['verdict']} (c = {t['quadratic_term']:.3g} ± {t['quadratic_se']:.2g}, p = "
                       f"{t['quadratic_p']:.2g}; slope {t['slope']:.3g}, p = {t['slope_p']:.2g})"
                       for k, t in tests.items())
    summary = f"{len(verdicts)} curve(s) without RFT: {n_yes} consistent, {n_no} inconsistent, " \
              f"{len(verdicts) - n_yes - n_no} undetermined. {detail}"
    if verdict == "consistent":
        reason = ""
    else:
        reason = "; ".join(f"{k}: {t['why']}" for k, t in tests.items() if t["verdict"] != "consistent")
        if verdict == "undetermined":
            reason += (". To decide: more ratios per curve (e.g. 0.2/0.4/0.6/0.8 beside 0.1…0.9) or less noise per "
                       "point, until the quadratic term's standard error is below a third of its size")
    return Part(name, verdict, summary, {"curves": tests, "too_few_ratios": short}, reason)


def _shape_verdict(t: dict[str, Any], kind: str) -> tuple[str, str]:
    """One curve against the paper's shape, deciding only what its noise allows.

    Loss: consistent when the quadratic term is significantly positive, inconsistent when it
    is significantly negative (concave) or shown small (its interval's top under a quarter of a
    significant slope: the r² term adds under a quarter of the rise over r in [0, 1]), else
    undetermined. Accuracy: inconsistent when it
    rises significantly or curves significantly; consistent when it falls significantly
    and the quadratic term's interval is within ± the slope (the slope changes by less than
    half over r in [0, 1]); else undetermined."""
    from scipy import stats

    c, se, p = t["quadratic_term"], t["quadratic_se"], t["quadratic_p"]
    half = float(stats.t.ppf(1 - ALPHA / 2, max(t["n"] - 3, 1))) * se
    b, bp = t["slope"], t["slope_p"]
    if kind == "intrinsic":
        if p < ALPHA:
            return ("consistent", "") if c > 0 else ("inconsistent", f"concave: c = {c:.3g}, p = {p:.2g}")
        if b > 0 and bp < ALPHA and c + half < 0.25 * b:
            return "inconsistent", (f"linear: the quadratic term is at most {c + half:.2g}, under a quarter of the "
                                    f"slope {b:.3g}")
        return "undetermined", f"the quadratic term cannot be told from 0 (c = {c:.3g} ± {half:.2g})"
    if b > 0 and bp < ALPHA:
        return "inconsistent", f"accuracy rises with r (slope {b:.3g}, p = {bp:.2g})"
    if p < ALPHA:
        return "inconsistent", f"curved, not linear: c = {c:.3g}, p = {p:.2g}"
    if b < 0 and bp < ALPHA and abs(c) + half <= abs(b):
        return "consistent", ""
    if not (b < 0 and bp < ALPHA):
        return "undetermined", f"no significant fall (slope {b:.3g}, p = {bp:.2g})"
    return "undetermined", f"falls, but the test could not rule out a curvature of the slope's size (c = {c:.3g} ± {half:.2g})"


def _retentions(rows: Sequence[dict[str, Any]], seed: int) -> list[Part]:
    """Retention per series: the five-task mean and MMLU are different things, never pooled."""
    series = sorted({p["series"] for p in points(rows, "extrinsic")})
    if len(series) <= 1:
        return [_retention(rows, seed)]
    return [_retention([r for r in rows if r["kind"] != "extrinsic" or r["series"] == s], seed, s) for s in series]


def _retention(rows: Sequence[dict[str, Any]], seed: int, series: str = "") -> Part:
    name = "RFT raises extrinsic retention below r = 0.5" + (f" ({series})" if series else "")
    low = [p for p in points(rows, "extrinsic") if 0 < p["ratio"] < 0.5]
    without = {(p["model"], p["method"], p["ratio"], p["series"]): p["value"] / p["L0"] for p in low if p["D"] == 0}
    seeds = {(p["model"], p["method"], p["ratio"], p["series"]): p.get("seed", "") for p in low}
    best_D: dict[tuple[str, str, float, str], tuple[float, float]] = {}
    for p in low:
        k = (p["model"], p["method"], p["ratio"], p["series"])
        if p["D"] > 0 and p["D"] >= best_D.get(k, (-1.0, 0.0))[0]:
            best_D[k] = (p["D"], p["value"] / p["L0"])
    ev: dict[str, Any] = {"paper": {"without_rft": 0.57, "with_rft": 0.84}}
    if not without:
        return Part(name, "undetermined", "no extrinsic results at 0 < r < 0.5 without RFT", ev,
                    "no extrinsic results at 0 < r < 0.5")
    cl = {k: cluster({"model": k[0], "method": k[1], "ratio": k[2], "seed": seeds.get(k, "")}) for k in without}
    l0_se: dict[str, float] = {}
    for series in {k[3] for k in without}:
        l0_se |= l0_errors(rows, series)
    m, lo, hi = bootstrap_mean(list(without.values()), seed, clusters=[cl[k] for k in without],
                               models=[k[0] for k in without], l0_rel_se=l0_se)
    ev["without_rft"] = {"mean": m, "ci": [lo, hi], "best": max(without.values()), "cells": len(without)}
    ev["series"] = sorted({k[3] for k in without})
    ev["l0_relative_stderr"] = l0_se
    if math.isfinite(lo) and (hi - lo) / 2 > 0.03:
        ev["power"] = (f"retention is known to ±{(hi - lo) / 2:.1%}; about "
                       f"{_questions_for_retention(rows, (hi - lo) / 2, 0.03)} questions a task would give ±3 points, if all of its width is question noise")
    summary = f"retention without RFT {_pct(m, lo, hi)} (best {max(without.values()):.0%}; paper 57%)"
    if not best_D:
        return Part(name, "undetermined", summary + "; no RFT cells", ev, "no RFT cells")
    with_rft = {k: v for k, (_, v) in best_D.items()}
    m2, lo2, hi2 = bootstrap_mean(list(with_rft.values()), seed, clusters=[cl.get(k, str(k)) for k in with_rft],
                                  models=[k[0] for k in with_rft], l0_rel_se=l0_se)
    ev["with_rft"] = {"mean": m2, "ci": [lo2, hi2], "best": max(with_rft.values()), "cells": len(with_rft),
                      "D": "the largest D of each cell"}
    common = [k for k in with_rft if k in without]
    d, dlo, dhi = bootstrap_mean([with_rft[k] - without[k] for k in common], seed, clusters=[cl[k] for k in common],
                                 models=[k[0] for k in common], l0_rel_se=l0_se) if common else (0.0, math.nan, math.nan)
    ev["gain"] = {"mean": d, "ci": [dlo, dhi], "cells": len(common)}
    summary += f"; with RFT {_pct(m2, lo2, hi2)} (best {max(with_rft.values()):.0%}; paper 84%)"
    verdict = side(dlo, dhi, +1)
    reason = "" if verdict != "undetermined" else "the gain's interval includes 0"
    if ev.get("power"):
        summary += f" ({ev['power']})"
        reason += f"; {ev['power']}" if reason else ""
    return Part(name, verdict, summary, ev, reason)


def _questions_for_retention(rows: Sequence[dict[str, Any]], now: float, target: float) -> int:
    """Questions a task for a retention interval of ±target, scaling the questions the study
    used (the largest ``n`` recorded) by (now / target)²: a binomial error falls as 1/√n."""
    ns = [int(r["details"]["n"]) for r in rows if r["kind"] == "extrinsic" and r["details"].get("n")]
    n = max(ns) if ns else 30
    return math.ceil(n * (now / target) ** 2)


def _pct(m: float, lo: float, hi: float) -> str:
    return f"{m:.1%}" + (f" [{lo:.1%}, {hi:.1%}]" if math.isfinite(lo) else "")


def rq1(rows: Sequence[dict[str, Any]], seed: int = 0) -> Answer:
    parts = [_shape_part(rows, "intrinsic"), _shape_part(rows, "extrinsic"), *_retentions(rows, seed)]
    return Answer.of("rq1", parts, ci=f"curvature: t test of the r² term in a quadratic least-squares fit per "
                                      f"curve; retention: {CLUSTER_CI}")


# --------------------------------------------------------------------------- RQ2


def _param_counts(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for r in rows:
        if r.get("params_original"):
            out[r["model"]] = max(out.get(r["model"], 0.0), r["params_original"])
    return out


def rq2(rows: Sequence[dict[str, Any]], seed: int = 0) -> Answer:
    from lawlab.fit import LawFitError, fit_law

    pts = [p for p in points(rows, "runtime") if p["D"] == 0]
    if not pts:
        part = Part("runtime falls with r", "undetermined", "no runtime results", reason="no runtime results")
        return Answer.of("rq2", [part])
    metric = sorted({p["metric"] for p in pts})
    cells = []
    for p in pts:
        rel = p["value"] / p["L0"]
        ci = p["details"].get("ci") if p["metric"] == "relative_time" else None
        cells.append({"model": p["model"], "method": p["method"], "r": p["ratio"], "time_ratio": rel,
                      "reduction": 1 - rel, "reduction_ci": [1 - ci[1], 1 - ci[0]] if ci else None})
    top = max(cells, key=lambda c: c["reduction"])
    betas: dict[str, dict[str, Any]] = {}
    for model in sorted({p["model"] for p in pts}):
        try:
            fit = fit_law("runtime-law", [p for p in pts if p["model"] == model], metric_kind="runtime")
        except LawFitError as exc:
            betas[model] = {"skipped": str(exc)}
            continue
        b = fit["beta"]
        betas[model] = {"beta": b.value, "stderr": b.stderr, "ci": list(b.ci) if b.ci else None, "n": fit.n,
                        "df": fit.df_inference}
    parts = [_falls(betas), _small_model_range(cells, seed), _bigger_gain_more(betas, _param_counts(rows))]
    ev = {"measure": metric, "cells": cells, "largest": top, "beta": betas,
          "paper": {"reduction_r_0.5_0.9_small": [0.24, 0.35], "reduction_large": 0.60}}
    paired = "relative_time" in metric
    ci = ("per cell: the paired runtime's interval for its median time ratio (order statistics); " if paired else "")
    ci += f"β: t interval of the per-model runtime-law fit; mean reduction: {CELL_CI}"
    by_ratio: dict[float, list[float]] = {}
    for c in cells:
        by_ratio.setdefault(c["r"], []).append(c["reduction"])
    ev["reduction_by_ratio"] = {r: sum(v) / len(v) for r, v in sorted(by_ratio.items())}
    notes = ["time reduction by r (mean over models and methods): " + ", ".join(
                 f"{r:g}: {v:.1%}" for r, v in ev["reduction_by_ratio"].items()),
             f"largest speedup: {top['model']} · {top['method']} at r = {top['r']:g}, time × {top['time_ratio']:.3f} "
             f"({top['reduction']:.1%} less; paper: up to 60% for models ≥ 7B)"]
    ans = Answer.of("rq2", parts, ci=ci, notes=notes, **ev)
    if not paired:
        ans.evidence["note"] = ("times measured in separate cells (benchmark seconds), not paired: on a shared "
                                "machine they carry its load")
    return ans


def _falls(betas: dict[str, dict[str, Any]]) -> Part:
    name = "runtime falls with r (β < 0)"
    fitted = {m: b for m, b in betas.items() if b.get("ci")}
    if not fitted:
        reasons = "; ".join(f"{m}: {b.get('skipped', 'no interval')}" for m, b in betas.items())
        return Part(name, "undetermined", "no runtime law could be fitted", reason=reasons)
    verdicts = {m: side(b["ci"][0], b["ci"][1], -1) for m, b in fitted.items()}
    summary = "; ".join(f"{m}: β = {b['beta']:.3f} [{b['ci'][0]:.3f}, {b['ci'][1]:.3f}]" for m, b in fitted.items())
    summary += " (paper, Table 4: −0.21 to −1.93)"
    vs = set(verdicts.values())
    verdict = "inconsistent" if "inconsistent" in vs else "consistent" if vs == {"consistent"} else "undetermined"
    reason = "" if verdict == "consistent" else ("a β interval includes 0" if verdict == "undetermined" else
                                                 "runtime rises with r for " + ", ".join(
                                                     m for m, v in verdicts.items() if v == "inconsistent"))
    return Part(name, verdict, summary, {"verdict_by_model": verdicts}, reason)


def _small_model_range(cells: list[dict[str, Any]], seed: int) -> Part:
    """Each model against the paper's 24-35% band on its own: two models on either side of the
    band do not make an average inside it consistent."""
    name = "24-35% faster at r = 0.5-0.9"
    chosen = [c for c in cells if 0.5 <= c["r"] <= 0.9]
    if not chosen:
        return Part(name, "undetermined", "no runtime results at r = 0.5-0.9", reason="no ratio in 0.5-0.9")
    per_model: dict[str, dict[str, Any]] = {}
    for model in sorted({c["model"] for c in chosen}):
        mine = [c for c in chosen if c["model"] == model]
        m, lo, hi = bootstrap_mean([c["reduction"] for c in mine], seed)
        if len(mine) == 1:  # one cell: its own paired interval, when it has one
            lo, hi = mine[0]["reduction_ci"] or (math.nan, math.nan)
        if not (math.isfinite(lo) and math.isfinite(hi)):
            v, why = "undetermined", "no interval"
        elif hi < 0.24 or lo > 0.35:
            v, why = "inconsistent", ("less" if hi < 0.24 else "more") + " than the paper's range"
        elif 0.24 <= m <= 0.35:
            v, why = "consistent", ""
        else:
            v, why = "undetermined", "outside the range, but its interval reaches into it"
        per_model[model] = {"mean": m, "ci": [lo, hi], "cells": len(mine), "verdict": v, "reason": why}
    vs = [p["verdict"] for p in per_model.values()]
    verdict = "inconsistent" if "inconsistent" in vs else "consistent" if set(vs) == {"consistent"} else "undetermined"
    summary = "time reduction at r = 0.5-0.9 per model: " + "; ".join(
        f"{m}: {_pct(p['mean'], *p['ci'])} ({p['verdict']})" for m, p in per_model.items()) + " (paper: 24-35%)"
    reason = "; ".join(f"{m}: {p['reason']}" for m, p in per_model.items() if p["verdict"] != "consistent")
    return Part(name, verdict, summary, {"per_model": per_model}, reason if verdict != "consistent" else "")


def _bigger_gain_more(betas: dict[str, dict[str, Any]], params: dict[str, float]) -> Part:
    name = "bigger models gain more"
    fitted = {m: b for m, b in betas.items() if b.get("stderr") is not None and m in params}
    if len(fitted) < 2:
        reason = "one model only" if len(betas) < 2 else "needs β and a parameter count for two models"
        return Part(name, "undetermined", reason, reason=reason)
    small = min(fitted, key=lambda m: params[m])
    large = max(fitted, key=lambda m: params[m])
    from scipy import stats

    diff = fitted[large]["beta"] - fitted[small]["beta"]
    s1, s2 = fitted[large]["stderr"], fitted[small]["stderr"]
    se = math.hypot(s1, s2)
    # Welch's t: two fits of 5-10 rows each are far from a normal z
    d1, d2 = (fitted[m].get("df") or max(fitted[m]["n"] - 2, 1) for m in (large, small))
    df = se**4 / (s1**4 / d1 + s2**4 / d2) if se > 0 else 1.0
    t = diff / se if se > 0 else math.copysign(math.inf, diff)
    p = float(2 * stats.t.sf(abs(t), df)) if math.isfinite(t) else 0.0
    verdict = "undetermined" if p >= ALPHA else "consistent" if t < 0 else "inconsistent"
    summary = (f"β({large}, {params[large] / 1e6:.0f}M) − β({small}, {params[small] / 1e6:.0f}M) = {diff:.3f} "
               f"± {se:.3f} (Welch t = {t:.2f}, df = {df:.1f}, p = {p:.2g})")
    reason = "" if verdict != "undetermined" else "the two β cannot be told apart at this noise"
    return Part(name, verdict, summary, {"small": small, "large": large, "difference": diff, "stderr": se, "t": t,
                                         "df": df, "p": p}, reason)


# --------------------------------------------------------------------------- RQ3


def _gains(rows: Sequence[dict[str, Any]]) -> dict[str, dict[tuple, float]]:
    """Relative improvement by RFT per cell (model, method, r, RFT data, D): loss falls,
    accuracy rises; intrinsic averaged over its test sets."""
    out: dict[str, dict[tuple, float]] = {}
    for kind, sign in (("intrinsic", -1), ("extrinsic", +1)):
        pts = points(rows, kind)
        base = {(p["model"], p["method"], p["ratio"], p["series"]): p["value"] for p in pts if p["D"] == 0}
        acc: dict[tuple, list[float]] = {}
        for p in pts:
            v0 = base.get((p["model"], p["method"], p["ratio"], p["series"]))
            if p["D"] > 0 and v0:
                key = (p["model"], p["method"], p["ratio"], p["rft_dataset"], p["D"])
                acc.setdefault(key, []).append(sign * (p["value"] - v0) / v0)
        out[kind] = {k: sum(v) / len(v) for k, v in acc.items()}
    return out


def rq3(rows: Sequence[dict[str, Any]], seed: int = 0, sigma: dict[str, float] | None = None) -> Answer:
    gains = _gains(rows)
    ev: dict[str, Any] = {"paper": {"intrinsic_up_to": [0.55, 0.63], "extrinsic_about": 0.14}}
    for kind, g in gains.items():
        if g:
            m, lo, hi = bootstrap_mean(list(g.values()), seed)
            ev[kind] = {"mean": m, "ci": [lo, hi], "best": max(g.values()), "cells": len(g)}
    name = "RFT recovers intrinsic more than extrinsic"
    if not gains["intrinsic"] and not gains["extrinsic"]:
        part = Part(name, "undetermined", "no RFT cells", reason="no RFT cells")
    elif not (gains["intrinsic"] and gains["extrinsic"]):
        have = "intrinsic" if gains["intrinsic"] else "extrinsic"
        part = Part(name, "undetermined", f"RFT results for {have} only", reason=f"only {have} results with RFT")
    else:
        common = [k for k in gains["intrinsic"] if k in gains["extrinsic"]]
        diffs = [gains["intrinsic"][k] - gains["extrinsic"][k] for k in common]
        d, lo, hi = bootstrap_mean(diffs, seed) if diffs else (0.0, math.nan, math.nan)
        verdict = side(lo, hi, +1)
        i, e = ev["intrinsic"], ev["extrinsic"]
        summary = (f"intrinsic improvement {_pct(i['mean'], *i['ci'])} (best {i['best']:.0%}; paper up to 55-63%), "
                   f"extrinsic {_pct(e['mean'], *e['ci'])} (best {e['best']:.0%}; paper about 14%); "
                   f"difference over {len(common)} paired cell(s) {_pct(d, lo, hi)}")
        reason = "" if verdict != "undetermined" else "the difference's interval includes 0"
        part = Part(name, verdict, summary, {"difference": {"mean": d, "ci": [lo, hi], "cells": len(common)}},
                    reason)
    ev["r_crit"] = _critical(rows, sigma or SIGMA)
    notes = [_crit_line(k, v) for k, v in ev["r_crit"].items()]
    return Answer.of("rq3", [part], notes=notes, ci=f"improvements: {CELL_CI}; r_crit: bootstrap over cells of the per-model "
                                       "compression-law fit (200 resamples)", **ev)


def _crit_line(key: str, v: dict[str, Any]) -> str:
    kind, model = key.split(":", 1)
    head = f"r_crit at σ = {v['sigma']:g} ({kind}), {model}: "
    if "r_crit" not in v:
        return head + "none: " + v.get("reason", "")
    ci = v.get("ci")
    return head + f"{v['r_crit']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "") + f" (β = {v['beta']:.3g})"


def _critical(rows: Sequence[dict[str, Any]], sigma: dict[str, float]) -> dict[str, Any]:
    """r_crit(σ) per model from its compression-law fit (all its methods), or why not."""
    from lawlab.critical import CriticalRangeError, r_crit_from_fit
    from lawlab.fit import LawFitError, fit_law

    out: dict[str, Any] = {}
    for kind, s in sigma.items():
        pts = points(rows, kind)
        for model in sorted({p["model"] for p in pts}):
            mine = [p for p in pts if p["model"] == model]
            entry: dict[str, Any] = {"sigma": s}
            if len({p["D"] for p in mine}) < 2:
                entry["reason"] = "needs results with and without RFT"
            else:
                try:
                    fit = fit_law("compression-law", mine, metric_kind=kind, bootstrap=200, seed=0)
                    entry |= {"beta": fit.theta["beta"], "gamma": fit.theta["gamma"]}
                    iv = r_crit_from_fit(fit, s)
                    entry |= {"r_crit": iv.value, "ci": [iv.low, iv.high] if iv.low is not None else None}
                except (LawFitError, CriticalRangeError) as exc:
                    entry["reason"] = str(exc)
            out[f"{kind}:{model}"] = entry
    return out


# --------------------------------------------------------------------------- RQ4


MATCH_TOLERANCE = 0.10  # two variants are "of a size" when their kept sizes differ by at most 10%
SIZE_MEASURE = "non-embedding parameters kept"


def size_of(row: dict[str, Any], originals: dict[str, float]) -> float | None:
    """A variant's non-embedding parameters kept; an unpruned model's from its pruned rows."""
    kept = _float(row.get("params_kept_no_embed"))
    if kept is not None and row["method"]:
        return kept
    return originals.get(row["model"]) if not row["method"] else None


def _original_sizes(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for r in rows:
        kept, removed = _float(r.get("params_kept_no_embed")), _float(r.get("fraction_removed_no_embed"))
        if r["method"] and kept and removed is not None and removed < 1:
            out[r["model"]] = kept / (1 - removed)
    return out


def rq4(rows: Sequence[dict[str, Any]], seed: int = 0) -> Answer:
    """Measured, at matched size: every pair of variants of two models, by the same method,
    whose non-embedding parameters kept are within 10% of each other (same D), the smaller
    model's accuracy minus the larger's. The law's prediction at budgets between the sizes is evidence, marked as such."""
    name = "a smaller model at a lower ratio wins"
    predicted = _rq4_predicted(rows, seed)
    pts = [r for r in rows if r["kind"] == "extrinsic" and r.get("law_input", True) and r["value"] is not None]
    if pts:
        counts: dict[str, int] = {}
        for p in pts:
            counts[p["series"]] = counts.get(p["series"], 0) + 1
        main = max(counts, key=lambda k: counts[k])
        pts = [p for p in pts if p["series"] == main]
    originals = _original_sizes(rows)
    sized = [(p, size_of(p, originals)) for p in pts]
    sized = [(p, z) for p, z in sized if z]
    pairs = []
    for a, za in sized:
        for b, zb in sized:
            # the same method (or the smaller model unpruned): a pair compares sizes, not methods
            if (originals.get(a["model"], 0) < originals.get(b["model"], 0) and a["D"] == b["D"]
                    and a["method"] in ("", b["method"]) and b["method"]
                    and abs(za / zb - 1) <= MATCH_TOLERANCE and a["ratio"] < b["ratio"]):
                pairs.append({"small": a["model"], "small_r": a["ratio"], "small_method": a["method"],
                              "large": b["model"], "large_r": b["ratio"], "large_method": b["method"], "D": a["D"],
                              "size_ratio": za / zb, "difference": a["value"] - b["value"],
                              "cluster": cluster(a) + "~" + cluster(b)})
    ev: dict[str, Any] = {"size_measure": SIZE_MEASURE, "tolerance": MATCH_TOLERANCE, "pairs": pairs,
                          "predicted": {"note": "law predictions, not measurements", **predicted.evidence,
                                        "verdict": predicted.verdict, "summary": "; ".join(
                                            p.summary for p in predicted.parts)}}
    if len({p["model"] for p in pts}) < 2:
        reason = "one model only" if pts else "no extrinsic results"
        return Answer.of("rq4", [Part(name, "undetermined", reason, reason=reason)], **ev)
    if not pairs:
        reason = (f"no two models' variants within {MATCH_TOLERANCE:.0%} of each other's {SIZE_MEASURE} at the same D "
                  "(with the smaller model at the lower ratio); choose ratios whose kept sizes match")
        return Answer.of("rq4", [Part(name, "undetermined", reason, reason=reason)], notes=predicted.notes,
                         ci="no measured pair", **ev)
    m, lo, hi = bootstrap_mean([p["difference"] for p in pairs], seed, clusters=[p["cluster"] for p in pairs])
    verdict = side(lo, hi, +1)
    summary = (f"measured at matched size ({SIZE_MEASURE} within {MATCH_TOLERANCE:.0%}), over {len(pairs)} pair(s): "
               f"smaller − larger model accuracy {m:+.3f} [{lo:+.3f}, {hi:+.3f}] (paper: the smaller wins by about 8%)")
    reason = "" if verdict == "consistent" else ("the larger model wins" if verdict == "inconsistent" else
                                                 "the difference's interval includes 0")
    part = Part(name, verdict, summary, {"mean": m, "ci": [lo, hi], "pairs": len(pairs)}, reason)
    notes = ["predicted, not measured: " + n for n in predicted.notes]
    return Answer.of("rq4", [part], notes=notes, ci=CLUSTER_CI.replace("clusters (", "pairs of clusters (", 1), **ev)


def _rq4_predicted(rows: Sequence[dict[str, Any]], seed: int = 0) -> Answer:
    from lawlab.critical import CriticalRangeError, best_configuration
    from lawlab.fit import LawFitError, fit_law

    name = "a smaller model at a lower ratio wins"
    params = _param_counts(rows)
    pts = points(rows, "extrinsic")
    if pts:  # one series (evaluator and dataset), so that each model has one L0
        counts: dict[str, int] = {}
        for p in pts:
            counts[p["series"]] = counts.get(p["series"], 0) + 1
        main = max(counts, key=lambda k: counts[k])
        pts = [p for p in pts if p["series"] == main]
        rows = [r for r in rows if r["kind"] != "extrinsic" or r["series"] == main]
    models = sorted({p["model"] for p in pts})
    if len(models) < 2:
        reason = "one model only" if models else "no extrinsic results"
        return Answer.of("rq4", [Part(name, "undetermined", reason, reason=reason)])
    if len(params) < 2:
        reason = "parameter counts are missing (the results have no ratio accounting)"
        return Answer.of("rq4", [Part(name, "undetermined", reason, reason=reason)])
    methods = [m for m in sorted({p["method"] for p in pts})
               if len({p["model"] for p in pts if p["method"] == m and p["model"] in params}) >= 2]
    if not methods:
        reason = "no method was applied to two models"
        return Answer.of("rq4", [Part(name, "undetermined", reason, reason=reason)])
    lo_p, hi_p = min(params.values()), max(params.values())
    budgets = [lo_p * (hi_p / lo_p) ** (k / 4) for k in (1, 2, 3)]
    answers, wins, losses = [], 0, 0
    for method in methods:
        mine = [p for p in pts if p["method"] == method and p["model"] in params]
        fits, kept = {}, {}
        for model in sorted({p["model"] for p in mine}):
            try:
                fits[model] = fit_law("compression-law", [p for p in mine if p["model"] == model],
                                      metric_kind="extrinsic")
            except LawFitError:
                continue
            kept[model] = _kept_curve([p for p in rows if p["model"] == model and p["method"] == method])
        if len(fits) < 2:
            continue
        for budget in budgets:
            try:
                ans = best_configuration(fits, {m: params[m] for m in fits}, budget,
                                         kept_fraction=lambda m, r, kept=kept: _interp(kept[m], r))
            except CriticalRangeError:
                continue
            best = ans.best
            present = {c.model for c in ans.candidates}
            entry = {"method": method, "budget": budget, "models_within_budget": sorted(present)}
            if best is not None:
                entry["best"] = {"model": best.model, "r": best.r, "D": best.D, "params_kept": best.params_kept,
                                 "predicted": best.predicted}
                rival = [c for c in ans.candidates if c.model != best.model]
                if rival:
                    entry["best_other_model"] = {"model": rival[0].model, "r": rival[0].r, "D": rival[0].D,
                                                 "predicted": rival[0].predicted}
                    entry["advantage"] = best.predicted / rival[0].predicted - 1
                    smaller = params[best.model] < params[rival[0].model]
                    wins += smaller
                    losses += not smaller
            answers.append(entry)
    ev = {"budgets": answers, "parameters": params, "measured": _measured_best(rows, budgets, params)}
    if wins + losses == 0:
        reason = "no budget between the models' sizes at which two models both fit"
        return Answer.of("rq4", [Part(name, "undetermined", reason, reason=reason)], **ev)
    verdict = "consistent" if wins > losses else "inconsistent"
    adv = [a["advantage"] for a in answers if "advantage" in a]
    summary = (f"at {wins + losses} (method, budget) pair(s) where two models compete, the law prefers the smaller "
               f"model in {wins}; predicted advantage of the best over the other model "
               f"{min(adv):+.1%} to {max(adv):+.1%} (paper: about +8%)")
    reason = "" if verdict == "consistent" else "the law prefers compressing the larger model"
    part = Part(name, verdict, summary, {"wins_smaller": wins, "wins_larger": losses}, reason)
    notes = [f"{a['method']}, budget {a['budget'] / 1e6:.1f}M: best {a['best']['model']} at r = {a['best']['r']:.2g}, "
             f"D = {a['best']['D']:g} (predicted {a['best']['predicted']:.3f})" for a in answers if "best" in a]
    return Answer.of("rq4", [part], notes=notes,
                     ci="predictions of per-model compression-law fits (extrinsic); no interval", **ev)


def _kept_curve(rows: Sequence[dict[str, Any]]) -> dict[float, float]:
    kept = {0.0: 1.0}
    for r in rows:
        if r.get("params_kept") and r.get("params_original"):
            kept[r["ratio"]] = r["params_kept"] / r["params_original"]
    return dict(sorted(kept.items()))


def _interp(curve: dict[float, float], r: float) -> float:
    """The kept fraction at r, linear between measured ratios (1 − r beyond the last)."""
    xs = list(curve)
    if r <= xs[0]:
        return curve[xs[0]]
    for a, b in itertools.pairwise(xs):
        if a <= r <= b:
            return curve[a] + (curve[b] - curve[a]) * (r - a) / (b - a)
    last = xs[-1]
    return curve[last] * (1 - r) / (1 - last) if last < 1 else curve[last]


def _measured_best(rows: Sequence[dict[str, Any]], budgets: list[float], params: dict[str, float]) -> list[dict]:
    """The best measured extrinsic result within each budget (unpruned models count at full size)."""
    pts = [p for p in rows if p["kind"] == "extrinsic" and p.get("law_input", True) and p["value"] is not None]
    out = []
    for budget in budgets:
        within = []
        for p in pts:
            size = p["params_kept"] if p["method"] else params.get(p["model"])
            if size is not None and size <= budget:
                within.append(p)
        if within:
            b = max(within, key=lambda p: p["value"])
            out.append({"budget": budget, "model": b["model"], "method": b["method"], "r": b["ratio"], "D": b["D"],
                        "value": b["value"]})
    return out


# --------------------------------------------------------------------------- RQ5


def rq5(rows: Sequence[dict[str, Any]], seed: int = 0) -> Answer:
    cals = {p["calibration"] for p in rows if p["method"]}
    parts = []
    ev: dict[str, Any] = {}
    claims = {"intrinsic": "calibration-based is better on loss", "extrinsic": "calibration-free is better on accuracy"}
    # one part per series: an average of tasks and MMLU are decided apart, never pooled
    jobs = [(kind, series) for kind in claims
            for series in (sorted({p["series"] for p in points(rows, kind)}) or [""])]
    for kind, series in jobs:
        several = sum(k == kind for k, _ in jobs) > 1
        claim = claims[kind] + (f" ({series})" if several else "")
        if "based" not in cals or "free" not in cals:
            reason = "no calibration-based method" if "based" not in cals else "no calibration-free method"
            parts.append(Part(claim, "undetermined", reason, reason=reason))
            continue
        pts = [p for p in points(rows, kind) if p["series"] == series or not series]
        matched = _matched_differences(pts, _original_sizes(rows))
        if not matched:
            parts.append(Part(claim, "undetermined", f"no {kind} results where both kinds reach the same size",
                              reason=f"the two kinds' {SIZE_MEASURE} do not overlap at any model and D"))
            continue
        diffs = {k: v["difference"] for k, v in matched.items()}
        l0_se: dict[str, float] = {}
        for series in {k[4] for k in matched}:
            l0_se |= l0_errors(rows, series)
        m, lo, hi = bootstrap_mean(list(diffs.values()), seed, clusters=[v["cluster"] for v in matched.values()],
                                   models=[k[0] for k in matched], l0_rel_se=l0_se)
        ev[f"{kind}_matched" + (f":{series}" if several else "")] = {"size_measure": SIZE_MEASURE, "pairs": [
            {"model": k[0], "r": k[1], "rft_dataset": k[2], "D": k[3], "series": k[4], **v} for k, v in matched.items()]}
        by_rft = {}
        for label, test in (("without_rft", lambda d: d == 0), ("with_rft", lambda d: d > 0)):
            keys = [k for k in diffs if test(k[3])]
            if keys:
                by_rft[label] = dict(zip(("mean", "low", "high"), bootstrap_mean(
                    [diffs[k] for k in keys], seed, clusters=[matched[k]["cluster"] for k in keys]), strict=True)) | {
                    "cells": len(keys)}
        verdict = side(lo, hi, +1)
        unit = "loss" if kind == "intrinsic" else "accuracy"
        series = sorted({k[4] for k in matched})
        summary = (f"(free − based) in {unit} relative to the unpruned model, at matched {SIZE_MEASURE} and equal D "
                   f"(the calibration-based curve interpolated at each calibration-free variant's size): {m:+.3f} "
                   f"[{lo:+.3f}, {hi:+.3f}] over {len(diffs)} variant(s) of {', '.join(series)}")
        for label, v in by_rft.items():
            summary += f"; {label.replace('_', ' ')} {v['mean']:+.3f}"
        reason = "" if verdict != "undetermined" else "the difference's interval includes 0"
        parts.append(Part(claim, verdict, summary, {"mean": m, "ci": [lo, hi], "cells": len(diffs), **by_rft},
                          reason))
    ev["by_calibration"] = _calibration_laws(rows)
    return Answer.of("rq5", parts, ci=CLUSTER_CI + f"; differences at matched {SIZE_MEASURE}, equal model, RFT data "
                                       "and D", **ev)


def _matched_differences(pts: Sequence[dict[str, Any]], originals: dict[str, float]) -> dict[tuple, dict[str, Any]]:
    """For each calibration-free variant, the calibration-based curve of the same model, RFT
    data, D and series interpolated (linearly, never extrapolated) at its size: the
    difference free − based in L/L0."""
    curves: dict[tuple, list[tuple[float, float]]] = {}
    for p in pts:
        size = size_of(p, originals)
        if p["calibration"] == "based" and size:
            curves.setdefault((p["model"], p["rft_dataset"], p["D"], p["series"]), []).append(
                (size, p["value"] / p["L0"]))
    out: dict[tuple, dict[str, Any]] = {}
    for p in pts:
        size = size_of(p, originals)
        curve = sorted(curves.get((p["model"], p["rft_dataset"], p["D"], p["series"]), []))
        if p["calibration"] != "free" or not size or len(curve) < 2 or not curve[0][0] <= size <= curve[-1][0]:
            continue
        for (x0, y0), (x1, y1) in itertools.pairwise(curve):
            if x0 <= size <= x1:
                based = y0 if x1 == x0 else y0 + (y1 - y0) * (size - x0) / (x1 - x0)
                out[(p["model"], p["ratio"], p["rft_dataset"], p["D"], p["series"])] = {
                    "difference": p["value"] / p["L0"] - based, "size": size, "cluster": cluster(p)}
                break
    return out


def _calibration_laws(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """β and γ of eq. 1 per calibration kind (the paper's Table 3)."""
    from lawlab.fit import LawFitError, fit_law

    out: dict[str, Any] = {}
    for kind in ("intrinsic", "extrinsic"):
        pts = points(rows, kind)
        for cal in sorted({p["calibration"] for p in pts if p["calibration"]}):
            try:
                fit = fit_law("compression-law", [p for p in pts if p["calibration"] == cal], metric_kind=kind)
                out[f"{kind}:{cal}"] = {n: fit.theta[n] for n in ("beta", "gamma")}
            except LawFitError as exc:
                out[f"{kind}:{cal}"] = {"skipped": str(exc)}
    return out


# --------------------------------------------------------------------------- laws


def laws(rows: Sequence[dict[str, Any]], seed: int = 0) -> Answer:
    from lawlab.fit import compare_forms, law_rows

    parts, ev = [], {}
    for kind, main in (("intrinsic", "compression-law"), ("extrinsic", "compression-law"), ("runtime", "runtime-law")):
        selected = [r for r in law_rows(rows, kind) if r["value"] is not None and r["L0"] is not None]
        name = f"{main} on {kind}: feasible signs"
        if not selected:
            parts.append(Part(name, "undetermined", f"no {kind} results", reason=f"no {kind} results"))
            continue
        n_models = len({r["model"] for r in selected})
        rank = "leave-one-model-out" if n_models >= 2 else "leave-one-ratio-out"
        table = compare_forms(selected, COMPARED_FORMS[kind], metric_kind=kind, rank_by=rank, seed=seed)
        ranking = []
        for row in table.rows:
            f = row.fit
            ranking.append({"form": row.form, "loo_rmse": row.cv.get(rank, {}).get("rmse"),
                            "r2_adj_centred": row.r2_centred_adj, "feasible": not f.feasibility,
                            "skipped": f.skipped, "theta": f.theta if not f.skipped else None})
        fitted = [x for x in ranking if not x["skipped"]]
        ev[kind] = {"ranked_by": rank, "forms": ranking, "best": fitted[0]["form"] if fitted else None}
        mine = next((x for x in ranking if x["form"] == main), None)
        if mine is None or mine["skipped"]:
            reason = mine["skipped"] if mine else f"{main} is not registered"
            parts.append(Part(name, "undetermined", f"{main} could not be fitted", reason=reason))
            continue
        fit = next(r.fit for r in table.rows if r.form == main)
        verdict, reason, quality = _law_verdict(fit, mine["feasible"])
        coefs = ", ".join(f"{p.name} = {p.value:.3g} [{p.ci[0]:.3g}, {p.ci[1]:.3g}]" if p.ci else
                          f"{p.name} = {p.value:.3g}" for p in fit.params)
        best = fitted[0]
        summary = f"{quality}; {coefs}; best form by {rank} RMSE: {best['form']} ({_g(best['loo_rmse'])}" + (
            ")" if best["form"] == main else f"; {main} {_g(mine['loo_rmse'])})")
        parts.append(Part(name, verdict, summary, {"theta": mine["theta"], "r2_centred_adj": fit.r2_centred_adj,
                                                   "r2_beyond_L0": fit.r2_beyond_L0, "heldout": fit.heldout,
                                                   "interval": fit.cov_type}, reason))
    return Answer.of("laws", parts, ci="coefficients by OLS with cluster-robust (CR1, t on G − 1 df) 95% intervals; "
                                       "held-out errors leave one model out (one ratio with one model)", **ev)


def _law_verdict(fit: Any, feasible: bool) -> tuple[str, str, str]:
    """Eq. 1 is consistent with the data only when its signs are feasible *and* it predicts
    held-out results better than "no change" (L = L0). A sign is inconsistent only when its
    interval excludes the feasible side; a law that does not beat the null is undetermined
    (the data show no effect of r and D for it to describe)."""
    h = fit.heldout or {}
    quality = (f"centred adj. R² {_g3(fit.r2_centred_adj)}, R² beyond L0 {_g3(fit.r2_beyond_L0)}; held-out "
               f"({h.get('scheme', 'none')}) log RMSE {_g3(h.get('rmse_log'))} vs {_g3(h.get('null_rmse_log'))} "
               f"for L = L0")
    if not feasible:
        sure = [p.name for p in fit.params if p.name in {"beta", "gamma"} and p.ci
                and any(p.name in v for v in fit.feasibility) and (p.ci[0] > 0 or p.ci[1] < 0)]
        if sure:
            return "inconsistent", "; ".join(fit.feasibility), quality
        return "undetermined", "infeasible signs whose intervals include 0: " + "; ".join(fit.feasibility), quality
    if h.get("rmse_log") is None:
        return "undetermined", "no held-out error (too few models or ratios to hold one out)", quality
    if not h.get("beats_null"):
        return ("undetermined", f"feasible signs, but held out it predicts worse than no change (log RMSE "
                f"{h['rmse_log']:.3g} vs {h['null_rmse_log']:.3g}): nothing beyond L0 is described", quality)
    return "consistent", "", quality


def _g3(v: float | None) -> str:
    return "-" if v is None else f"{v:.3g}"


def _g(v: float | None) -> str:
    return "no held-out error: too few rows per fold" if v is None else f"{v:.4g}"


# --------------------------------------------------------------------------- the stage

STEPS: dict[str, Callable[..., Answer]] = {"rq1": rq1, "rq2": rq2, "rq3": rq3, "rq4": rq4, "rq5": rq5, "laws": laws}


def findings(rows: Sequence[dict[str, Any]], *, source: str = "", seed: int = 0) -> Findings:
    """Answer every question from tidy result rows (``load_table`` or a results CSV)."""
    import warnings

    clean, chance = chance_rule([_clean(r) for r in rows])
    notes = []
    if chance["left_out"]:
        notes.append("left out as not above chance on the unpruned model (one-sided binomial test, p ≥ "
                     f"{ALPHA}): " + ", ".join(chance["left_out"]))
    if not any(r["method"] for r in clean):
        notes.append("no compressed variant in the results: every question is undetermined")
    # the paper's questions are about pruning: quantised (hybrid) variants answer "composition"
    pruning = [r for r in clean if not r.get("quant")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fits warn about nominal ratios; the answers say what they used
        answers = {key: step(pruning, seed) for key, step in STEPS.items()}
    if len(pruning) < len(clean):
        from lawlab.composition import composition

        answers["composition"] = composition(clean, seed)
    result = Findings(source, answers, notes)
    result.chance = chance
    return result


def study_findings(source: str | Path, *, seed: int = 0) -> Findings:
    """The findings of a study folder or a results CSV."""
    return findings(read_rows(source), source=str(source), seed=seed)
