"""Do compressions compose? Each axis alone predicts the combined cells; the interaction is
what the product misses.

For a hybrid variant C (pruned by a method at r, recovered with D samples, then quantised
with setting q), the axes alone are its pruned variant P (same method, r, D, float weights)
and the quantised unpruned model Q (setting q, r = 0, D = 0); L0 is the unpruned model. The
multiplicative (effective-parameter) hypothesis says the retained fractions multiply,
C / L0 = (P / L0) · (Q / L0), so the interaction of one cell is

    δ = s · [log C − log P − log Q + log L0],

with s = +1 for a loss (higher is worse) and −1 for an accuracy, so δ > 0 always means the
combination is *worse* than the product (super-multiplicative damage), δ < 0 better. The
mean δ gets a bootstrap interval over pruned models (a pruned model's D and q cells are one
cluster, :func:`lawlab.findings.stats.cluster_mean`; over fewer than 10, at least Student's t). Verdict against the multiplicative claim:
consistent when the whole interval lies within ±``margin`` (equivalent to the product),
inconsistent when it excludes 0 and reaches past the margin (worse, or better, than the
product), undetermined otherwise (the interval is too wide to tell).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

MARGIN = 0.01  # |δ| below 1% of the metric counts as "the product", for the equivalence verdict
SIGN = {"intrinsic": 1, "extrinsic": -1}


def base_method(row: dict[str, Any]) -> str:
    """The pruning method of a row whose method label carries its quantisation (wanda-sp+w8a8)."""
    method, quant = row.get("method") or "", row.get("quant") or ""
    return method[: -len(quant) - 1] if quant and method.endswith("+" + quant) else method


def interactions(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per combined cell whose axes alone were measured: its δ and what it rests on."""
    def key(r: dict[str, Any], method: str, ratio: float, d: float, quant: str) -> tuple:
        return (r["model"], r["kind"], r["series"] if "series" in r else r["dataset"], method, ratio, d, quant)

    usable = [r for r in rows if r.get("kind") in SIGN and r.get("law_input", True)
              and r.get("value") is not None and r.get("L0") and r["value"] > 0]
    value = {key(r, base_method(r), float(r["ratio"] or 0), float(r["D"] or 0), r.get("quant") or ""): r["value"]
             for r in usable}
    out = []
    for r in usable:
        quant, ratio, d = r.get("quant") or "", float(r["ratio"] or 0), float(r["D"] or 0)
        method = base_method(r)
        if not quant or not method or ratio == 0:
            continue
        pruned = value.get(key(r, method, ratio, d, ""))
        quantized = value.get(key(r, "", 0.0, 0.0, quant))
        if pruned is None or quantized is None or pruned <= 0 or quantized <= 0:
            continue
        delta = SIGN[r["kind"]] * (math.log(r["value"]) - math.log(pruned) - math.log(quantized) + math.log(r["L0"]))
        out.append({"model": r["model"], "kind": r["kind"], "series": key(r, "", 0, 0, "")[2], "method": method,
                    "ratio": ratio, "D": d, "quant": quant, "value": r["value"], "pruned": pruned,
                    "quantized": quantized, "L0": r["L0"], "predicted": pruned * quantized / r["L0"], "delta": delta,
                    "cluster": f"{r['model']}|{method}|{ratio:g}|{r.get('seed', '')}"})
    return out


def verdict(low: float, high: float, margin: float = MARGIN) -> tuple[str, str]:
    """(verdict against the multiplicative claim, direction)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return "undetermined", "no interval"
    if -margin < low and high < margin:
        return "consistent", "multiplicative"
    if low > 0 and high >= margin:
        return "inconsistent", "worse than the product"
    if high < 0 and low <= -margin:
        return "inconsistent", "better than the product"
    return "undetermined", "interval too wide to tell"


def composition(rows: Sequence[dict[str, Any]], seed: int = 0, margin: float = MARGIN) -> Any:
    """The ``composition`` answer of the findings: one part per metric kind and quantisation
    setting, each with the mean interaction δ and its interval."""
    from lawlab.findings.answers import Answer, Part
    from lawlab.findings.stats import cluster_mean

    cells = interactions(rows)
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for c in cells:
        groups.setdefault((c["kind"], c["quant"]), []).append(c)
    parts, how = [], ""
    for (kind, quant), mine in sorted(groups.items()):
        iv = cluster_mean([c["delta"] for c in mine], [c["cluster"] for c in mine], seed=seed)
        how = how or iv.method
        v, direction = verdict(iv.low, iv.high, margin)
        summary = (f"{kind}, {quant}: interaction δ = {iv.value:+.4f} [{iv.low:+.4f}, {iv.high:+.4f}] over "
                   f"{len(mine)} cells ({direction}; δ > 0 is worse than the product)")
        reason = "" if v == "consistent" else direction
        parts.append(Part(f"{kind} {quant}", v, summary,
                          {"delta": iv.value, "ci": [iv.low, iv.high], "cells": len(mine), "clusters": iv.clusters,
                           "direction": direction, "margin": margin}, reason))
    if not parts:
        parts.append(Part("composition", "undetermined", "no combined cell has both of its axes measured alone",
                          {}, "needs each hybrid's pruned variant and its quantised unpruned model (ratio 0 in the "
                          "pipeline's pruning step)"))
    answer = Answer.of("composition", parts, ci=how, cells=cells)
    return answer
