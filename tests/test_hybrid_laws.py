"""Law forms across compression axes (pruning × quantisation): each recovers its own known
coefficients, matches its formula written out here, and leave-one-axis-setting-out ranks the
true form first; forms of float weights keep seeing float rows only."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lawlab.cli.main import main
from lawlab.laws.compare import compare_forms, cross_validate
from lawlab.laws.data import law_data, law_rows
from lawlab.laws.fit import fit_law, fit_study
from lawlab.laws.simulate import simulate
from lawlab.registry import get_registry
from lawlab.spec.models import LawEntry
from lawlab.testing import write_rows_csv

# the torchao settings' declared ratios (docs/hybrid.md); w8 and w8a8 store the same bits
QUANT = {"w8": 0.59, "w8a8": 0.59, "w4g32": 0.66, "w4": 0.69}
GRID = {"ratios": (0.0, 0.2, 0.4, 0.6), "sizes": (0, 1000, 25000), "quant": QUANT, "kind": "intrinsic"}
FORMS = ("axes-law", "effective-params-law", "p2-law")
TRUTH = {  # loss rows of one model family: (coefficients, options)
    "axes-law": ({"alpha": 1.0, "beta": 0.8, "beta_q": 0.3, "gamma": 0.1}, {}),
    "effective-params-law": ({"a": 0.35, "gamma": 0.1, "eff_w8": 0.98, "eff_w8a8": 0.9, "eff_w4g32": 0.8,
                              "eff_w4": 0.6}, {}),
    "p2-law": ({"gamma": -1.2, "A": 0.6, "D_C": 1.5, "beta": 0.5}, {"d_unit": 1000}),
}


def _rows(name: str, models: dict[str, float], noise: float = 0.005, seed: int = 1) -> list[dict]:
    theta, options = TRUTH[name]
    return simulate(name, theta, models=models, options=options, noise=noise, seed=seed, **GRID)


@pytest.mark.parametrize("name", FORMS)
def test_each_form_recovers_its_own_coefficients(name):
    theta, options = TRUTH[name]
    rows = _rows(name, {"m1": 3.0, "m2": 2.6})
    form = get_registry().get("law_forms", name)
    assert form.role == "alternative" and form.axes == ("quant",)
    fit = fit_law(form, rows, metric_kind="intrinsic", method="ols" if form.log_linear else "nls", options=options,
                  heldout=False)
    assert fit.n == len(rows) == 2 * 5 * 4 * 3  # models × (float + 4 settings) × r × D
    assert set(fit.theta) == set(theta)
    for p in fit.params:
        assert p.value == pytest.approx(theta[p.name], abs=0.03, rel=0.03), p.name
        assert p.ci[0] <= theta[p.name] <= p.ci[1], (p.name, p.value, p.ci)
    assert fit.feasibility == []


# Each form written out from its paper's formula, not from the plugin: value for arrays
# L0, r, q, setting label, D (D in thousands for P², as its d_unit option says).
HAND = {
    "axes-law": lambda L0, r, q, s, D, t: (L0 ** t["alpha"] * (1 + r) ** t["beta"] * (1 + q) ** t["beta_q"]
                                           * (1 + 1 / (D + 1)) ** t["gamma"]),
    "effective-params-law": lambda L0, r, q, s, D, t: (
        L0 * ((1 - r) * np.array([t.get(f"eff_{x}", 1.0) for x in s])) ** -t["a"] * (1 + 1 / (D + 1)) ** t["gamma"]),
    "p2-law": lambda L0, r, q, s, D, t: (
        L0 + (1 / (1 - (1 - r) * (1 - q))) ** t["gamma"] * (t["A"] + t["D_C"] / (D / 1000 + 1) ** t["beta"])),
}


@pytest.mark.parametrize("name", FORMS)
def test_each_form_matches_its_formula(name):
    theta, options = TRUTH[name]
    rng = np.random.default_rng(5)
    grid = [(3.0, r, q, s, D) for r in (0.1, 0.3, 0.5) for s, q in {"": 0.0, **QUANT}.items() for D in (0.0, 1000.0, 25000.0)]
    L0, r, q, D = (np.array([g[i] for g in grid], float) for i in (0, 1, 2, 4))
    s = [g[3] for g in grid]
    y = HAND[name](L0, r, q, s, D, theta) * np.exp(rng.normal(0, 0.003, len(grid)))
    rows = [{"model": "m", "ratio": b, "D": d, "value": v, "L0": a, "kind": "intrinsic", "quant": x, "quant_ratio": c,
             "method": "hand" + (f"+{x}" if x else ""), "law_input": True}
            for a, b, c, x, d, v in zip(L0, r, q, s, D, y, strict=True)]
    fit = fit_law(name, rows, metric_kind="intrinsic", method="nls", options=options, heldout=False)
    assert fit.theta == pytest.approx(theta, abs=0.03, rel=0.03)
    d = law_data(rows, needs=get_registry().get("law_forms", name).needs)
    assert fit.predict(L0, r, D, d.columns) == pytest.approx(HAND[name](L0, r, q, s, D, fit.theta), rel=1e-10)


def test_leave_one_axis_setting_out_ranks_the_multiplicative_form_first_on_its_data():
    rows = _rows("effective-params-law", {"m1": 3.0}, noise=0.01, seed=2)
    table = compare_forms(rows, list(FORMS), metric_kind="intrinsic", options={"p2-law": {"d_unit": 1000}},
                          rank_by="leave-one-axis-setting-out")
    assert table.rows[0].form == "effective-params-law"
    best, *others = table.rows
    cv = best.cv["leave-one-axis-setting-out"]
    assert cv["folds"] == 4 * 5 and not cv["failed"]  # every r × (float + 4 settings)
    assert "ratio=0.2, quant=w8a8" in cv["per_fold"]
    # the truth predicts held-out combinations at about the noise; w8 and w8a8 store the same
    # bits, so a law in q alone cannot tell them apart and misses by much more
    assert cv["rmse_log"] < 0.02
    assert all(o.cv["leave-one-axis-setting-out"]["rmse_log"] > 3 * cv["rmse_log"] for o in others)
    assert best.n_params == 6 and best.fit.heldout["scheme"] == "leave-one-axis-setting-out"
    assert "LOASO" in table.summary()


def test_float_forms_keep_float_rows():
    rows = _rows("axes-law", {"m1": 3.0, "m2": 2.6})
    float_rows = [r for r in rows if not r["quant"]]
    assert law_rows(rows, "intrinsic") == float_rows
    assert law_rows(rows, "intrinsic", ("quant",)) == rows
    # given quantised rows, a form of float weights is not fitted, and says why
    table = compare_forms(rows, ["compression-law", "axes-law"], metric_kind="intrinsic")
    assert [r.form for r in table.rows] == ["axes-law", "compression-law"]
    assert "does not declare the quantisation axis" in table.rows[1].fit.skipped
    # a spec's laws: eq. 1 is fitted to the float rows as before, the axes law to all of them
    laws = [LawEntry(form="compression-law", metric="intrinsic"), LawEntry(form="axes-law", metric="intrinsic")]
    eq1, axes = fit_study(rows, laws, get_registry())
    assert eq1.n == len(float_rows) and axes.n == len(rows)
    alone = fit_law("compression-law", float_rows, metric_kind="intrinsic")
    assert eq1.theta == alone.theta
    # on float rows alone, leave-one-axis-setting-out would repeat leave-one-ratio-out: not run
    cv = cross_validate(get_registry().get("law_forms", "axes-law"), float_rows, ("ratio", "quant"),
                        metric_kind="intrinsic")
    assert cv["folds"] == 0 and "no quantised rows" in cv["reason"]


def test_q_is_read_or_derived_from_the_storage_ratio():
    row = {"model": "m", "ratio": 0.5, "ratio_effective": 0.4, "D": 0, "value": 3.1, "L0": 3.0, "quant": "w8",
           "storage_ratio": 1 - 0.6 * 0.25}
    d = law_data([row, {**row, "quant": "", "storage_ratio": 0.4}, {**row, "quant_ratio": 0.7}], needs=("q", "quant"))
    assert d.columns["q"] == pytest.approx([0.75, 0.0, 0.7])
    assert list(d.columns["quant"]) == ["w8", "", "w8"]


def test_cli_compares_the_cross_axis_forms_on_quantised_rows(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "220")
    rows = _rows("effective-params-law", {"m1": 3.0}, noise=0.01, seed=2)
    csv = write_rows_csv(rows, tmp_path / "results.csv")
    assert main(["compare", str(csv), "--quantised", "--option", "p2-law.d_unit=1000"]) == 0
    out = capsys.readouterr().out
    assert "ranked by leave-one-axis-setting-out" in out and "LOASO" in out
    table = json.loads(csv.with_suffix(".compare-intrinsic.json").read_text())
    assert table["rows"][0]["form"] == "effective-params-law"
    assert {r["form"] for r in table["rows"]} == set(FORMS)
    # without --quantised: the float laws on the float rows, as before
    assert main(["compare", str(csv)]) == 0
    table = json.loads(csv.with_suffix(".compare-intrinsic.json").read_text())
    assert {r["form"] for r in table["rows"]}.isdisjoint(FORMS)
    assert table["rows"][0]["fit"]["n"] == len([r for r in rows if not r["quant"]])


def test_a_quantised_study_compares_the_float_and_the_cross_axis_forms_apart():
    from lawlab.laws.compare import across_axes, compare_study
    from lawlab.report.tables import comparison_table

    rows = _rows("effective-params-law", {"m1": 3.0}, noise=0.01, seed=2)
    laws = [LawEntry(form="compression-law", metric="intrinsic"),
            LawEntry(form="p2-law", metric="intrinsic", params={"d_unit": 1000})]
    tables = compare_study(rows, laws, get_registry())
    assert set(tables) == {"intrinsic", across_axes("intrinsic")}
    plain, crossed = tables["intrinsic"], tables[across_axes("intrinsic")]
    # the float forms see the float variants only, ranked by one ratio out (one model)
    n_float = len(law_rows(rows, "intrinsic"))
    assert {r.fit.n for r in plain.rows if not r.fit.skipped} == {n_float}
    assert "p2-law" not in [r.form for r in plain.rows]
    assert plain.rank_by == "leave-one-ratio-out"
    # the cross-axis forms see every variant, judged on combinations they have not seen
    assert crossed.metric_kind == "intrinsic" and crossed.rank_by == "leave-one-axis-setting-out"
    assert sorted(r.form for r in crossed.rows) == sorted(FORMS)
    assert {r.fit.n for r in crossed.rows} == {len(law_rows(rows, "intrinsic", ("quant",)))} != {n_float}
    assert crossed.rows[0].form == "effective-params-law"
    p2 = next(r for r in crossed.rows if r.form == "p2-law")
    assert p2.fit.options["d_unit"] == 1000  # the spec's options reach the form it names
    table = comparison_table(across_axes("intrinsic"), crossed, {"p2-law"})
    assert "LOASO RMSE" in table.header and "quantised variants included" in table.caption
    assert table.records[0]["loaso_rmse"] == pytest.approx(crossed.rows[0].cv["leave-one-axis-setting-out"]["rmse"])
    # and says what "no change" scores held out the same way, and which forms beat it
    null = crossed.rows[0].cv["leave-one-axis-setting-out"]["null_rmse"]
    assert f"held out the same way (leave-one-axis-setting-out): RMSE {null:.4g}" in table.caption
    assert "beaten in log RMSE by effective-params-law" in table.caption
    assert "LOASO RMSE" not in comparison_table("intrinsic", plain, set()).header
