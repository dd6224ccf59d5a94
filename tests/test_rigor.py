"""Rules a referee checks, each against a known truth: intervals that respect clusters, verdicts
that know their power, accuracy measured against chance, laws judged against "no change"."""

from __future__ import annotations

import math

import numpy as np
import pytest
import statsmodels.api as sm

from lawlab.findings.stage import findings
from lawlab.findings.stats import above_chance, cluster_mean, questions_for
from lawlab.laws.fit import cluster_of, fit_law
from lawlab.laws.simulate import simulate

THETA = {"alpha": 0.98, "beta": -1.18, "gamma": -0.14}
MODELS = {"small": 0.45, "mid": 0.55, "large": 0.6}


def clustered_study(seed: int, sd_cluster: float = 0.05, sd_cell: float = 0.02, seeds: int = 2) -> list[dict]:
    """A study whose D cells share their pruned model's error (model, method, r, seed)."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(seeds):
        part = simulate("compression-law", THETA, models=MODELS, sizes=(0, 1000, 4000, 25000), seed=seed * 10 + s)
        shift: dict[str, float] = {}
        for r in part:
            r["seed"] = s
            e = shift.setdefault(cluster_of(r), rng.normal(0, sd_cluster))
            r["value"] *= math.exp(e + rng.normal(0, sd_cell))
        rows += part
    return rows


def test_cluster_robust_errors_are_statsmodels_cr1_and_a_hand_computation():
    rows = clustered_study(0)
    fit = fit_law("compression-law", rows, metric_kind="extrinsic")
    assert fit.cov_type == "cluster" and fit.n_clusters == 3 * 5 * 2 and fit.df_inference == 29
    X = np.column_stack([np.log([r["L0"] for r in rows]), np.log1p([r["ratio"] for r in rows]),
                         np.log(1 + 1 / (np.array([r["D"] for r in rows], float) + 1))])
    y = np.log([r["value"] for r in rows])
    groups = np.unique([cluster_of(r) for r in rows], return_inverse=True)[1]
    b = np.linalg.solve(X.T @ X, X.T @ y)
    e = y - X @ b
    bread = np.linalg.inv(X.T @ X)
    meat = sum(np.outer(X[groups == g].T @ e[groups == g], X[groups == g].T @ e[groups == g])
               for g in range(groups.max() + 1))
    n, k, G = len(y), X.shape[1], groups.max() + 1
    cov = G / (G - 1) * (n - 1) / (n - k) * bread @ meat @ bread  # CR1
    assert [p.stderr for p in fit.params] == pytest.approx(np.sqrt(np.diag(cov)), rel=1e-9)
    ref = sm.OLS(y, X).fit(cov_type="cluster", cov_kwds={"groups": groups}, use_t=True)
    assert [p.ci for p in fit.params] == [pytest.approx(tuple(c), rel=1e-9) for c in ref.conf_int(0.05)]
    iid = fit_law("compression-law", rows, metric_kind="extrinsic", cov="iid")
    assert [p.stderr for p in iid.params] == pytest.approx(sm.OLS(y, X).fit().bse, rel=1e-9)


def test_cluster_interval_covers_under_clustered_noise_and_iid_does_not():
    # 200 studies, 30 clusters of 4 D cells each, cluster error 0.05 beside cell error 0.02.
    # Simulated beforehand at 400 studies: CR1 covers β 0.94-0.95, the iid interval 0.70-0.76.
    # Tolerance for 200 draws (binomial sd 1.6 points): cluster ≥ 0.89, iid ≤ 0.85.
    reps = 200
    hits = {"cluster": 0, "iid": 0}
    for seed in range(reps):
        rows = clustered_study(seed)
        for cov in hits:
            lo, hi = fit_law("compression-law", rows, metric_kind="extrinsic", cov=cov, heldout=False)["beta"].ci
            hits[cov] += lo <= THETA["beta"] <= hi
    assert hits["cluster"] / reps >= 0.89, hits
    assert hits["iid"] / reps <= 0.85, hits


def test_one_row_per_cluster_falls_back_to_iid_and_says_why():
    rows = simulate("ablation-r", {"alpha": 0.98, "beta": -1.18}, models=MODELS, sizes=(0,), noise=0.02)
    fit = fit_law("ablation-r", rows, metric_kind="extrinsic")
    assert fit.cov_type == "iid" and any("no two rows share a pruned model" in n for n in fit.notes)


def test_law_is_judged_against_no_change_held_out():
    # pure noise around L0: r and D do nothing; eq. 1 must not beat "no change" held out
    rng = np.random.default_rng(3)
    rows = simulate("compression-law", {"alpha": 1.0, "beta": 0.0, "gamma": 0.0}, models=MODELS, seed=1)
    for r in rows:
        r["value"] *= math.exp(rng.normal(0, 0.05))
    fit = fit_law("compression-law", rows, metric_kind="extrinsic")
    assert fit.heldout["scheme"] == "leave-one-model-out"
    assert not fit.heldout["beats_null"]
    assert fit.heldout["rmse_log"] > fit.heldout["null_rmse_log"]
    assert fit.r2 > 0.95 and fit.r2_kind == "uncentred"  # the uncentred R² that hid it
    assert fit.r2_beyond_L0 < 0.2
    # a real law beats it by far
    real = fit_law("compression-law", clustered_study(0, 0.01, 0.01), metric_kind="extrinsic")
    assert real.heldout["beats_null"] and real.heldout["rmse_log"] < 0.5 * real.heldout["null_rmse_log"]


def test_cluster_mean_resamples_clusters_and_draws_L0():
    values = [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    cells = cluster_mean(values, ["a", "b", "c", "d", "e", "f"])
    grouped = cluster_mean(values, ["a", "a", "a", "b", "b", "b"])
    assert grouped.clusters == 2 and cells.clusters == 6
    assert grouped.halfwidth > cells.halfwidth  # two clusters know far less than six cells
    x = [0.9, 0.92, 0.88, 0.91, 0.9, 0.89]
    exact = cluster_mean(x, list("abcdef"), models=["m"] * 6, l0_rel_se={})
    noisy = cluster_mean(x, list("abcdef"), models=["m"] * 6, l0_rel_se={"m": 0.05})
    assert noisy.halfwidth > 3 * exact.halfwidth  # a 5% error of L0 dominates a 1% spread
    assert "L0 drawn" in noisy.method


def test_an_interval_over_few_clusters_covers_what_it_claims():
    # 3 pruned models, 2 cells each, the cells of one model sharing its error: a bootstrap over
    # 3 clusters spans little more than their range and covers about 70%; the widened one ~95%
    from scipy import stats

    rng = np.random.default_rng(7)
    covered, bootstrap_covered, trials = 0, 0, 300
    for t in range(trials):
        shift = rng.normal(0, 1, 3)
        values = [s + e for s in shift for e in rng.normal(0, 0.1, 2)]
        iv = cluster_mean(values, ["a", "a", "b", "b", "c", "c"], seed=t, n_boot=400)
        covered += iv.low <= 0 <= iv.high
        means = np.array([np.mean(values[i:i + 2]) for i in (0, 2, 4)])
        boot = stats.bootstrap((means,), np.mean, n_resamples=400, method="percentile", random_state=t)
        bootstrap_covered += boot.confidence_interval.low <= 0 <= boot.confidence_interval.high
    assert covered / trials > 0.92
    assert bootstrap_covered / trials < 0.85  # what the widening mends
    assert "Student t over 3 cluster means" in iv.method
    many = cluster_mean(list(rng.normal(0, 1, 40)), [str(i) for i in range(40)], n_boot=400)
    assert "Student" not in many.method  # at 40 clusters the bootstrap stands on its own


def test_chance_and_power_helpers():
    assert above_chance(0.30, 0.25, n=30) > 0.05  # 30 questions cannot tell .30 from .25
    assert above_chance(0.30, 0.25, n=2000) < 0.001
    assert questions_for(0.03, 0.4) == 267  # 0.4·0.6 / 0.03²


def _study_rows(noise_task: bool = False) -> list[dict]:
    """Cells of an extrinsic study with per-task rows: PIQA above chance, one task at chance."""
    rows = []
    for model, a0 in (("small", 0.70), ("large", 0.74)):
        for method, r in [("", 0.0)] + [("m", r) for r in (0.1, 0.3, 0.5, 0.7, 0.9)]:
            for D in ((0,) if not method else (0, 100)):
                key = f"{model}-{method}-{r}-{D}"
                piqa = a0 * (1 - 0.4 * r) * (1 + (0.02 if D else 0))
                at_chance = 0.24 + 0.01 * (r * 10 % 3)
                for task, v, c in (("piqa", piqa, 0.5), ("mmlu", at_chance, 0.25)):
                    rows.append({"model": model, "method": method, "ratio": r, "D": D, "kind": "extrinsic",
                                 "evaluator": "lm-eval", "metric": "accuracy", "dataset": task, "value": v,
                                 "L0": None, "law_input": False, "cell_key": key, "calibration": "free" if method else "",
                                 "details": {"chance": c, "n": 400, "stderr": math.sqrt(v * (1 - v) / 400)}})
                mean = (piqa + at_chance) / 2
                rows.append({"model": model, "method": method, "ratio": r, "D": D, "kind": "extrinsic",
                             "evaluator": "lm-eval", "metric": "accuracy", "dataset": "mean", "value": mean,
                             "L0": None, "law_input": True, "cell_key": key, "calibration": "free" if method else "",
                             "details": {"tasks": ["piqa", "mmlu"]}})
    base = {(r["model"], r["dataset"]): r["value"] for r in rows if not r["method"] and not r["D"]}
    for r in rows:
        r["L0"] = base[(r["model"], r["dataset"])]
    return rows


def test_a_task_at_chance_leaves_the_mean_and_the_findings_say_so():
    f = findings(_study_rows())
    assert f.chance["left_out"] == ["large · mmlu", "small · mmlu"]
    assert any("not above chance" in n and "mmlu" in n for n in f.notes)
    retention = next(p for p in f["rq1"].parts if p.name.startswith("RFT raises"))
    # without MMLU the mean is PIQA alone, whose retention at r = 0.1, 0.3 is 1 − 0.4 r: 0.92 on average
    assert retention.evidence["without_rft"]["mean"] == pytest.approx(0.92, abs=1e-9)


def test_quadratic_loss_under_large_noise_is_undetermined_never_inconsistent():
    from test_findings import L0_CE, rows_from

    def quadratic(model, method, r, D):
        return L0_CE[model] * (1 + 2.0 * r**2)

    verdicts = set()
    for seed in range(10):
        f = findings(rows_from(intrinsic=quadratic, noise=0.4, seed=seed, sizes=(0,)))
        part = next(p for p in f["rq1"].parts if p.name == "intrinsic loss rises quadratically")
        verdicts.add(part.verdict)
    assert "inconsistent" not in verdicts and "undetermined" in verdicts


def test_two_models_outside_the_speed_band_do_not_average_into_it():
    from test_findings import rows_from

    # 15% and 37% faster at r = 0.5-0.9 (every small cell below 24%): their mean, 26%, is inside
    def runtime(model, method, r, D):
        return (1 + r) ** (-0.3 if model == "small" else -0.9)

    f = findings(rows_from(speed=runtime))
    part = next(p for p in f["rq2"].parts if p.name.startswith("24-35%"))
    assert part.verdict == "inconsistent"
    per_model = {m: v["verdict"] for m, v in part.evidence["per_model"].items()}
    assert per_model["small"] == "inconsistent" and per_model["large"] != "consistent"


def test_pure_noise_accuracy_never_makes_the_laws_consistent():
    from test_findings import L0_ACC, rows_from

    def noise_only(model, method, r, D):
        return L0_ACC[model]

    for seed in range(3):
        f = findings(rows_from(extrinsic=noise_only, noise=0.05, seed=seed))
        part = next(p for p in f["laws"].parts if "extrinsic" in p.name)
        assert part.verdict != "consistent", part.summary


def test_a_single_task_law_input_at_chance_is_dropped_too():
    # MMLU is its own law input (no mean around it): below chance, its rows leave the law
    rows = [r for r in _study_rows() if r["dataset"] != "mean"]
    for r in rows:
        if r["dataset"] == "mmlu" or r["dataset"] == "piqa":
            r["law_input"] = True
    f = findings(rows)
    assert f.chance["left_out"] == ["large · mmlu", "small · mmlu"]
    assert {m["series"] for m in f.chance["means"]} == {"lm-eval:mmlu"}
    retention = [p for p in f["rq1"].parts if p.name.startswith("RFT raises")]
    assert all("mmlu" not in p.name for p in retention)


def test_a_nonlinear_fit_that_does_not_converge_says_so():
    rows = simulate("kept-fraction-law", {"log_P0": -0.1, "alpha": 0.6, "beta": 0.2}, models=MODELS, noise=0.01,
                    options={"d_unit": 1000}, seed=2)
    args = dict(metric_kind="extrinsic", method="nls", space="linear", options={"d_unit": 1000}, starts=0,
                heldout=False)
    stopped = fit_law("kept-fraction-law", rows, max_nfev=3, **args)  # lmfit stops after 3 evaluations
    assert not stopped.converged
    assert any("did not converge" in n for n in stopped.notes)
    good = fit_law("kept-fraction-law", rows, **args)
    assert good.converged and not any("did not converge" in n for n in good.notes)


def test_the_laws_answer_compares_accuracy_through_task_loss():
    from test_tasklink import study

    rows = study(noise=0.005)
    for r in rows:  # as a study's tidy rows: the accuracy is the extrinsic law's input
        r |= {"kind": "extrinsic", "evaluator": "lm-eval", "calibration": "free" if r["method"] else "",
              "law_input": r["metric"] == "accuracy", "details": {}}
    f = findings(rows)
    two = f["laws"].evidence["two_step"]["mean5"]
    assert two["rmse"]["two_step"] < two["rmse"]["direct"] < two["rmse"]["null"]
    assert any(n.startswith("accuracy through task loss (mean5)") for n in f["laws"].notes)


def test_retention_above_chance_is_offered_beside_retention():
    """(A − c)/(A0 − c): the share of the unpruned model's margin over guessing that a pruned
    model keeps; with MMLU at chance left out, the mean is PIQA alone (c = 0.5)."""
    rows = _study_rows()
    f = findings(rows)
    retention = next(p for p in f["rq1"].parts if p.name.startswith("RFT raises"))
    base = {r["model"]: r["value"] for r in rows if not r["method"] and not r["D"] and r["dataset"] == "piqa"}
    want = [(r["value"] - 0.5) / (base[r["model"]] - 0.5) for r in rows
            if r["dataset"] == "piqa" and r["method"] and not r["D"] and 0 < r["ratio"] < 0.5]
    got = retention.evidence["without_rft_chance_normalised"]
    assert got["cells"] == len(want) and got["mean"] == pytest.approx(sum(want) / len(want), abs=1e-9)
    assert got["mean"] < retention.evidence["without_rft"]["mean"]  # the margin falls faster than the accuracy
    assert "(A − c)/(A0 − c)" in retention.summary
