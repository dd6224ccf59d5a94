"""The hub paths through their real clients (huggingface_hub, transformers, datasets),
pointed with HF_ENDPOINT at a stand-in for the Hub on 127.0.0.1 (tests/hub_standin.py).

The clients read HF_ENDPOINT, HF_HOME and HF_HUB_OFFLINE when they are imported, so the
lawlab commands run in subprocesses with the environment each case needs: connected
through a mirror (HF_ENDPOINT and nothing else), a cold cache, a warm cache with the
stand-in stopped, an endpoint that never answers.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import TINY_CROSS_ENTROPY, TINY_LORA
from hub_standin import ALPACA, TINY_MODEL, WIKITEXT, StandInHub, model_files, populated

from lawlab.testing import spec_toml

LAWLAB = [sys.executable, "-m", "lawlab.cli.main"]


def hub_env(tmp: Path, endpoint: str, **extra: str) -> dict[str, str]:
    """The environment of a user with a mirror: HF_ENDPOINT set, nothing else."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "LAWLAB_OFFLINE")}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(tmp / "hf"), NO_PROXY="127.0.0.1,localhost",
               no_proxy="127.0.0.1,localhost", LAWLAB_CACHE=str(tmp / "lawlab-cache"))
    env.update(extra)
    return env


def lawlab(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*LAWLAB, *args], env=env, capture_output=True, text=True, timeout=timeout)


def hub_spec(tmp: Path, *, model: str = TINY_MODEL, revision: str = "main", alpaca6: dict | None = None) -> Path:
    """The hub study: a hub model pruned, recovered on two hub datasets (``alpaca6``: the
    alpaca loader's params) and evaluated."""
    lora = {**TINY_LORA, "datasets": ["wikitext2", "alpaca6"], "sizes": [0, 4],
            "params": {**TINY_LORA["params"], "epochs": 1}}
    ce = {**TINY_CROSS_ENTROPY, "params": {**TINY_CROSS_ENTROPY["params"], "datasets": ["wikitext2"]}}
    return _written(tmp, spec_toml(
        tmp / "out", study={"name": "hub-study", "seed": 0}, models=[hub_model(model, revision)],
        methods=[{"method": "random-prunenet", "ratios": [0.25]}], rft=[lora], evaluators=[ce],
        datasets={"alpaca6": {"loader": "alpaca", "params": alpaca6 or {"test_size": 6}}}))


def model_only_spec(tmp: Path, *, model: str = TINY_MODEL, revision: str = "main", evaluators: tuple = ()) -> Path:
    """A base model and its evaluations: the cheapest study that loads hub weights."""
    return _written(tmp, spec_toml(tmp / "out", study={"name": "hub-model"}, models=[hub_model(model, revision)],
                                   evaluators=[TINY_CROSS_ENTROPY, *evaluators]))


def hub_model(model: str, revision: str) -> dict:
    return {"name": "tiny", "source": "hub", "params": {"id": model, "revision": revision}}


def _written(tmp: Path, text: str) -> Path:
    path = tmp / "spec.toml"
    path.write_text(text)
    return path


def stored_cells(output: Path) -> list[tuple[str, dict]]:
    """(kind, provenance) of every cell that is done."""
    with sqlite3.connect(output / "lawlab.sqlite") as db:
        rows = db.execute("SELECT kind, provenance FROM cells WHERE status = 'done'")
        return [(k, json.loads(p)) for k, p in rows]


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with populated(tmp_path_factory.mktemp("standin")) as running:
        yield running


# --------------------------------------------------------------------------- reachability


class DeadEndpoint:
    """A port that accepts connections and never answers (a hung proxy or firewall); it
    counts the connections made to it, so a test can tell one bounded request from a retry
    storm by behaviour rather than by the wall clock."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed: the test is over
                return
            self.accepted.append(conn)  # held open, never answered

    def connections(self) -> int:
        return len(self.accepted)

    def __enter__(self) -> DeadEndpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(timeout=10)
        for conn in self.accepted:
            conn.close()


PROBE = "from lawlab import environment; print(environment.is_offline())"


def probe(env: dict[str, str]) -> str:
    return subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                          timeout=60).stdout.strip()


def test_reachability_is_judged_on_the_endpoint_the_clients_use(hub, tmp_path):
    assert probe(hub_env(tmp_path, hub.url)) == "False"  # a mirror that answers: online
    with DeadEndpoint() as dead:
        assert probe(hub_env(tmp_path, dead.url)) == "True"
        # one request that gave up on its own (the probe's bounded timeout), no retry storm;
        # how many seconds that takes is bench/bench_hub.py's to measure
        assert dead.connections() == 1
        assert probe(hub_env(tmp_path, dead.url, LAWLAB_OFFLINE="0")) == "False"  # the user's override
        assert dead.connections() == 1  # the override asks nothing
    assert probe(hub_env(tmp_path, hub.url, LAWLAB_OFFLINE="1")) == "True"
    # through the proxy the clients would use: a dead one, unless NO_PROXY exempts the host
    proxied = hub_env(tmp_path, hub.url, HTTP_PROXY="http://127.0.0.1:9", http_proxy="http://127.0.0.1:9")
    assert probe(proxied) == "False"  # hub_env sets NO_PROXY=127.0.0.1
    assert probe({k: v for k, v in proxied.items() if k.lower() != "no_proxy"}) == "True"
    assert probe(hub_env(tmp_path, hub.url, HF_HUB_OFFLINE="1")) == "True"  # the cache only
    assert "HEAD /api/models" in hub.requests


@pytest.mark.slow  # waits out the probe's and the client's timeouts (≥ 13 s)
def test_an_endpoint_that_never_answers_is_reported_within_seconds(hub, tmp_path):
    spec = hub_spec(tmp_path)
    with DeadEndpoint() as dead:
        for extra in ({}, {"LAWLAB_OFFLINE": "0"}):  # judged by the probe, or forced online
            before = dead.connections()
            done = lawlab(hub_env(tmp_path, dead.url, **extra), "validate", str(spec))
            assert done.returncode == 0, done.stderr
            # judged by the probe: its one request; forced online: lawlab stops asking after
            # the first failure (2 connections on this machine's huggingface_hub), no retry storm
            assert dead.connections() - before in ((1, 2) if extra else (1,)), extra
            assert "cannot run on this machine" in done.stdout
            assert f"models that need the hub: {TINY_MODEL}@main" in done.stdout


# --------------------------------------------------------------------------- validate through the hub


@pytest.mark.slow  # several `lawlab validate` subprocesses (≈37 s on 2 busy cores)
def test_validate_names_a_missing_repository_or_revision(hub, tmp_path):
    env = hub_env(tmp_path, hub.url)
    bad_id = lawlab(env, "validate", str(model_only_spec(tmp_path, model="lawlab-test/no-such-model")))
    assert bad_id.returncode == 2
    assert "models[0].params.id" in bad_id.stderr and "no model repository 'lawlab-test/no-such-model'" in bad_id.stderr
    bad_rev = lawlab(env, "validate", str(model_only_spec(tmp_path, revision="v9")))
    assert bad_rev.returncode == 2
    assert "models[0].params.revision" in bad_rev.stderr and "'v9' does not exist" in bad_rev.stderr
    bad_data = lawlab(env, "validate", str(hub_spec(tmp_path, alpaca6={"test_size": 6, "revision": "nope"})))
    assert bad_data.returncode == 2 and "datasets.alpaca6.params.revision" in bad_data.stderr
    # the card says 40 rows: holding out 40 leaves none to train on (known before any download)
    too_many = lawlab(env, "validate", str(hub_spec(tmp_path, alpaca6={"test_size": 40})))
    assert too_many.returncode == 2 and "datasets.alpaca6.params.test_size" in too_many.stderr
    assert "1 to 39" in too_many.stderr


def test_a_cold_cache_offline_names_each_missing_item_and_the_fetch_command(hub, tmp_path):
    spec = hub_spec(tmp_path)
    done = lawlab(hub_env(tmp_path, hub.url, HF_HUB_OFFLINE="1"), "validate", str(spec))
    assert done.returncode == 0, done.stderr
    assert f"models that need the hub: {TINY_MODEL}@main" in done.stdout
    assert f"wikitext2 ({WIKITEXT[0]}@main)" in done.stdout and f"alpaca6 ({ALPACA}@main)" not in done.stdout
    assert f"alpaca ({ALPACA}@main)" in done.stdout
    assert f"lawlab fetch {spec}" in done.stdout
    assert lawlab(hub_env(tmp_path, hub.url, HF_HUB_OFFLINE="1"), "validate", "--here", str(spec)).returncode == 2


# --------------------------------------------------------------------------- pinned commits


@pytest.mark.slow  # studies through the stand-in hub in subprocesses (≈80 s on 2 busy cores)
def test_revisions_resolve_to_commits_and_a_moved_branch_stops_a_resume(tmp_path):
    from lawlab.testing import save_tiny, tiny_model

    standin = StandInHub()
    first = standin.commit("model", TINY_MODEL, model_files(save_tiny(tiny_model("llama", seed=0), tmp_path / "a")))
    other = standin.commit("model", TINY_MODEL, model_files(save_tiny(tiny_model("llama", seed=1), tmp_path / "b")),
                           branch="v2")
    with standin:
        env = hub_env(tmp_path, standin.url)
        assert lawlab(env, "validate", str(model_only_spec(tmp_path, revision="v2"))).returncode == 0
        spec = model_only_spec(tmp_path)
        done = lawlab(env, "run", "--no-report", str(spec))
        assert done.returncode == 0, done.stderr
        (base,) = [p["model"] for kind, p in stored_cells(tmp_path / "out") if kind == "base"]
        assert base["commit"] == first and base["id"] == TINY_MODEL and base["revision"] == "main"

        moved = standin.commit("model", TINY_MODEL, {"README.md": b"a new commit on main"})
        assert moved not in (first, other)
        refused = lawlab(env, "run", "--no-report", str(spec))
        assert refused.returncode == 2
        assert "resolves to another commit" in refused.stderr and first[:12] in refused.stderr
        assert moved[:12] in refused.stderr and "--allow-revision-change" in refused.stderr
        allowed = lawlab(env, "run", "--no-report", "--allow-revision-change", str(spec))
        assert allowed.returncode == 0, allowed.stderr
        assert "new cells use" in allowed.stdout


# --------------------------------------------------------------------------- connected, fetch, air-gapped


@pytest.mark.slow
def test_a_hub_study_runs_through_a_mirror_then_air_gapped_after_fetch(tmp_path):
    """validate, plan and run with HF_ENDPOINT alone; then, in a fresh cache, fetch, stop
    the stand-in and run the same study with HF_HUB_OFFLINE=1."""
    standin = populated(tmp_path / "build").start()
    try:
        connected = tmp_path / "connected"
        connected.mkdir()
        env = hub_env(connected, standin.url)
        spec = hub_spec(connected)
        for command in ("validate", "plan"):
            done = lawlab(env, command, str(spec))
            assert done.returncode == 0, done.stderr
            assert "cannot run on this machine" not in done.stdout
        done = lawlab(env, "run", str(spec))
        assert done.returncode == 0, done.stdout + done.stderr
        cells = stored_cells(connected / "out")
        assert len(cells) == 8  # base, prune, two RFTs and their four evaluations

        gapped = tmp_path / "gapped"
        gapped.mkdir()
        spec = hub_spec(gapped)
        fetched = lawlab(hub_env(gapped, standin.url), "fetch", str(spec))
        assert fetched.returncode == 0, fetched.stderr
        commits = {(t, r): repo.branches["main"] for (t, r), repo in standin.repos.items()}
        for commit in commits.values():
            assert commit in fetched.stdout
    finally:
        standin.stop()
    seen = len(standin.requests)
    offline = hub_env(gapped, standin.url, HF_HUB_OFFLINE="1")
    here = lawlab(offline, "validate", "--here", str(spec))
    assert here.returncode == 0, here.stdout + here.stderr
    done = lawlab(offline, "run", str(spec))
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(standin.requests) == seen  # not one request reached the (stopped) stand-in

    cells = stored_cells(gapped / "out")
    (base,) = [p["model"] for kind, p in cells if kind == "base"]
    assert base["commit"] == commits[("model", TINY_MODEL)]
    rft = {p["dataset"]["name"]: p["dataset"]["source"] for kind, p in cells if kind == "rft"}
    assert set(rft) == {"wikitext2", "alpaca6"}  # the spec's names, not the loader's
    assert commits[("dataset", WIKITEXT[0])] in rft["wikitext2"]
    assert commits[("dataset", ALPACA)] in rft["alpaca6"] and "34 of 40 train rows" in rft["alpaca6"]
    report = (gapped / "out" / "report" / "report.md").read_text()
    assert f"id={TINY_MODEL}" in report and commits[("model", TINY_MODEL)] in report
    assert "| test:  |" not in report  # RFT training rows are not labelled as test data


@pytest.mark.slow  # the real hub clients in subprocesses (≈36 s on 2 busy cores)
def test_the_real_clients_read_the_standin_like_the_hub(hub, tmp_path):
    """transformers and datasets, by hub id through HF_ENDPOINT: the stand-in is faithful
    enough for the libraries lawlab's plugins and lm-eval's tasks use."""
    script = f"""
from transformers import AutoModelForCausalLM, AutoTokenizer
import datasets
model = AutoModelForCausalLM.from_pretrained({TINY_MODEL!r})
tok = AutoTokenizer.from_pretrained({TINY_MODEL!r})
test = datasets.load_dataset({WIKITEXT[0]!r}, {WIKITEXT[1]!r}, split="test")
train = datasets.load_dataset({ALPACA!r}, split="train")
print(model.config.model_type, len(tok("a b c").input_ids) > 0, len(test), len(train))
"""
    done = subprocess.run([sys.executable, "-c", script], env=hub_env(tmp_path, hub.url), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-4:] == ["llama", "True", "7", "40"]


def test_every_dependency_has_an_upper_bound_that_the_tested_install_meets():
    """Ranges stop before major versions nobody tested; what is installed here is inside them."""
    import importlib.metadata as md

    from packaging.requirements import Requirement

    from lawlab.spec.load import read_toml

    project = read_toml(Path(__file__).parents[1] / "pyproject.toml")["project"]
    requirements = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
    assert any(Requirement(r).name == "datasets" for r in project["dependencies"])
    for text in requirements:
        req = Requirement(text)
        assert any(s.operator == "<" for s in req.specifier), f"{text}: no upper bound"
        if req.marker is None or req.marker.evaluate():
            assert req.specifier.contains(md.version(req.name), prereleases=True), text


@pytest.mark.slow
def test_fetch_downloads_lm_eval_task_data_that_an_offline_run_then_reads(tmp_path):
    from hub_standin import PIQA, piqa_files

    spec = model_only_spec(tmp_path, evaluators=({"evaluator": "lm-eval", "params": {"tasks": ["piqa"], "source": "lm-eval"}},))
    with populated(tmp_path / "build") as standin:
        standin.commit("dataset", PIQA, piqa_files())
        fetched = lawlab(hub_env(tmp_path, standin.url), "fetch", str(spec))
        assert fetched.returncode == 0, fetched.stderr
        assert "task data: piqa" in fetched.stdout
        assert any(r.startswith("GET /datasets/baber/piqa/resolve/") for r in standin.requests)
    script = "from lm_eval.tasks import TaskManager, get_task_dict\n" \
             "task = get_task_dict(['piqa'], TaskManager())['piqa']\nprint(len(task.validation_docs()))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env=hub_env(tmp_path, standin.url, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == "6"


DOWNLOAD = """
import json
import sys
from lawlab.models import hub
from lawlab.api import Progress

class Count(Progress):
    def start(self, description, total=None):
        self.total, self.done_files = total, 0
    def advance(self, n=1):
        self.done_files += n

repo = hub.Repo({model!r})
count = Count()
folder = hub.download(repo, count) if sys.argv[1] == "download" else hub.cached_snapshot(repo)
print(folder.name, json.dumps(sorted(p.name for p in folder.iterdir())), hub.missing_model_files(folder),
      getattr(count, "total", None), getattr(count, "done_files", None), sep="\\n")
"""


def test_a_sharded_model_downloads_in_parallel_and_is_found_in_the_warm_cache(tmp_path):
    from lawlab.testing import save_tiny, tiny_model

    folder = save_tiny(tiny_model("llama"), tmp_path / "sharded")
    for shard in folder.glob("*.safetensors"):
        shard.unlink()
    tiny_model("llama").model.save_pretrained(folder, max_shard_size="100KB")
    shards = sorted(p.name for p in folder.glob("model-*.safetensors"))
    assert len(shards) >= 3
    standin = StandInHub()
    commit = standin.commit("model", TINY_MODEL, {**model_files(folder), "original/params.json": b"{}"})
    standin.download_delay = 0.3
    script = DOWNLOAD.format(model=TINY_MODEL)
    with standin:
        env = hub_env(tmp_path, standin.url)
        done = subprocess.run([sys.executable, "-c", script, "download"], env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr
        name, files, missing, total, counted = done.stdout.strip().splitlines()[-5:]
        assert name == commit and missing == "[]"
        assert set(shards) <= set(json.loads(files)) and "original" not in json.loads(files)  # top level only
        assert int(total) == int(counted) == len(model_files(folder))  # the progress counted every file
        assert standin.most_at_once >= 3  # shards downloaded side by side, not one after another
    # The stand-in is gone: the cache alone answers, through huggingface_hub, with no request.
    seen = len(standin.requests)
    warm = subprocess.run([sys.executable, "-c", script, "cached"], env=hub_env(tmp_path, standin.url,
                          HF_HUB_OFFLINE="1"), capture_output=True, text=True, timeout=300)
    assert warm.returncode == 0, warm.stderr
    name, files, missing = warm.stdout.strip().splitlines()[-5:-2]
    assert name == commit and missing == "[]" and set(shards) <= set(json.loads(files))
    assert len(standin.requests) == seen
