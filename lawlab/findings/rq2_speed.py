"""RQ2: runtime falls as a power law in (1+r), by 24-35% at r = 0.5-0.9, and bigger models
gain more."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from lawlab.findings.answers import CELL_CI, Answer, Part, pct
from lawlab.findings.rows import param_counts, points
from lawlab.findings.stats import ALPHA, bootstrap_mean, side

if TYPE_CHECKING:  # pragma: no cover
    from lawlab.analysis import FitBook


def rq2(rows: Sequence[dict[str, Any]], seed: int = 0, book: FitBook | None = None) -> Answer:
    from lawlab.analysis import FitBook
    from lawlab.laws.forms import LawFitError, main_law

    book = book or FitBook()

    pts = [p for p in points(rows, "runtime") if p["D"] == 0]
    if not pts:
        part = Part("runtime falls with r", "undetermined", "no runtime results", reason="no runtime results")
        return Answer.of("rq2", [part])
    metric = sorted({p["metric"] for p in pts})
    cells = []
    for p in pts:
        rel = p["value"] / p["L0"]
        ci = p["details"].get("ci") if p["details"].get("paired") else None
        cells.append({"model": p["model"], "method": p["method"], "r": p["ratio"], "time_ratio": rel,
                      "reduction": 1 - rel, "reduction_ci": [1 - ci[1], 1 - ci[0]] if ci else None})
    top = max(cells, key=lambda c: c["reduction"])
    betas: dict[str, dict[str, Any]] = {}
    for model in sorted({p["model"] for p in pts}):
        try:
            fit = book.fit(main_law("runtime"), [p for p in pts if p["model"] == model], metric_kind="runtime",
                           group={"by": "model", "value": model})
        except LawFitError as exc:
            betas[model] = {"skipped": str(exc)}
            continue
        b = fit["beta"]
        betas[model] = {"beta": b.value, "stderr": b.stderr, "ci": list(b.ci) if b.ci else None, "n": fit.n,
                        "df": fit.df_inference}
    parts = [_falls(betas), _small_model_range(cells, seed), _bigger_gain_more(betas, param_counts(rows))]
    ev = {"measure": metric, "cells": cells, "largest": top, "beta": betas,
          "paper": {"reduction_r_0.5_0.9_small": [0.24, 0.35], "reduction_large": 0.60}}
    paired = any(p["details"].get("paired") for p in pts)
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
        f"{m}: {pct(p['mean'], *p['ci'])} ({p['verdict']})" for m, p in per_model.items()) + " (paper: 24-35%)"
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
