"""The statistics a finding stands on: intervals that respect the study's design, tests
that know their power, and accuracy measured against chance.

A study's cells are not independent draws. The D cells of one pruned model (model, method,
r, seed) share that pruned model: a *cluster*. Every cell of a model divides by the same
measured L0, itself noisy. So an interval over cells resamples clusters, not cells, and
draws each model's L0 from its own standard error where one was recorded
(:func:`cluster_mean`). With one value per cluster and no L0 error the plain BCa interval
of scipy is used (it covers better than a percentile interval at 5-30 values).

A bootstrap over few clusters covers less than it says: over 2 values it spans little more
than their range. Below ``FEW`` clusters an interval is therefore never narrower than
Student's t over the cluster means (G − 1 degrees of freedom, exact for normal noise), so a
mean of 2 or 3 pruned models is honestly wide (:func:`few_clusters`).

Accuracy is binomial: a task whose unpruned model is not above its chance level measures
nothing, and :func:`above_chance` says so; :func:`questions_for` says how many questions a
standard error needs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

LEVEL = 0.95
N_BOOT = 2000
ALPHA = 0.05  # significance level of the curvature tests
FEW = 10  # below this many clusters a bootstrap interval is widened to Student's t at least


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
    return few_clusters(Interval(m, lo, hi, len(x), len(x), f"{LEVEL:.0%} BCa bootstrap over cells ({n_boot} resamples)"),
                        list(x))


def few_clusters(iv: Interval, cluster_means: Sequence[float]) -> Interval:
    """``iv`` widened, where it rests on fewer than ``FEW`` clusters, to Student's t interval
    over the cluster means when that is wider: a bootstrap cannot know the spread of a
    population it has seen two or three members of."""
    import numpy as np
    from scipy import stats

    g = len(cluster_means)
    if g >= FEW or g < 2 or not iv.finite:
        return iv
    half = float(stats.t.ppf((1 + LEVEL) / 2, g - 1) * np.std(cluster_means, ddof=1) / math.sqrt(g))
    lo, hi = min(iv.low, iv.value - half), max(iv.high, iv.value + half)
    if (lo, hi) == (iv.low, iv.high):
        return iv
    return Interval(iv.value, lo, hi, iv.n, iv.clusters,
                    f"{LEVEL:.0%} Student t over {g} cluster means (wider than the bootstrap's with so few)")


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
    iv = Interval(m, float(lo), float(hi), len(x), len(groups), how + f" ({n_boot} resamples)")
    return few_clusters(iv, [float(x[g].mean()) for g in members])


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


def bootstrap_mean(values: Sequence[float], seed: int = 0, n_boot: int = N_BOOT,
                   clusters: Sequence[str] | None = None, models: Sequence[str] | None = None,
                   l0_rel_se: dict[str, float] | None = None) -> tuple[float, float, float]:
    """(mean, low, high): BCa over values, or, given their clusters, a bootstrap over clusters
    (with each model's L0 drawn from its error when ``l0_rel_se`` is given); see lawlab.findings.stats."""
    if clusters is None:
        iv = bca_mean(values, seed, n_boot)
    else:
        iv = cluster_mean(values, clusters, models=models, l0_rel_se=l0_rel_se, seed=seed, n_boot=n_boot)
    return iv.value, iv.low, iv.high


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
