"""What each torchao setting buys on this CPU: time and memory against float, side by side.

For SmolLM2-135M, each quantisation setting of the hybrid study and each prompt length,
the quantised model and the float one run the same forward pass alternately (``--rounds``
times, order swapped each round, after one warm-up each); the median of the per-round
ratios is printed with the extremes, beside the weights each holds and what one forward
adds to the resident memory (the runtime evaluator's own measures).

    python bench/bench_quantize.py --tokens 64 128 256 --rounds 9
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics

from common import offline_context, smollm2

SETTINGS = {"w8": {"scheme": "weight", "bits": 8}, "w8a8": {"scheme": "dynamic"},
            "w4g64": {"scheme": "weight", "bits": 4, "group_size": 64}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch
    from lawlab_plugins.runtime import forward_memory, synthetic_run, weight_bytes

    torch.set_num_threads(args.threads)
    ctx = offline_context()
    base = smollm2(ctx)
    quantizer = ctx.registry.get("quantizers", "torchao")
    runtime = ctx.registry.get("evaluators", "runtime")
    vocab = base.model.get_input_embeddings().weight.shape[0]
    models = {"float": base.model}
    for label, setting in SETTINGS.items():
        copied = dataclasses.replace(base, model=copy.deepcopy(base.model), history=list(base.history))
        models[label] = quantizer.quantize(copied, quantizer.Params.model_validate(setting), ctx).model

    print(f"SmolLM2-135M, torchao, batch 1, {args.threads} threads, {args.rounds} paired rounds "
          f"(torch {torch.__version__}, {torch.get_num_threads()} threads)")
    print(f"{'setting':8} {'tokens':>6} {'time / float':>13} {'range':>13} {'weights MB':>11} {'forward MB':>11}")
    for tokens in args.tokens:
        params = runtime.Params(benchmark=False, batch=1, prompt_tokens=tokens, decode_tokens=0)
        for label, net in models.items():
            ratios = []
            for i in range(args.rounds + 1):
                pair = [(net, 0), (base.model, 1)] if i % 2 else [(base.model, 1), (net, 0)]
                t = [0.0, 0.0]
                for m, slot in pair:
                    t[slot] = synthetic_run(m, params, "cpu", vocab)[0]
                if i:  # the first round warms both up
                    ratios.append(t[0] / t[1])
            work, _ = forward_memory(net, params, "cpu", vocab)
            print(f"{label:8} {tokens:6d} {statistics.median(ratios):13.3f} "
                  f"{min(ratios):6.3f}-{max(ratios):.3f} {weight_bytes(net) / 1e6:11.1f} "
                  f"{(work or 0) / 1e6:11.1f}")


if __name__ == "__main__":
    main()
