"""The same tiny study with the local executor and with the Ray executor (2 workers).

Prints, side by side: the study's wall time, the sum of the cells' own seconds, and the
largest relative difference between the two stores' deterministic results; then the Ray
executor's costs per cell: waiting for a worker and the trip back (from the driver's
submit/receive times against the worker's start/end), loading the parent's artifact,
saving the cell's own, and the round trip of an empty Ray task (pure dispatch).

    .venv/bin/python bench/bench_ray.py                  # ~2 min on 2 busy cores
    .venv/bin/python bench/bench_ray.py --ratios 0.25 0.5 0.75 --json out.json

The ray instance is started here with ``num_cpus=2``; each cell asks for one CPU, so two
cells run at a time. The model is the ``tiny`` source: cells take about a second, which
makes this a measure of overhead, not of a speedup on real models.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

LORA = {"recipe": "lora", "datasets": ["tiny-corpus"], "sizes": [0, 8],
        "params": {"max_length": 32, "batch_size": 4, "rank": 4}}
CROSS_ENTROPY = {"evaluator": "cross-entropy", "params": {"datasets": ["tiny-corpus"], "window": 32, "batch_size": 8}}

TIMING = {"rft_seconds", "rft_tokens_per_s"}


def run(folder: Path, executor: str, ratios: list[float]) -> float:
    from lawlab.cli.main import main
    from lawlab.testing import spec_toml

    spec = folder / f"{executor}.toml"
    spec.write_text(spec_toml(folder / executor, study={"name": "bench-ray"}, models=[{"name": "tiny-llama", "source": "tiny"}],
                              methods=[{"method": "random-prunenet", "ratios": [0.0, *ratios]}], rft=[LORA],
                              evaluators=[CROSS_ENTROPY], execution={"executor": executor}))
    started = time.perf_counter()
    assert main(["run", str(spec), "--no-report", "-q"]) == 0
    return time.perf_counter() - started


def cells(output: Path) -> list[dict[str, Any]]:
    from lawlab.run.store import Store

    with Store(output) as store:
        rows = [dict(r) for r in store.db.execute("SELECT key, seconds, provenance FROM cells")]
    for r in rows:
        r["provenance"] = json.loads(r["provenance"])
    return rows


def results(output: Path) -> dict[tuple[str, str, str], float]:
    from lawlab.run.store import Store

    with Store(output) as store:
        return {(r["cell_key"], r["metric"], r["dataset"]): r["value"] for r in store.db.execute("SELECT * FROM results")}


def dispatch_ms(n: int = 50) -> float:
    """Median round trip of an empty task, one at a time (no queueing)."""
    import ray

    @ray.remote(num_cpus=1)
    def nothing() -> None:
        return None

    ray.get(nothing.remote())  # a worker is warm
    times = []
    for _ in range(n):
        t = time.perf_counter()
        ray.get(nothing.remote())
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def ms(values: list[float]) -> str:
    return f"median {1000 * statistics.median(values):.0f} ms, max {1000 * max(values):.0f} ms" if values else "-"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    args = ap.parse_args()

    import ray

    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        folder = Path(tmp)
        local_wall = run(folder, "local", args.ratios)
        started = time.perf_counter()
        ray.init(num_cpus=2, log_to_driver=False, logging_level=logging.WARNING)
        ray_start = time.perf_counter() - started
        ray_wall = run(folder, "ray", args.ratios)
        dispatch = dispatch_ms()
        ray.shutdown()

        local_cells, ray_cells = cells(folder / "local"), cells(folder / "ray")
        a, b = results(folder / "local"), results(folder / "ray")
        assert set(a) == set(b), "the two stores hold different results"
        diffs = [abs(b[k] - v) / max(abs(v), 1e-12) for k, v in a.items() if k[1] not in TIMING and v is not None]
        ex = [c["provenance"]["execution"] for c in ray_cells]
        ray_seconds = [c["seconds"] for c in ray_cells]
        from lawlab.run.store import Store

        with Store(folder / "ray") as store:  # cells.started/ended are the worker's clock
            span = {r["key"]: (r["started"], r["ended"]) for r in store.db.execute("SELECT key, started, ended FROM cells")}
        wait = [span[c["key"]][0] - c["provenance"]["execution"]["submitted"] for c in ray_cells]
        back = [c["provenance"]["execution"]["received"] - span[c["key"]][1] for c in ray_cells]
        numbers = {
            "cells": len(ray_cells),
            "local_wall_s": local_wall,
            "ray_wall_s": ray_wall,
            "ray_start_s": ray_start,
            "local_cell_seconds_sum": sum(c["seconds"] for c in local_cells),
            "ray_cell_seconds_sum": sum(ray_seconds),
            "max_rel_diff": max(diffs),
            "compared_values": len(diffs),
            "wait_s": wait,
            "return_s": back,
            "setup_s": [e["setup_seconds"] for e in ex],
            "load_s": [e["load_seconds"] for e in ex if "load_seconds" in e],
            "save_s": [e["save_seconds"] for e in ex if "save_seconds" in e],
            "dispatch_ms": dispatch,
            "pids": sorted({e["pid"] for e in ex}),
        }

    n = numbers["cells"]
    print(f"{n} cells (tiny llama, CPU); machine: {os.cpu_count()} cores, shared with other work")
    print(f"{'':34}{'local':>10}{'ray (2 workers)':>18}")
    print(f"{'study wall time (s)':34}{local_wall:>10.1f}{ray_wall:>18.1f}")
    print(f"{'sum of cell seconds (s)':34}{numbers['local_cell_seconds_sum']:>10.1f}{numbers['ray_cell_seconds_sum']:>18.1f}")
    print(f"ray start (not in the wall time): {ray_start:.1f} s; worker processes used: {len(numbers['pids'])}")
    print(f"largest relative difference, {len(diffs)} deterministic values: {numbers['max_rel_diff']:.2e}")
    print("ray costs per cell:")
    print(f"  submit -> worker starts   {ms(wait)}  (includes waiting for a free worker)")
    print(f"  worker ends -> driver has {ms(back)}")
    print(f"  worker setup (first cell) {ms(numbers['setup_s'])}")
    print(f"  load parent artifact      {ms(numbers['load_s'])}")
    print(f"  save own artifact         {ms(numbers['save_s'])}  ({len(numbers['save_s'])} cells)")
    print(f"  empty-task round trip     median {dispatch:.1f} ms")
    overhead = (ray_wall * 2 - numbers["ray_cell_seconds_sum"]) / n
    print(f"  (2 x wall - sum of cell seconds) / cells = {overhead:.2f} s  (idle worker time included)")
    if args.json:
        args.json.write_text(json.dumps(numbers, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
