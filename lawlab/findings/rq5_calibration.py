"""RQ5: calibration-based pruning is better on loss, calibration-free on accuracy, compared
at matched size."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from lawlab.findings.answers import CLUSTER_CI, Answer, Part
from lawlab.findings.rows import SIZE_MEASURE, cluster, l0_errors, original_sizes, points, size_of
from lawlab.findings.stats import bootstrap_mean, side

if TYPE_CHECKING:  # pragma: no cover
    from lawlab.analysis import FitBook


def rq5(rows: Sequence[dict[str, Any]], seed: int = 0, book: FitBook | None = None) -> Answer:
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
        matched = _matched_differences(pts, original_sizes(rows))
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
    ev["by_calibration"] = _calibration_laws(rows, book)
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


def _calibration_laws(rows: Sequence[dict[str, Any]], book: FitBook | None = None) -> dict[str, Any]:
    """β and γ of eq. 1 per calibration kind (the paper's Table 3)."""
    from lawlab.analysis import FitBook
    from lawlab.laws.forms import LawFitError, main_law

    book = book or FitBook()

    out: dict[str, Any] = {}
    for kind in ("intrinsic", "extrinsic"):
        pts = points(rows, kind)
        for cal in sorted({p["calibration"] for p in pts if p["calibration"]}):
            try:
                fit = book.fit(main_law(kind), [p for p in pts if p["calibration"] == cal], metric_kind=kind,
                               group={"by": "calibration", "value": cal})
                out[f"{kind}:{cal}"] = {n: fit.theta[n] for n in ("beta", "gamma")}
            except LawFitError as exc:
                out[f"{kind}:{cal}"] = {"skipped": str(exc)}
    return out
