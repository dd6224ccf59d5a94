"""Evaluator ``runtime``: how long a model takes to run, the paper's way and a fixed way.

``relative_time`` is what the runtime law reads (``paired``, the default): the variant and
the study's unpruned model run the same fixed workload alternately in this one cell
(order swapped every round, after warm-up, at a fixed thread count), and the median of
the per-round time ratios variant / unpruned is stored with a distribution-free interval.
On a shared machine, times taken minutes apart in separate cells mostly measure the
machine's load; a ratio of runs interleaved a second apart cancels it.

The workload is ``batch`` × ``prompt_tokens`` tokens scored in one forward pass (what
lm-eval's log-likelihood requests do), then ``decode_tokens`` greedy steps with the KV
cache; prefill and decode tokens/s and their absolute times are kept too.
``benchmark_seconds`` is the paper's measure: the wall time of the model's forward passes
while lm-eval runs the extrinsic benchmark, timed around each top-level forward call.
With ``paired`` it is kept as an absolute time; without, it is the law's input.

Memory per variant: ``forward_memory_bytes`` is what one run of the workload adds to what is
resident (activations, the KV cache, weights a quantised layer dequantises per call), and
``peak_memory_bytes`` the weights as held plus that: what serving the variant alone needs.
"""

from __future__ import annotations

import inspect
import math
import os
import resource
import statistics
import sys
import time
from typing import Any, ClassVar

from pydantic import Field

from lawlab import hookimpl
from lawlab.api import CheckContext, Evaluator, LoadedModel, Measurement, MemoryTerms, Params, RunContext

LEVEL = 0.95  # wanted coverage of the interval around a median ratio
# The timed benchmark runs on the lm-eval evaluator, asked of the registry by its name (a
# plugin never imports a sibling's helpers); its default tasks are the paper's five zero-shot
# tasks and MMLU, as lm-eval's own default.
LM_EVAL = "lm-eval"
BENCHMARK_TASKS = ("piqa", "winogrande", "hellaswag", "arc_easy", "arc_challenge", "mmlu")


class RuntimeParams(Params):
    paired: bool = Field(
        True,
        description="Time the variant and the study's unpruned model alternately in this cell and feed the law "
        "their median time ratio (False: absolute times only; the benchmark's seconds feed the law).",
    )
    tasks: list[str] = Field(
        default_factory=lambda: list(BENCHMARK_TASKS), description="Extrinsic benchmark whose forward passes are timed."
    )
    limit: int | None = Field(
        None, ge=1, description="Examples per task (MMLU: per subject) in the timed benchmark; None: all."
    )
    benchmark_batch_size: int = Field(8, ge=1, description="lm-eval batch size while timing the benchmark.")
    benchmark: bool = Field(
        True, description="Time the extrinsic benchmark too (the paper's absolute measure; the costliest part)."
    )
    batch: int = Field(1, ge=1, description="Sequences in the fixed workload.")
    prompt_tokens: int = Field(256, ge=1, description="Tokens per sequence scored in one forward pass (prefill).")
    decode_tokens: int = Field(32, ge=0, description="Tokens generated greedily after the prompt (decode).")
    warmup: int = Field(1, ge=0, description="Untimed rounds of the workload first.")
    repeats: int = Field(
        5, ge=1, description="Timed rounds (paired: each times both models); medians are reported. Nine give a "
        "96% interval for the median ratio, five a 94% one."
    )
    threads: int | None = Field(
        None, ge=1, description="torch CPU threads while timing; None: the process's setting (recorded)."
    )


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
    """(bytes, how it was measured): the process's peak, where no per-variant measure exists."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.max_memory_allocated(device), "torch.cuda.max_memory_allocated since reset"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    factor = 1 if sys.platform == "darwin" else 1024  # Linux reports KiB
    return rss * factor, "peak resident set size of the process (ru_maxrss), includes everything loaded"


def weight_bytes(model: Any) -> int:
    """Bytes the model's tensors occupy now (each storage once; a quantised weight as the
    plain tensors it is held as)."""
    from lawlab.storage import tensor_bytes

    seen: set[int] = set()
    total = 0
    for t in [*model.parameters(), *model.buffers()]:
        if id(t) not in seen:
            seen.add(id(t))
            total += tensor_bytes(t)
    return total


class ResidentProbe:
    """The peak resident memory one call adds on a Linux CPU: glibc's ``malloc_trim`` first
    returns freed heap to the system (else a forward reuses memory an earlier one left and
    seems to need none), then ``/proc/self/clear_refs`` resets the peak (VmHWM) to the
    resident size, and the call's peak is read back."""

    STATUS, CLEAR = "/proc/self/status", "/proc/self/clear_refs"

    def __init__(self) -> None:
        import ctypes
        import ctypes.util

        self.trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        self._reset()  # raises where the kernel or the libc cannot do it

    def _kb(self, field: str) -> int:
        with open(self.STATUS) as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        raise OSError(f"{self.STATUS} has no {field}")

    def _reset(self) -> None:
        self.trim(0)
        with open(self.CLEAR, "w") as fh:
            fh.write("5")

    def __call__(self, fn: Any) -> int:
        self._reset()
        before = self._kb("VmRSS")
        fn()
        return max(0, self._kb("VmHWM") - before)


def forward_memory(net: Any, params: RuntimeParams, device: str, vocab: int, probes: int = 3) -> tuple[int | None, str]:
    """(bytes, how): the memory one run of the workload needs beyond what is resident before
    it (activations, the KV cache, weights a quantised layer dequantises per call), the
    median of ``probes`` runs; None where this machine cannot measure it."""
    run = lambda: synthetic_run(net, params, device, vocab)  # noqa: E731
    if device.startswith("cuda"):
        import torch

        values = []
        for _ in range(probes):
            torch.cuda.synchronize(device)
            before = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
            run()
            values.append(torch.cuda.max_memory_allocated(device) - before)
        return int(statistics.median(values)), (f"torch.cuda.max_memory_allocated over one run minus what was allocated "
                                                f"before it, median of {probes}")
    try:
        probe = ResidentProbe()
    except (OSError, AttributeError) as exc:
        return None, f"not measured on this machine (needs Linux's {ResidentProbe.CLEAR} and glibc: {exc})"
    values = [probe(run) for _ in range(probes)]
    return int(statistics.median(values)), (f"peak resident size over one run (VmHWM reset through "
                                            f"{ResidentProbe.CLEAR}) minus the resident size before it, freed heap "
                                            f"returned first (malloc_trim), median of {probes}")


def cache_argument(model: Any) -> str:
    """The keyword a model's forward takes its KV cache under: ``cache`` in current
    transformers (``past_key_values`` is deprecated there), ``past_key_values`` before."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def cache_of(out: Any) -> Any:
    # Reading out.past_key_values on a current model logs a deprecation: ask by key.
    return out["cache"] if "cache" in out else out["past_key_values"]


def synthetic_run(model: Any, params: RuntimeParams, device: str, vocab: int) -> tuple[float, float]:
    """(prefill seconds, decode seconds) of one run of the fixed workload."""
    import torch

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (params.batch, params.prompt_tokens), generator=g).to(device)
    name = cache_argument(model)
    with torch.inference_mode():
        synchronize(device)
        t0 = time.perf_counter()
        out = model(input_ids=ids, use_cache=params.decode_tokens > 0)
        synchronize(device)
        prefill = time.perf_counter() - t0
        t0 = time.perf_counter()
        if params.decode_tokens:
            cache, token = cache_of(out), out.logits[:, -1:].argmax(-1)
            for _ in range(params.decode_tokens):
                out = model(input_ids=token, use_cache=True, **{name: cache})
                cache, token = cache_of(out), out.logits[:, -1:].argmax(-1)
        synchronize(device)
        decode = time.perf_counter() - t0
    return prefill, decode


def median_interval(values: list[float], level: float = LEVEL) -> tuple[float, float, float]:
    """A distribution-free interval for the median: the narrowest pair of order statistics
    [x_(k), x_(n+1-k)] that covers it with probability ≥ ``level`` (binomial), or the full
    range when n is too small for that; returns (low, high, the coverage achieved)."""
    xs, n = sorted(values), len(values)

    def coverage(k: int) -> float:
        return 1 - 2 * sum(math.comb(n, j) for j in range(k)) / 2**n

    k = 1
    while k + 1 <= (n + 1) // 2 and coverage(k + 1) >= level:
        k += 1
    return xs[k - 1], xs[n - k], coverage(k)


def paired_rounds(
    variant: Any, base: Any, params: RuntimeParams, device: str, vocab: int, progress: Any
) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """(variant runs, base runs) of alternating rounds: each round runs both models, the
    order swapped every round so that neither always runs first; warm-up rounds untimed."""
    mine, theirs = [], []
    progress.start("runtime: paired with the unpruned model", total=params.warmup + params.repeats)
    for i in range(params.warmup + params.repeats):
        if i % 2 == 0:
            v, b = synthetic_run(variant, params, device, vocab), synthetic_run(base, params, device, vocab)
        else:
            b, v = synthetic_run(base, params, device, vocab), synthetic_run(variant, params, device, vocab)
        if i >= params.warmup:
            mine.append(v)
            theirs.append(b)
        progress.advance(1)
    progress.done()
    return mine, theirs


def ratio_measurement(metric: str, mine: list[float], theirs: list[float], shape: dict[str, Any],
                      law_input: bool) -> Measurement:
    ratios = [a / b for a, b in zip(mine, theirs, strict=True)]
    low, high, coverage = median_interval(ratios)
    return Measurement(
        metric,
        statistics.median(ratios),
        dataset="synthetic",
        law_input=law_input,
        details={
            **shape,
            "statistic": "median over rounds of (variant seconds / unpruned seconds), both timed in each round",
            "ci": [low, high],
            "ci_level": coverage,
            "ci_method": "order statistics of the per-round ratios (distribution-free, binomial coverage)",
            "ratios": ratios,
            "seconds": mine,
            "base_seconds": theirs,
            "seconds_median": statistics.median(mine),
            "base_seconds_median": statistics.median(theirs),
        },
    )


class Runtime(Evaluator):
    name: ClassVar[str] = "runtime"
    kind: ClassVar[str] = "runtime"
    paired_metrics: ClassVar[frozenset[str]] = frozenset({"relative_time", "relative_decode_time"})
    Params: ClassVar[type[Params]] = RuntimeParams
    description: ClassVar[str] = (
        "time relative to the unpruned model (paired, alternating), forward time of the extrinsic benchmark, "
        "prefill/decode tokens/s, memory (weights + one run's working memory)"
    )

    def memory(self, params: RuntimeParams, shapes: Any, dtype_bytes: int) -> MemoryTerms:
        """The timed benchmark's passes (or the fixed workload's), and the base model beside
        the variant when the two are timed in turn."""
        from lawlab.run.memory import LONGEST_REQUEST, forward_terms

        length = LONGEST_REQUEST if params.benchmark else params.prompt_tokens + params.decode_tokens
        tokens = params.benchmark_batch_size * min(length, shapes.max_positions)
        base = {"base model": shapes.params * dtype_bytes} if params.paired else {}
        return MemoryTerms({**base, **forward_terms(shapes, dtype_bytes, tokens=tokens)})

    @staticmethod
    def _lm_eval(params: RuntimeParams, registry: Any) -> tuple[Any, Any]:
        """The lm-eval evaluator and its params for the timed benchmark."""
        lm_eval = registry.get("evaluators", LM_EVAL)
        return lm_eval, lm_eval.Params(tasks=params.tasks, limit=params.limit, batch_size=params.benchmark_batch_size)

    def check(self, params: RuntimeParams, ctx: CheckContext) -> None:
        if params.benchmark:
            lm_eval, lm_params = self._lm_eval(params, ctx.registry)
            lm_eval.check(lm_params, ctx)

    def evaluate(self, model: LoadedModel, params: RuntimeParams, ctx: RunContext) -> list[Measurement]:
        import torch

        threads = torch.get_num_threads()
        if params.threads:
            torch.set_num_threads(params.threads)
        try:
            return self._evaluate(model, params, ctx)
        finally:
            torch.set_num_threads(threads)

    def _evaluate(self, model: LoadedModel, params: RuntimeParams, ctx: RunContext) -> list[Measurement]:
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
        is_base = model.compression is None and not model.history
        base = ctx.base_model() if params.paired and not is_base else None
        paired = params.paired and (is_base or base is not None)
        out: list[Measurement] = []
        if params.benchmark:
            out.append(self._benchmark(model, params, ctx, machine, law_input=not paired))

        vocab = net.get_input_embeddings().weight.shape[0]
        shape = {
            **machine,
            "batch": params.batch,
            "prompt_tokens": params.prompt_tokens,
            "decode_tokens": params.decode_tokens,
            "warmup": params.warmup,
            "repeats": params.repeats,
        }
        if base is not None:
            home = next(base.model.parameters()).device
            base.model.to(ctx.device)  # the base may wait on another device; it runs here while timed
            try:
                runs, base_runs = paired_rounds(net, base.model, params, ctx.device, vocab, ctx.progress)
            finally:
                base.model.to(home)
            out.append(ratio_measurement("relative_time", [r[0] for r in runs], [r[0] for r in base_runs],
                                         shape, law_input=True))
            if params.decode_tokens:
                out.append(ratio_measurement("relative_decode_time", [r[1] for r in runs],
                                             [r[1] for r in base_runs], shape, law_input=False))
        else:
            runs = self._alone(net, params, ctx, vocab)
            if paired:  # the unpruned model itself: the reference of every ratio, exactly 1
                out.append(Measurement("relative_time", 1.0, dataset="synthetic", law_input=True,
                                       details={**shape, "reference": True}))
        prefill = statistics.median(r[0] for r in runs)
        decode = statistics.median(r[1] for r in runs)
        shape["statistic"] = "median"
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
        # memory per variant: its weights as held now, plus what one run of the workload adds
        work, work_how = forward_memory(net, params, ctx.device, vocab)
        weights = weight_bytes(net)
        if work is not None:
            out.append(Measurement("forward_memory_bytes", float(work), dataset="synthetic",
                                   details={**shape, "measure": work_how}))
            peak, how = weights + work, f"the weights held in memory ({weights} bytes) + forward_memory_bytes"
        else:
            peak, how = peak_memory(ctx.device)
        out.append(Measurement("peak_memory_bytes", float(peak), dataset="synthetic",
                               details={**machine, "measure": how, "weight_bytes": weights}))
        return out

    def _alone(self, net: Any, params: RuntimeParams, ctx: RunContext, vocab: int) -> list[tuple[float, float]]:
        ctx.progress.start("runtime: synthetic", total=params.warmup + params.repeats)
        runs = []
        for i in range(params.warmup + params.repeats):
            result = synthetic_run(net, params, ctx.device, vocab)
            if i >= params.warmup:
                runs.append(result)
            ctx.progress.advance(1)
        ctx.progress.done()
        return runs

    def _benchmark(self, model: LoadedModel, params: RuntimeParams, ctx: RunContext, machine: dict[str, Any],
                   *, law_input: bool) -> Measurement:
        lm_eval, lm_params = self._lm_eval(params, ctx.registry)
        run, offline = lm_eval.task_runner(model, lm_params, ctx)
        ctx.progress.start("runtime: benchmark", total=len(params.tasks))
        wall = time.perf_counter()
        with ForwardTimer(model.model, ctx.device) as timer:
            for task in params.tasks:
                run(task)
                ctx.progress.advance(1)
        wall = time.perf_counter() - wall
        ctx.progress.done()
        return Measurement(
            "benchmark_seconds",
            timer.seconds,
            dataset="+".join(params.tasks),
            law_input=law_input,
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


def _device_name(device: str) -> str:
    from lawlab.environment import device_name

    return device_name(device)


@hookimpl
def register_evaluators(register):
    register(Runtime())
