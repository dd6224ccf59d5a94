"""The report's figures, checked for what they plot: each line's data against the store's
numbers (or the fitted law), the axis labels and units, and one colour per model. The
synthetic store (tests/synthetic_store.py) follows known laws, so every expected value is
computed here from the tidy table, not read back from the figure code."""

from __future__ import annotations

from pathlib import Path
from statistics import mean
from typing import Any

import numpy as np
import pytest
from matplotlib import rc_context
from synthetic_store import METHODS, MODELS, RATIOS, SIZES, build_store

from lawlab.report.figures import PALETTE, STYLE, UNITS, figure_law, figure_runtime, figure_vs_ratio
from lawlab.report.gather import StudyData, gather


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> StudyData:
    root: Path = tmp_path_factory.mktemp("figures")
    build_store(root)
    return gather(root)


def expected_curve(study: StudyData, kind: str, model: str, method: str, dataset: str | None, D: int) -> dict:
    """The mean measured value at each ratio: the unpruned model's at r = 0 when D = 0."""
    rows = [r for r in study.rows if r["kind"] == kind and r["law_input"] and r["model"] == model
            and (dataset is None or r["dataset"] == dataset) and r["D"] == D and r["method"] in (method, "")]
    return {r: mean(x["value"] for x in rows if x["ratio"] == r) for r in sorted({x["ratio"] for x in rows})}


def lines_by_label(ax: Any) -> dict[str, Any]:
    return {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}


def test_intrinsic_vs_ratio_plots_each_models_mean_loss_per_test_set(study: StudyData) -> None:
    with rc_context(STYLE):
        drawing = figure_vs_ratio(study, "intrinsic")
    assert drawing.missing is None and drawing.figure is not None
    axes = drawing.figure.axes
    # one row per test set (a series), without and with RFT at the largest D
    assert [ax.get_title() for ax in axes] == [f"{ds}\n{rft}" for ds in ("ptb", "wiki")
                                               for rft in ("without RFT", f"with RFT (D = {max(SIZES):,})")]
    for ax in axes:
        assert ax.get_xlabel() == "nominal compression ratio r"
        assert ax.get_ylabel() == UNITS["intrinsic"] == "cross-entropy (nats/token)"
        dataset, D = ax.get_title().split("\n")[0], 0 if "without" in ax.get_title() else max(SIZES)
        lines = lines_by_label(ax)
        assert set(lines) == {f"{m} · {k}" for m in MODELS for k in METHODS}
        for mi, model in enumerate(MODELS):
            for ki, method in enumerate(METHODS):
                line = lines[f"{model} · {method}"]
                want = expected_curve(study, "intrinsic", model, method, dataset, D)
                assert list(line.get_xdata()) == pytest.approx(list(want))
                assert list(line.get_ydata()) == pytest.approx(list(want.values()), rel=1e-12)
                assert line.get_color() == PALETTE[mi]  # one colour (and marker) per model
                assert line.get_linestyle() == ("-", "--")[ki]  # one line style per method
        if D == 0:  # every method's curve starts at the unpruned model
            assert all(line.get_xdata()[0] == 0.0 for line in lines.values())
        else:
            assert all(list(line.get_xdata()) == list(RATIOS) for line in lines.values())


def test_extrinsic_vs_ratio_plots_the_mean_accuracy_not_the_tasks(study: StudyData) -> None:
    with rc_context(STYLE):
        drawing = figure_vs_ratio(study, "extrinsic")
    assert drawing.figure is not None
    axes = drawing.figure.axes
    # one series: the mean, named by the tasks it holds
    assert len(axes) == 2 and all(ax.get_title().startswith("lm-eval: mean of piqa+arc_easy\n") for ax in axes)
    for ax in axes:
        assert ax.get_ylabel() == "accuracy (fraction)"
        D = 0 if "without" in ax.get_title() else max(SIZES)
        for label, line in lines_by_label(ax).items():
            model, method = label.split(" · ")
            want = expected_curve(study, "extrinsic", model, method, "mean", D)
            assert list(line.get_ydata()) == pytest.approx(list(want.values()), rel=1e-12)


def test_runtime_figure_plots_seconds_the_law_and_the_speedup(study: StudyData) -> None:
    with rc_context(STYLE):
        drawing = figure_runtime(study)
    assert drawing.figure is not None
    ax_s, ax_x = drawing.figure.axes[:2]
    assert (ax_s.get_xlabel(), ax_s.get_ylabel()) == ("nominal compression ratio r", "runtime (s)")
    assert ax_x.get_ylabel() == "speedup S0 / S (×)"
    fits = {f.group["value"]: f for f in study.fits if f.metric_kind == "runtime" and f.group["by"] == "model"}
    s_lines, x_lines = lines_by_label(ax_s), lines_by_label(ax_x)
    for mi, model in enumerate(MODELS):
        # the measured seconds of each method (markers only), in the order of the methods
        measured = [line for line in ax_s.get_lines() if line.get_label() == f"{model} (measured)"]
        assert len(measured) == len(METHODS)
        for line, method in zip(measured, METHODS, strict=True):
            want = expected_curve(study, "runtime", model, method, None, 0)
            assert list(line.get_xdata()) == [0.0, *RATIOS] and line.get_linestyle() == "None"
            assert list(line.get_ydata()) == pytest.approx(list(want.values()), rel=1e-12)
        S0 = want[0.0]
        law = s_lines[f"{model}: per-model law β = {fits[model].theta['beta']:.2f}"]
        grid = np.asarray(law.get_xdata(), float)
        assert law.get_ydata() == pytest.approx(S0 * np.exp(fits[model].theta["log_C"]) * (1 + grid) ** fits[model].theta["beta"])
        assert {line.get_color() for line in measured} == {law.get_color()} == {PALETTE[mi]}
        for method in METHODS:
            speed = x_lines[f"{model} · {method}"]
            curve = expected_curve(study, "runtime", model, method, None, 0)
            assert list(speed.get_ydata()) == pytest.approx([curve[0.0] / v for v in curve.values()], rel=1e-12)
            assert speed.get_color() == PALETTE[mi]


def test_law_figure_draws_the_fitted_law_through_its_points(study: StudyData) -> None:
    law = next(law.key for law in study.laws if law.metric == "intrinsic")
    fit = next(f for f in study.fits if f.law == law and f.group["by"] == "pooled" and not f.skipped)
    with rc_context(STYLE):
        drawing = figure_law(study, law)
    assert drawing.figure is not None
    ax = drawing.figure.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("nominal compression ratio r", UNITS["intrinsic"])
    laws = lines_by_label(ax)
    # one frontier per model and test set (its own L0), without RFT and at the largest D
    assert len(laws) == len(MODELS) * 2 * 2
    for label, line in laws.items():
        L0 = float(label.split("L0 = ")[1].split(",")[0])
        D = float(label.split("D = ")[1].replace(",", ""))
        grid = np.asarray(line.get_xdata(), float)
        assert line.get_ydata() == pytest.approx(
            L0 ** fit.theta["alpha"] * (1 + grid) ** fit.theta["beta"] * (1 + 1 / (D + 1)) ** fit.theta["gamma"], rel=1e-3)
    # the markers are the measurements the fit saw, every one of them
    markers = [line for line in ax.get_lines() if line.get_label().startswith("_") and line.get_linestyle() == "None"]
    drawn = sorted(float(y) for line in markers for y in line.get_ydata())
    seen = sorted(float(v) for v, D in zip(fit.data["value"], fit.data["D"], strict=True) if D in (0, max(SIZES)))
    assert drawn == pytest.approx(seen, rel=1e-12)
