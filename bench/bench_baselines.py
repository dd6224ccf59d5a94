"""The field's pruning baselines against lawlab's structured methods, on an offline pack.

Per (method, setting): pruning seconds, parameters kept (non-zeros for sparse methods),
the FLOPs bound of dense kernels, the measured forward speedup against the unpruned model
in the same run (``bench_prune.paired_seconds``), and PTB-test cross-entropy (first
``--ce-tokens`` tokens, 512-token windows). Calibration-based methods use ``--cal-samples``
× ``--cal-seqlen`` PTB-train tokens drawn with the seed; prints a markdown table.

    .venv/bin/python bench/bench_baselines.py --pack smollm2-135m --json smol.json
    .venv/bin/python bench/bench_baselines.py --pack gemma3-270m --methods wanda shortgpt --ratios 0.5
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from bench_prune import cross_entropy, paired_seconds

NM = ("2:4", "4:8")  # n:m settings of the sparse methods, at r = n/m


def settings(methods: list[str], ratios: list[float]) -> list[tuple[str, str, float, dict[str, Any]]]:
    """(method, label, r, extra params) for every cell."""
    cells = []
    for method in methods:
        for r in ratios:
            cells.append((method, f"{r:g}", r, {}))
        if method in ("magnitude", "wanda"):
            for s in NM:
                n, m = map(int, s.split(":"))
                cells.append((method, s, n / m, {"structure": s}))
    return cells


def main() -> None:
    import torch

    from lawlab.api import RunContext
    from lawlab.environment import cache_dir, enter_offline_mode
    from lawlab.registry import load_registry

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pack", default="smollm2-135m")
    ap.add_argument("--methods", nargs="+",
                    default=["magnitude", "wanda", "wanda-sp", "shortgpt", "random-prunenet", "slicegpt"])
    ap.add_argument("--ratios", nargs="+", type=float, default=[0.1, 0.3, 0.5, 0.7, 0.9])
    ap.add_argument("--cal-samples", type=int, default=16)
    ap.add_argument("--cal-seqlen", type=int, default=256)
    ap.add_argument("--ce-tokens", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="write the rows here (after every row)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    enter_offline_mode()
    registry = load_registry()
    ctx = RunContext(seed=args.seed, device="cpu", dtype="float32", cache_dir=cache_dir(),
                     work_dir=Path(tempfile.mkdtemp(prefix="bench-baselines-")), offline=True, registry=registry)
    source = registry.get("model_sources", "pack")
    base = source.load(source.Params(pack=args.pack), ctx)
    base_ce = cross_entropy(base, ctx, args.ce_tokens)
    calibration = {"calibration_dataset": "ptb", "calibration_samples": args.cal_samples,
                   "calibration_seqlen": args.cal_seqlen}
    print(f"{args.pack} unpruned: PTB CE {base_ce:.3f} (first {args.ce_tokens} tokens); calibration "
          f"{args.cal_samples}x{args.cal_seqlen} PTB-train; timing {args.batch}x{args.length} tokens, median of "
          f"{args.repeats}, {torch.get_num_threads()} thread(s)", flush=True)
    print("| method | setting | effective | kept (non-zero) | no-emb kept | FLOPs bound | measured | prune s | PTB CE |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows = []
    for method, label, r, extra in settings(args.methods, args.ratios):
        pruner = registry.get("pruners", method)
        params = pruner.Params(**({**calibration} if pruner.calibration else {}), **extra)
        model = pruner.prune(copy.deepcopy(base), r, params, ctx)
        c = model.compression
        base_s, s = paired_seconds(base.model, model.model, args.batch, args.length, args.repeats)
        ce = cross_entropy(model, ctx, args.ce_tokens)
        effective = c.details.get("effective_ratio", c.details.get("channel_fraction_removed",
                                                                   c.details.get("hidden_fraction_removed", r)))
        row = {"pack": args.pack, "method": method, "setting": label, "ratio": r, "effective_ratio": effective,
               "kept": c.params_kept / c.params_original,
               "kept_no_embed": c.params_kept_no_embed / c.params_original_no_embed,
               "flops_speedup": c.flops_speedup, "measured_speedup": base_s / s, "prune_seconds": c.prune_seconds,
               "ptb_ce": ce, "base_ptb_ce": base_ce}
        rows.append(row)
        print(f"| {method} | {label} | {effective:.2f} | {row['kept']:.1%} | {row['kept_no_embed']:.1%} | "
              f"{c.flops_speedup:.2f}x | {row['measured_speedup']:.2f}x | {c.prune_seconds:.1f} | {ce:.2f} |",
              flush=True)
        del model
        if args.json:
            Path(args.json).write_text(json.dumps({"rows": rows}, indent=1))


if __name__ == "__main__":
    main()
