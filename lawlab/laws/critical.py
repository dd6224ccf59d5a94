"""The paper's decision tools: critical compression ratio, minimum RFT size, and which
(model, r, D) a parameter budget should buy.

For eq. 1, L = L0^α (1+r)^β (1 + 1/(D+ε))^γ, and a recovery threshold σ on L / L0^α:

- accuracy (β, γ < 0), σ ∈ (0, 1), target L/L0^α ≥ σ (Theorem 3.1, Corollary 3.2);
- loss (β, γ > 0), σ > 1, target L/L0^α ≤ σ (Appendix D.4).

Both reduce to the same algebra: with φ(r) = [σ (1+r)^−β]^(1/γ) − 1 the target holds iff
1/(D+ε) ≤ φ(r), so the least D is 1/φ − ε (0 when that is negative) and none exists when
φ ≤ 0, i.e. when r ≥ r_crit(σ) = σ^(1/β) − 1. That critical ratio lies inside (0, 1] only
when σ ≥ 2^β (accuracy) or σ ≤ 2^β (loss); otherwise every r can be recovered with enough D.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from lawlab.laws.forms import LEVEL, LawFitError, metric_rule
from lawlab.laws.results import FitResult

Metric = Literal["accuracy", "loss"]


class CriticalRangeError(LawFitError):
    """σ or the coefficients are outside the range where the theorem says anything.

    ``outcome`` says which case it is, so a caller can tell them apart: ``recoverable``
    (every r in (0, 1) reaches σ with enough RFT), ``unreachable`` (no r reaches σ: it
    is on the wrong side of 1 for the metric), ``infeasible`` (β or γ breaks the
    metric's sign rule), ``invalid`` (σ ≤ 0 or not a number, r outside [0, 1)),
    ``no-law`` (the fit has no usable β)."""

    def __init__(self, message: str, outcome: str = "invalid") -> None:
        super().__init__(message)
        self.outcome = outcome


def check_signs(metric: str, beta: float, gamma: float | None = None) -> str:
    rule = metric_rule(metric)
    want = -1 if rule == "accuracy" else 1
    for name, v in (("beta", beta), ("gamma", gamma)):
        if v is not None and (not math.isfinite(v) or v * want <= 0):
            raise CriticalRangeError(
                f"{name} = {v:g} breaks the {rule} feasibility condition ({name} {'<' if want < 0 else '>'} 0), "
                f"which Theorem 3.1 assumes; the critical ratio is undefined for this law", "infeasible"
            )
    return rule


def _check_sigma(rule: str, sigma: float) -> None:
    if not (math.isfinite(sigma) and sigma > 0):
        raise CriticalRangeError(f"σ = {sigma:g}: a recovery threshold is a ratio L/L0^α, so it must be > 0")
    # At r = 0 with unlimited RFT the law gives L = L0^α (σ = 1): an accuracy never rises
    # above it and a loss never falls below it, so a σ past 1 is reached by no ratio.
    if rule == "accuracy" and sigma >= 1:
        raise CriticalRangeError(f"σ = {sigma:g} is on the wrong side for accuracy: no r reaches it (accuracy "
                                 "recovers at most to L0^α, σ = 1); an accuracy threshold is in (0, 1)", "unreachable")
    if rule == "loss" and sigma <= 1:
        raise CriticalRangeError(f"σ = {sigma:g} is on the wrong side for a loss: no r reaches it (a loss recovers "
                                 "at most to L0^α, σ = 1); a loss threshold is > 1", "unreachable")


def recoverable_everywhere(beta: float, sigma: float, metric: str = "accuracy") -> bool:
    """True when every r in (0, 1) reaches σ with enough RFT: σ < 2^β (accuracy) or σ > 2^β (loss)."""
    rule = check_signs(metric, beta)
    _check_sigma(rule, sigma)
    return sigma < 2**beta if rule == "accuracy" else sigma > 2**beta


def r_crit(beta: float, sigma: float, metric: str = "accuracy") -> float:
    """r_crit(σ) = σ^(1/β) − 1, the ratio from which no RFT reaches the threshold σ.

    Raises :class:`CriticalRangeError` when σ is outside its range, when β breaks the
    sign rule, or when σ is on the side of 2^β where no critical ratio exists."""
    rule = check_signs(metric, beta)
    _check_sigma(rule, sigma)
    if recoverable_everywhere(beta, sigma, rule):
        side = "<" if rule == "accuracy" else ">"
        raise CriticalRangeError(
            f"σ = {sigma:g} {side} 2^β = {2**beta:.4g}: every r in (0, 1) can be recovered with enough RFT, "
            "so there is no critical ratio", "recoverable"
        )
    return sigma ** (1 / beta) - 1


def min_rft_samples(
    r: float,
    sigma: float,
    *,
    beta: float,
    gamma: float,
    alpha: float | None = None,
    L0: float | None = None,
    eps: float = 1.0,
    d_unit: float = 1.0,
    metric: str = "accuracy",
) -> float:
    """The least D (in the table's units: samples, times ``d_unit``) that reaches the
    threshold at ratio r, by Theorem 3.1; ``math.inf`` when no D does (r ≥ r_crit).

    The threshold is on L / L0^α, as in the paper. Give ``alpha`` and ``L0`` to put it on
    L / L0 instead: that is L / L0^α ≥ σ · L0^(1−α)."""
    rule = check_signs(metric, beta, gamma)
    _check_sigma(rule, sigma)
    if not 0 <= r < 1:
        raise CriticalRangeError(f"r = {r:g} is outside [0, 1) (a compression ratio)")
    if (alpha is None) != (L0 is None):
        raise CriticalRangeError("give both alpha and L0 (a threshold on L / L0), or neither (on L / L0^α)")
    if alpha is not None and L0 is not None:
        if L0 <= 0:
            raise CriticalRangeError(f"L0 = {L0:g} must be > 0")
        sigma = sigma * L0 ** (1 - alpha)
    phi = (sigma * (1 + r) ** -beta) ** (1 / gamma) - 1
    if phi <= 0:
        return math.inf
    return max(0.0, 1 / phi - eps) * d_unit


def default_sigmas(beta: float, metric: str = "accuracy", n: int = 9) -> list[float]:
    """A grid of σ across the range where r_crit exists (the x axis of the paper's Fig. 5)."""
    rule = check_signs(metric, beta)
    lo, hi = (2**beta, 0.99) if rule == "accuracy" else (1.01, 2**beta)
    if hi <= lo:
        return []
    return [lo + (hi - lo) * i / (n - 1) for i in range(n)]


# --------------------------------------------------------------------------- from fits


@dataclass
class Interval:
    value: float
    low: float | None = None
    high: float | None = None
    draws: int = 0  # bootstrap draws used
    excluded: int = 0  # draws whose coefficients break the sign rule


def _percentiles(values: Sequence[float]) -> tuple[float, float]:
    import numpy as np

    # No interpolation: values can be infinite (no D recovers) and inf − inf is NaN.
    lo, hi = np.quantile(np.asarray(values, float), [(1 - LEVEL) / 2, 1 - (1 - LEVEL) / 2], method="inverted_cdf")
    return float(lo), float(hi)


def _coefficients(fit: FitResult, names: Sequence[str]) -> None:
    if fit.skipped:
        raise CriticalRangeError(f"the fit of {fit.form} ({fit.group_label}) was skipped: {fit.skipped}")
    if fit.metric_kind == "runtime":
        raise CriticalRangeError(f"{fit.law or fit.form} is a runtime law: a recovery threshold and a critical "
                                 "ratio are defined for loss and accuracy laws only", "no-law")
    missing = [n for n in names if n not in fit.theta]
    if missing:
        raise CriticalRangeError(f"{fit.form} has no {', '.join(missing)}: critical ratios need a law of eq. 1's "
                                 "shape (compression-law, or ablation-r for r_crit alone)", "no-law")


def r_crit_from_fit(fit: FitResult, sigma: float) -> Interval:
    """r_crit(σ) from a fitted law, with a bootstrap percentile interval when the fit has
    draws. A draw for which σ is on the recoverable side counts as r_crit = 1 (no limit)."""
    _coefficients(fit, ["beta"])
    rule = fit.rule
    out = Interval(r_crit(fit.theta["beta"], sigma, rule))
    draws = fit.draws()
    if draws:
        values = []
        for b in draws["beta"]:
            try:
                check_signs(rule, b)
            except CriticalRangeError:
                out.excluded += 1
                continue
            values.append(min(1.0, sigma ** (1 / b) - 1))
        if len(values) >= 2:
            out.low, out.high = _percentiles(values)
            out.draws = len(values)
    return out


def min_rft_from_fit(fit: FitResult, r: float, sigma: float) -> Interval:
    """The least D for (r, σ) from a fitted compression-law, with a bootstrap interval."""
    _coefficients(fit, ["beta", "gamma"])
    eps, unit = fit.options.get("epsilon", 1.0), fit.options.get("d_unit", 1.0)
    th = fit.theta
    out = Interval(min_rft_samples(r, sigma, beta=th["beta"], gamma=th["gamma"], eps=eps, d_unit=unit, metric=fit.rule))
    draws = fit.draws()
    if draws:
        values = []
        for b, g in zip(draws["beta"], draws["gamma"], strict=True):
            try:
                values.append(min_rft_samples(r, sigma, beta=b, gamma=g, eps=eps, d_unit=unit, metric=fit.rule))
            except CriticalRangeError:
                out.excluded += 1
        if len(values) >= 2:
            out.low, out.high = _percentiles(values)
            out.draws = len(values)
    return out


def r_crit_curve(fit_or_beta: FitResult | float, sigmas: Sequence[float] | None = None,
                 metric: str = "accuracy") -> list[dict[str, Any]]:
    """r_crit over σ (the paper's Fig. 5): one dict per σ with the value, its interval
    when fitted with a bootstrap, or the reason there is none."""
    fit = fit_or_beta if isinstance(fit_or_beta, FitResult) else None
    beta = fit.theta["beta"] if fit is not None else float(fit_or_beta)  # type: ignore[arg-type]
    rule = fit.rule if fit is not None else metric_rule(metric)
    out = []
    for s in sigmas if sigmas is not None else default_sigmas(beta, rule):
        try:
            iv = r_crit_from_fit(fit, s) if fit is not None else Interval(r_crit(beta, s, rule))
            out.append({"sigma": s, "r_crit": iv.value, "low": iv.low, "high": iv.high, "reason": None,
                        "outcome": "critical"})
        except CriticalRangeError as exc:
            out.append({"sigma": s, "r_crit": None, "low": None, "high": None, "reason": str(exc),
                        "outcome": exc.outcome})
    return out


# --------------------------------------------------------------------------- RQ4


@dataclass
class Candidate:
    model: str
    r: float
    D: float
    params_kept: float
    predicted: float
    low: float | None = None
    high: float | None = None
    meets_target: bool | None = None


@dataclass
class BudgetAnswer:
    """Every configuration within the budget, best first; ``best`` is the first that
    meets the target (or the first, without a target)."""

    budget: float
    target: float | None
    metric: str
    candidates: list[Candidate]
    notes: list[str] = field(default_factory=list)

    @property
    def best(self) -> Candidate | None:
        for c in self.candidates:
            if c.meets_target is not False:
                return c
        return None


def _model_L0(fit: FitResult, model: str) -> float:
    values = {v for m, v in zip(fit.data.get("model", []), fit.data.get("L0", []), strict=False) if m == model}
    if len(values) != 1:
        raise CriticalRangeError(
            f"cannot tell the base value L0 of {model!r} from the fit's rows ({len(values)} distinct values); "
            "pass L0={model: value}"
        )
    return float(values.pop())


def best_configuration(
    fits: dict[str, FitResult],
    param_counts: dict[str, float],
    budget: float,
    *,
    target: float | None = None,
    L0: dict[str, float] | None = None,
    ratios: Sequence[float] | None = None,
    sizes: Sequence[float] | None = None,
    kept_fraction: Callable[[str, float], float] | None = None,
) -> BudgetAnswer:
    """RQ4: within a parameter budget, which (model, r, D) does the law predict is best?

    ``fits`` maps each studied model to its fitted law (a per-model fit, or the same
    pooled fit for all). A model at ratio r keeps ``kept_fraction(model, r)`` of its
    parameters (default 1 − r; nominal ratios of real methods keep more: pass the measured
    fraction). Ratios default to the studied ones plus, per model, the least r that fits
    the budget; sizes default to the studied D (the law is not trusted beyond them)."""
    import numpy as np

    keep = kept_fraction or (lambda model, r: 1 - r)
    rules = {f.rule for f in fits.values()}
    if len(rules) != 1:
        raise CriticalRangeError("the fits mix loss-like and accuracy-like metrics")
    rule = rules.pop()
    sign = 1 if rule == "accuracy" else -1
    notes = []
    candidates = []
    for model, fit in fits.items():
        if fit.skipped:
            notes.append(f"{model}: no fit ({fit.skipped})")
            continue
        if model not in param_counts:
            raise CriticalRangeError(f"no parameter count for {model!r}")
        n_params = float(param_counts[model])
        base = (L0 or {}).get(model)
        base = _model_L0(fit, model) if base is None else base
        rs = sorted(set(ratios if ratios is not None else fit.data.get("r", [])))
        least = 1 - budget / n_params
        if ratios is None and 0 <= least < 1:
            rs = sorted({*rs, round(least, 6)})
        if ratios is None and least < 0:
            rs = sorted({0.0, *rs})
        ds = sorted(set(sizes if sizes is not None else fit.data.get("D", [0.0])))
        for r in rs:
            kept = n_params * keep(model, r)
            if kept > budget:
                continue
            for D in ds:
                pred = float(np.asarray(fit.predict(base, r, D)))
                c = Candidate(model, float(r), float(D), kept, pred)
                draws = fit.draws()
                if draws:
                    form, opts = fit._form, fit._options
                    vals = [float(form.predict(base, r, D, dict(zip(draws, t, strict=True)), opts))
                            for t in zip(*draws.values(), strict=True)]
                    c.low, c.high = _percentiles(vals)
                if target is not None:
                    c.meets_target = pred >= target if rule == "accuracy" else pred <= target
                candidates.append(c)
    candidates.sort(key=lambda c: (c.meets_target is False, -sign * c.predicted))
    if not candidates:
        notes.append(f"no studied model fits a budget of {budget:g} parameters at any ratio considered")
    return BudgetAnswer(budget, target, rule, candidates, notes)
