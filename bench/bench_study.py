"""Scheduler overhead and the value of sharing work, measured side by side in one run.

1. `lawlab run` of the spec: wall time against the sum of its cells' own compute time
   (the time inside plugins). Target: overhead ratio <= 1.15.
2. A naive loop over the same evaluation cells that loads the base model, prunes and
   recovers it again for every evaluation (what a script without a planner does).
   Target: lawlab >= 2x faster.

    python bench/bench_study.py                          # the quickstart (needs the packs)
    python bench/bench_study.py --spec specs/x.toml --set 'study.seed=1'
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def lawlab_run(spec: Path, overrides: list[str], output: Path) -> tuple[float, float, int]:
    from lawlab.cli import main

    started = time.perf_counter()
    sets = [arg for item in [f"study.output={output.as_posix()!r}", *overrides] for arg in ("--set", item)]
    code = main(["run", str(spec), "-q", "--no-report", *sets])
    wall = time.perf_counter() - started
    if code != 0:
        sys.exit(f"lawlab run failed with exit code {code}")
    db = sqlite3.connect(output / "lawlab.sqlite")
    cells_seconds, n = db.execute("SELECT SUM(seconds), COUNT(*) FROM cells WHERE status = 'done'").fetchone()
    return wall, float(cells_seconds), int(n)


def naive_loop(spec: Path, overrides: list[str]) -> tuple[float, int]:
    """Every evaluation rebuilds its model from scratch: load, prune, recover, evaluate."""
    from lawlab.api import CheckContext
    from lawlab.environment import cache_dir, enter_offline_mode, resolve_device, resolve_dtype
    from lawlab.execute import CellWorker
    from lawlab.plan import make_plan
    from lawlab.plugins import get_registry
    from lawlab.spec import load_spec

    resolved = load_spec(spec, overrides)
    if resolved.offline:
        enter_offline_mode()
    plan = make_plan(resolved, CheckContext(spec.resolve(), resolved.offline, get_registry(), cache_dir()))
    device = resolve_device(resolved.spec.execution.device)
    worker = CellWorker(plan, device=device, dtype=resolve_dtype(resolved.spec.execution.dtype, device))
    evals = plan.of_kind("eval")
    started = time.perf_counter()
    for cell in evals:
        chain = [*reversed(plan.ancestors(cell.key))]
        model = None
        for step in chain:
            model = worker.run(step, model).model
        worker.run(cell, model)
        del model
    return time.perf_counter() - started, len(evals)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", type=Path, default=ROOT / "specs/quickstart.toml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--skip-naive", action="store_true", help="measure only the overhead ratio")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="lawlab-bench-") as tmp:
        wall, inside, n = lawlab_run(args.spec, args.overrides, Path(tmp) / "run")
    print(f"spec: {args.spec}")
    print(f"lawlab run: {wall:.1f} s wall for {n} cells; {inside:.1f} s inside the cells")
    print(f"  overhead ratio (wall / cells' compute): {wall / inside:.3f}   target <= 1.15")
    if args.skip_naive:
        return
    naive, n_eval = naive_loop(args.spec, args.overrides)
    print(f"naive loop (reload, re-prune, re-train per evaluation): {naive:.1f} s for {n_eval} evaluations")
    print(f"  lawlab speedup over the naive loop: {naive / wall:.2f}x   target >= 2x")


if __name__ == "__main__":
    main()
