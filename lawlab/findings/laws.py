"""The laws: eq. 1 with feasible signs that beats "no change" held out, and the runtime law."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from lawlab.findings.answers import Answer, Part

if TYPE_CHECKING:  # pragma: no cover
    from lawlab.analysis import FitBook
    from lawlab.laws.compare import ComparisonTable


def laws(rows: Sequence[dict[str, Any]], seed: int = 0, book: FitBook | None = None,
         comparisons: dict[str, ComparisonTable] | None = None) -> Answer:
    """The law of each metric kind (the form that declares itself the law) against the
    study's one form comparison (``comparisons``; computed here from ``rows`` when not given),
    its verdict on the study's own pooled fit of that law where there is one."""
    from lawlab.laws.compare import compare_study
    from lawlab.laws.forms import LawFitError, main_law
    from lawlab.registry import get_registry

    if comparisons is None:
        comparisons = compare_study(rows, [], get_registry(), seed=seed)
    spec_fits = book.made if book is not None else []
    parts, ev = [], {}
    for kind in ("intrinsic", "extrinsic", "runtime"):
        try:
            main = main_law(kind)
        except LawFitError as exc:
            parts.append(Part(f"the law of {kind} results", "undetermined", str(exc), reason=str(exc)))
            continue
        name = f"{main} on {kind}: feasible signs"
        table = comparisons.get(kind)
        if table is None:
            parts.append(Part(name, "undetermined", f"no {kind} results", reason=f"no {kind} results"))
            continue
        rank = table.rank_by
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
        # the study's own pooled fit of the law (its interval as the spec asked), else the comparison's
        fit = next((f for f in spec_fits if f.form == main and f.metric_kind == kind
                    and f.group.get("by") == "pooled" and f.heldout), None) \
            or next(r.fit for r in table.rows if r.form == main)
        feasible = not fit.feasibility
        verdict, reason, quality = _law_verdict(fit, feasible)
        coefs = ", ".join(f"{p.name} = {p.value:.3g} [{p.ci[0]:.3g}, {p.ci[1]:.3g}]" if p.ci else
                          f"{p.name} = {p.value:.3g}" for p in fit.params)
        best = fitted[0]
        summary = f"{quality}; {coefs}; best form by {rank} RMSE: {best['form']} ({_g(best['loo_rmse'])}" + (
            ")" if best["form"] == main else f"; {main} {_g(mine['loo_rmse'])})")
        parts.append(Part(name, verdict, summary, {"theta": fit.theta, "r2_centred_adj": fit.r2_centred_adj,
                                                   "r2_beyond_L0": fit.r2_beyond_L0, "heldout": fit.heldout,
                                                   "interval": fit.cov_type, "law": fit.law or None}, reason))
    ev["two_step"], notes = _two_step(rows)
    return Answer.of("laws", parts, notes=notes,
                     ci="coefficients by OLS with cluster-robust (CR1, t on G − 1 df) 95% intervals; "
                        "held-out errors leave one model out (one ratio with one model)", **ev)


def _two_step(rows: Sequence[dict[str, Any]]) -> tuple[dict[str, Any], list[str]]:
    """Per series with task loss: accuracy predicted through task loss (eq. 1 on task loss,
    then a sigmoid link), against eq. 1 on accuracy and against no change, by held-out error
    (lawlab.laws.tasklink; Bhagia et al. 2024's two steps, with compression for compute)."""
    from lawlab.findings.rows import above_chance_tasks
    from lawlab.laws.forms import main_law
    from lawlab.laws.tasklink import compare_two_step

    out: dict[str, Any] = {}
    notes = []
    at_chance = {k for k, t in above_chance_tasks(rows).items() if not t["above"]}  # they measure nothing
    for dataset in sorted({r["dataset"] for r in rows if r.get("metric") == "task_loss"}):
        mine = [r for r in rows if r["dataset"] == dataset and r.get("metric") in ("task_loss", "accuracy")
                and (r["model"], r["evaluator"], dataset) not in at_chance]
        if not mine:
            continue
        cmp = compare_two_step(mine, main_law("extrinsic"), dataset)
        out[dataset] = cmp.to_dict()
        notes.append(f"accuracy through task loss ({dataset}): {cmp.summary()}")
    return out, notes


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
