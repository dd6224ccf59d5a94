"""lm-eval evaluator on the in-memory model vs the ``lm_eval`` command line on the same
saved model, tasks and limit. Target: lawlab ≤ 0.7× the command's wall time.

    .venv/bin/python bench/bench_lm_eval.py --tasks piqa,arc_easy --limit 100
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import offline_context, smollm2
from lawlab_plugins.lm_eval_tasks import offline_task_dir


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", default="piqa,arc_easy")
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    ctx = offline_context()
    reg = ctx.registry
    ev = reg.get("evaluators", "lm-eval")
    model = smollm2(ctx)
    tasks = args.tasks.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        model.model.save_pretrained(folder)
        model.tokenizer.save_pretrained(folder)
        cmd = [
            sys.executable, "-m", "lm_eval", "run", "--model", "hf",
            "--model_args", f"pretrained={folder},dtype=float32", "--device", "cpu", "--tasks", args.tasks,
            "--include_path", str(offline_task_dir(ctx.cache_dir)), "--limit", str(args.limit),
            "--batch_size", str(args.batch_size), "--output_path", f"{tmp}/out",
        ]  # fmt: skip
        ours_s, cli_s = [], []
        for _ in range(args.repeats):  # alternate, so a change in machine load hits both
            t = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True, env={**os.environ})
            cli_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            ours = ev.evaluate(
                model, ev.Params(tasks=tasks, limit=args.limit, batch_size=args.batch_size), ctx
            )
            ours_s.append(time.perf_counter() - t)
        cli = json.loads(next(Path(tmp, "out").rglob("results_*.json")).read_text())["results"]
    for m in ours[:-1]:
        v = m.details["variant"]
        print(f"{m.dataset}: lawlab {v} {m.value:.4f}  lm_eval {cli[m.dataset][v + ',none']:.4f}")
    o, c = statistics.median(ours_s), statistics.median(cli_s)
    print(f"runs: lawlab {[round(x, 1) for x in ours_s]} s, lm_eval {[round(x, 1) for x in cli_s]} s")
    print(f"median: lawlab {o:.1f} s   lm_eval command {c:.1f} s   ratio {o / c:.3f} (target <= 0.7)")


if __name__ == "__main__":
    main()
