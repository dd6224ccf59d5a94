"""``lawlab fit``, ``compare`` and ``critical`` end to end on CSV files."""

from __future__ import annotations

import json

import pytest
from synthetic_store import build_store

from lawlab.cli.main import main
from lawlab.files import write_json
from lawlab.laws.simulate import simulate
from lawlab.run.store import load_table

MODELS = {"qwen-0.5b": 0.42, "qwen-1.5b": 0.50, "qwen-3b": 0.56, "llama-8b": 0.62}


@pytest.fixture
def wide(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")


def test_critical_prints_the_paper_example(capsys, wide):
    assert main(["critical", "--alpha", "0.98", "--beta", "-1.18", "--gamma", "-0.14", "--sigma", "0.8"]) == 0
    out = capsys.readouterr().out
    assert "2^β = 2^-1.18 ≈ 0.441" in out
    assert "r_crit(0.8) = 0.8^(1/-1.18) − 1 ≈ 0.208" in out


def test_critical_explains_ranges(capsys, wide, tmp_path):
    out_json = tmp_path / "c.json"
    assert main(["critical", "--beta", "-1.18", "--gamma", "-0.14", "--sigma", "0.3", "--json", str(out_json)]) == 0
    assert "every r recoverable" in capsys.readouterr().out
    saved = json.loads(out_json.read_text())
    assert saved["results"][0]["r_crit"] is None and "no critical ratio" in saved["results"][0]["reason"]
    assert main(["critical", "--beta", "1.18", "--sigma", "0.8"]) == 2
    assert "beta = 1.18 breaks the accuracy feasibility condition" in capsys.readouterr().err
    assert main(["critical", "--sigma", "0.8"]) == 2
    assert "give --beta" in capsys.readouterr().err


def test_fit_then_critical_from_the_fits(results_csv, capsys, wide):
    code = main(["fit", str(results_csv), "--group-by", "pooled", "--group-by", "model", "--bootstrap", "100",
                 "--summary"])
    assert code == 0
    out = capsys.readouterr().out
    assert "fitted laws" in out and "Adj. R²" in out
    fits = json.loads(results_csv.with_suffix(".fits.json").read_text())
    assert len(fits) == 1 + len(MODELS)
    pooled = next(f for f in fits if f["group"]["by"] == "pooled")
    beta = next(p for p in pooled["params"] if p["name"] == "beta")
    assert beta["ci"][0] <= -1.18 <= beta["ci"][1] and beta["bootstrap_ci"] is not None

    fits_path = results_csv.with_suffix(".fits.json")
    assert main(["critical", "--fits", str(fits_path), "--sigma", "0.8", "--r", "0.1"]) == 0
    out = capsys.readouterr().out
    assert "r_crit (95% interval)" in out and "pooled" in out
    saved = json.loads((results_csv.parent / "critical.json").read_text())
    point = saved["results"][0]["points"][0]
    assert point["sigma"] == 0.8 and point["low"] < point["r_crit"] < point["high"]

    args = ["critical", "--fits", str(fits_path), "--budget", "1e9"]
    args += ["--params", "qwen-0.5b=0.5e9", "--params", "qwen-1.5b=1.5e9", "--params", "llama-8b=8e9"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "best: qwen-0.5b" in out or "best: qwen-1.5b" in out


def test_fit_with_a_form_and_options(results_csv, capsys, wide):
    out = results_csv.parent / "x.json"
    code = main(["fit", str(results_csv), "--law", "kept-fraction-law", "--method", "nls",
                 "--option", "d_unit=1000", "-o", str(out)])
    assert code == 0
    fits = json.loads(out.read_text())
    assert fits[0]["form"] == "kept-fraction-law" and fits[0]["method"] == "nls"
    assert fits[0]["options"] == {"epsilon": 1.0, "d_unit": 1000.0}


def test_compare(results_csv, capsys, wide):
    code = main(["compare", str(results_csv), "--kind", "extrinsic",
                 "--forms", "ablation-r,compression-law,ablation-d"])
    assert code == 0
    out = capsys.readouterr().out
    assert "ranked by leave-one-model-out" in out
    table = json.loads(results_csv.with_suffix(".compare-extrinsic.json").read_text())
    assert table["rows"][0]["form"] == "compression-law"
    assert table["rows"][0]["cv"]["leave-one-ratio-out"]["folds"] == 5


def test_bad_inputs_exit_2_with_a_message(tmp_path, capsys, wide):
    minimal = tmp_path / "published.csv"
    minimal.write_text("model,ratio,D,value,L0\nm,0.1,0,0.5,0.6\nm,0.3,0,0.4,0.6\n")
    assert main(["fit", str(minimal)]) == 2
    assert "--kind" in capsys.readouterr().err
    # too few rows: reported in the table, and the exit code says nothing was fitted
    assert main(["fit", str(minimal), "--kind", "extrinsic"]) == 1
    captured = capsys.readouterr()
    assert "skipped" in captured.out and "no law could be fitted" in captured.err
    assert main(["fit", str(tmp_path / "missing.csv")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["compare", str(minimal)]) == 2
    assert "--kind" in capsys.readouterr().err


def test_fit_a_study_folder_reads_its_store_and_spec_laws(tmp_path, capsys, wide):
    # A real store (cells, plan, compression records) whose values follow eq. 1: the fit
    # sees them only through load_table's join of each cell to its base model (L0) and to
    # its prune ancestor (the effective ratio), and its law_input filter.
    import numpy as np
    import synthetic_store as syn

    from lawlab.spec.models import Spec

    build_store(tmp_path)
    laws = [{"form": "compression-law", "metric": "intrinsic", "group_by": ["calibration"], "label": "ce"},
            {"form": "compression-law", "metric": "extrinsic", "ratio": "effective", "label": "acc-eff"},
            {"form": "runtime-law", "metric": "runtime", "group_by": ["model"], "label": "speed"}]
    spec = Spec.model_validate({**syn.SPEC, "laws": laws}).canonical()
    write_json(tmp_path / "spec.json", spec)
    assert main(["fit", str(tmp_path)]) == 0
    analysis = json.loads((tmp_path / "analysis.json").read_text())  # the study's one analysis
    fits = {(f["law"], f["group"]["value"]): f for f in analysis["fits"]}
    assert sorted(fits) == [("acc-eff", "all"), ("ce", "based"), ("ce", "free"),
                            ("speed", "m-large"), ("speed", "m-small")]

    def coef(fit, name):
        return next(p["value"] for p in fit["params"] if p["name"] == name)

    # intrinsic: 2 models × 2 test sets × 4 ratios × 3 sizes per calibration; α is right only
    # when each row's L0 is its own model's loss on its own test set
    for group, method in (("free", "random-prunenet"), ("based", "slicegpt")):
        fit = fits[("ce", group)]
        assert fit["n"] == 2 * 2 * len(syn.RATIOS) * (1 + len(syn.SIZES))
        assert coef(fit, "alpha") == pytest.approx(syn.ALPHA_CE, abs=0.03)
        assert coef(fit, "beta") == pytest.approx(syn.BETA_CE[method], abs=0.1)
        assert coef(fit, "gamma") == pytest.approx(syn.GAMMA_CE, abs=0.05)
    for model, beta in syn.BETA_RUNTIME.items():
        assert coef(fits[("speed", model)], "beta") == pytest.approx(beta, abs=0.05)

    # extrinsic, on the effective ratio: only the per-cell means are law inputs (not the
    # per-task rows beside them), and r is each prune's fraction removed; the same fit done
    # by hand from the generator's own numbers
    acc = fits[("acc-eff", "all")]
    rows = [(model, method, r, D) for model in syn.MODELS for method in syn.METHODS for r in syn.RATIOS
            for D in (0, *syn.SIZES)]
    assert acc["n"] == len(rows) and acc["ratio"] == "effective"
    table = {(row["model"], row["method"], row["ratio"], row["D"]): row["value"] for row in load_table(tmp_path)
             if row["kind"] == "extrinsic" and row["dataset"] == "mean" and row["method"]}
    X = np.array([[np.log(syn.L0_ACC[m]), np.log1p(syn.compression(m, meth, r)["fraction_removed"]),
                   np.log1p(1 / (D + 1))] for m, meth, r, D in rows])
    y = np.log([table[row] for row in rows])
    b, *_ = np.linalg.lstsq(X, y, rcond=None)
    assert [coef(acc, n) for n in ("alpha", "beta", "gamma")] == pytest.approx(b, rel=1e-8)


@pytest.fixture
def three_kinds(tmp_path):
    """Fits of a loss law, an accuracy law and a runtime law, as `lawlab fit` writes them."""
    from lawlab.testing import write_rows_csv

    models = {"a": 3.0, "b": 2.5, "c": 2.2}
    rows = simulate("compression-law", {"alpha": 0.63, "beta": 1.72, "gamma": 1.16}, models=models,
                    noise=0.02, kind="intrinsic")
    rows += simulate("compression-law", {"alpha": 0.98, "beta": -1.18, "gamma": -0.14}, models=MODELS,
                     noise=0.02, seed=3)
    rows += simulate("runtime-law", {"log_C": 0.0, "beta": -0.8}, models={"a": 1.0, "b": 2.0}, sizes=(0,),
                     noise=0.01, kind="runtime")
    path = write_rows_csv(rows, tmp_path / "three.csv")
    assert main(["fit", str(path)]) == 0
    return path.with_suffix(".fits.json")


def test_critical_from_fits_tells_the_three_cases_apart_and_never_uses_a_runtime_law(three_kinds, capsys, wide):
    # σ = 0.8: a critical ratio for accuracy; on the wrong side for the loss law; the runtime law is left out
    assert main(["critical", "--fits", str(three_kinds), "--sigma", "0.8"]) == 0
    out = capsys.readouterr().out
    assert "not used: runtime-law:runtime" in out
    assert "every r recoverable" not in out
    assert "none: no r reaches σ" in out and "wrong side for a loss" in out
    assert "(intrinsic: loss thresholds)" in out and "(extrinsic: accuracy thresholds)" in out
    saved = json.loads((three_kinds.parent / "critical.json").read_text())
    by_kind = {r["metric_kind"]: r["points"][0] for r in saved["results"]}
    assert set(by_kind) == {"intrinsic", "extrinsic"}
    assert by_kind["intrinsic"]["outcome"] == "unreachable" and by_kind["intrinsic"]["r_crit"] is None
    assert by_kind["extrinsic"]["outcome"] == "critical"
    assert by_kind["extrinsic"]["r_crit"] == pytest.approx(0.8 ** (1 / -1.18) - 1, abs=0.05)
    # σ = 4 on the loss law: above 2^β ≈ 3.3, every r recovers; σ = 1.5 only on the loss law:
    assert main(["critical", "--fits", str(three_kinds), "--sigma", "4", "--law", "compression-law:intrinsic"]) == 0
    assert "none: every r recoverable" in capsys.readouterr().out
    # σ = 1.5 is unreachable for accuracy and a real threshold for the loss: both said, exit 0
    assert main(["critical", "--fits", str(three_kinds), "--sigma", "1.5"]) == 0
    out = capsys.readouterr().out
    assert "wrong side for accuracy" in out
    # a σ no law can reach is a usage error
    assert main(["critical", "--fits", str(three_kinds), "--sigma", "1.5",
                 "--law", "compression-law:extrinsic"]) == 2
    assert "wrong side for accuracy" in capsys.readouterr().err
    # only the runtime law: nothing to answer
    assert main(["critical", "--fits", str(three_kinds), "--law", "runtime-law"]) == 2
    assert "no fitted loss or accuracy law" in capsys.readouterr().err


def test_compare_without_kind_compares_each_kind_and_ranks_one_model_by_ratio(tmp_path, capsys, wide):
    from lawlab.testing import write_rows_csv

    rows = simulate("compression-law", {"alpha": 0.98, "beta": -1.18, "gamma": -0.14}, models={"m": 0.5},
                    noise=0.02, seed=3)
    rows += simulate("runtime-law", {"log_C": 0.0, "beta": -0.8}, models={"m": 1.0}, sizes=(0,),
                     noise=0.01, kind="runtime")
    path = write_rows_csv(rows, tmp_path / "one.csv")
    assert main(["compare", str(path)]) == 0
    out = capsys.readouterr().out
    assert "ranked by leave-one-ratio-out (one model" in out
    extrinsic = json.loads(path.with_suffix(".compare-extrinsic.json").read_text())
    runtime = json.loads(path.with_suffix(".compare-runtime.json").read_text())
    assert "runtime-law" not in [r["form"] for r in extrinsic["rows"]]
    assert {r["form"] for r in runtime["rows"]} <= {"runtime-law", "ablation-r"}
    errors = [r["cv"]["leave-one-ratio-out"]["rmse"] for r in extrinsic["rows"] if not r["skipped"]]
    assert errors == sorted(errors) and extrinsic["rank_by"] == "leave-one-ratio-out"


def test_findings_lines_wrap_to_the_terminal(results_csv, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["findings", str(results_csv)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert any(line.startswith("    ") for line in lines)  # a folded line continues indented
    monkeypatch.setenv("COLUMNS", "2000")
    assert main(["findings", str(results_csv)]) == 0
    wide = capsys.readouterr().out
    assert " ".join(wide.split()) == " ".join(out.split())  # the same words, only folded


def test_critical_tables_fit_100_columns_with_every_header_whole(three_kinds, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    assert main(["critical", "--fits", str(three_kinds), "--sigma", "0.8", "--sigma", "2"]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines() if line.startswith(("┃", "│", "┏", "└"))) <= 100
    assert out.count("r_crit (95% interval)") == 2
    for r in ("0.1", "0.3", "0.5", "0.7", "0.9"):
        assert out.count(f"D at r={r} ") == 2
    assert "none: no r reaches σ" in out and "none: r ≥ r_crit(σ)" in out


def test_compare_at_80_columns_shows_every_form_and_number_whole(results_csv, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["compare", str(results_csv), "--kind", "extrinsic"]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines() if not line.startswith("comparison:")) <= 80  # notes too
    table = json.loads(results_csv.with_suffix(".compare-extrinsic.json").read_text())
    for row in table["rows"]:
        assert f" {row['form']} " in out
        assert f" {row['aic']:.1f} " in out and f" {row['cv']['leave-one-model-out']['rmse']:.4g} " in out
