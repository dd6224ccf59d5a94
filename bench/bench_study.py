"""Scheduler overhead and the value of sharing work, measured side by side in one run.

1. `lawlab run` of the spec: wall time against the sum of its cells' own compute time
   (the time inside plugins). Target: overhead ratio <= 1.15.
2. A naive loop over the same evaluation cells that loads the base model, prunes and
   recovers it again for every evaluation (what a script without a planner does).
   Target: lawlab >= 2x faster.

Each side runs in a fresh process, so neither inherits the other's imports or caches.

    python bench/bench_study.py                          # the quickstart (needs the packs)
    python bench/bench_study.py --spec specs/x.toml --set 'study.seed=1'
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def lawlab_run(spec: Path, overrides: list[str], output: Path) -> dict[str, float]:
    from lawlab.cli.main import main

    sets = [arg for item in [f"study.output={output.as_posix()!r}", *overrides] for arg in ("--set", item)]
    started = time.perf_counter()
    code = main(["run", str(spec), "-q", "--no-report", *sets])
    wall = time.perf_counter() - started
    if code != 0:
        sys.exit(f"lawlab run failed with exit code {code}")
    db = sqlite3.connect(output / "lawlab.sqlite")
    inside, n = db.execute("SELECT SUM(seconds), COUNT(*) FROM cells WHERE status = 'done'").fetchone()
    return {"wall": wall, "inside": float(inside), "cells": int(n)}


def naive_loop(spec: Path, overrides: list[str]) -> dict[str, float]:
    """Every evaluation rebuilds its model from scratch: load, prune, recover, evaluate."""
    from lawlab.api import CheckContext
    from lawlab.environment import (
        cache_dir,
        enter_offline_mode,
        quiet_libraries,
        resolve_device,
        resolve_dtype,
    )
    from lawlab.registry import get_registry
    from lawlab.run.plan import make_plan
    from lawlab.run.worker import CellWorker
    from lawlab.spec.load import load_spec

    quiet_libraries()
    started = time.perf_counter()
    resolved = load_spec(spec, overrides)
    if resolved.offline:
        enter_offline_mode()
    plan = make_plan(resolved, CheckContext(spec.resolve(), resolved.offline, get_registry(), cache_dir()))
    device = resolve_device(resolved.spec.execution.device)
    worker = CellWorker(plan, device=device, dtype=resolve_dtype(resolved.spec.execution.dtype, device))
    evals = plan.of_kind("eval")
    for cell in evals:
        model = None
        for step in reversed(plan.ancestors(cell.key)):
            model = worker.run(step, model).model
        worker.run(cell, model)
        del model
    return {"wall": time.perf_counter() - started, "evaluations": len(evals)}


def in_fresh_process(mode: str, args: argparse.Namespace) -> dict[str, float]:
    command = [sys.executable, __file__, "--mode", mode, "--spec", str(args.spec)]
    for item in args.overrides:
        command += ["--set", item]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", type=Path, default=ROOT / "specs/quickstart.toml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--skip-naive", action="store_true", help="measure only the overhead ratio")
    parser.add_argument("--mode", choices=["lawlab", "naive"], help=argparse.SUPPRESS)  # one side, in a child
    args = parser.parse_args()

    if args.mode == "lawlab":
        with tempfile.TemporaryDirectory(prefix="lawlab-bench-") as tmp:
            print(json.dumps(lawlab_run(args.spec, args.overrides, Path(tmp) / "run")))
        return
    if args.mode == "naive":
        print(json.dumps(naive_loop(args.spec, args.overrides)))
        return

    run = in_fresh_process("lawlab", args)
    print(f"spec: {args.spec} {' '.join(args.overrides)}")
    print(f"lawlab run: {run['wall']:.1f} s wall for {run['cells']} cells; {run['inside']:.1f} s inside the cells")
    print(f"  overhead ratio (wall / cells' compute): {run['wall'] / run['inside']:.3f}   target <= 1.15")
    if args.skip_naive:
        return
    naive = in_fresh_process("naive", args)
    print(f"naive loop (reload, re-prune, re-train per evaluation): {naive['wall']:.1f} s "
          f"for {naive['evaluations']} evaluations")
    print(f"  lawlab speedup over the naive loop: {naive['wall'] / run['wall']:.2f}x   target >= 2x")


if __name__ == "__main__":
    main()
