"""Cross-entropy evaluator vs a plain hand-written ``no_grad`` loop over the same windows
with the same model; medians of alternating runs. Target: lawlab ≥ 0.95× the loop's tokens/s.

    .venv/bin/python bench/bench_cross_entropy.py --tokens 8176 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import offline_context, smollm2

from lawlab.models.tokens import make_windows, tokenize_split


def plain_loop(model, windows, batch_size):
    nll, n = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(windows), batch_size):
            x = torch.tensor(windows[i : i + batch_size])
            logits = model(input_ids=x).logits[:, :-1].float()
            nll += torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="sum"
            ).item()
            n += x[:, 1:].numel()
    return nll / n, n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=8176, help="PTB test text tokens (a multiple of window-1)")
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    ctx = offline_context()
    reg = ctx.registry
    ce = reg.get("evaluators", "cross-entropy")
    model = smollm2(ctx)
    params = ce.Params(
        datasets=["ptb"], window=args.window, token_limit=args.tokens, batch_size=args.batch_size
    )
    ptb = reg.get("datasets", "ptb")
    ids = tokenize_split(model.tokenizer, ptb.load(ptb.Params(), "test", ctx), params.separator)[
        : args.tokens
    ]
    windows = make_windows(ids, args.window, model.tokenizer.bos_token_id)
    ce.evaluate(model, params, ctx)  # warm-up (and the tokenization cache, as in a study)
    ours, theirs = [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        a = ce.evaluate(model, params, ctx)[0]
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        b, n = plain_loop(model.model, windows, args.batch_size)
        theirs.append(time.perf_counter() - t)
    assert abs(a.value - b) < 1e-4, (a.value, b)
    o, p = n / statistics.median(ours), n / statistics.median(theirs)
    print(f"cross-entropy {a.value:.4f} over {n} tokens; threads {torch.get_num_threads()}")
    print(f"lawlab {o:.1f} tok/s   plain loop {p:.1f} tok/s   ratio {o / p:.3f} (target >= 0.95)")


if __name__ == "__main__":
    main()
