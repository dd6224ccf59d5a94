"""Differences between variants paired on the same questions.

Two variants of a model scored on the same questions differ by far less noise than two
independent accuracies: a question that is hard for one is hard for the other. From each
evaluation cell's per-question records (:mod:`lawlab.questions`), every compressed variant is
compared with its unpruned model, and every recovered variant with the same pruned model
without RFT, on the questions both answered: the change in accuracy (each task's own metric,
acc or acc_norm, as its stored number uses) and in task loss (negative log-likelihood of the
right choice per byte), averaged over tasks as the stored mean is, with a bootstrap over
questions drawn within each task.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lawlab.findings.stats import LEVEL, N_BOOT

PAIRED_CI = (f"{LEVEL:.0%} bootstrap over the paired questions, drawn within each task ({N_BOOT} resamples); "
             "one pruned model's comparison, not the spread between pruned models")


def paired_differences(questions: Sequence[dict[str, Any]], rows: Sequence[dict[str, Any]], *,
                       seed: int = 0) -> list[dict[str, Any]]:
    """One record per comparison: a compressed variant against its unpruned model
    (``against = "unpruned"``), and a recovered one against the same pruned model without RFT
    (``against = "no RFT"``), per evaluator. ``questions`` are :func:`lawlab.run.store.load_questions`
    rows; ``rows`` the tidy results, which say each task's accuracy variant (acc or acc_norm)."""
    from lawlab.findings.rows import above_chance_tasks

    variant_of = {(r.get("cell_key"), r["dataset"]): r["details"].get("variant", "acc")
                  for r in rows if r.get("metric") == "accuracy"}
    seed_of = {r.get("cell_key"): r.get("seed") for r in rows}  # the pruning seed of the variant
    # a task the unpruned model does not answer above chance measures nothing (the chance rule)
    at_chance = {k for k, t in above_chance_tasks(rows).items() if not t["above"]}
    cells: dict[str, dict[str, Any]] = {}
    for q in questions:
        if (q["model"], q["evaluator"], q["task"]) in at_chance:
            continue
        info = {**q, "seed": seed_of.get(q["cell_key"], q["seed"])}
        cell = cells.setdefault(q["cell_key"], {"info": info, "tasks": {}})
        cell["tasks"].setdefault(q["task"], {})[(q["subtask"], q["doc_id"])] = q
    by_variant = {_variant(c["info"]): key for key, c in cells.items()}
    out = []
    for key, cell in sorted(cells.items(), key=lambda kv: _variant(kv[1]["info"])):
        info = cell["info"]
        if not info["method"] and not info["D"]:
            continue  # the unpruned model is what the others are compared with
        base = by_variant.get((info["model"], "", 0.0, None, 0.0, info["evaluator"]))
        against = [("unpruned", base)]
        if info["D"] and info["method"]:
            v = _variant(info)
            against.append(("no RFT", by_variant.get((*v[:4], 0.0, v[5]))))
        for name, other in against:
            if other is None or other == key:
                continue
            rec = _compare(cells[other], cell, variant_of, seed)
            if rec is not None:
                out.append({"model": info["model"], "method": info["method"], "ratio": float(info["ratio"] or 0),
                            "seed": info["seed"], "D": float(info["D"] or 0), "evaluator": info["evaluator"],
                            "against": name, **rec})
    return out


def _variant(q: dict[str, Any]) -> tuple[Any, ...]:
    method = q["method"] or ""
    return (q["model"], method, float(q["ratio"] or 0), q["seed"] if method else None, float(q["D"] or 0),
            q["evaluator"])


def _compare(a: dict[str, Any], b: dict[str, Any], variant_of: dict[tuple[Any, str], str],
             seed: int) -> dict[str, Any] | None:
    """b − a over the questions both cells answered, each task's mean change averaged over tasks."""
    import numpy as np

    acc, loss = [], []
    for task in sorted(set(a["tasks"]) & set(b["tasks"])):
        common = sorted(set(a["tasks"][task]) & set(b["tasks"][task]))
        if not common:
            continue
        field = variant_of.get((b["info"]["cell_key"], task), "acc")
        pairs = [(a["tasks"][task][k], b["tasks"][task][k]) for k in common]
        acc.append(np.array([_num(y, field) - _num(x, field) for x, y in pairs]))
        loss.append(np.array([_num(y, "nll_per_byte") - _num(x, "nll_per_byte") for x, y in pairs]))
    if not acc:
        return None
    rng = np.random.default_rng(seed)
    return {"tasks": len(acc), "questions": int(sum(len(d) for d in acc)),
            "accuracy": _stratified(acc, rng), "task_loss": _stratified(loss, rng)}


def _num(q: dict[str, Any], field: str) -> float:
    value = q.get(field)
    return float(value if value is not None else q["acc"])  # acc_norm is absent where a task has none


def _stratified(diffs: list[Any], rng: Any) -> dict[str, float]:
    """The mean over tasks of each task's mean difference, and its bootstrap interval with
    questions resampled within each task."""
    import numpy as np

    means = np.zeros(N_BOOT)
    for d in diffs:
        idx = rng.integers(0, len(d), size=(N_BOOT, len(d)))
        means += d[idx].mean(axis=1)
    means /= len(diffs)
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return {"diff": float(np.mean([d.mean() for d in diffs])), "low": float(low), "high": float(high)}


def paired_notes(paired: Sequence[dict[str, Any]], against: str, select: Any, what: str) -> list[str]:
    """One note per (model, evaluator) summarising the paired comparisons ``select`` keeps:
    the range of the changes, and how many intervals exclude 0 on each side."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for p in paired:
        if p["against"] == against and select(p):
            groups.setdefault((p["model"], p["evaluator"]), []).append(p)
    notes = []
    for (model, evaluator), ps in sorted(groups.items()):
        parts = []
        for metric, label in (("accuracy", "accuracy"), ("task_loss", "task loss per byte")):
            diffs = [p[metric]["diff"] for p in ps]
            up = sum(p[metric]["low"] > 0 for p in ps)
            down = sum(p[metric]["high"] < 0 for p in ps)
            parts.append(f"{label} {min(diffs):+.3f} … {max(diffs):+.3f} ({down} below 0, {up} above 0)")
        n = sum(p["questions"] for p in ps)
        notes.append(f"paired over questions, {what} ({model}, {evaluator}; {len(ps)} pruned model(s), {n} question "
                     f"pairs): " + "; ".join(parts) + f" [{PAIRED_CI}]")
    return notes
