"""Differences paired on the same questions (lawlab.findings.paired): known differences are
recovered, recovered variants are compared with their own pruned model, and tasks at chance
measure nothing."""

from __future__ import annotations

import numpy as np

from lawlab.findings.paired import paired_differences, paired_notes


def cell(key: str, method: str, ratio: float, seed: int | None, D: int, answers: dict[str, list[float]],
         evaluator: str = "lm-eval") -> list[dict]:
    """Question rows of one cell: per task, each question's 0/1 outcome (acc) and a task loss."""
    return [{"model": "m", "method": method, "ratio": ratio, "seed": seed, "D": D, "evaluator": evaluator,
             "cell_key": key, "task": task, "subtask": task, "doc_id": i, "acc": a, "acc_norm": a,
             "nll_per_byte": 1.0 - 0.5 * a}
            for task, outcome in answers.items() for i, a in enumerate(outcome)]


def tidy(key: str, method: str, D: int, value: float, seed: int | None, task: str = "piqa") -> dict:
    return {"cell_key": key, "model": "m", "method": method, "D": D, "seed": seed, "kind": "extrinsic",
            "metric": "accuracy", "dataset": task, "value": value, "evaluator": "lm-eval",
            "details": {"variant": "acc", "chance": 0.5, "n": 400}}


def test_known_differences_are_recovered_with_question_intervals():
    rng = np.random.default_rng(0)
    base = (rng.random(400) < 0.8).astype(float)
    pruned = base.copy()
    pruned[np.flatnonzero(base)[:40]] = 0  # 40 of 400 questions lost: -0.10 exactly
    recovered = pruned.copy()
    recovered[np.flatnonzero(pruned == 0)[:20]] = 1  # RFT wins 20 back: +0.05 on the pruned model
    questions = (cell("b", "", 0.0, None, 0, {"piqa": list(base)}) + cell("p", "x", 0.3, 1, 0, {"piqa": list(pruned)})
                 + cell("r", "x", 0.3, 1, 32, {"piqa": list(recovered)})
                 + cell("other-seed", "x", 0.3, 2, 0, {"piqa": list(base)}))
    rows = [tidy("b", "", 0, base.mean(), None), tidy("p", "x", 0, pruned.mean(), 1),
            tidy("r", "x", 32, recovered.mean(), 1), tidy("other-seed", "x", 0, base.mean(), 2)]
    out = {((p["seed"], p["D"]), p["against"]): p
           for p in paired_differences(questions, rows)}
    pruned_vs_base = out[((1, 0.0), "unpruned")]
    assert pruned_vs_base["accuracy"]["diff"] == -0.1 and pruned_vs_base["questions"] == 400
    # paired, the interval is that of 40 changed answers in 400, far tighter than two
    # independent accuracies' (±0.055 each at 0.8 and 400 questions)
    lo, hi = pruned_vs_base["accuracy"]["low"], pruned_vs_base["accuracy"]["high"]
    assert lo < -0.1 < hi and hi - lo < 0.07
    # the recovered model is compared with its own pruned model (seed 1), not another seed's
    gain = out[((1, 32.0), "no RFT")]
    assert gain["accuracy"]["diff"] == 0.05 and gain["accuracy"]["low"] > 0
    assert gain["task_loss"]["diff"] == -0.025  # each won question's loss falls by 0.5: 20 × 0.5 / 400
    assert out[((2, 0.0), "unpruned")]["accuracy"] == {"diff": 0.0, "low": 0.0, "high": 0.0}
    notes = paired_notes(list(out.values()), "no RFT", lambda p: p["D"] > 0, "change from RFT")
    assert len(notes) == 1 and "accuracy +0.050 … +0.050 (0 below 0, 1 above 0)" in notes[0]


def test_a_task_at_chance_is_left_out_and_tasks_are_averaged_as_the_mean_is():
    base = {"piqa": [1.0] * 300 + [0.0] * 100, "winogrande": [1.0] * 200 + [0.0] * 200}
    worse = {"piqa": [1.0] * 260 + [0.0] * 140, "winogrande": [0.0] * 400}
    questions = cell("b", "", 0.0, None, 0, base) + cell("p", "x", 0.5, None, 0, worse)
    rows = [tidy("b", "", 0, 0.75, None, "piqa"), tidy("b", "", 0, 0.5, None, "winogrande"),
            tidy("p", "x", 0, 0.65, None, "piqa"), tidy("p", "x", 0, 0.0, None, "winogrande")]
    (only,) = paired_differences(questions, rows)
    # winogrande's unpruned accuracy, 0.50, is its chance level: it measures nothing and leaves
    assert only["tasks"] == 1 and only["accuracy"]["diff"] == -0.1
    rows[1]["value"] = 0.9  # now above chance: the change is the mean over the two tasks
    (both,) = paired_differences(questions, rows)
    assert both["tasks"] == 2 and both["accuracy"]["diff"] == (-0.1 + -0.5) / 2
