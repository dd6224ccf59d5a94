"""The statistics a finding stands on: intervals that respect the study's design, tests
that know their power, and accuracy measured against chance.

A study's cells are not independent draws. The D cells of one pruned model (model, method,
r, seed) share that pruned model: a *cluster*. Every cell of a model divides by the same
measured L0, itself noisy. So an interval over cells resamples clusters, not cells, and
draws each model's L0 from its own standard error where one was recorded
(:func:`cluster_mean`). With one value per cluster and no L0 error the plain BCa interval
of scipy is used (it covers better than a percentile interval at 5-30 values).

Accuracy is binomial: a task whose unpruned model is not above its chance level measures
nothing, and :func:`above_chance` says so; :func:`questions_for` says how many questions a
standard error needs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

LEVEL = 0.95
N_BOOT = 2000


@dataclass(frozen=True)
class Interval:
    """A mean (or difference) with its interval and how the interval was made."""

    value: float
    low: float
    high: float
    n: int  # values
    clusters: int
    method: str  # "BCa bootstrap over cells", "cluster bootstrap with L0 draws", ...

    @property
    def finite(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)

    @property
    def halfwidth(self) -> float:
        return (self.high - self.low) / 2 if self.finite else math.inf


def bca_mean(values: Sequence[float], seed: int = 0, n_boot: int = N_BOOT) -> Interval:
    """The mean with scipy's BCa bootstrap interval (percentile where BCa is degenerate)."""
    import numpy as np
    from scipy import stats

    x = np.asarray(values, float)
    m = float(x.mean()) if len(x) else math.nan
    if len(x) < 2 or np.ptp(x) == 0:
        lo = hi = m if len(x) >= 2 else math.nan
        return Interval(m, lo, hi, len(x), len(x), "no spread: a point")
    res = stats.bootstrap((x,), np.mean, confidence_level=LEVEL, n_resamples=n_boot, method="BCa",
                          random_state=np.random.default_rng(seed))
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        lo, hi = (float(q) for q in np.quantile(res.bootstrap_distribution, [(1 - LEVEL) / 2, (1 + LEVEL) / 2]))
    return Interval(m, lo, hi, len(x), len(x), f"{LEVEL:.0%} BCa bootstrap over cells ({n_boot} resamples)")


def cluster_mean(
    values: Sequence[float],
    clusters: Sequence[str],
    *,
    models: Sequence[str] | None = None,
    l0_rel_se: Mapping[str, float] | None = None,
    seed: int = 0,
    n_boot: int = N_BOOT,
) -> Interval:
    """The mean of ``values`` with an interval that resamples whole clusters and, when
    ``l0_rel_se`` gives a model's relative L0 error, divides that model's values by a draw
    of (1 + δ), δ ~ N(0, se/L0): the values are then ratios to L0 (retention, L/L0)."""
    import numpy as np

    x = np.asarray(values, float)
    labels = list(clusters)
    if len(x) != len(labels):
        raise ValueError("values and clusters differ in length")
    noisy = {m: s for m, s in (l0_rel_se or {}).items() if s and s > 0}
    if models is not None and noisy:
        model_of = list(models)
    else:
        model_of, noisy = [], {}
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(labels):
        groups.setdefault(c, []).append(i)
    if not noisy and all(len(g) == 1 for g in groups.values()):
        return bca_mean(list(x), seed, n_boot)
    m = float(x.mean()) if len(x) else math.nan
    if len(groups) < 2:
        return Interval(m, math.nan, math.nan, len(x), len(groups), "one cluster: no interval")
    rng = np.random.default_rng(seed)
    members = list(groups.values())
    names = sorted(noisy)
    draws = np.empty(n_boot)
    for b in range(n_boot):
        idx = np.concatenate([members[k] for k in rng.integers(0, len(members), len(members))])
        v = x[idx]
        if names:
            factor = {n: 1 + rng.normal(0, noisy[n]) for n in names}
            v = v / np.array([factor.get(model_of[i], 1.0) for i in idx])
        draws[b] = v.mean()
    lo, hi = np.quantile(draws, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    how = f"{LEVEL:.0%} percentile bootstrap over {len(groups)} clusters (pruned models: model, method, r, seed)"
    if names:
        how += ", each model's L0 drawn from its standard error"
    return Interval(m, float(lo), float(hi), len(x), len(groups), how + f" ({n_boot} resamples)")


def side(iv: Interval, expected: int) -> str:
    """The verdict for an interval against a claimed sign (+1: above 0, −1: below)."""
    if not iv.finite:
        return "undetermined"
    if (iv.low > 0 and expected > 0) or (iv.high < 0 and expected < 0):
        return "consistent"
    if (iv.high < 0 and expected > 0) or (iv.low > 0 and expected < 0):
        return "inconsistent"
    return "undetermined"


def above_chance(acc: float, chance: float, *, n: int | None = None, stderr: float | None = None) -> float:
    """One-sided p value that an accuracy measured on ``n`` questions (or with ``stderr``)
    is above its chance level, by the binomial's normal approximation at chance."""
    from scipy import stats

    if n:
        se = math.sqrt(chance * (1 - chance) / n)
    elif stderr:
        se = stderr
    else:
        return math.nan
    return float(stats.norm.sf((acc - chance) / se)) if se > 0 else (0.0 if acc > chance else 1.0)


def questions_for(se: float, acc: float) -> int:
    """Questions a task needs for a binomial standard error ``se`` at accuracy ``acc``."""
    return math.ceil(acc * (1 - acc) / se**2)


def detectable(se: float, power: float = 0.8) -> float:
    """The smallest effect a two-sided test at 1 − LEVEL detects with ``power``, given its
    standard error (normal approximation): (z_{α/2} + z_power) · se."""
    from scipy import stats

    return float((stats.norm.ppf(1 - (1 - LEVEL) / 2) + stats.norm.ppf(power)) * se)
