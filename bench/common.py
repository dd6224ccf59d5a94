"""What the benchmarks share: an offline run context and the SmolLM2 pack."""

from __future__ import annotations

import tempfile
from pathlib import Path

from lawlab import environment
from lawlab.api import LoadedModel, RunContext
from lawlab.registry import get_registry


def offline_context(seed: int = 0, device: str = "cpu") -> RunContext:
    """A run context like a study's, offline, on ``device`` ("auto": the GPU if any), with the
    libraries as quiet as in a study: a benchmark prints its own table, nothing else."""
    environment.enter_offline_mode()
    environment.quiet_libraries()
    device = environment.resolve_device(device)
    return RunContext(
        seed=seed,
        device=device,
        dtype=environment.resolve_dtype("auto", device),
        cache_dir=environment.cache_dir(),
        work_dir=Path(tempfile.mkdtemp(prefix="lawlab-bench-")),
        offline=True,
        registry=get_registry(),
    )


def smollm2(ctx: RunContext) -> LoadedModel:
    """The SmolLM2-135M pack (``lawlab packs install smollm2-135m``), on ctx's device."""
    source = ctx.registry.get("model_sources", "pack")
    model = source.load(source.Params(pack="smollm2-135m"), ctx)
    model.model.to(ctx.device)
    return model
