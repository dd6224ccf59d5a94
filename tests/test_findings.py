"""The findings stage: each verdict checked on results drawn from known shapes.

Rows are built in the export's tidy format from closed-form curves (quadratic loss,
linear accuracy, a known RFT effect, a calibration-based method with a known advantage)
with small noise, so every verdict, and every "undetermined", is known in advance.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lawlab.cli.main import main
from lawlab.findings.answers import Findings
from lawlab.findings.stage import findings, study_findings
from lawlab.findings.stats import curvature
from lawlab.testing import write_rows_csv

RATIOS = (0.1, 0.3, 0.5, 0.7, 0.9)
SIZES = (0, 100, 1000)
SMALL, LARGE = "small", "large"
PARAMS = {SMALL: 100e6, LARGE: 150e6}  # the large model at r = 0.5-0.7 is the small one's size
L0_CE = {SMALL: 3.0, LARGE: 2.5}
L0_ACC = {SMALL: 0.50, LARGE: 0.60}

Curve = Callable[[str, str, float, float], float]  # (model, method, r, D) -> value


def quadratic_loss(model: str, method: str, r: float, D: float) -> float:
    """Loss 1 + 2r² times L0 (quadratic, continuous at r = 0); RFT removes up to half the rise."""
    rise = 2.0 * r**2 * (1 - 0.5 * D / (D + 100))
    return L0_CE[model] * (1 + rise) * (0.9 if method == "based" else 1.0) ** (r > 0)


def linear_accuracy(model: str, method: str, r: float, D: float) -> float:
    """Accuracy falls linearly to 60% of L0 at r = 1; RFT gives back 2% of L0 at most."""
    return L0_ACC[model] * (1 - 0.4 * r + 0.02 * D / (D + 100)) * (0.95 if method == "based" else 1.0) ** (r > 0)


def runtime(model: str, method: str, r: float, D: float) -> float:
    """Relative time (1+r)^β, the larger model gaining more (β −0.55 and −0.7: each model's
    mean reduction at r = 0.5-0.9 inside the paper's 24-35%, 25% and 31%)."""
    return (1 + r) ** (-0.55 if model == SMALL else -0.7)


def rows_from(
    models: tuple[str, ...] = (SMALL, LARGE),
    methods: dict[str, str] | None = None,
    ratios: tuple[float, ...] = RATIOS,
    sizes: tuple[int, ...] = SIZES,
    intrinsic: Curve | None = quadratic_loss,
    extrinsic: Curve | None = linear_accuracy,
    speed: Curve | None = runtime,
    noise: float = 0.002,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Tidy rows (the export's columns) for every (model, method, r, D), the unpruned models included.
    ``methods`` maps a method to its calibration ("free" or "based")."""
    methods = methods if methods is not None else {"free": "free", "based": "based"}
    rng = random.Random(seed)
    kinds = [(k, c) for k, c in (("intrinsic", intrinsic), ("extrinsic", extrinsic), ("runtime", speed)) if c]
    rows = []

    def add(model: str, method: str, r: float, D: int, kind: str, value: float, L0: float) -> None:
        kept = 1 - 0.6 * r
        rows.append({
            "model": model, "family": model, "method": method, "method_plugin": method,
            "calibration": methods.get(method, ""), "ratio": r, "ratio_effective": 0.6 * r,
            "params_kept": PARAMS[model] * kept if method else None,
            "params_original": PARAMS[model] if method else None, "rft": "lora" if D else "",
            "params_kept_no_embed": PARAMS[model] * kept if method else None,
            "fraction_removed_no_embed": 1 - kept if method else 0.0,
            "rft_dataset": "ptb" if D else "", "D": D, "evaluator": kind, "kind": kind,
            "metric": {"intrinsic": "cross_entropy", "extrinsic": "accuracy", "runtime": "relative_time"}[kind],
            "dataset": {"intrinsic": "ptb", "extrinsic": "mean", "runtime": "synthetic"}[kind],
            "value": value, "L0": L0, "law_input": True, "details": {"paired": True} if kind == "runtime" else {},
        })

    for model in models:
        for kind, curve in kinds:
            L0 = curve(model, "", 0.0, 0)
            add(model, "", 0.0, 0, kind, L0, L0)
            for method in methods:
                for r in ratios:
                    for D in sizes if kind != "runtime" else (0,):
                        value = curve(model, methods[method], r, D) * math.exp(rng.gauss(0, noise))
                        add(model, method, r, D, kind, value, L0)
    return rows


def verdicts(f: Findings, key: str) -> dict[str, str]:
    return {p.name: p.verdict for p in f[key].parts}


@pytest.fixture(scope="module")
def paper_like() -> Findings:
    return findings(rows_from(), source="synthetic")


# --------------------------------------------------------------------------- RQ1


def test_curvature_test_tells_quadratic_from_linear():
    r = [0, 0.1, 0.3, 0.5, 0.7, 0.9]
    quad = curvature(r, [1 + 2 * x**2 for x in r])
    assert quad["shape"] == "convex" and quad["quadratic_term"] == pytest.approx(2.0)
    lin = curvature(r, [1 - 0.4 * x + 0.001 * (-1) ** i for i, x in enumerate(r)])
    assert lin["shape"] == "linear" and lin["slope"] == pytest.approx(-0.4, abs=0.01)
    assert lin["r2_linear"] > 0.99


def test_rq1_quadratic_loss_and_linear_accuracy_are_consistent(paper_like):
    a = paper_like["rq1"]
    assert a.verdict == "consistent", a.reason
    assert set(verdicts(paper_like, "rq1").values()) == {"consistent"}
    ev = a.evidence["RFT raises extrinsic retention below r = 0.5"]
    # free and based methods at r = 0.1 and 0.3: 1 − 0.4 r, the based one 5% lower
    expected = sum(1 - 0.4 * r for r in (0.1, 0.3)) / 2 * (1 + 0.95) / 2
    assert ev["without_rft"]["mean"] == pytest.approx(expected, abs=0.005)
    assert ev["with_rft"]["mean"] > ev["without_rft"]["mean"]
    low, high = ev["without_rft"]["ci"]
    assert low < ev["without_rft"]["mean"] < high


def test_rq1_linear_loss_and_curved_accuracy_are_inconsistent():
    def linear_loss(model, method, r, D):
        return L0_CE[model] * (1 + 1.5 * r)

    def concave_accuracy(model, method, r, D):
        return L0_ACC[model] * (1 - 0.8 * r**2)

    f = findings(rows_from(intrinsic=linear_loss, extrinsic=concave_accuracy))
    parts = verdicts(f, "rq1")
    assert parts["intrinsic loss rises quadratically"] == "inconsistent"
    assert parts["accuracy falls linearly"] == "inconsistent"
    assert f["rq1"].verdict == "inconsistent"
    shapes = {t["shape"] for t in f["rq1"].evidence["accuracy falls linearly"]["curves"].values()}
    assert shapes == {"concave"}


def test_curvature_slope_test_equals_scipy_linregress():
    from scipy import stats

    r, y = [0, 0.1, 0.3, 0.5, 0.7, 0.9], [0.5, 0.49, 0.47, 0.46, 0.41, 0.40]
    ours, ref = curvature(r, y), stats.linregress(r, y)
    assert ours["slope"] == pytest.approx(ref.slope, rel=1e-12)
    assert ours["slope_se"] == pytest.approx(ref.stderr, rel=1e-9)
    assert ours["slope_p"] == pytest.approx(ref.pvalue, rel=1e-9)


def one_curve(change: Callable[[float], float]) -> Curve:
    """Paper-like accuracy, except the large model under the calibration-based method."""

    def curve(model, method, r, D):
        if model == LARGE and method == "based":
            return L0_ACC[model] * change(r)
        return linear_accuracy(model, method, r, D)

    return curve


def test_rq1_a_curve_that_only_wobbles_does_not_refute_falling_accuracy():
    """One curve flat at its L0 (a benchmark at chance) among falling ones: accuracy still
    falls; a curve that rises significantly with r refutes it, and is named."""
    flat = findings(rows_from(extrinsic=one_curve(lambda r: 1.0), noise=0.002))
    part = next(p for p in flat["rq1"].parts if p.name == "accuracy falls linearly")
    curve = part.evidence["curves"][f"{LARGE} · based"]
    assert curve["slope_p"] > 0.05  # no significant trend
    assert curve["verdict"] == "undetermined"  # a flat curve neither confirms nor refutes
    assert part.verdict == "consistent", part.reason
    assert "3 consistent, 0 inconsistent, 1 undetermined" in part.summary

    rising = findings(rows_from(extrinsic=one_curve(lambda r: 1 + 0.3 * r)))
    part = next(p for p in rising["rq1"].parts if p.name == "accuracy falls linearly")
    assert part.verdict == "inconsistent"
    assert part.reason.startswith(f"{LARGE} · based: accuracy rises with r")


def test_rq1_too_few_ratios_is_undetermined():
    f = findings(rows_from(ratios=(0.3, 0.6, 0.9), sizes=(0,)))
    part = next(p for p in f["rq1"].parts if p.name == "intrinsic loss rises quadratically")
    assert part.verdict == "undetermined" and "at least 4 ratios" in part.reason
    assert f["rq1"].verdict == "undetermined"


# --------------------------------------------------------------------------- RQ2


def test_rq2_speedup_beta_per_model_and_bigger_gains_more(paper_like):
    a = paper_like["rq2"]
    assert a.verdict == "consistent", a.reason
    assert a.evidence["beta"][SMALL]["beta"] == pytest.approx(-0.55, abs=0.02)
    assert a.evidence["beta"][LARGE]["beta"] == pytest.approx(-0.7, abs=0.02)
    assert a.evidence["largest"]["model"] == LARGE and a.evidence["largest"]["r"] == 0.9
    assert a.evidence["largest"]["reduction"] == pytest.approx(1 - 1.9**-0.7, abs=0.01)


def test_rq2_one_model_cannot_say_whether_bigger_models_gain_more():
    f = findings(rows_from(models=(SMALL,)))
    part = next(p for p in f["rq2"].parts if p.name == "bigger models gain more")
    assert part.verdict == "undetermined" and part.reason == "one model only"


def test_rq2_slowdown_is_inconsistent():
    f = findings(rows_from(speed=lambda m, k, r, D: (1 + r) ** 0.3))
    assert verdicts(f, "rq2")["runtime falls with r (β < 0)"] == "inconsistent"
    assert f["rq2"].verdict == "inconsistent"


# --------------------------------------------------------------------------- RQ3


def test_rq3_rft_recovers_loss_more_than_accuracy(paper_like):
    a = paper_like["rq3"]
    assert a.verdict == "consistent", a.reason
    # loss: (v0 − vD) / v0 = rise · 0.5 D/(D+100) / (1 + rise); largest at r = 0.9, D = 1000
    rise = 2 * 0.81
    best = rise * 0.5 * 1000 / 1100 / (1 + rise)
    assert a.evidence["intrinsic"]["best"] == pytest.approx(best, abs=0.01)
    assert 0 < a.evidence["extrinsic"]["best"] < 0.05
    crit = a.evidence["r_crit"]
    assert any("r_crit" in v for v in crit.values())


def test_rq3_without_rft_is_undetermined():
    f = findings(rows_from(sizes=(0,)))
    assert f["rq3"].verdict == "undetermined" and "no RFT cells" in f["rq3"].reason


def test_rq3_accuracy_recovering_more_is_inconsistent():
    def flat_loss(model, method, r, D):
        return L0_CE[model] * (1 + r) * (1 - 0.01 * D / (D + 100))

    def recovering_accuracy(model, method, r, D):
        return L0_ACC[model] * (1 - 0.4 * r) * (1 + 0.3 * D / (D + 100))

    f = findings(rows_from(intrinsic=flat_loss, extrinsic=recovering_accuracy))
    assert f["rq3"].verdict == "inconsistent"


# --------------------------------------------------------------------------- RQ4


def test_rq4_prefers_the_smaller_model_when_the_law_says_so(paper_like):
    a = paper_like["rq4"]
    assert a.verdict == "consistent", a.reason
    # measured pairs of equal size: the small model at r = 0 / 0.1 against the large one at 0.5 / 0.7
    pairs = a.evidence["pairs"]
    assert pairs and all(p["small"] == SMALL and abs(p["size_ratio"] - 1) <= 0.1 for p in pairs)
    assert all(p["difference"] > 0 for p in pairs)
    # the law's own prediction is kept, and labelled as one
    predicted = a.evidence["predicted"]
    assert predicted["note"].startswith("law predictions")
    assert all(b["best"]["model"] == SMALL for b in predicted["budgets"] if "best" in b)


def test_rq4_one_model_is_undetermined():
    f = findings(rows_from(models=(SMALL,)))
    assert f["rq4"].verdict == "undetermined" and "one model only" in f["rq4"].reason


# --------------------------------------------------------------------------- RQ5


def test_rq5_calibration_based_better_on_loss_free_better_on_accuracy(paper_like):
    a = paper_like["rq5"]
    assert a.verdict == "consistent", a.reason
    loss = a.evidence["calibration-based is better on loss"]
    # free − based in L/L0: the based method's loss is 10% lower at every r > 0
    assert loss["mean"] > 0.1 and loss["ci"][0] > 0
    acc = a.evidence["calibration-free is better on accuracy"]
    assert acc["mean"] > 0 and acc["ci"][0] > 0


def test_rq5_reversed_signs_are_inconsistent():
    def loss(model, method, r, D):  # the calibration-based method now has the higher loss...
        return quadratic_loss(model, "free", r, D) * (1.1 if method == "based" and r else 1.0)

    def accuracy(model, method, r, D):  # ...and the higher accuracy
        return linear_accuracy(model, "free", r, D) * (1.05 if method == "based" and r else 1.0)

    f = findings(rows_from(intrinsic=loss, extrinsic=accuracy))
    assert set(verdicts(f, "rq5").values()) == {"inconsistent"}


def test_rq5_without_a_calibration_based_method_is_undetermined():
    f = findings(rows_from(methods={"free": "free"}))
    assert f["rq5"].verdict == "undetermined" and "no calibration-based method" in f["rq5"].reason


# --------------------------------------------------------------------------- laws


def test_laws_feasible_signs_and_best_form(paper_like):
    a = paper_like["laws"]
    assert a.verdict == "consistent", a.reason
    assert a.evidence["intrinsic"]["ranked_by"] == "leave-one-model-out"
    assert a.evidence["runtime"]["best"] == "runtime-law"


def test_laws_accuracy_rising_with_r_is_infeasible():
    f = findings(rows_from(extrinsic=lambda m, k, r, D: L0_ACC[m] * (1 + 0.3 * r) * (1 - 0.01 * D / (D + 100))))
    part = next(p for p in f["laws"].parts if "extrinsic" in p.name)
    assert part.verdict == "inconsistent" and "beta" in part.reason


# --------------------------------------------------------------------------- the object and the command


def test_round_trip_and_json_shape(paper_like):
    d = json.loads(json.dumps(paper_like.to_dict()))
    for key in ("rq1", "rq2", "rq3", "rq4", "rq5", "laws"):
        assert {"claim", "verdict", "evidence", "reason"} <= set(d[key])
        assert d[key]["verdict"] in ("consistent", "inconsistent", "undetermined")
    again = Findings.from_dict(d)
    assert again.summary() == paper_like.summary()
    assert "RQ2, speed: CONSISTENT" in again.summary()


def test_no_compressed_variant_leaves_everything_undetermined():
    rows = [r for r in rows_from() if not r["method"]]
    f = findings(rows)
    assert {a.verdict for a in f.answers.values()} == {"undetermined"}


def test_findings_command_on_a_csv(tmp_path, capsys):
    path = write_rows_csv(rows_from(), tmp_path / "results.csv")
    assert main(["findings", str(path), "--json", str(tmp_path / "f.json")]) == 0
    out = capsys.readouterr().out
    assert "RQ1, shape: CONSISTENT" in out and "RQ5, calibration: CONSISTENT" in out
    saved = json.loads((tmp_path / "f.json").read_text())
    assert saved["rq2"]["verdict"] == "consistent"
    assert study_findings(path).to_dict()["rq3"]["verdict"] == "consistent"


def test_findings_command_on_a_run_folder(tmp_path, capsys):
    from test_report import build_store  # the report's synthetic store: two models, two calibrations

    build_store(tmp_path / "run")
    assert main(["findings", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert out.count(": CONSISTENT") + out.count(": INCONSISTENT") + out.count(": UNDETERMINED") == 6
    assert "RQ2, speed: CONSISTENT" in out


def test_findings_of_a_missing_path_is_a_usage_error(tmp_path, capsys):
    assert main(["findings", str(tmp_path / "nothing")]) == 2
    assert "no such study folder or results CSV" in capsys.readouterr().err


def test_the_report_shows_the_findings_first(tmp_path):
    from test_report import build_store

    from lawlab.report.gather import gather
    from lawlab.report.render import render_html, render_markdown
    from lawlab.report.tables import build

    build_store(tmp_path / "run")
    study = gather(tmp_path / "run")
    sections, tables = build(study, [])  # no figures: this is about the document's order
    html = render_html(study, sections, {})
    assert html.index('id="findings"') < html.index('id="summary"') < html.index('id="figures"')
    md = render_markdown(study, sections)
    assert next(line for line in md.splitlines() if line.startswith("## ")) == "## Findings: the paper's questions"
    assert "| RQ2, speed | consistent |" in md
    table = next(t for t in tables if t.name == "findings")
    assert [r["question"] for r in table.records] == ["rq1", "rq2", "rq3", "rq4", "rq5", "laws"]
    assert study.findings is not None and study.findings["rq2"].verdict == "consistent"


def test_two_extrinsic_evaluators_keep_their_own_baselines():
    rows = rows_from()
    mmlu = [{**r, "evaluator": "mmlu", "value": r["value"] * 0.5, "L0": r["L0"] * 0.5}
            for r in rows if r["kind"] == "extrinsic"]
    f = findings(rows + mmlu)
    assert f["rq1"].verdict == "consistent", f["rq1"].reason
    curves = f["rq1"].evidence["accuracy falls linearly"]["curves"]
    assert len(curves) == 8 and any(k.endswith("mmlu:mean") for k in curves)
    assert f["rq4"].verdict == "consistent", f["rq4"].reason


# --------------------------------------------------------------------------- the offline study


def test_offline_study_spec_validates_without_a_hub_and_has_the_papers_grid(capsys):
    spec = Path(__file__).parents[1] / "specs" / "offline-laws.toml"
    assert main(["validate", str(spec)]) == 0
    capsys.readouterr()
    assert main(["plan", str(spec), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    cells = plan["cells"]
    assert not plan["skipped"]
    # labels read "prune: MODEL / METHOD@RATIO"
    prunes = [c["label"].removeprefix("prune: ").replace(" / ", "@").split("@") for c in cells if c["kind"] == "prune"]
    assert {m for model, m, _ in prunes if model == "gemma3-270m"} == {"random-prunenet", "slicegpt"}
    assert {m for model, m, _ in prunes if model == "smollm2-135m"} == {"random-prunenet", "slicegpt", "prunenet"}
    assert len(prunes) == 25 and {float(r) for *_, r in prunes} == {0.1, 0.3, 0.5, 0.7, 0.9}
    assert sum(c["kind"] == "rft" for c in cells) == 50  # two sizes of D per pruned variant
    assert len(cells) == 2 + 25 + 50 + 77 * 3 + 27  # runtime only on the unrecovered 27 (after_rft = false)
