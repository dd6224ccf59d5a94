"""LoRA RFT on the SmolLM2 pack: tokens/s, and whether D PTB samples bring back the PTB
test cross-entropy of a random-PruneNet model (run twice with one seed: same numbers?).

    .venv/bin/python bench/bench_rft.py --size 256 --max-length 1024 --ratio 0.5
"""

from __future__ import annotations

import argparse
import json
import time

from common import offline_context, smollm2

from lawlab import environment


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=256, help="D, PTB training samples")
    ap.add_argument("--max-length", type=int, default=1024)
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--token-limit", type=int, default=4088, help="PTB test tokens scored")
    ap.add_argument("--runs", type=int, default=2, help="repeat with the same seed to check determinism")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    ctx = offline_context(device=args.device)
    reg, device, dtype = ctx.registry, ctx.device, ctx.dtype
    pruner = reg.get("pruners", "random-prunenet")
    ce, lora, ptb = (
        reg.get("evaluators", "cross-entropy"),
        reg.get("rft_recipes", "lora"),
        reg.get("datasets", "ptb"),
    )
    ce_params = ce.Params(datasets=["ptb"], window=512, token_limit=args.token_limit, batch_size=8)
    train = ptb.load(ptb.Params(), "train", ctx)
    rows = []
    for run in range(args.runs):
        model = smollm2(ctx)
        base = ce.evaluate(model, ce_params, ctx)[0].value
        model = pruner.prune(model, args.ratio, pruner.Params(), ctx)
        pruned = ce.evaluate(model, ce_params, ctx)[0].value
        start = time.perf_counter()
        model, out = lora.train(model, train, args.size, lora.Params(max_length=args.max_length), ctx)
        seconds = time.perf_counter() - start
        recovered = ce.evaluate(model, ce_params, ctx)[0].value
        m = {x.metric: x.value for x in out}
        rows.append(
            {
                "run": run,
                "ce_base": base,
                "ce_pruned": pruned,
                "ce_after_rft": recovered,
                "rft_loss_first": m["rft_loss_first"],
                "rft_loss_last": m["rft_loss"],
                "rft_tokens": m["rft_tokens"],
                "rft_tokens_per_s": m["rft_tokens_per_s"],
                "seconds": seconds,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    print(
        json.dumps(
            {
                "device": environment.device_name(device),
                "dtype": dtype,
                "size": args.size,
                "max_length": args.max_length,
                "ratio": args.ratio,
                "token_limit": args.token_limit,
                "rft_lowers_ce": all(r["ce_after_rft"] < r["ce_pruned"] for r in rows),
                "same_numbers": all(r["ce_after_rft"] == rows[0]["ce_after_rft"] for r in rows),
            }
        )
    )


if __name__ == "__main__":
    main()
