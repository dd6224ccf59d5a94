"""RQ1: loss rises about quadratically with r, accuracy falls about linearly, and how much
of the extrinsic performance is kept below r = 0.5 with and without RFT."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from lawlab.findings.answers import CLUSTER_CI, Answer, Part, pct
from lawlab.findings.rows import cluster, l0_errors, points, to_float
from lawlab.findings.stats import ALPHA, FEW, bootstrap_mean, curvature, side

if TYPE_CHECKING:  # pragma: no cover
    from lawlab.analysis import FitBook


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
        return "undetermined", f"the quadratic term cannot be told from 0 (c = {c:.3g}, 95% interval ± {half:.2g})"
    if b > 0 and bp < ALPHA:
        return "inconsistent", f"accuracy rises with r (slope {b:.3g}, p = {bp:.2g})"
    if p < ALPHA:
        return "inconsistent", f"curved, not linear: c = {c:.3g}, p = {p:.2g}"
    if b < 0 and bp < ALPHA and abs(c) + half <= abs(b):
        return "consistent", ""
    if not (b < 0 and bp < ALPHA):
        return "undetermined", f"no significant fall (slope {b:.3g}, p = {bp:.2g})"
    return "undetermined", f"falls, but the test could not rule out a curvature of the slope's size (c = {c:.3g}, 95% interval ± {half:.2g})"


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
    n_clusters = len(set(cl.values()))
    if math.isfinite(lo) and (hi - lo) / 2 > 0.03 and n_clusters < FEW:
        # the width is then the spread of a few pruned models: questions cannot narrow it
        ev["power"] = (f"retention is known to ±{(hi - lo) / 2:.1%} from {n_clusters} pruned model(s); more pruned "
                       f"models below r = 0.5 (ratios, methods or seeds; {FEW} or more) would narrow it, more "
                       "questions alone would not")
    elif math.isfinite(lo) and (hi - lo) / 2 > 0.03:
        ev["power"] = (f"retention is known to ±{(hi - lo) / 2:.1%}; about "
                       f"{_questions_for_retention(rows, (hi - lo) / 2, 0.03)} questions a task would give ±3 points, if all of its width is question noise")
    summary = f"retention without RFT {pct(m, lo, hi)} (best {max(without.values()):.0%}; paper 57%)"
    normalised = _chance_normalised(low, cl, l0_se, seed)
    if normalised is not None:
        ev["without_rft_chance_normalised"] = normalised
        summary += (f"; above chance, (A − c)/(A0 − c): {pct(normalised['mean'], *normalised['ci'])}")
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
    summary += f"; with RFT {pct(m2, lo2, hi2)} (best {max(with_rft.values()):.0%}; paper 84%)"
    if common:
        summary += f"; gain {pct(d, dlo, dhi)} over {len(common)} cell(s)"
    verdict = side(dlo, dhi, +1)
    reason = "" if verdict != "undetermined" else "the gain's interval includes 0"
    if ev.get("power"):  # once: in the reason when it is why nothing is decided, else in the summary
        if reason:
            reason += f"; {ev['power']}"
        else:
            summary += f" ({ev['power']})"
    return Part(name, verdict, summary, ev, reason)


def _chance_normalised(low: Sequence[dict[str, Any]], clusters: dict[Any, str], l0_se: dict[str, float],
                       seed: int) -> dict[str, Any] | None:
    """Retention of what is above chance, (A − c)/(A0 − c), without RFT: the share of the
    unpruned model's margin over guessing that the pruned model keeps. L0's relative error is
    scaled to the margin (A0 / (A0 − c))."""
    values, keys, scale = [], [], {}
    for p in low:
        c = to_float(p["details"].get("chance"))
        if p["D"] != 0 or c is None or p["L0"] <= c:
            continue
        values.append((p["value"] - c) / (p["L0"] - c))
        keys.append((p["model"], p["method"], p["ratio"], p["series"]))
        scale[p["model"]] = p["L0"] / (p["L0"] - c)
    if not values:
        return None
    se = {m: s * scale[m] for m, s in l0_se.items() if m in scale}
    m, lo, hi = bootstrap_mean(values, seed, clusters=[clusters.get(k, str(k)) for k in keys],
                               models=[k[0] for k in keys], l0_rel_se=se)
    return {"mean": m, "ci": [lo, hi], "cells": len(values)}


def _questions_for_retention(rows: Sequence[dict[str, Any]], now: float, target: float) -> int:
    """Questions a task for a retention interval of ±target, scaling the questions the study
    used (the largest ``n`` recorded) by (now / target)²: a binomial error falls as 1/√n."""
    ns = [int(r["details"]["n"]) for r in rows if r["kind"] == "extrinsic" and r["details"].get("n")]
    n = max(ns) if ns else 30
    return math.ceil(n * (now / target) ** 2)


def rq1(rows: Sequence[dict[str, Any]], seed: int = 0, book: FitBook | None = None) -> Answer:
    parts = [_shape_part(rows, "intrinsic"), _shape_part(rows, "extrinsic"), *_retentions(rows, seed)]
    return Answer.of("rq1", parts, ci=f"curvature: t test of the r² term in a quadratic least-squares fit per "
                                      f"curve; retention: {CLUSTER_CI}")
