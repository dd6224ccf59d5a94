"""The store's contracts the rest of the suite relies on: one `lawlab run` per output
folder, the plan deciding which stored cells count, and exports that read back equal."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from synthetic_store import METHODS, MODELS, RATIOS, SIZES, build_store, plan_cells

from lawlab.cli.main import main
from lawlab.run.store import TABLE_COLUMNS, Store, export, load_table
from lawlab.run.study import study_lock

HOLD_LOCK = """
import sys
from pathlib import Path
from lawlab.run.study import study_lock
with study_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    sys.stdin.read()  # held until the test closes our stdin
"""


def test_a_second_run_on_a_locked_output_folder_is_refused(tiny_spec, tmp_path, capsys):
    out = tmp_path / "out"
    spec = tiny_spec(output=out)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"  # blocks until it holds it
        assert main(["run", str(spec), "--no-report", "-q"]) == 2
        err = capsys.readouterr().err
        assert f"another `lawlab run` is using {out}" in err
        with Store(out, create=True) as store:  # refused before it started a run or saved its plan
            assert store.db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 0
            assert store.plan_rows() == [] and store.attempts() == {}
    finally:
        holder.communicate("", timeout=60)  # closes its stdin: it lets go of the lock and exits
    assert holder.returncode == 0
    with study_lock(out):  # released with its holder: nothing stale is left behind
        pass


def test_cells_removed_from_the_plan_leave_the_table_but_stay_stored(tmp_path):
    build_store(tmp_path)
    every = load_table(tmp_path)
    # the spec was edited: slicegpt and the largest RFT size are gone; the plan saved by the
    # next run no longer has their cells, but the store keeps what they measured
    kept = [c for c in plan_cells() if c["method"] != "slicegpt" and c["size"] != max(SIZES)]
    with Store(tmp_path) as store:
        store.save_plan(kept)
    table = load_table(tmp_path)
    assert {r["method"] for r in table} == {"", "random-prunenet"}
    assert {r["D"] for r in table} == {0, *SIZES[:-1]}
    assert {r["cell_key"] for r in table} == {c["key"] for c in kept if c["kind"] == "eval"}
    everything = load_table(tmp_path, plan_only=False)
    assert len(everything) == len(every)
    assert {r["cell_key"] for r in everything} == {r["cell_key"] for r in every}
    # a kept row is the same row either way (its L0 still comes from the base model)
    same = {r["cell_key"] + r["metric"] + r["dataset"]: r for r in everything}
    assert all(same[r["cell_key"] + r["metric"] + r["dataset"]] == r for r in table)


def test_exports_read_back_equal_to_the_table(tmp_path):
    import pyarrow.parquet as pq

    build_store(tmp_path)
    rows = load_table(tmp_path)
    # per base model: 3 evaluators (2 test sets, 3 accuracies, 1 runtime); per variant: the same,
    # and 2 + 3 per RFT size
    per_model = 6 + len(METHODS) * len(RATIOS) * (6 + len(SIZES) * 5)
    assert len(rows) == len(MODELS) * per_model

    table = pq.read_table(export(tmp_path, "parquet"))
    assert table.column_names == list(TABLE_COLUMNS)
    back = table.to_pylist()
    assert len(back) == len(rows)
    for got, want in zip(back, rows, strict=True):
        assert json.loads(got.pop("details")) == want["details"]
        assert got == {k: v for k, v in want.items() if k != "details"}

    with export(tmp_path, "jsonl").open() as f:
        assert [json.loads(line) for line in f] == rows
    with export(tmp_path, "csv").open(newline="") as f:
        read = list(csv.DictReader(f))
    assert len(read) == len(rows)
    for got, want in zip(read, rows, strict=True):
        assert float(got["value"]) == want["value"] and got["cell_key"] == want["cell_key"]
        assert (float(got["L0"]) if got["L0"] else None) == want["L0"]


def test_an_unknown_export_format_names_the_allowed_ones(tmp_path, capsys):
    build_store(tmp_path)
    with pytest.raises(Exception, match="allowed: csv, jsonl, parquet"):
        export(tmp_path, "xlsx")
    assert not list(Path(tmp_path).glob("results.xlsx*"))
