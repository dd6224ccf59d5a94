"""Paired against unpaired speedup: how much each scatters on this machine, and what a cell costs.

The runtime evaluator's ``relative_time`` times the variant and the unpruned model
alternately in one cell. The old way timed each model in its own cell, minutes apart, and
divided. This prints, for SmolLM2 pruned by random-PruneNet at r, the spread of both
estimates over ``--trials`` repetitions (each unpaired trial times the base, then the
variant, as two cells would) and the seconds one paired cell takes. On a shared machine
the unpaired ratio carries the load's changes between the two blocks; the paired one
should not.

    python bench/bench_runtime.py --ratio 0.5 --trials 5
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import time

from common import offline_context, smollm2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=5, help="rounds per paired cell")
    ap.add_argument("--prompt-tokens", type=int, default=64)
    args = ap.parse_args()

    from lawlab_plugins.runtime import synthetic_run

    ctx = offline_context()
    base = smollm2(ctx)
    pruner = ctx.registry.get("pruners", "random-prunenet")
    copied = dataclasses.replace(base, model=copy.deepcopy(base.model), history=list(base.history))
    variant = pruner.prune(copied, args.ratio, pruner.Params(), ctx)
    runtime = ctx.registry.get("evaluators", "runtime")
    params = runtime.Params(benchmark=False, prompt_tokens=args.prompt_tokens, decode_tokens=0,
                            repeats=args.repeats, threads=2)
    ctx.base = lambda: base
    vocab = base.model.get_input_embeddings().weight.shape[0]

    paired, unpaired, cell_seconds = [], [], []
    for _ in range(args.trials):
        t0 = time.perf_counter()
        found = {m.metric: m for m in runtime.evaluate(variant, params, ctx)}
        cell_seconds.append(time.perf_counter() - t0)
        paired.append(found["relative_time"].value)
        # two "cells": every round of the base, then every round of the variant
        b = [synthetic_run(base.model, params, "cpu", vocab)[0] for _ in range(args.repeats + 1)][1:]
        v = [synthetic_run(variant.model, params, "cpu", vocab)[0] for _ in range(args.repeats + 1)][1:]
        unpaired.append(statistics.median(v) / statistics.median(b))

    def spread(xs: list[float]) -> str:
        return f"median {statistics.median(xs):.3f}, range {min(xs):.3f}-{max(xs):.3f} ({max(xs) / min(xs):.2f}x)"

    print(f"SmolLM2-135M, random-PruneNet r = {args.ratio}, {args.prompt_tokens} tokens, {args.trials} trials")
    print(f"paired time ratio:   {spread(paired)}")
    print(f"unpaired time ratio: {spread(unpaired)}")
    print(f"one paired cell: {statistics.median(cell_seconds):.1f} s (median of {args.trials})")


if __name__ == "__main__":
    main()
