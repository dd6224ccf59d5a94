"""lawlab's SliceGPT beside the authors' code (microsoft/TransformerCompression) on SmolLM2.

The setting the reference numbers were measured in: the SmolLM2-135M pack, PTB-train
calibration, 32 windows × 512 tokens, seed 42, PTB-test cross-entropy on the joined test
text, BOS + 511 tokens per window, the first 4,096 tokens. The authors' code gave 4.437 /
5.015 / 5.644 nats at r = 0.1 / 0.3 / 0.5. It subtracts the embedding mean before its
norms (on an RMSNorm model that changes the function); lawlab stays exact, so a small gap
is expected either way. The target is |Δ| ≤ 0.05.

Printed per r: lawlab's CE on the test text as published (``ptb.test.txt``'s layout) and
on the sentences joined by blank lines (the reference code's join), the reference value,
the difference, parameters kept and pruning seconds.

    .venv/bin/python bench/bench_slicegpt_reference.py                 # ~10-20 min on 2 busy cores
    .venv/bin/python bench/bench_slicegpt_reference.py --ratios 0.3 --json out.json

``--check PACK`` instead checks exactness on a model pack (gemma3-270m, smollm2-135m): the
largest |Δlogit| of the r = 0 model against the original on a probe sentence, identical
logits after save and reload, and PTB-test CE at r = 0.1 … 0.9 (it should rise monotonically):

    .venv/bin/python bench/bench_slicegpt_reference.py --check gemma3-270m --samples 16 --seqlen 256
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

REFERENCE = {0.1: 4.437, 0.3: 5.015, 0.5: 5.644}  # the authors' code, same setting
TARGET = 0.05
CALIBRATION = {"calibration_dataset": "ptb", "calibration_samples": 32, "calibration_seqlen": 512}


def ptb_ce(model: Any, ctx: Any, separator: str | None, tokens: int) -> float:
    evaluator = ctx.registry.get("evaluators", "cross-entropy")
    params = evaluator.Params(datasets=["ptb"], window=512, token_limit=tokens, batch_size=4, separator=separator)
    return next(m.value for m in evaluator.evaluate(model, params, ctx) if m.dataset == "ptb")


def check(args: argparse.Namespace) -> None:
    """r = 0 exactness, save/reload and CE monotonicity on a pack."""
    import tempfile

    import torch
    from common import offline_context

    ctx = offline_context(seed=args.seed)
    source = ctx.registry.get("model_sources", "pack")
    base = source.load(source.Params(pack=args.check), ctx)
    pruner = ctx.registry.get("pruners", "slicegpt")
    params = pruner.Params(calibration_dataset="ptb", calibration_samples=args.samples, calibration_seqlen=args.seqlen)
    tok = base.tokenizer
    probe = "The market fell sharply on news that the bank would raise rates and the dollar weakened"
    ids = torch.tensor([[tok.bos_token_id, *tok(probe, add_special_tokens=False)["input_ids"]]])

    def logits(m: Any) -> Any:
        with torch.no_grad():
            return m.model(input_ids=ids).logits.float()

    reference = logits(base)
    print(f"{args.check}: PTB calibration {args.samples}×{args.seqlen}, seed {args.seed}; "
          f"PTB-test CE on the first {args.tokens} tokens; unpruned CE {ptb_ce(base, ctx, None, args.tokens):.3f}",
          flush=True)
    for r in args.ratios:
        model = pruner.prune(copy.deepcopy(base), r, params, ctx)
        out = logits(model)
        line = f"r={r:.1f} max|Δlogit| {float((out - reference).abs().max()):.2e} (logits up to " \
               f"{float(reference.abs().max()):.1f})  CE {ptb_ce(model, ctx, None, args.tokens):.3f}  " \
               f"params kept {model.compression.params_kept / model.compression.params_original:.1%}"
        if r == args.ratios[-1]:
            folder = Path(tempfile.mkdtemp(prefix="bench-slicegpt-")) / "m"
            pruner.save_model(model, folder)
            again = logits(pruner.load_model(folder, ctx))
            line += f"  reload max|Δ| {float((again - out).abs().max()):.1e}"
        print(line, flush=True)
        del model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ratios", type=float, nargs="+", default=sorted(REFERENCE))
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--tokens", type=int, default=4096, help="PTB-test tokens scored (the reference: 4096)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--check", metavar="PACK", help="check exactness on this model pack instead")
    parser.add_argument("--samples", type=int, default=16, help="--check: calibration windows")
    parser.add_argument("--seqlen", type=int, default=256, help="--check: tokens per window")
    args = parser.parse_args()
    if args.check:
        if args.ratios == sorted(REFERENCE):
            args.ratios = [0.0, 0.1, 0.3, 0.5, 0.7, 0.9]
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        return check(args)

    import torch
    from common import offline_context, smollm2

    if args.threads:
        torch.set_num_threads(args.threads)
    ctx = offline_context(seed=args.seed)
    base = smollm2(ctx)
    pruner = ctx.registry.get("pruners", "slicegpt")
    params = pruner.Params(**CALIBRATION)
    seps = {"published": None, "blank-line join": "\n\n"}
    base_ce = {k: ptb_ce(base, ctx, s, args.tokens) for k, s in seps.items()}
    print(f"SmolLM2-135M pack, PTB calibration {CALIBRATION['calibration_samples']}×"
          f"{CALIBRATION['calibration_seqlen']}, seed {args.seed}; PTB-test CE, first {args.tokens} tokens, "
          f"BOS + 511 per window; unpruned: {base_ce['published']:.3f} (published layout), "
          f"{base_ce['blank-line join']:.3f} (blank-line join)", flush=True)
    header = f"{'r':>4} {'lawlab (published)':>19} {'lawlab (blank join)':>20} {'reference':>10} {'Δ (published)':>14} " \
             f"{'Δ (blank join)':>15} {'params kept':>12} {'prune s':>8}"
    print(header, flush=True)
    rows = []
    for r in args.ratios:
        start = time.perf_counter()
        model = pruner.prune(copy.deepcopy(base), r, params, ctx)
        seconds = time.perf_counter() - start
        ce = {k: ptb_ce(model, ctx, s, args.tokens) for k, s in seps.items()}
        ref = REFERENCE.get(r)
        c = model.compression
        row = {"ratio": r, "lawlab_published": ce["published"], "lawlab_blank_join": ce["blank-line join"],
               "reference": ref, "params_kept_fraction": c.params_kept / c.params_original,
               "prune_seconds": seconds, "windows_sha256": c.details["calibration"]["windows"]["windows_sha256"]}
        rows.append(row)

        def delta(x: float, ref: float | None = ref) -> str:
            return "-" if ref is None else f"{x - ref:+.3f}"

        print(f"{r:4.1f} {ce['published']:19.3f} {ce['blank-line join']:20.3f} "
              f"{ref if ref is not None else float('nan'):10.3f} {delta(ce['published']):>14} "
              f"{delta(ce['blank-line join']):>15} {row['params_kept_fraction']:12.1%} {seconds:8.0f}", flush=True)
        del model
    within = [abs(x["lawlab_published"] - x["reference"]) <= TARGET for x in rows if x["reference"] is not None]
    print(f"within {TARGET} nats of the reference (published layout): {sum(within)}/{len(within)}")
    if args.json:
        Path(args.json).write_text(json.dumps({"unpruned": base_ce, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
