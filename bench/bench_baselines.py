"""The field's pruning baselines against lawlab's structured methods, on an offline pack.

Per (method, setting): pruning seconds, parameters kept (non-zeros for sparse methods),
the FLOPs bound of dense kernels, the measured forward speedup against the unpruned model
in the same run (``bench_prune.paired_seconds``: median of ``--repeats`` passes, alternating
the two models so that both see the same machine load), and PTB-test cross-entropy (first
``--ce-tokens`` tokens, 512-token windows, BOS first). Calibration-based methods use
``--cal-samples`` × ``--cal-seqlen`` PTB-train tokens drawn with the seed.

Cells run ratio by ratio (every method at r = 0.5 and 2:4 first, then 0.3, 0.1, 0.7, the
rest, 4:8 last), so a run cut short still compares the methods at the ratios it reached.
Each finished cell is appended to ``--jsonl`` as one JSON line; a rerun with the same file
skips the cells it already holds. ``--table`` prints the markdown table of such files.

    .venv/bin/python bench/bench_baselines.py --pack smollm2-135m --jsonl smol.jsonl
    .venv/bin/python bench/bench_baselines.py --pack gemma3-270m --methods wanda shortgpt --ratios 0.5
    .venv/bin/python bench/bench_baselines.py --table smol.jsonl gemma.jsonl
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from bench_prune import cross_entropy, paired_seconds

NM = ("2:4", "4:8")  # n:m settings of the sparse methods, at r = n/m
SPARSE = ("magnitude", "wanda")
ORDER = (0.5, 0.3, 0.1, 0.7)  # ratios measured first, in this order


def settings(methods: list[str], ratios: list[float]) -> list[tuple[str, str, float, dict[str, Any]]]:
    """(method, label, r, extra params) for every cell, ratio by ratio (see the docstring)."""
    rank = {r: i for i, r in enumerate(ORDER)}
    cells: list[tuple[float, int, tuple[str, str, float, dict[str, Any]]]] = []
    for k, method in enumerate(methods):
        for r in ratios:
            cells.append((rank.get(r, len(ORDER)), k, (method, f"{r:g}", r, {})))
        if method in SPARSE:
            for s in NM:
                n, m = map(int, s.split(":"))
                key = rank[0.5] if s == "2:4" else len(ORDER) + 1
                cells.append((key, k, (method, s, n / m, {"structure": s})))
    return [cell for _, _, cell in sorted(cells, key=lambda c: (c[0], c[1]))]


def effective_ratio(method: str, details: dict[str, Any], r: float) -> float:
    for key in ("effective_ratio", "channel_fraction_removed", "hidden_fraction_removed"):
        if key in details:
            return float(details[key])
    return r


def table(rows: list[dict[str, Any]]) -> None:
    """Markdown table per pack: one row per (method, setting), in the order of ``settings``."""
    for pack in dict.fromkeys(row["pack"] for row in rows):
        mine = [row for row in rows if row["pack"] == pack and row.get("method") and "error" not in row]
        head = next(row for row in rows if row["pack"] == pack and not row.get("method"))
        print(f"\n{pack}: unpruned PTB CE {head['base_ptb_ce']:.3f}; forward {head['forward']} tokens "
              f"{head['base_forward_seconds'] * 1e3:.0f} ms (median of {head['repeats']})\n")
        print("| method | setting | effective | kept (non-zero) | no-emb kept | FLOPs bound | measured | prune s "
              "| PTB CE |")
        print("|---|---|---|---|---|---|---|---|---|")
        methods = list(dict.fromkeys(row["method"] for row in mine))
        for row in sorted(mine, key=lambda x: (methods.index(x["method"]), x["ratio"], x["setting"])):
            print(f"| {row['method']} | {row['setting']} | {row['effective_ratio']:.2f} | {row['kept']:.1%} | "
                  f"{row['kept_no_embed']:.1%} | {row['flops_speedup']:.2f}× | {row['measured_speedup']:.2f}× | "
                  f"{row['prune_seconds']:.0f} | {row['ptb_ce']:.2f} |")


def ce_grid(rows: list[dict[str, Any]]) -> None:
    """PTB CE per pack: one row per setting, one column per method ('-' where not measured)."""
    for pack in dict.fromkeys(row["pack"] for row in rows):
        mine = {(row["method"], row["setting"]): row for row in rows
                if row["pack"] == pack and row.get("method") and "error" not in row}
        methods = list(dict.fromkeys(m for m, _ in mine))
        labels = sorted(dict.fromkeys(s for _, s in mine), key=lambda s: (":" in s, s))
        print(f"\n{pack}: PTB CE (effective ratio where it differs from the setting)\n")
        print("| setting | " + " | ".join(methods) + " |")
        print("|---" * (len(methods) + 1) + "|")
        for label in labels:
            cells = []
            for m in methods:
                row = mine.get((m, label))
                if row is None:
                    cells.append("-")
                    continue
                eff = row["effective_ratio"]
                note = f" ({eff:.2f})" if ":" not in label and abs(eff - row["ratio"]) > 0.005 else ""
                cells.append(f"{row['ptb_ce']:.2f}{note}")
            print(f"| {label} | " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pack", default="smollm2-135m")
    ap.add_argument("--methods", nargs="+",
                    default=["magnitude", "wanda", "wanda-sp", "shortgpt", "random-prunenet", "slicegpt"])
    ap.add_argument("--ratios", nargs="+", type=float, default=[0.1, 0.3, 0.5, 0.7])
    ap.add_argument("--no-nm", action="store_true", help="skip the 2:4 and 4:8 cells")
    ap.add_argument("--cal-samples", type=int, default=16)
    ap.add_argument("--cal-seqlen", type=int, default=256)
    ap.add_argument("--ce-tokens", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--jsonl", help="append one JSON line per finished cell here; cells already there are skipped")
    ap.add_argument("--table", nargs="+", metavar="JSONL", help="print the tables of these files and stop")
    args = ap.parse_args()
    if args.table:
        rows = [json.loads(line) for f in args.table for line in Path(f).read_text().splitlines() if line.strip()]
        table(rows)
        ce_grid(rows)
        return

    import torch

    from lawlab.api import RunContext
    from lawlab.environment import cache_dir, enter_offline_mode
    from lawlab.registry import load_registry

    torch.set_num_threads(args.threads)
    done: set[tuple[str, str]] = set()
    out = Path(args.jsonl) if args.jsonl else None
    if out and out.exists():
        done = {(row["method"], row["setting"]) for row in map(json.loads, out.read_text().splitlines())
                if row.get("method") and row["pack"] == args.pack}

    def emit(row: dict[str, Any]) -> None:
        if out:
            with out.open("a") as f:
                f.write(json.dumps(row, default=str) + "\n")

    enter_offline_mode()
    registry = load_registry()
    ctx = RunContext(seed=args.seed, device="cpu", dtype="float32", cache_dir=cache_dir(),
                     work_dir=Path(tempfile.mkdtemp(prefix="bench-baselines-")), offline=True, registry=registry)
    source = registry.get("model_sources", "pack")
    base = source.load(source.Params(pack=args.pack), ctx)
    base_ce = cross_entropy(base, ctx, args.ce_tokens)
    base_s, _ = paired_seconds(base.model, base.model, args.batch, args.length, args.repeats)
    setup = {"pack": args.pack, "base_ptb_ce": base_ce, "ce_tokens": args.ce_tokens, "ce_window": 512,
             "calibration": f"{args.cal_samples}x{args.cal_seqlen} ptb train", "seed": args.seed,
             "forward": f"{args.batch}x{args.length}", "repeats": args.repeats, "threads": torch.get_num_threads(),
             "base_forward_seconds": base_s, "loadavg": os.getloadavg()[0]}
    emit(setup)
    print(json.dumps(setup), flush=True)
    calibration = {"calibration_dataset": "ptb", "calibration_samples": args.cal_samples,
                   "calibration_seqlen": args.cal_seqlen}
    cells = settings(args.methods, args.ratios)
    if args.no_nm:
        cells = [cell for cell in cells if not cell[3]]
    for method, label, r, extra in cells:
        if (method, label) in done:
            continue
        pruner = registry.get("pruners", method)
        params = pruner.Params(**({**calibration} if pruner.calibration else {}), **extra)
        try:
            model = pruner.prune(copy.deepcopy(base), r, params, ctx)
        except Exception as e:  # e.g. wanda-sp on Gemma at r = 0.7: more than all FFN channels
            row = {"pack": args.pack, "method": method, "setting": label, "ratio": r, "error": str(e)}
            print(json.dumps(row), flush=True)
            emit(row)
            continue
        c = model.compression
        bs, s = paired_seconds(base.model, model.model, args.batch, args.length, args.repeats)
        ce = cross_entropy(model, ctx, args.ce_tokens)
        row = {"pack": args.pack, "method": method, "setting": label, "ratio": r,
               "effective_ratio": effective_ratio(method, c.details, r),
               "kept": c.params_kept / c.params_original,
               "kept_no_embed": c.params_kept_no_embed / c.params_original_no_embed,
               "params_kept": c.params_kept, "params_original": c.params_original,
               "flops_speedup": c.flops_speedup, "base_forward_seconds": bs, "forward_seconds": s,
               "measured_speedup": bs / s, "prune_seconds": c.prune_seconds, "ptb_ce": ce, "base_ptb_ce": base_ce,
               "loadavg": os.getloadavg()[0],
               "details": {k: v for k, v in c.details.items() if not isinstance(v, (list, dict))}}
        print(json.dumps({k: v for k, v in row.items() if k != "details"}), flush=True)
        emit(row)
        del model


if __name__ == "__main__":
    main()
