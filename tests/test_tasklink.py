"""Accuracy through task loss (compression → task loss → accuracy, as the OLMo ladders do
for compute): the sigmoid link recovers a known link, and where the truth is two-step the
two-step route predicts held-out accuracy better than the direct law and "no change"."""

from __future__ import annotations

import random

import pytest

from lawlab.laws.tasklink import Link, compare_two_step, fit_link

TRUE_LINK = Link(a=0.5, b=0.25, k=4.0, x0=1.2)


def test_the_link_recovers_a_known_sigmoid():
    loss = [0.6 + 0.05 * i for i in range(30)]
    fitted = fit_link(loss, TRUE_LINK.predict(loss).tolist())
    assert fitted.skipped is None and fitted.rmse < 1e-6
    for name in ("a", "b", "k", "x0"):
        assert getattr(fitted, name) == pytest.approx(getattr(TRUE_LINK, name), rel=1e-3)
    assert Link.from_dict(fitted.to_dict()) == fitted and "n = 30" in fitted.summary()
    assert "at least 5" in fit_link([1.0, 2.0], [0.5, 0.4]).skipped


def study(noise: float, seed: int = 0) -> list[dict]:
    """Three models; task loss follows the compression law (α 1, β 1.5, γ 0.3), accuracy is
    the known link of the task loss plus noise, as the tidy rows of a study."""
    rng = random.Random(seed)
    rows = []
    for model, L0 in (("small", 1.0), ("mid", 0.9), ("large", 0.8)):
        base_acc = float(TRUE_LINK.predict(L0))
        cells = [("", 0.0, 0)] + [("m", r, D) for r in (0.1, 0.3, 0.5, 0.7, 0.9) for D in (0, 8, 32)]
        for method, r, D in cells:
            loss = L0 * (1 + r) ** 1.5 * (1 + 1 / (D + 1)) ** (0.3 if method else 0.0)
            loss = L0 if not method else loss
            acc = float(TRUE_LINK.predict(loss)) + (rng.gauss(0, noise) if method else 0.0)
            key = f"{model}-{method}-{r}-{D}"
            common = {"model": model, "method": method, "ratio": r, "D": D, "dataset": "mean5", "cell_key": key}
            rows.append({**common, "metric": "task_loss", "value": loss, "L0": L0})
            rows.append({**common, "metric": "accuracy", "value": acc, "L0": base_acc})
    return rows


def test_two_step_beats_the_direct_law_and_no_change_where_the_truth_is_two_step():
    out = compare_two_step(study(noise=0.005), "compression-law", "mean5")
    assert out.skipped is None and out.by == "model" and out.n == 45 and len(out.folds) == 3
    assert out.rmse["two_step"] < out.rmse["direct"] < out.rmse["null"]
    assert out.rmse["two_step"] < 0.01  # about the accuracy noise
    assert "leave one model out" in out.summary()


def test_without_task_loss_it_says_so():
    rows = [r for r in study(0.0) if r["metric"] == "accuracy"]
    assert "task_loss" in compare_two_step(rows, "compression-law", "mean5").skipped
    one = compare_two_step([r for r in study(0.0) if r["model"] == "mid"], "compression-law", "mean5")
    assert one.by == "ratio" and len(one.folds) == 5  # one model: each ratio held out in turn
    assert one.rmse["two_step"] < 1e-6 < one.rmse["direct"]  # noiseless two-step truth
    # L0 = 1 makes log L0 = 0: α cannot be fitted, and the comparison says why
    flat = compare_two_step([r for r in study(0.0) if r["model"] == "small"], "compression-law", "mean5")
    assert flat.skipped.startswith("no ratio could be held out: ") and not flat.rmse
