"""RQ4: at a similar size, compressing a smaller model less beats compressing a larger one
more: measured at matched size, with the law's prediction beside it."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from lawlab.findings.answers import CLUSTER_CI, Answer, Part
from lawlab.findings.rows import (
    MATCH_TOLERANCE,
    SIZE_MEASURE,
    cluster,
    original_sizes,
    param_counts,
    points,
    size_of,
)
from lawlab.findings.stats import bootstrap_mean, side

if TYPE_CHECKING:  # pragma: no cover
    from lawlab.analysis import FitBook


def rq4(rows: Sequence[dict[str, Any]], seed: int = 0, book: FitBook | None = None) -> Answer:
    """Measured, at matched size: every pair of variants of two models, by the same method,
    whose non-embedding parameters kept are within 10% of each other (same D), the smaller
    model's accuracy minus the larger's. The law's prediction at budgets between the sizes is evidence, marked as such."""
    name = "a smaller model at a lower ratio wins"
    predicted = _rq4_predicted(rows, seed, book)
    pts = [r for r in rows if r["kind"] == "extrinsic" and r.get("law_input", True) and r["value"] is not None]
    if pts:
        counts: dict[str, int] = {}
        for p in pts:
            counts[p["series"]] = counts.get(p["series"], 0) + 1
        main = max(counts, key=lambda k: counts[k])
        pts = [p for p in pts if p["series"] == main]
    originals = original_sizes(rows)
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


def _rq4_predicted(rows: Sequence[dict[str, Any]], seed: int = 0, book: FitBook | None = None) -> Answer:
    from lawlab.analysis import FitBook
    from lawlab.laws.critical import CriticalRangeError, best_configuration
    from lawlab.laws.forms import LawFitError, main_law

    book = book or FitBook()

    name = "a smaller model at a lower ratio wins"
    params = param_counts(rows)
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
                fits[model] = book.fit(main_law("extrinsic"), [p for p in mine if p["model"] == model],
                                       metric_kind="extrinsic", group={"by": "model", "value": model})
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
