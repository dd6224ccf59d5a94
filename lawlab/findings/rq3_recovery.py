"""RQ3: RFT recovers intrinsic performance more than extrinsic, and r_crit(σ) per model."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from lawlab.findings.answers import CELL_CI, SIGMA, Answer, Part, pct
from lawlab.findings.rows import points
from lawlab.findings.stats import bootstrap_mean, side

if TYPE_CHECKING:  # pragma: no cover
    from lawlab.analysis import FitBook


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


def rq3(rows: Sequence[dict[str, Any]], seed: int = 0, book: FitBook | None = None,
        sigma: dict[str, float] | None = None) -> Answer:
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
        summary = (f"intrinsic improvement {pct(i['mean'], *i['ci'])} (best {i['best']:.0%}; paper up to 55-63%), "
                   f"extrinsic {pct(e['mean'], *e['ci'])} (best {e['best']:.0%}; paper about 14%); "
                   f"difference over {len(common)} paired cell(s) {pct(d, lo, hi)}")
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
    from lawlab.laws.critical import CriticalRangeError, r_crit_from_fit
    from lawlab.laws.fit import fit_law
    from lawlab.laws.forms import LawFitError, main_law

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
                    fit = fit_law(main_law(kind), mine, metric_kind=kind, bootstrap=200, seed=0)
                    entry |= {"beta": fit.theta["beta"], "gamma": fit.theta["gamma"]}
                    iv = r_crit_from_fit(fit, s)
                    entry |= {"r_crit": iv.value, "ci": [iv.low, iv.high] if iv.low is not None else None}
                except (LawFitError, CriticalRangeError) as exc:
                    entry["reason"] = str(exc)
            out[f"{kind}:{model}"] = entry
    return out
