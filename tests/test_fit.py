"""The fitting engine: recovery of known coefficients, interval coverage, the OLS
statistics against a hand computation, grouping, comparison, and every bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from lawlab.api import LawParameter
from lawlab.laws.compare import compare_forms
from lawlab.laws.data import law_rows, read_results_csv
from lawlab.laws.fit import fit_law, fit_study
from lawlab.laws.forms import LawFitError, law_form
from lawlab.laws.results import FitResult
from lawlab.laws.simulate import simulate
from lawlab.registry import get_registry
from lawlab.spec.models import LawEntry

MODELS = {"q-0.5b": 0.42, "q-1.5b": 0.50, "q-3b": 0.56, "q-7b": 0.62, "l-8b": 0.60}
LOSS_MODELS = {"q-0.5b": 3.4, "q-1.5b": 2.9, "q-3b": 2.6, "q-7b": 2.3, "l-8b": 2.2}

# (form, true coefficients, L0 by model, metric kind, options) for every built-in form
TRUTH = [
    ("compression-law", {"alpha": 0.98, "beta": -1.18, "gamma": -0.14}, MODELS, "extrinsic", {}),
    ("compression-law", {"alpha": 0.63, "beta": 1.72, "gamma": 1.16}, LOSS_MODELS, "intrinsic", {}),
    ("ablation-r", {"alpha": 1.01, "beta": -1.05}, MODELS, "extrinsic", {}),
    ("ablation-d", {"alpha": 1.30, "gamma": 1.46}, LOSS_MODELS, "intrinsic", {}),
    ("runtime-law", {"log_C": 0.05, "beta": -0.67}, {"a": 120.0, "b": 340.0, "c": 900.0}, "runtime", {}),
    ("kept-fraction-law", {"log_P0": -0.1, "alpha": 0.6, "beta": 0.2}, MODELS, "extrinsic", {"d_unit": 1000}),
]


@pytest.fixture(scope="module")
def registry():
    return get_registry()


def test_builtin_forms_are_registered(registry):
    names = set(registry.names("law_forms"))
    assert {"compression-law", "ablation-r", "ablation-d", "runtime-law", "kept-fraction-law"} <= names
    for name in names:
        form = registry.get("law_forms", name)
        assert form.formula and form.parameters
        for field in form.Params.model_fields.values():
            assert field.description


@pytest.mark.parametrize(("name", "theta", "models", "kind", "options"), TRUTH, ids=[f"{t[0]}-{t[3]}" for t in TRUTH])
@pytest.mark.parametrize("method", ["ols", "nls"])
def test_recovers_known_coefficients(registry, name, theta, models, kind, options, method):
    rows = simulate(name, theta, models=models, noise=0.02, kind=kind, options=options, seed=1)
    fit = fit_law(registry.get("law_forms", name), rows, metric_kind=kind, method=method, options=options)
    assert fit.n == len(rows) and fit.dof == len(rows) - len(theta)
    for p in fit.params:
        lo, hi = p.ci
        assert lo <= theta[p.name] <= hi, (p.name, p.value, p.ci)
        assert abs(p.value - theta[p.name]) < 4 * p.stderr
    assert fit.feasibility == []
    assert fit.r2_adj > 0.9


# Each built-in form written out here from the paper's formulas (and the talk's), not
# from the plugin: (value, log offset, log design columns) for arrays L0, r, D (D in
# thousands for the kept-fraction law, as its d_unit option says).
HAND_FORMS = {
    "compression-law": (
        lambda L0, r, D, t: L0 ** t["alpha"] * (1 + r) ** t["beta"] * (1 + 1 / (D + 1)) ** t["gamma"],
        lambda L0, r, D: 0 * L0,
        lambda L0, r, D: [np.log(L0), np.log(1 + r), np.log(1 + 1 / (D + 1))],
    ),
    "ablation-r": (
        lambda L0, r, D, t: L0 ** t["alpha"] * (1 + r) ** t["beta"],
        lambda L0, r, D: 0 * L0,
        lambda L0, r, D: [np.log(L0), np.log(1 + r)],
    ),
    "ablation-d": (
        lambda L0, r, D, t: L0 ** t["alpha"] * (1 + 1 / (D + 1)) ** t["gamma"],
        lambda L0, r, D: 0 * L0,
        lambda L0, r, D: [np.log(L0), np.log(1 + 1 / (D + 1))],
    ),
    "runtime-law": (
        lambda L0, r, D, t: L0 * math.exp(t["log_C"]) * (1 + r) ** t["beta"],
        lambda L0, r, D: np.log(L0),
        lambda L0, r, D: [np.ones_like(r), np.log(1 + r)],
    ),
    "kept-fraction-law": (
        lambda L0, r, D, t: L0 * math.exp(t["log_P0"]) * (1 - r) ** t["alpha"] * (1 + (D / 1000) / (D / 1000 + 1)) ** t["beta"],
        lambda L0, r, D: np.log(L0),
        lambda L0, r, D: [np.ones_like(r), np.log(1 - r), np.log(1 + (D / 1000) / (D / 1000 + 1))],
    ),
}


@pytest.mark.parametrize(("name", "theta", "models", "kind", "options"), TRUTH, ids=[f"{t[0]}-{t[3]}" for t in TRUTH])
def test_every_form_matches_its_formula_and_a_hand_built_design(name, theta, models, kind, options):
    # rows drawn from the formula above (not from the plugin's predict), then fitted by the
    # engine and by least squares on the design above: a wrong formula or design in the
    # plugin moves its estimate away from both
    value, offset, design = HAND_FORMS[name]
    rng = np.random.default_rng(11)
    grid = [(L0, r, D) for L0 in models.values() for r in (0.1, 0.3, 0.5, 0.7) for D in (0.0, 500.0, 4000.0)]
    L0, r, D = (np.array(col, float) for col in zip(*grid, strict=True))
    y = value(L0, r, D, theta) * np.exp(rng.normal(0, 0.01, len(grid)))
    rows = [{"model": f"m{a}", "ratio": b, "D": c, "value": v, "L0": a, "kind": kind, "method": "hand",
             "law_input": True} for a, b, c, v in zip(L0, r, D, y, strict=True)]
    form = get_registry().get("law_forms", name)
    fit = fit_law(form, rows, metric_kind=kind, options=options)
    X = np.column_stack(design(L0, r, D))
    b, *_ = np.linalg.lstsq(X, np.log(y) - offset(L0, r, D), rcond=None)
    assert [p.value for p in fit.params] == pytest.approx(b, rel=1e-8, abs=1e-10)
    assert [p.value for p in fit.params] == pytest.approx([theta[p.name] for p in fit.params], abs=0.05)
    # the plugin's predict is the formula
    assert fit.predict(L0, r, D) == pytest.approx(value(L0, r, D, fit.theta), rel=1e-12)


def test_nls_in_linear_space_recovers_and_agrees_with_truth(registry):
    theta = {"log_P0": -0.1, "alpha": 0.6, "beta": 0.2}
    rows = simulate("kept-fraction-law", theta, models=MODELS, noise=0.005, noise_space="linear",
                    options={"d_unit": 1000}, seed=4)
    fit = fit_law("kept-fraction-law", rows, metric_kind="extrinsic", method="nls", space="linear",
                  options={"d_unit": 1000})
    assert fit.dependent == "L" and fit.r2_kind == "centred"
    for p in fit.params:
        assert p.ci[0] <= theta[p.name] <= p.ci[1]
    # lmfit's own statistics are reported
    assert fit.aic is not None and fit.bic is not None and fit.redchi == pytest.approx(0.005**2, rel=0.4)


def test_ols_statistics_match_a_hand_computation():
    rows = simulate("compression-law", {"alpha": 0.9, "beta": -1.0, "gamma": -0.1}, models=MODELS, noise=0.03, seed=7)
    fit = fit_law("compression-law", rows, metric_kind="extrinsic", cov="iid")
    L0 = np.array([r["L0"] for r in rows])
    r = np.array([r["ratio"] for r in rows])
    D = np.array([r["D"] for r in rows], float)
    y = np.log([row["value"] for row in rows])
    X = np.column_stack([np.log(L0), np.log(1 + r), np.log(1 + 1 / (D + 1))])
    b = np.linalg.solve(X.T @ X, X.T @ y)
    e = y - X @ b
    n, k = X.shape
    s2 = e @ e / (n - k)
    se = np.sqrt(np.diag(s2 * np.linalg.inv(X.T @ X)))
    r2 = 1 - e @ e / (y @ y)  # uncentred: no intercept
    f = ((y @ y - e @ e) / k) / s2
    assert fit.r2_kind == "uncentred"
    assert [p.value for p in fit.params] == pytest.approx(b, rel=1e-10)
    assert [p.stderr for p in fit.params] == pytest.approx(se, rel=1e-8)
    assert fit.r2 == pytest.approx(r2, rel=1e-10)
    assert fit.r2_adj == pytest.approx(1 - (1 - r2) * n / (n - k), rel=1e-10)
    assert fit.fstat == pytest.approx(f, rel=1e-8)
    assert fit.f_pvalue == pytest.approx(stats.f.sf(f, k, n - k), rel=1e-6)
    t975 = stats.t.ppf(0.975, n - k)
    assert fit["beta"].ci == pytest.approx((b[1] - t975 * se[1], b[1] + t975 * se[1]), rel=1e-8)
    assert fit.aic == pytest.approx(n * math.log(e @ e / n) + 2 * k, rel=1e-10)
    # the NLS fit of the same form in log space finds the same optimum
    nls = fit_law("compression-law", rows, metric_kind="extrinsic", method="nls")
    assert [p.value for p in nls.params] == pytest.approx(b, abs=1e-5)
    assert nls.r2_adj == pytest.approx(fit.r2_adj, abs=1e-8)


def test_per_model_fit_with_constant_L0_uses_centred_r2_and_says_so():
    rows = simulate("compression-law", {"alpha": 0.98, "beta": -1.18, "gamma": -0.14}, models={"l-8b": 0.6},
                    noise=0.02, seed=3)
    fit = fit_law("compression-law", rows, metric_kind="extrinsic")
    assert fit.r2_kind == "centred"
    assert any("intercept" in n for n in fit.notes)
    y = np.log([r["value"] for r in rows])
    e = np.asarray(fit.data["residual"])
    assert fit.r2 == pytest.approx(1 - e @ e / ((y - y.mean()) @ (y - y.mean())), rel=1e-10)


def test_confidence_intervals_have_nominal_coverage():
    # 200 simulated studies of 100 cells; 95% t intervals should cover the truth 95% of the
    # time. Tolerance: [0.90, 0.99] (the binomial sd at 200 draws is 1.5 points).
    theta = {"alpha": 0.98, "beta": -1.18, "gamma": -0.14}
    hits = dict.fromkeys(theta, 0)
    reps = 200
    for seed in range(reps):
        fit = fit_law("compression-law", simulate("compression-law", theta, models=MODELS, noise=0.05, seed=seed),
                      metric_kind="extrinsic", cov="iid", heldout=False)
        for p in fit.params:
            hits[p.name] += p.ci[0] <= theta[p.name] <= p.ci[1]
    for name, h in hits.items():
        assert 0.90 <= h / reps <= 0.99, (name, h / reps)


def test_l0_measurement_noise_is_propagated_into_the_intervals():
    # Every cell of a model is fitted against the same measured L0, so its error moves them all
    # together. 100 studies: the measured L0 is off by a shared 3% per model. Without its
    # standard error the intervals under-cover (measured: α 75%, γ 82%); with it (L0_rel_se)
    # they cover at or a little above 95% (measured 97-100%: the redraws also count the part
    # of the shared error the cluster-robust variance already sees).
    theta = {"alpha": 0.98, "beta": -1.18, "gamma": -0.14}
    reps, se = 100, 0.03
    hits = {"blind": dict.fromkeys(theta, 0), "told": dict.fromkeys(theta, 0)}
    for seed in range(reps):
        rows = simulate("compression-law", theta, models=MODELS, noise=0.01, seed=seed)
        off = {m: 1 + np.random.default_rng(10_000 + seed).normal(0, se, len(MODELS))[i]
               for i, m in enumerate(MODELS)}
        measured = [{**r, "L0": r["L0"] * off[r["model"]]} for r in rows]
        for how, data in (("blind", measured), ("told", [{**r, "L0_rel_se": se} for r in measured])):
            fit = fit_law("compression-law", data, metric_kind="extrinsic", heldout=False, seed=seed)
            for p in fit.params:
                hits[how][p.name] += p.ci[0] <= theta[p.name] <= p.ci[1]
            if how == "told":
                assert any("measurement noise of L0" in n for n in fit.notes)
    assert hits["blind"]["alpha"] / reps <= 0.85, hits
    assert hits["told"]["alpha"] >= hits["blind"]["alpha"] + 10, hits
    for name, h in hits["told"].items():
        assert 0.90 <= h / reps <= 1.0, (name, h / reps, hits)


def test_nls_wald_intervals_have_nominal_coverage_in_linear_space():
    # 120 studies, tolerance [0.88, 0.99]: Wald intervals of a non-linear fit are approximate.
    theta = {"log_P0": -0.1, "alpha": 0.6, "beta": 0.2}
    hits = dict.fromkeys(theta, 0)
    reps = 120
    for seed in range(reps):
        rows = simulate("kept-fraction-law", theta, models=MODELS, noise=0.01, noise_space="linear",
                        options={"d_unit": 1000}, seed=seed)
        fit = fit_law("kept-fraction-law", rows, metric_kind="extrinsic", method="nls", space="linear",
                      options={"d_unit": 1000}, starts=0)
        for p in fit.params:
            hits[p.name] += p.ci[0] <= theta[p.name] <= p.ci[1]
    for name, h in hits.items():
        assert 0.88 <= h / reps <= 0.99, (name, h / reps)


def test_bootstrap_intervals_cover_and_resample_models():
    theta = {"alpha": 0.98, "beta": -1.18, "gamma": -0.14}
    hits = dict.fromkeys(theta, 0)
    reps = 60
    for seed in range(reps):
        rows = simulate("compression-law", theta, models=MODELS, noise=0.05, seed=1000 + seed)
        fit = fit_law("compression-law", rows, metric_kind="extrinsic", bootstrap=150, seed=seed)
        for p in fit.params:
            hits[p.name] += p.bootstrap_ci[0] <= theta[p.name] <= p.bootstrap_ci[1]
    # percentile bootstrap at n=100 runs a little narrow: tolerance [0.85, 1.0] over 60 studies
    for name, h in hits.items():
        assert 0.85 <= h / reps <= 1.0, (name, h / reps)
    fit = fit_law("compression-law", rows, metric_kind="extrinsic", bootstrap=50, resample="models", seed=1)
    assert fit.bootstrap["resample"] == "models" and len(fit.bootstrap["draws"]) + fit.bootstrap["failed"] == 50
    assert len(fit.draws()["beta"]) == len(fit.bootstrap["draws"])
    # the same seed gives the same draws
    again = fit_law("compression-law", rows, metric_kind="extrinsic", bootstrap=50, resample="models", seed=1)
    assert again.bootstrap["draws"] == fit.bootstrap["draws"]


def test_feasibility_is_flagged():
    # loss-like data fitted as if it were accuracy: β > 0 and γ > 0 break the accuracy rule
    rows = simulate("compression-law", {"alpha": 0.63, "beta": 1.72, "gamma": 1.16}, models=LOSS_MODELS,
                    noise=0.02, kind="extrinsic")
    fit = fit_law("compression-law", rows, metric_kind="extrinsic")
    assert len(fit.feasibility) == 2 and "beta" in fit.feasibility[0] and "gamma" in fit.feasibility[1]
    assert "VIOLATED" in fit.summary()
    assert fit_law("compression-law", rows, metric_kind="intrinsic").feasibility == []


def test_summary_to_dict_and_predict_round_trip():
    theta = {"alpha": 0.98, "beta": -1.18, "gamma": -0.14}
    rows = simulate("compression-law", theta, models=MODELS, noise=0.02)
    fit = fit_law("compression-law", rows, metric_kind="extrinsic", bootstrap=20)
    text = fit.summary()
    for needle in ("compression-law", "OLS", "Adj. R² (uncentred)", "alpha", "beta", "gamma", "boot", "Feasibility: ok"):
        assert needle in text
    d = json.loads(json.dumps(fit.to_dict()))
    back = FitResult.from_dict(d)
    assert back.theta == pytest.approx(fit.theta)
    assert back["beta"].ci == pytest.approx(fit["beta"].ci)
    expected = 0.6 ** fit.theta["alpha"] * 1.5 ** fit.theta["beta"] * (1 + 1 / 1001) ** fit.theta["gamma"]
    assert back.predict(0.6, 0.5, 1000.0) == pytest.approx(expected, rel=1e-12)


def test_effective_ratio_falls_back_to_nominal_with_a_warning():
    rows = simulate("ablation-r", {"alpha": 1.0, "beta": -1.0}, models=MODELS, noise=0.02)
    for r in rows[:5]:
        r["ratio_effective"] = None
    with pytest.warns(UserWarning, match="ratio_effective is missing in 5"):
        fit = fit_law("ablation-r", rows, metric_kind="extrinsic", ratio="effective")
    assert any("nominal ratio was used" in n for n in fit.notes)


# --------------------------------------------------------------------------- bad input


def _rows(**change):
    rows = simulate("compression-law", {"alpha": 0.98, "beta": -1.18, "gamma": -0.14}, models=MODELS, noise=0.02)
    for key, value in change.items():
        rows[3][key] = value  # the 4th row: messages count rows from 1
    return rows


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"value": 0.0}, r"value must be > 0 .*logarithm.* row 4 "),
        ({"value": -0.2}, r"value must be > 0"),
        ({"L0": 0.0}, r"L0 must be > 0"),
        ({"value": float("nan")}, r"value is NaN or infinite in 1 row"),
        ({"L0": float("inf")}, r"L0 is NaN or infinite"),
        ({"ratio": 1.2}, r"ratio must be in \[0, 1\)"),
        ({"D": -5}, r"D must be >= 0"),
        ({"value": None}, r"row 4 .*value is missing"),
        ({"D": "many"}, r"D = 'many' is not a number"),
    ],
)
def test_bad_values_are_refused_with_the_row(change, message):
    with pytest.raises(LawFitError, match=message):
        fit_law("compression-law", _rows(**change), metric_kind="extrinsic")


def test_fewer_rows_than_parameters():
    rows = _rows()[:3]
    with pytest.raises(LawFitError, match=r"3 parameters and needs more rows than that.*got 3 row"):
        fit_law("compression-law", rows, metric_kind="extrinsic")


def test_constant_D_makes_gamma_unidentifiable():
    rows = [r for r in _rows() if r["D"] == 4000]
    with pytest.raises(LawFitError, match=r"gamma cannot be identified: every row has the same D \(4000\)"):
        fit_law("compression-law", rows, metric_kind="extrinsic")
    with pytest.raises(LawFitError, match="gamma cannot be identified"):
        fit_law("compression-law", rows, metric_kind="extrinsic", method="nls")


def test_constant_ratio_makes_beta_unidentifiable():
    rows = [r for r in _rows() if r["ratio"] == 0.5]
    with pytest.raises(LawFitError, match=r"beta cannot be identified: every row has the same r \(0.5\)"):
        fit_law("ablation-r", rows, metric_kind="extrinsic")


def test_linearly_dependent_columns_are_named():
    # L0 = 1 everywhere: log L0 is a column of zeros, so α is not determined
    rows = _rows()
    for r in rows:
        r["L0"] = 1.0
    with pytest.raises(LawFitError, match=r"alpha.*cannot be told apart"):
        fit_law("compression-law", rows, metric_kind="extrinsic")


def test_misuse_of_methods_and_kinds():
    rows = _rows()
    with pytest.raises(LawFitError, match="log space only"):
        fit_law("compression-law", rows, metric_kind="extrinsic", method="ols", space="linear")
    with pytest.raises(LawFitError, match="unknown metric kind"):
        fit_law("compression-law", rows, metric_kind="perplexity")
    with pytest.raises(LawFitError, match=r"unknown law form 'compresion-law'.*Did you mean"):
        fit_law("compresion-law", rows, metric_kind="extrinsic")
    with pytest.raises(LawFitError, match="at least 3 of them"):
        fit_law("compression-law", [r for r in rows if r["model"] == "l-8b"], metric_kind="extrinsic",
                bootstrap=5, resample="models")


# --------------------------------------------------------------------------- third-party forms


def test_a_third_party_form_from_a_function_and_parameters():
    exp_law = law_form(
        "exp-law",
        [("a", 1.0, 0.0, 3.0), LawParameter("b", -1.0)],
        lambda L0, r, D, a, b: L0**a * np.exp(b * r),
        formula="L = L0^a · e^(b r)",
        signs={"b": ("r", 1)},
    )
    assert exp_law.name == "exp-law" and not exp_law.log_linear
    rows = simulate(exp_law, {"a": 1.1, "b": -0.8}, models=MODELS, noise=0.01, seed=2)
    fit = fit_law(exp_law, rows, metric_kind="extrinsic", method="nls")
    assert fit["a"].value == pytest.approx(1.1, abs=4 * fit["a"].stderr)
    assert fit["b"].ci[0] <= -0.8 <= fit["b"].ci[1]
    assert exp_law.feasibility({"a": 1, "b": 0.3}, "accuracy")
    with pytest.raises(LawFitError, match="not linear in log space"):
        fit_law(exp_law, rows, metric_kind="extrinsic", method="ols")
    # with a log design it is fitted by OLS too, and gives the same answer
    exp_ols = law_form("exp-law", ["a", "b"], lambda L0, r, D, a, b: L0**a * np.exp(b * r),
                       log_design=lambda L0, r, D: np.column_stack([np.log(L0), r]))
    ols = fit_law(exp_ols, rows, metric_kind="extrinsic")
    assert ols.theta == pytest.approx(fit.theta, abs=1e-5)


# --------------------------------------------------------------------------- study and comparison


def _study_rows():
    theta = {"alpha": 0.98, "beta": -1.18, "gamma": -0.14}
    rows = simulate("compression-law", theta, models=MODELS, noise=0.02, seed=5)
    rows += simulate("compression-law", {"alpha": 0.63, "beta": 1.72, "gamma": 1.16}, models=LOSS_MODELS,
                     noise=0.02, kind="intrinsic", seed=6)
    # base rows (unpruned) and a non-law row must be left out of the fits
    rows += [{**rows[0], "method": "", "ratio": 0.0, "D": 0, "value": 0.6, "L0": 0.6},
             {**rows[1], "law_input": False, "value": -1.0}]
    return rows


def test_fit_study_groups_and_reports_skipped_groups(registry):
    rows = _study_rows()
    rows.append({**rows[0], "model": "lonely", "value": 0.5, "L0": 0.55})  # one row: cannot be fitted
    laws = [LawEntry(form="compression-law", metric="extrinsic", group_by=["pooled", "model"], fit="both"),
            LawEntry(form="ablation-r", metric="intrinsic", label="abl")]
    fits = fit_study(rows, laws, registry, seed=0)
    ext = [f for f in fits if f.form == "compression-law"]
    assert len(ext) == 2 * (1 + len(MODELS) + 1)
    pooled = [f for f in ext if f.group == {"by": "pooled", "value": "all"}]
    assert {f.method for f in pooled} == {"ols", "nls"} and all(f.n == 101 for f in pooled)
    lonely = [f for f in ext if f.group["value"] == "lonely"]
    assert all(f.skipped and "needs more rows" in f.skipped for f in lonely)
    per_model = [f for f in ext if f.group["by"] == "model" and not f.skipped and f.method == "ols"]
    assert all(f.n == 20 and f.r2_kind == "centred" for f in per_model)
    abl = [f for f in fits if f.law == "abl"]
    assert len(abl) == 1 and abl[0].n == 100 and abl[0]["beta"].value > 0
    # fit = "both" with space = "linear": OLS stays in log space, lmfit fits L itself
    both = fit_study(rows, [LawEntry(form="ablation-r", metric="extrinsic", fit="both", space="linear")], registry)
    assert [(f.method, f.space, f.skipped) for f in both] == [("ols", "log", None), ("nls", "linear", None)]


def test_recovered_unpruned_rows_join_every_method_group():
    """r = 0 with RFT has no method: it is each method's r = 0 point, not a group of its own."""
    from lawlab.laws.fit import groups_of

    rows = [{"method": "random-prunenet", "ratio": 0.5, "D": 0}, {"method": "slicegpt", "ratio": 0.5, "D": 0},
            {"method": "", "ratio": 0.0, "D": 32}]
    groups = dict(groups_of(rows, "method"))
    assert sorted(groups) == ["random-prunenet", "slicegpt"]
    assert all(len(members) == 2 and members[-1]["D"] == 32 for members in groups.values())
    # alone, the shared rows still form a group, and other groupings are untouched
    assert [v for v, _ in groups_of(rows[2:], "method")] == [""]
    assert sorted(v for v, _ in groups_of(rows, "model")) == [""]


def test_law_rows_selects_the_kind_and_drops_base_rows():
    rows = _study_rows()
    assert len(law_rows(rows, "extrinsic")) == 100
    assert len(law_rows(rows, "intrinsic")) == 100


def test_compare_forms_ranks_the_true_form_first():
    rows = simulate("compression-law", {"alpha": 0.98, "beta": -1.18, "gamma": -0.14}, models=MODELS, noise=0.02)
    table = compare_forms(rows, ["ablation-d", "ablation-r", "compression-law", "kept-fraction-law"],
                          metric_kind="extrinsic")
    assert table.rows[0].form == "compression-law"
    lomo = {r.form: r.cv["leave-one-model-out"] for r in table.rows}
    assert lomo["compression-law"]["folds"] == len(MODELS) and not lomo["compression-law"]["failed"]
    assert lomo["compression-law"]["rmse"] < lomo["ablation-r"]["rmse"] < lomo["ablation-d"]["rmse"]
    # the held-out error of the true form is about the noise (2% of ~0.4)
    assert lomo["compression-law"]["rmse"] < 0.02
    aic = {r.form: r.fit.aic for r in table.rows}
    assert aic["compression-law"] < aic["ablation-r"]
    assert "compression-law" in table.summary()
    json.dumps(table.to_dict())
    # a form that cannot be fitted ranks last with its reason
    table = compare_forms([r for r in rows if r["D"] == 0], ["compression-law", "ablation-r"], metric_kind="extrinsic")
    assert table.rows[-1].form == "compression-law" and "gamma cannot be identified" in table.rows[-1].fit.skipped


def test_read_minimal_published_csv(tmp_path):
    path = tmp_path / "published.csv"
    path.write_text("model,ratio,D,value,L0\nllama-3-8b,0.1,0,0.61,0.70\nllama-3-8b,0.5,1000,0.45,0.70\n")
    rows = read_results_csv(path, kind="extrinsic")
    assert rows[0]["kind"] == "extrinsic" and rows[0]["law_input"] is True and rows[1]["D"] == 1000.0
    assert law_rows(rows, "extrinsic") == rows
    bad = tmp_path / "bad.csv"
    bad.write_text("model,ratio,value\nx,0.1,0.5\n")
    with pytest.raises(LawFitError, match=r"missing column.*D, L0"):
        read_results_csv(bad)
