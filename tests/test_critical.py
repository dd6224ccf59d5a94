"""Critical compression ratio, least RFT size (Theorem 3.1) and the RQ4 budget question."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from lawlab.laws.critical import (
    CriticalRangeError,
    best_configuration,
    default_sigmas,
    min_rft_from_fit,
    min_rft_samples,
    r_crit,
    r_crit_curve,
    r_crit_from_fit,
    recoverable_everywhere,
)
from lawlab.laws.fit import fit_law
from lawlab.laws.simulate import simulate

# LLaMA-3-8B, extrinsic, Table 2 of the paper
ALPHA, BETA, GAMMA = 0.98, -1.18, -0.14


def law_ratio(r, D, beta, gamma, eps=1.0):
    """L / L0^α of eq. 1."""
    return (1 + r) ** beta * (1 + 1 / (D + eps)) ** gamma


def test_paper_llama_3_8b_example():
    assert pytest.approx(0.441, abs=5e-4) == 2**BETA
    assert r_crit(BETA, 0.8) == pytest.approx(0.208, abs=5e-4)
    assert not recoverable_everywhere(BETA, 0.8)
    assert recoverable_everywhere(BETA, 0.4)


def test_r_crit_ranges_are_enforced():
    # each case says which it is: every r recovers, no r reaches σ, β breaks the sign rule, σ is no threshold
    with pytest.raises(CriticalRangeError, match=r"0.3 < 2\^β = 0.4414: every r .* no critical ratio") as exc:
        r_crit(BETA, 0.3)
    assert exc.value.outcome == "recoverable"
    with pytest.raises(CriticalRangeError, match=r"wrong side for accuracy: no r reaches it.* in \(0, 1\)") as exc:
        r_crit(BETA, 1.2)
    assert exc.value.outcome == "unreachable"
    with pytest.raises(CriticalRangeError, match=r"wrong side for a loss: no r reaches it.* > 1") as exc:
        r_crit(1.72, 0.8, "loss")
    assert exc.value.outcome == "unreachable"
    with pytest.raises(CriticalRangeError, match=r"beta = 1.18 breaks the accuracy feasibility condition") as exc:
        r_crit(-BETA, 0.8)
    assert exc.value.outcome == "infeasible"
    with pytest.raises(CriticalRangeError, match=r"must be > 0") as exc:
        r_crit(BETA, -0.5)
    assert exc.value.outcome == "invalid"
    # loss: r_crit exists for σ in (1, 2^β]
    beta = 1.72
    assert r_crit(beta, 2.0, "loss") == pytest.approx(2.0 ** (1 / beta) - 1)
    with pytest.raises(CriticalRangeError, match="no critical ratio"):
        r_crit(beta, 3.5, "loss")  # 3.5 > 2^1.72 ≈ 3.29


@pytest.mark.parametrize(("metric", "beta", "gamma", "sigma"), [("accuracy", BETA, GAMMA, 0.8),
                                                                ("accuracy", -0.6, -0.08, 0.7),
                                                                ("loss", 1.72, 1.16, 2.0)])
def test_least_D_is_exactly_the_boundary_of_the_target(metric, beta, gamma, sigma):
    rc = r_crit(beta, sigma, metric)
    reaches = (lambda v: v >= sigma) if metric == "accuracy" else (lambda v: v <= sigma)
    for r in np.linspace(0.01, min(rc, 0.99) - 1e-3, 6):
        D = min_rft_samples(r, sigma, beta=beta, gamma=gamma, metric=metric)
        assert reaches(law_ratio(r, D, beta, gamma) + (1e-12 if metric == "accuracy" else -1e-12))
        if D > 0:  # and one sample less is not enough
            assert law_ratio(r, D, beta, gamma) == pytest.approx(sigma, rel=1e-9)
            assert not reaches(law_ratio(r, max(D - 1, 0), beta, gamma))
    # at and beyond the critical ratio no D is enough
    assert min_rft_samples(min(rc + 1e-6, 0.999), sigma, beta=beta, gamma=gamma, metric=metric) == math.inf


def test_below_two_to_beta_every_ratio_is_recoverable():
    for r in (0.1, 0.5, 0.9, 0.999):
        D = min_rft_samples(r, 0.43, beta=BETA, gamma=GAMMA)
        assert math.isfinite(D) and law_ratio(r, D, BETA, GAMMA) >= 0.43 - 1e-12


def test_least_D_units_epsilon_and_threshold_on_L_over_L0():
    d = min_rft_samples(0.2, 0.8, beta=BETA, gamma=GAMMA)
    assert d > 10
    assert min_rft_samples(0.2, 0.8, beta=BETA, gamma=GAMMA, eps=2.0) == pytest.approx(d - 1)
    assert min_rft_samples(0.2, 0.8, beta=BETA, gamma=GAMMA, d_unit=1000) == pytest.approx(1000 * d)
    # a threshold on L/L0 is one on L/L0^α of σ·L0^(1−α)
    L0 = 0.6
    direct = min_rft_samples(0.2, 0.8, beta=BETA, gamma=GAMMA, alpha=ALPHA, L0=L0)
    assert direct == pytest.approx(min_rft_samples(0.2, 0.8 * L0 ** (1 - ALPHA), beta=BETA, gamma=GAMMA))
    with pytest.raises(CriticalRangeError, match="give both alpha and L0"):
        min_rft_samples(0.2, 0.8, beta=BETA, gamma=GAMMA, alpha=ALPHA)
    with pytest.raises(CriticalRangeError, match=r"gamma = 0.14 breaks"):
        min_rft_samples(0.2, 0.8, beta=BETA, gamma=-GAMMA)
    with pytest.raises(CriticalRangeError, match=r"r = 1 is outside \[0, 1\)"):
        min_rft_samples(1.0, 0.8, beta=BETA, gamma=GAMMA)


def test_curve_over_sigma():
    sigmas = default_sigmas(BETA)
    assert sigmas[0] == pytest.approx(2**BETA) and sigmas[-1] == pytest.approx(0.99)
    curve = r_crit_curve(BETA, [*sigmas, 0.3])
    values = [p["r_crit"] for p in curve[:-1]]
    assert values[0] == pytest.approx(1.0) and all(a > b for a, b in itertools.pairwise(values))
    assert curve[-1]["r_crit"] is None and "no critical ratio" in curve[-1]["reason"]


@pytest.fixture(scope="module")
def fitted():
    rows = simulate("compression-law", {"alpha": ALPHA, "beta": BETA, "gamma": GAMMA},
                    models={"a": 0.45, "b": 0.55, "c": 0.62, "d": 0.5}, noise=0.02, seed=2)
    return fit_law("compression-law", rows, metric_kind="extrinsic", bootstrap=200, seed=0)


def test_intervals_from_a_bootstrapped_fit(fitted):
    iv = r_crit_from_fit(fitted, 0.8)
    assert iv.value == pytest.approx(r_crit(fitted.theta["beta"], 0.8))
    assert iv.low < iv.value < iv.high and iv.draws == 200
    assert iv.low <= 0.208 <= iv.high  # the truth
    d = min_rft_from_fit(fitted, 0.1, 0.8)
    assert d.low <= d.value <= d.high
    curve = r_crit_curve(fitted, [0.6, 0.8])
    assert all(p["low"] is not None for p in curve)


def test_critical_needs_a_law_with_beta(fitted):
    rows = simulate("ablation-d", {"alpha": 1.0, "gamma": -0.2}, models={"a": 0.45, "b": 0.55}, noise=0.02)
    fit = fit_law("ablation-d", rows, metric_kind="extrinsic")
    with pytest.raises(CriticalRangeError, match="ablation-d has no beta"):
        r_crit_from_fit(fit, 0.8)


def test_best_configuration_within_a_budget():
    theta = {"alpha": ALPHA, "beta": BETA, "gamma": GAMMA}
    models = {"small": 0.50, "large": 0.62}
    rows = simulate("compression-law", theta, models=models, noise=0.0)
    fit = fit_law("compression-law", rows, metric_kind="extrinsic")
    counts = {"small": 1.5e9, "large": 7e9}
    answer = best_configuration({"small": fit, "large": fit}, counts, 3e9)
    # small fits uncompressed; large needs r ≥ 1 − 3/7 ≈ 0.571
    assert all(c.params_kept <= 3e9 for c in answer.candidates)
    assert {c.model for c in answer.candidates} == {"small", "large"}
    assert min(c.r for c in answer.candidates if c.model == "large") == pytest.approx(1 - 3 / 7, abs=1e-6)
    best = answer.best
    # by hand: small at r=0, D=25000 vs large at r=4/7, D=25000
    small = 0.5**ALPHA * (1 + 1 / 25001) ** GAMMA
    large = 0.62**ALPHA * (1 + 4 / 7) ** BETA * (1 + 1 / 25001) ** GAMMA
    assert small > large
    assert (best.model, best.r, best.D) == ("small", 0.0, 25000.0)
    assert best.predicted == pytest.approx(small, rel=1e-6)
    # with a target no configuration reaches, nothing is best
    assert best_configuration({"small": fit, "large": fit}, counts, 3e9, target=0.9).best is None
    with pytest.raises(CriticalRangeError, match="no parameter count for 'large'"):
        best_configuration({"large": fit}, {}, 3e9)
