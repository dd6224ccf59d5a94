"""Running a study: results, resume after SIGKILL, failure isolation, export, status."""

from __future__ import annotations

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TESTS

from lawlab.cli.main import main
from lawlab.run.store import Store, load_table

LAWLAB = [sys.executable, "-m", "lawlab.cli.main"]


def values(output: Path) -> dict[tuple, float]:
    """Deterministic numbers of a study, by what they measure."""
    out = {}
    for r in load_table(output):
        if r["metric"] in ("cross_entropy", "perplexity", "tokens"):
            out[(r["model"], r["method"], r["ratio"], r["rft_dataset"], r["D"], r["metric"], r["dataset"])] = r["value"]
    return out


def counts(output: Path) -> tuple[int, int, dict[str, int]]:
    db = sqlite3.connect(output / "lawlab.sqlite")
    cells = db.execute("SELECT COUNT(*) FROM cells WHERE status = 'done'").fetchone()[0]
    results = db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    attempts = dict(db.execute("SELECT key, COUNT(*) FROM attempts GROUP BY key").fetchall())
    db.close()
    return cells, results, attempts


def done_keys(output: Path) -> set[str]:
    if not (output / "lawlab.sqlite").exists():
        return set()
    db = sqlite3.connect(output / "lawlab.sqlite", timeout=30)
    try:
        return {k for (k,) in db.execute("SELECT key FROM cells WHERE status = 'done'")}
    except sqlite3.OperationalError:
        return set()
    finally:
        db.close()


def test_run_stores_results_with_provenance_and_exports(tiny_spec, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", str(tiny_spec(output=out)), "--no-report"]) == 0
    rows = load_table(out)
    ce = [r for r in rows if r["metric"] == "cross_entropy"]
    assert len(ce) == 6  # one per variant
    base = next(r for r in ce if not r["method"] and r["D"] == 0)
    assert base["L0"] == base["value"]
    pruned = [r for r in ce if r["method"] and r["D"] == 0]
    assert {r["ratio"] for r in pruned} == {0.25, 0.5}
    for r in pruned:
        assert 0 < r["ratio_effective"] < r["ratio"]  # FFN channels are not all parameters
        assert r["flops_speedup"] > 1
    with Store(out) as store:
        prov = store.cell(ce[0]["cell_key"]).provenance
    assert prov["spec_hash"] and prov["seed"] == 1 and prov["device"] == "cpu" and prov["dtype"] == "float32"
    assert prov["libraries"]["torch"] and prov["libraries"]["transformers"]
    assert prov["plugin"]["name"] == "cross-entropy" and prov["plugin"]["version"] == "0.1.0"
    with (out / "results.csv").open() as f:
        assert len(list(csv.DictReader(f))) == len(rows)
    assert not (out / "analysis.json").exists()  # --no-report skips the analysis too
    # keep_artifacts = "needed": every model was kept only until its children finished
    assert not any((out / "artifacts").glob("*"))


def test_rerun_skips_everything_and_status_says_done(tiny_spec, tmp_path, capsys):
    out = tmp_path / "out"
    spec = tiny_spec(output=out)
    assert main(["run", str(spec), "--no-report", "-q"]) == 0
    before = counts(out)
    assert main(["run", str(spec), "--no-report", "-q"]) == 0
    assert counts(out) == before  # nothing recomputed, nothing duplicated
    capsys.readouterr()
    assert main(["status", str(out)]) == 0
    assert "12 done, 0 failed, 0 left" in capsys.readouterr().out


def test_rerun_measures_one_evaluator_again_and_nothing_else(tiny_spec, tmp_path, capsys):
    out = tmp_path / "out"
    spec = tiny_spec(output=out)
    assert main(["run", str(spec), "--no-report", "-q"]) == 0
    before_values, (cells, results, attempts) = values(out), counts(out)
    capsys.readouterr()
    assert main(["run", str(spec), "--no-report", "--rerun", "cross-entropy"]) == 0
    assert "measuring again" in capsys.readouterr().out
    after_cells, after_results, after = counts(out)
    assert (after_cells, after_results) == (cells, results)  # replaced, not duplicated
    again = {k for k in after if after[k] > attempts.get(k, 0)}
    db = sqlite3.connect(out / "lawlab.sqlite")
    kinds = dict(db.execute("SELECT key, evaluator FROM cells").fetchall())
    db.close()
    assert again and {kinds[k] for k in again} == {"cross-entropy"}  # no variant stored again
    assert values(out) == before_values  # deterministic evaluator: the same numbers

    assert main(["run", str(spec), "--no-report", "--rerun", "no-such-evaluator"]) == 2
    err = capsys.readouterr().err
    assert "--rerun no-such-evaluator: not an evaluator of this spec" in err and "cross-entropy" in err


@pytest.mark.slow  # a tiny study, then every export format (≈20 s on 2 busy cores)
def test_export_formats(tiny_spec, tmp_path):
    out = tmp_path / "out"
    assert main(["run", str(tiny_spec(output=out)), "--no-report", "-q"]) == 0
    for fmt in ("csv", "jsonl", "parquet"):
        assert main(["export", str(out), "--format", fmt]) == 0
        assert (out / f"results.{fmt}").stat().st_size > 0
    lines = (out / "results.jsonl").read_text().splitlines()
    assert {"model", "ratio", "D", "metric", "value", "L0", "ratio_effective"} <= set(json.loads(lines[0]))


def test_status_of_a_folder_that_is_not_a_study(tmp_path, capsys):
    assert main(["status", str(tmp_path)]) == 2
    assert "not a lawlab study output folder" in capsys.readouterr().err


def _run_and_kill(spec: Path, out: Path, point: str, timeout: float = 600) -> set[str]:
    """Run `lawlab run` until it kills itself at ``point`` (see kill_points.py); return the
    cells done then."""
    env = dict(os.environ, PYTHONPATH=str(TESTS), LAWLAB_TEST_KILL=point)
    proc = subprocess.run([*LAWLAB, "--plugin", "kill_points", "run", str(spec), "--no-report", "-q"], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=timeout)
    assert proc.returncode == -signal.SIGKILL, f"never reached {point}: exit {proc.returncode}\n{proc.stderr[-2000:]}"
    return done_keys(out)


@pytest.mark.slow
def test_sigkill_at_several_points_then_resume_equals_uninterrupted(tiny_spec, tmp_path):
    reference = tmp_path / "reference"
    assert main(["run", str(tiny_spec(output=reference, name="ref.toml")), "--no-report", "-q"]) == 0

    out = tmp_path / "killed"
    spec = tiny_spec(output=out)
    attempts_when_done: dict[str, int] = {}  # cell -> attempts it had taken when found finished
    kill_points = [
        "done:2",  # after the base evaluation
        "artifact:1",  # while an artifact is being written: saved under its temporary name
        "done:9",  # deep in the second prune's subtree
    ]
    for point in kill_points:
        finished = _run_and_kill(spec, out, point)
        if point == "artifact:1":
            assert any((out / "artifacts").glob(".tmp-*"))  # the half-written folder is there
        _, _, attempts = counts(out)
        for key in finished:
            attempts_when_done.setdefault(key, attempts[key])
    assert len(attempts_when_done) >= 9
    assert main(["run", str(spec), "--no-report", "-q"]) == 0

    assert values(out) == values(reference)  # same numbers, exactly
    cells, results, attempts = counts(out)
    ref_cells, ref_results, _ = counts(reference)
    assert (cells, results) == (ref_cells, ref_results)  # nothing missing, nothing duplicated
    # no cell that had finished before a kill was ever started again
    assert {k: attempts[k] for k in attempts_when_done} == attempts_when_done
    # at most one cell was in flight at each kill
    assert sum(attempts.values()) <= cells + len(kill_points)
    assert not list((out / "artifacts").glob(".tmp-*"))


FLAKY = """
[[evaluators]]
evaluator = "flaky"
params = {{ fail_on_ratio = 0.25, marker = "{marker}" }}
"""


@pytest.mark.slow  # three runs of the tiny study (≈27 s on 2 busy cores)
def test_a_failing_cell_is_isolated_recorded_and_retried(tiny_spec, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"

    def with_flaky(text: str) -> str:
        return text.replace("[[laws]]", FLAKY.format(marker="LAWLAB_TEST_FAIL") + "\n[[laws]]")

    spec = tiny_spec(with_flaky, output=out)
    monkeypatch.setenv("LAWLAB_TEST_FAIL", "1")
    assert main(["--plugin", "lawlab_test_plugins", "run", str(spec), "--no-report"]) == 1
    captured = capsys.readouterr().out
    assert "Failed cells" in captured and "flaky evaluator fails at r=0.25" in captured
    with Store(out) as store:
        failed = [r for r in store.db.execute("SELECT * FROM cells WHERE status = 'failed'")]
        done = store.db.execute("SELECT COUNT(*) FROM cells WHERE status = 'done'").fetchone()[0]
    # r = 0.25 without and with RFT: both evaluations fail, nothing else does
    assert len(failed) == 2 and all("RuntimeError: flaky evaluator fails" in f["error"] for f in failed)
    assert "Traceback" in failed[0]["error"]
    assert done == 18 - 2  # every other cell ran: 12 + 6 flaky evaluations

    # a plain rerun leaves the failure alone; --retry-failed runs it again
    monkeypatch.delenv("LAWLAB_TEST_FAIL")
    assert main(["--plugin", "lawlab_test_plugins", "run", str(spec), "--no-report", "-q"]) == 1
    assert main(["--plugin", "lawlab_test_plugins", "run", str(spec), "--no-report", "-q", "--retry-failed"]) == 0
    assert main(["status", str(out)]) == 0
    assert "18 done, 0 failed, 0 left" in capsys.readouterr().out


@pytest.mark.slow  # three tiny studies, one with a broken pruner (≈40 s on 2 busy cores)
def test_a_failing_prune_blocks_only_its_subtree_and_fail_fast_stops(tiny_spec, tmp_path, capsys):
    def broken(text: str) -> str:
        return text.replace('method = "random-prunenet"', 'method = "broken"')

    out = tmp_path / "out"
    spec = tiny_spec(broken, output=out)
    assert main(["--plugin", "lawlab_test_plugins", "run", str(spec), "--no-report"]) == 1
    text = capsys.readouterr().out
    assert "MemoryError: pretend out of memory at r=0.5" in text
    # its evaluation, its RFT and the RFT's evaluation; the r = 0.25 branch all ran
    assert "3 cell(s) not run because a cell they depend on failed" in text
    assert main(["status", str(out)]) == 0
    assert "8 done, 1 failed, 3 left" in capsys.readouterr().out

    out2 = tmp_path / "fast"
    spec2 = tiny_spec(broken, output=out2, name="fast.toml")
    assert main(["--plugin", "lawlab_test_plugins", "run", str(spec2), "--no-report", "--fail-fast", "-q"]) == 1
    assert len(done_keys(out2)) == 8  # the r = 0.5 prune is the last branch: nothing after it ran
