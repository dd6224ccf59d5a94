"""The Ray executor: same store as the local executor, a killed worker retried, the
install hint at validation. Runs on a local Ray instance with 2 CPUs."""

from __future__ import annotations

import importlib.util
import math
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from conftest import TINY_CROSS_ENTROPY, tiny_study

from lawlab.cli.main import main
from lawlab.run.store import Store

needs_ray = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None, reason="ray is not installed (pip install 'lawlab[ray]')"
)

# measured time, not a property of the model: differs between any two runs
TIMING = {"rft_seconds", "rft_tokens_per_s"}


@pytest.fixture(scope="module")
def local_ray():
    import logging

    import ray

    ray.init(num_cpus=2, log_to_driver=False, logging_level=logging.WARNING)
    yield ray
    ray.shutdown()


def with_ray(text: str, extra: str = "") -> str:
    return text.replace('device = "cpu"', f'device = "cpu"\nexecutor = "ray"\n{extra}')


def snapshot(out: Path) -> dict:
    with Store(out) as store:
        cells = {r["key"]: (r["kind"], r["status"]) for r in store.db.execute("SELECT * FROM cells")}
        results = {
            (r["cell_key"], r["metric"], r["dataset"]): r["value"]
            for r in store.db.execute("SELECT * FROM results")
        }
        comp = {
            r["key"]: r["compression"] for r in store.db.execute("SELECT key, compression FROM cells WHERE compression IS NOT NULL")
        }
        attempts = store.attempts()
        provenance = {k: store.cell(k).provenance for k in cells}  # type: ignore[union-attr]
    return {"cells": cells, "results": results, "compression": comp, "attempts": attempts, "provenance": provenance}


@pytest.mark.slow  # a local and a Ray run of the tiny study (≈165 s on 2 cores at load 12)
@needs_ray
def test_ray_store_equals_the_local_executors(local_ray, tiny_spec, tmp_path):
    import json

    def smaller(text: str) -> str:  # every kind of cell, RFT of the unpruned model included
        return text.replace("ratios = [0.0, 0.25, 0.5]", "ratios = [0.0, 0.5]")

    local_out, ray_out = tmp_path / "local", tmp_path / "ray"
    assert main(["run", str(tiny_spec(smaller, output=local_out, name="local.toml")), "--no-report", "-q"]) == 0
    assert main(["run", str(tiny_spec(lambda t: with_ray(smaller(t)), output=ray_out, name="ray.toml")),
                 "--no-report", "-q"]) == 0
    local, remote = snapshot(local_out), snapshot(ray_out)

    assert remote["cells"] == local["cells"] and len(local["cells"]) == 8
    assert set(remote["results"]) == set(local["results"])
    compared = 0
    for key, value in local["results"].items():
        if key[1] in TIMING:
            continue
        # workers run with one thread (OMP_NUM_THREADS=1), the local run with two: float
        # reductions may differ in the last bits, nothing more
        assert math.isclose(remote["results"][key], value, rel_tol=1e-5, abs_tol=1e-7), key
        compared += 1
    assert compared >= 20
    for key, comp in local["compression"].items():
        a, b = json.loads(comp), json.loads(remote["compression"][key])
        for field in ("params_kept", "params_kept_no_embed", "flops_per_token"):
            assert a[field] == b[field], (key, field)
        # same weights; the JSON beside them differs by a few bytes (timings, and a
        # tokenizer saved after a reload notes "local_files_only")
        assert math.isclose(a["bytes_on_disk"], b["bytes_on_disk"], rel_tol=1e-3)
    assert all(n == 1 for n in remote["attempts"].values())
    # the results say where they were computed
    evals = [p for k, p in remote["provenance"].items() if remote["cells"][k][0] == "eval"]
    assert all(p["execution"]["executor"] == "ray" and p["execution"]["attempt"] == 0 for p in evals)
    # computed in Ray's worker processes, never the driver; how many workers Ray started for
    # them is its scheduler's choice (at most the 2 CPUs it was given), not a property of lawlab
    pids = {p["execution"]["pid"] for p in evals}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2
    # keep_artifacts = "needed": nothing is left once every cell is done
    assert not any((ray_out / "artifacts").iterdir())

    # a second run is the resume case: nothing to do, nothing run again
    assert main(["run", str(tmp_path / "ray.toml"), "--no-report", "-q"]) == 0
    assert snapshot(ray_out)["attempts"] == remote["attempts"]


def sleepy_spec(out: Path, pid_file: Path) -> str:
    sleepy = {"evaluator": "sleepy", "params": {"pid_file": pid_file.as_posix(), "seconds": 120}}
    return tiny_study(out, study={"name": "sleepy"}, evaluators=[sleepy, TINY_CROSS_ENTROPY],
                      execution={"executor": "ray", "keep_artifacts": "all", "params": {"max_retries": 1}})


@pytest.mark.slow  # starts the local Ray instance (≈17 s at load 12) and a study on it
@needs_ray
def test_a_killed_worker_is_retried_and_nothing_is_lost(local_ray, tmp_path, capsys):
    out, pid_file = tmp_path / "out", tmp_path / "sleepy.pid"
    spec = tmp_path / "spec.toml"
    spec.write_text(sleepy_spec(out, pid_file))
    codes: list[int] = []
    study = threading.Thread(target=lambda: codes.append(main(["--plugin", "lawlab_test_plugins", "run", str(spec), "--no-report"])))
    study.start()
    # the file stays until the test ends, so waiting for it races nothing; no deadline but
    # the study's own end (which cannot come before the sleepy cell's 120 s sleep)
    while study.is_alive() and not (pid_file.exists() and pid_file.read_text().endswith("\n")):
        time.sleep(0.1)
    assert pid_file.exists(), f"the study ended before the sleepy cell started: {codes}"
    victim = int(pid_file.read_text())
    assert victim != os.getpid()  # a Ray worker, not the driver
    os.kill(victim, signal.SIGKILL)
    study.join(timeout=900)  # a guard against a hang, not a speed claim
    assert not study.is_alive() and codes == [0]
    assert "worker died running eval sleepy" in capsys.readouterr().out

    snap = snapshot(out)
    # base, prune, and 2 evaluators for each of the two variants: all done, once each
    assert sorted(kind for kind, _ in snap["cells"].values()) == ["base", "eval", "eval", "eval", "eval", "prune"]
    assert all(status == "done" for _, status in snap["cells"].values())
    killed = [k for k, p in snap["provenance"].items() if p.get("execution", {}).get("attempt") == 1]
    assert len(killed) == 1 and snap["attempts"][killed[0]] == 2
    assert snap["provenance"][killed[0]]["execution"]["pid"] != victim
    assert all(n == 1 for k, n in snap["attempts"].items() if k != killed[0])
    assert sum(1 for key in snap["results"] if key[1] == "params") == 2
    assert sum(1 for key in snap["results"] if key[1] == "cross_entropy") == 2
    # keep_artifacts = "all": both models stay, and no half-written folder was trusted
    assert sorted(p.name for p in (out / "artifacts").iterdir() if not p.name.startswith(".")) == sorted(
        k for k, (kind, _) in snap["cells"].items() if kind in ("base", "prune")
    )


def test_without_ray_validation_fails_with_the_install_hint(tiny_spec, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    spec = tiny_spec(with_ray)
    assert main(["validate", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "execution.params" in err and "pip install 'lawlab[ray]'" in err
    assert main(["run", str(spec)]) == 2
    assert not (spec.parent / "out").exists()  # nothing written


def test_ray_params_are_checked_at_validation(tiny_spec, capsys):
    spec = tiny_spec(lambda t: with_ray(t, 'params = { max_retries = -1, eval = { num_gpus = "all" } }'))
    assert main(["validate", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "max_retries" in err and "num_gpus" in err


@pytest.mark.slow  # two Ray runs of a study (≈60 s on 2 cores at load 12)
@needs_ray
def test_failures_are_isolated_blocked_and_retried(local_ray, tmp_path, monkeypatch, capsys):
    out, spec = tmp_path / "out", tmp_path / "spec.toml"
    flaky = {"evaluator": "flaky", "params": {"fail_on_ratio": 0.25, "marker": "LAWLAB_TEST_FAIL"}}
    spec.write_text(tiny_study(out, study={"name": "failing"}, methods=[{"method": "broken", "ratios": [0.0, 0.25, 0.5]}],
                               evaluators=[flaky], execution={"executor": "ray"}))
    run = ["--plugin", "lawlab_test_plugins", "run", str(spec), "--no-report", "-q"]
    monkeypatch.setenv("LAWLAB_TEST_FAIL", "1")  # the driver's LAWLAB_* variables hold on the workers
    assert main(run) == 1
    text = capsys.readouterr().out
    assert "MemoryError: pretend out of memory at r=0.5" in text and "flaky evaluator fails at r=0.25" in text
    assert "1 cell(s) not run because a cell they depend on failed" in text
    with Store(out) as store:
        failed = {r["ratio"]: r["error"] for r in store.db.execute("SELECT * FROM cells WHERE status = 'failed'")}
        assert set(failed) == {0.25, 0.5} and all("Traceback" in e for e in failed.values())
    monkeypatch.delenv("LAWLAB_TEST_FAIL")
    assert main([*run, "--retry-failed"]) == 1  # the evaluation recovers; the pruner fails again
    snap = snapshot(out)
    statuses = sorted(status for _, status in snap["cells"].values())
    assert statuses == ["done", "done", "done", "done", "failed"]  # base, 2 evals, 1 prune; the r=0.5 prune
    assert sum(snap["attempts"].values()) == 5 + 2  # every cell once, then the two failures again


@pytest.mark.slow  # needs the local Ray instance (≈17 s to start at load 12)
@needs_ray
def test_a_cell_no_node_can_take_is_refused_not_left_waiting(local_ray, tiny_spec, capsys):
    spec = tiny_spec(lambda t: with_ray(t, "params = { rft = { num_gpus = 1 }, eval = { num_cpus = 3 } }"))
    assert main(["run", str(spec), "--no-report", "-q"]) == 2  # Ray would wait for such a node forever
    err = capsys.readouterr().err
    assert "no node of the Ray cluster can run a rft cell" in err and "0 GPUs" in err


def test_cell_tasks_carry_the_drivers_variables_and_plugin_files(monkeypatch):
    """What reaches a worker travels in the task's runtime_env, not by a shared file system."""
    import lawlab_test_plugins
    from lawlab_plugins.ray_executor import job_runtime_env, task_runtime_env

    from lawlab.registry import get_registry, reset_registry

    monkeypatch.setenv("LAWLAB_TEST_FAIL", "1")
    monkeypatch.setenv("LAWLAB_CACHE", "/this/machine/only")
    get_registry(["lawlab_test_plugins"])
    try:
        env, job = task_runtime_env(), job_runtime_env()
    finally:
        reset_registry()
    assert env["env_vars"]["LAWLAB_TEST_FAIL"] == "1" and "LAWLAB_CACHE" not in env["env_vars"]
    assert not any(k.startswith(("HF_", "PATH")) for k in env["env_vars"])  # only lawlab's own settings
    # the --plugin module's file is shipped with the job lawlab starts; installed plugins (lawlab_plugins) are not
    assert job == {"py_modules": [lawlab_test_plugins.__file__]}


@pytest.mark.slow  # a study on the local Ray instance (≈30 s on 2 cores beside another study)
@needs_ray
def test_per_question_records_come_back_from_the_workers(local_ray, tmp_path):
    tables = {}
    for name in ("local", "ray"):
        spec = tmp_path / f"{name}.toml"
        spec.write_text(tiny_study(tmp_path / name, study={"name": "answering"}, evaluators=[{"evaluator": "answering"}],
                                   execution={"executor": name}))
        assert main(["--plugin", "lawlab_test_plugins", "run", str(spec), "--no-report", "-q"]) == 0
        with Store(tmp_path / name) as store:
            keys = [r["key"] for r in store.plan_rows() if r["kind"] == "eval"]
            found = [store.question_records(k) for k in keys]
        assert len(found) == 2 and not any(f.missing for f in found)
        tables[name] = [f.tables for f in found]
    assert tables["ray"] == tables["local"]
    assert tables["ray"][0]["made-up"].questions[1].ll != tables["ray"][1]["made-up"].questions[1].ll
