"""lm-eval with lawlab's loglikelihood scorer (``backend = "lawlab"``) vs lm-eval's HFLM
(``backend = "hf"``): same process, same model, same requests, the two backends alternating
task by task so a change in machine load hits both. Prints the median wall-time ratio
(hf / lawlab) per task and overall (sum of medians), and compares the answers.

Targets on a 2-core CPU, six tasks at limit 200 (MMLU: 5 subjects): >= 2.0x overall on
SmolLM2 and >= 2.5x on Gemma-3-270M. Measured 2026-12-01 (one run per task): SmolLM2 at
limit 200, 2.17x; Gemma-3 at limit 30, 3.29x (docs/evaluation.md has the tables).

    .venv/bin/python bench/bench_lm_eval.py --model smollm2 --limit 200 --repeats 3
    .venv/bin/python bench/bench_lm_eval.py --model gemma3 --limit 200 --repeats 3
    .venv/bin/python bench/bench_lm_eval.py --check --limit 100 --mmlu 3   # identity check, asserts

``--check`` compares every request's log-likelihood (within 1e-4) and is_greedy, and each
task's acc and acc_norm; documents whose best choice is tied within 1e-4 may differ and are
counted. Exit status 1 when anything else differs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from common import offline_context, smollm2
from lawlab_plugins.lm_eval_tasks import build_lm, run_task, task_manager

TASKS = ("piqa", "arc_easy", "arc_challenge", "hellaswag", "winogrande")
MMLU = ("abstract_algebra", "anatomy", "astronomy", "college_biology", "high_school_geography")
TOLERANCE = 1e-4


def load(name: str, ctx):
    if name == "smollm2":
        return smollm2(ctx)
    source = ctx.registry.get("model_sources", "pack")
    model = source.load(source.Params(pack="gemma3-270m"), ctx)
    model.model.to(ctx.device)
    return model


def per_doc(result: dict, task: str) -> dict[int, list[tuple[float, bool]]]:
    """doc_id -> [(log-likelihood, is_greedy) per choice] from log_samples."""
    return {s["doc_id"]: [tuple(r[0]) for r in s["resps"]] for s in result["samples"][task]}


def compare(task: str, hf: dict, ours: dict) -> tuple[list[str], int]:
    """Problems found, and the number of near-tied documents (allowed to differ)."""
    problems, ties = [], 0
    a, b = per_doc(hf, task), per_doc(ours, task)
    worst, greedy = 0.0, 0
    for doc, choices in a.items():
        mine = b[doc]
        worst = max(worst, *(abs(x[0] - y[0]) for x, y in zip(choices, mine, strict=True)))
        greedy += sum(x[1] != y[1] for x, y in zip(choices, mine, strict=True))
        lls = sorted((c[0] for c in choices), reverse=True)
        ties += len(lls) > 1 and lls[0] - lls[1] < TOLERANCE
    if worst >= TOLERANCE:
        problems.append(f"{task}: max |Δ log-likelihood| {worst:.2e} >= {TOLERANCE}")
    if greedy:
        problems.append(f"{task}: is_greedy differs on {greedy} request(s)")
    for metric in ("acc,none", "acc_norm,none"):
        x, y = hf["results"][task].get(metric), ours["results"][task].get(metric)
        if x != y and not ties:
            problems.append(f"{task}: {metric} {x} (hf) vs {y} (lawlab)")
    print(f"  {task}: max |Δ ll| {worst:.2e}, greedy mismatches {greedy}, near ties {ties}, "
          f"acc {hf['results'][task].get('acc,none')} / {ours['results'][task].get('acc,none')}, "
          f"acc_norm {hf['results'][task].get('acc_norm,none')} / {ours['results'][task].get('acc_norm,none')}")
    return problems, ties


def _time_loglikelihood(lm) -> list[float]:
    """Record the seconds of each ``lm.loglikelihood`` call (lm-eval looks it up on the instance)."""
    spent: list[float] = []
    inner = lm.loglikelihood

    def timed(requests, *a, **kw):
        start = time.perf_counter()
        try:
            return inner(requests, *a, **kw)
        finally:
            spent.append(time.perf_counter() - start)

    lm.loglikelihood = timed
    return spent


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=["smollm2", "gemma3"], default="smollm2")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--mmlu", type=int, default=5, help="MMLU subjects (each a task)")
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--check", action="store_true", help="compare answers; exit 1 on a difference")
    args = ap.parse_args()
    ctx = offline_context()
    model = load(args.model, ctx)
    manager = task_manager(True, ctx.cache_dir)
    tasks = [t for t in args.tasks.split(",") if t] + [f"mmlu_{s}" for s in MMLU[: args.mmlu]]
    lms = {b: build_lm(model, args.batch_size, None, b) for b in ("hf", "lawlab")}
    scoring = {b: _time_loglikelihood(lms[b]) for b in lms}  # seconds inside loglikelihood, per call
    assert lms["lawlab"].scorer is not None, "the scorer's probe failed: lawlab would fall back to HFLM"
    seconds: dict[str, dict[str, list[float]]] = {t: {"hf": [], "lawlab": []} for t in tasks}
    inside: dict[str, dict[str, list[float]]] = {t: {"hf": [], "lawlab": []} for t in tasks}
    problems: list[str] = []
    ties = 0
    print(f"{args.model}, limit {args.limit}, batch {args.batch_size}, {args.repeats} repeat(s), "
          f"{len(tasks)} tasks", flush=True)
    for rep in range(args.repeats):
        for task in tasks:
            order = ("hf", "lawlab") if rep % 2 == 0 else ("lawlab", "hf")
            results = {}
            for backend in order:
                start = time.perf_counter()
                results[backend] = run_task(lms[backend], task, manager, args.limit, 0, log_samples=args.check)
                seconds[task][backend].append(time.perf_counter() - start)
                inside[task][backend].append(scoring[backend][-1])
            print(f"  [{rep}] {task}: wall hf {seconds[task]['hf'][-1]:.1f} s, lawlab {seconds[task]['lawlab'][-1]:.1f} s;"
                  f" in loglikelihood hf {inside[task]['hf'][-1]:.1f} s, lawlab {inside[task]['lawlab'][-1]:.1f} s",
                  flush=True)
            if args.check and rep == 0:
                found, n = compare(task, results["hf"], results["lawlab"])
                problems += found
                ties += n
    target = 2.0 if args.model == "smollm2" else 2.5
    for title, table in (("wall time of simple_evaluate", seconds), ("time inside loglikelihood", inside)):
        print(f"\n{title}\ntask                      hf (s)   lawlab (s)   ratio hf/lawlab")
        total = {"hf": 0.0, "lawlab": 0.0}
        for task in tasks:
            med = {b: statistics.median(table[task][b]) for b in total}
            for b in total:
                total[b] += med[b]
            print(f"{task:24} {med['hf']:8.1f} {med['lawlab']:12.1f} {med['hf'] / med['lawlab']:10.2f}")
        print(f"{'overall':24} {total['hf']:8.1f} {total['lawlab']:12.1f} {total['hf'] / total['lawlab']:10.2f}"
              f"   (target >= {target}; medians of {args.repeats} run(s) per task)")
    if args.check:
        print(f"near-tied documents (best two choices within {TOLERANCE}): {ties}")
        print("\n".join(problems) or "answers: identical within tolerance")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
