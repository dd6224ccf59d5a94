"""Evaluator ``runtime``: how long a model takes to run, the paper's way and a fixed way.

``benchmark_seconds`` is the paper's measure: the wall time of the model's forward passes
while lm-eval runs the extrinsic benchmark (the lm-eval evaluator's tasks, data and batch
size), timed around each top-level forward call, so tokenisation and lm-eval's own
bookkeeping are left out. Beside it, a synthetic workload of fixed shape (``batch`` ×
``prompt_tokens`` prefill, then ``decode_tokens`` greedy steps with the KV cache) gives
prefill and decode tokens/s, the median of ``repeats`` runs after ``warmup`` runs.
"""

from __future__ import annotations

import os
import resource
import statistics
import sys
import time
from typing import Any, ClassVar

from lawlab_plugins.lm_eval_tasks import TASKS, LmEval, LmEvalParams
from pydantic import Field

from lawlab import hookimpl
from lawlab.api import CheckContext, Evaluator, LoadedModel, Measurement, Params, RunContext


class RuntimeParams(Params):
    tasks: list[str] = Field(
        default_factory=lambda: list(TASKS), description="Extrinsic benchmark whose forward passes are timed."
    )
    limit: int | None = Field(
        None, ge=1, description="Examples per task (MMLU: per subject) in the timed benchmark; None: all."
    )
    benchmark_batch_size: int = Field(8, ge=1, description="lm-eval batch size while timing the benchmark.")
    benchmark: bool = Field(
        True, description="Time the extrinsic benchmark (False: synthetic workload only)."
    )
    batch: int = Field(1, ge=1, description="Sequences in the synthetic workload.")
    prompt_tokens: int = Field(256, ge=1, description="Prompt length of the synthetic workload (prefill).")
    decode_tokens: int = Field(32, ge=0, description="Tokens generated greedily after the prompt (decode).")
    warmup: int = Field(1, ge=0, description="Untimed runs of the synthetic workload first.")
    repeats: int = Field(5, ge=1, description="Timed runs; the median is reported.")


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)


class ForwardTimer:
    """Sums the wall time of a module's top-level forward calls (nested calls count once)."""

    def __init__(self, module: Any, device: str):
        self.module, self.device = module, device
        self.seconds, self.calls, self._depth, self._t0 = 0.0, 0, 0, 0.0

    def _pre(self, _module: Any, _args: Any) -> None:
        if self._depth == 0:
            synchronize(self.device)
            self._t0 = time.perf_counter()
        self._depth += 1

    def _post(self, _module: Any, _args: Any, _out: Any) -> None:
        self._depth -= 1
        if self._depth == 0:
            synchronize(self.device)
            self.seconds += time.perf_counter() - self._t0
            self.calls += 1

    def __enter__(self) -> ForwardTimer:
        self._handles = [
            self.module.register_forward_pre_hook(self._pre),
            self.module.register_forward_hook(self._post),
        ]
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()


def peak_memory(device: str) -> tuple[int, str]:
    """(bytes, how it was measured)."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.max_memory_allocated(device), "torch.cuda.max_memory_allocated since reset"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    factor = 1 if sys.platform == "darwin" else 1024  # Linux reports KiB
    return rss * factor, "peak resident set size of the process (ru_maxrss), includes everything loaded"


def synthetic_run(model: Any, params: RuntimeParams, device: str, vocab: int) -> tuple[float, float]:
    """(prefill seconds, decode seconds) of one run of the fixed workload."""
    import torch

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (params.batch, params.prompt_tokens), generator=g).to(device)
    with torch.inference_mode():
        synchronize(device)
        t0 = time.perf_counter()
        out = model(input_ids=ids, use_cache=True)
        synchronize(device)
        prefill = time.perf_counter() - t0
        past, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
        t0 = time.perf_counter()
        for _ in range(params.decode_tokens):
            out = model(input_ids=token, past_key_values=past, use_cache=True)
            past, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
        synchronize(device)
        decode = time.perf_counter() - t0
    return prefill, decode


class Runtime(Evaluator):
    name: ClassVar[str] = "runtime"
    kind: ClassVar[str] = "runtime"
    Params: ClassVar[type[Params]] = RuntimeParams
    description: ClassVar[str] = (
        "forward-pass wall time of the extrinsic benchmark, prefill/decode tokens/s, peak memory"
    )

    def _lm_eval_params(self, params: RuntimeParams) -> LmEvalParams:
        return LmEvalParams(tasks=params.tasks, limit=params.limit, batch_size=params.benchmark_batch_size)

    def check(self, params: RuntimeParams, ctx: CheckContext) -> None:
        if params.benchmark:
            LmEval().check(self._lm_eval_params(params), ctx)

    def evaluate(self, model: LoadedModel, params: RuntimeParams, ctx: RunContext) -> list[Measurement]:
        import torch

        net = model.model
        net.eval()
        if ctx.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats(ctx.device)
        machine = {
            "device": ctx.device,
            "device_name": _device_name(ctx.device),
            "dtype": ctx.dtype,
            "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
        }
        out: list[Measurement] = []
        if params.benchmark:
            from lawlab_plugins.lm_eval_tasks import build_lm, run_task, task_manager, uses_offline

            lm_params = self._lm_eval_params(params)
            offline = uses_offline(lm_params, ctx.offline)
            manager = task_manager(offline, ctx.cache_dir)
            lm = build_lm(model, params.benchmark_batch_size, None)
            ctx.progress.start("runtime: benchmark", total=len(params.tasks))
            wall = time.perf_counter()
            with ForwardTimer(net, ctx.device) as timer:
                for task in params.tasks:
                    run_task(lm, task, manager, params.limit, 0)
                    ctx.progress.advance(1)
            wall = time.perf_counter() - wall
            ctx.progress.done()
            label = "+".join(params.tasks)
            out.append(
                Measurement(
                    "benchmark_seconds",
                    timer.seconds,
                    dataset=label,
                    law_input=True,
                    details={
                        **machine,
                        "tasks": list(params.tasks),
                        "limit": params.limit,
                        "batch_size": params.benchmark_batch_size,
                        "forward_calls": timer.calls,
                        "wall_seconds_with_lm_eval": wall,
                        "source": "offline" if offline else "lm-eval",
                    },
                )
            )

        vocab = net.get_input_embeddings().weight.shape[0]
        ctx.progress.start("runtime: synthetic", total=params.warmup + params.repeats)
        runs = []
        for i in range(params.warmup + params.repeats):
            result = synthetic_run(net, params, ctx.device, vocab)
            if i >= params.warmup:
                runs.append(result)
            ctx.progress.advance(1)
        ctx.progress.done()
        prefill = statistics.median(r[0] for r in runs)
        decode = statistics.median(r[1] for r in runs)
        shape = {
            **machine,
            "batch": params.batch,
            "prompt_tokens": params.prompt_tokens,
            "decode_tokens": params.decode_tokens,
            "warmup": params.warmup,
            "repeats": params.repeats,
            "statistic": "median",
        }
        out.append(
            Measurement(
                "prefill_tokens_per_s",
                params.batch * params.prompt_tokens / prefill,
                dataset="synthetic",
                details={**shape, "seconds": prefill, "runs": [r[0] for r in runs]},
            )
        )
        if params.decode_tokens:
            out.append(
                Measurement(
                    "decode_tokens_per_s",
                    params.batch * params.decode_tokens / decode,
                    dataset="synthetic",
                    details={**shape, "seconds": decode, "runs": [r[1] for r in runs]},
                )
            )
        peak, how = peak_memory(ctx.device)
        out.append(
            Measurement(
                "peak_memory_bytes", float(peak), dataset="synthetic", details={**machine, "measure": how}
            )
        )
        return out


def _device_name(device: str) -> str:
    from lawlab.environment import device_name

    return device_name(device)


@hookimpl
def register_evaluators(register):
    register(Runtime())
