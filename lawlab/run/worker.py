"""What a cell does: load a base model, prune, recover, evaluate; and the artifacts a model is
kept in between runs.

:class:`CellWorker` runs one cell given its parent's model and knows nothing of scheduling, so
the local scheduler (:mod:`lawlab.run.scheduler`) and a distributed executor reuse it unchanged.
"""

from __future__ import annotations

import gc
import json
import random
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lawlab import environment
from lawlab.api import ARTIFACT_FILE, Attachment, LoadedModel, Measurement, RunContext
from lawlab.models.loading import HOST, Residency, to_host
from lawlab.run.plan import Cell, Plan, thaw

# --------------------------------------------------------------------------- one cell


@dataclass
class CellOutcome:
    model: LoadedModel | None
    measurements: list[Measurement]
    compression: dict[str, Any] | None
    provenance: dict[str, Any]
    attachments: list[Attachment] = field(default_factory=list)  # files kept beside the numbers


class CellWorker:
    """Runs single cells given their parent's model; knows nothing of scheduling."""

    def __init__(self, plan: Plan, *, device: str, dtype: str, progress: Any = None):
        spec = plan.spec.spec
        self.plan = plan
        self.registry = plan_registry(plan)
        self.device = device
        self.dtype = dtype
        self.seed = spec.study.seed
        self.offline = plan.spec.offline
        self.progress = progress
        self.residency = Residency(device)  # the one working model on the device
        self.evaluating = False  # a base model loaded now is borrowed, beside the model under test
        # base cell key -> its model, for evaluators that compare against it; an executor
        # that holds models sets it, otherwise the worker loads the base itself.
        self.base_provider: Any = None

    def base_for(self, cell: Cell) -> LoadedModel:
        """The unpruned model the cell's variant was made from (read-only)."""
        base = next(c for c in [cell, *self.plan.ancestors(cell.key)] if c.kind == "base")
        if self.base_provider is not None:
            return self.base_provider(base.key)
        model = self.run(base, None).model
        assert model is not None
        return model

    def seed_of(self, cell: Cell) -> int:
        """A prune or RFT cell's own seed (a method's replicate seeds), else the study's."""
        return int(cell.inputs.get("seed", self.seed))

    def context(self, work_dir: Path, seed: int | None = None) -> RunContext:
        from lawlab.api import Progress

        return RunContext(
            seed=self.seed if seed is None else seed,
            device=self.device,
            dtype=self.dtype,
            cache_dir=environment.cache_dir(),
            work_dir=work_dir,
            offline=self.offline,
            registry=self.registry,
            progress=self.progress or Progress(),
            spec_path=self.plan.spec.path.resolve(),
            datasets=self.plan.spec.spec.dataset_refs(),
        )

    def provenance(self, cell: Cell, plugin_kind: str) -> dict[str, Any]:
        return {
            "spec_hash": self.plan.spec_hash,
            "cell": thaw(cell.inputs),
            "plugin": self.registry.version_of(plugin_kind, cell.plugin),  # type: ignore[arg-type]
            "libraries": environment.library_versions(),
            "seed": self.seed_of(cell),
            "device": self.device,
            "device_name": environment.device_name(self.device),
            "dtype": self.dtype,
            "machine": environment.machine(),
            "offline": self.offline,
        }

    def run(self, cell: Cell, parent: LoadedModel | None) -> CellOutcome:
        seed_everything(self.seed_of(cell))
        with tempfile.TemporaryDirectory(prefix="lawlab-cell-") as tmp:
            ctx = self.context(Path(tmp), self.seed_of(cell))
            if cell.kind == "base":
                return self._base(cell, ctx)
            assert parent is not None, f"cell {cell.key} needs its parent's model"
            if cell.kind == "prune":
                return self._prune(cell, parent, ctx)
            if cell.kind == "rft":
                return self._rft(cell, parent, ctx)
            if cell.kind == "quantize":
                return self._quantize(cell, parent, ctx)
            return self._eval(cell, parent, ctx)

    def _base(self, cell: Cell, ctx: RunContext) -> CellOutcome:
        source = self.registry.get("model_sources", cell.plugin)
        if not self.evaluating:
            self.residency.evict()  # sources load onto the device: make room first
        loaded = source.load(source.Params.model_validate(cell.params_dict()), ctx)
        if self.evaluating:
            self.residency.borrow(loaded)
        else:
            self.residency.adopt(loaded)
        loaded.model.eval()
        prov = self.provenance(cell, "model_sources") | {"model": loaded.provenance}
        return CellOutcome(loaded, [], None, prov)

    def _prune(self, cell: Cell, parent: LoadedModel, ctx: RunContext) -> CellOutcome:
        pruner = self.registry.get("pruners", cell.plugin)
        model = self.residency.working_copy(parent)
        pruned = pruner.prune(model, cell.variant.ratio, pruner.Params.model_validate(cell.params_dict()), ctx)
        self.residency.adopt(pruned)
        pruned.model.eval()
        comp = pruned.compression.as_dict() if pruned.compression else None
        if comp is not None:  # every variant records its storage beside its pruning
            from lawlab.storage import account

            comp["storage"] = account(pruned, self.registry.get("architectures", pruned.model_type))
        return CellOutcome(pruned, [], comp, self.provenance(cell, "pruners"))

    def _quantize(self, cell: Cell, parent: LoadedModel, ctx: RunContext) -> CellOutcome:
        from lawlab.run.hybrid import quantize_step

        quantizer = self.registry.get("quantizers", cell.plugin)
        model = self.residency.working_copy(parent)
        params = quantizer.Params.model_validate(cell.params_dict())
        adapter = self.registry.get("architectures", model.model_type)
        quantized, comp = quantize_step(quantizer, model, params, adapter, ctx)
        self.residency.adopt(quantized)
        quantized.model.eval()
        return CellOutcome(quantized, [], comp, self.provenance(cell, "quantizers"))

    def _rft(self, cell: Cell, parent: LoadedModel, ctx: RunContext) -> CellOutcome:
        recipe = self.registry.get("rft_recipes", cell.plugin)
        assert cell.dataset is not None
        ds_plugin, ds_params = cell.dataset
        dataset = self.registry.get("datasets", ds_plugin)
        data = dataset.load(dataset.Params.model_validate(thaw(ds_params)), "train", ctx)
        data = replace(data, name=cell.variant.rft_dataset)  # as the spec names it ([datasets.alpaca6])
        model = self.residency.working_copy(parent)
        params = recipe.Params.model_validate(cell.params_dict())
        recovered, measurements = recipe.train(model, data, cell.variant.size, params, ctx)
        self.residency.adopt(recovered)
        recovered.model.eval()
        prov = self.provenance(cell, "rft_recipes") | {
            "dataset": {"name": data.name, "split": data.split, "checksum": data.checksum, "source": data.source}
        }
        return CellOutcome(recovered, list(measurements), None, prov)

    def _eval(self, cell: Cell, parent: LoadedModel, ctx: RunContext) -> CellOutcome:
        evaluator = self.registry.get("evaluators", cell.plugin)
        params = evaluator.Params.model_validate(cell.params_dict())
        ctx.base = lambda: self.base_for(cell)
        self.residency.working(parent)
        get_base = getattr(ctx, "base", None)
        if get_base is not None:  # the base model an evaluator compares against joins for this stage
            ctx.base = lambda: self.residency.borrow(get_base())
        self.evaluating = True
        try:
            measurements = evaluator.evaluate(parent, params, ctx)
        finally:
            self.evaluating = False
            self.residency.end_stage()  # a model the evaluator borrowed goes back to the host
        return CellOutcome(None, list(measurements), None, self.provenance(cell, "evaluators"), ctx.attachments)


def plan_registry(plan: Plan) -> Any:
    from lawlab.registry import get_registry

    return get_registry()


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def release(*models: LoadedModel | None) -> None:
    """Give memory back between stages (the GPU's caching allocator keeps it otherwise)."""
    del models
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------- artifacts


def save_model(model: LoadedModel, path: Path, registry: Any) -> None:
    """A model as safetensors + JSON: stock models with ``save_pretrained``, others
    through the pruner that made them."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress display says what is happening
    if model.format == "hf":
        model.model.save_pretrained(path, safe_serialization=True)
        model.tokenizer.save_pretrained(path)
    else:
        format_owner(registry, model.format).save_model(model, path)
    description = {
        "format": model.format,
        "model_type": model.model_type,
        "provenance": model.provenance,
        "compression": model.compression.as_dict() if model.compression else None,
        "history": model.history,
    }
    # written last: a folder without it was never finished
    (path / ARTIFACT_FILE).write_text(json.dumps(description, indent=2, default=str))


def format_owner(registry: Any, fmt: str) -> Any:
    """The pruner or quantiser that saves and loads models of a non-stock ``format``."""
    return registry.get("pruners" if registry.has("pruners", fmt) else "quantizers", fmt)


def load_model(path: Path, ctx: RunContext) -> LoadedModel:
    """An artifact, loaded on the host in ``ctx.dtype``; the stage that needs it on the
    device puts it there (:class:`Residency`)."""
    from dataclasses import replace

    from lawlab.api import Compression

    ctx = replace(ctx, device=HOST)
    desc = json.loads((path / ARTIFACT_FILE).read_text())
    if desc["format"] == "hf":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(path, dtype=ctx.torch_dtype(), trust_remote_code=False)
        loaded = LoadedModel(model, AutoTokenizer.from_pretrained(path), desc["model_type"])
    else:
        loaded = format_owner(ctx.registry, desc["format"]).load_model(path, ctx)
    comp = desc.get("compression")
    if comp:
        derived = {"fraction_removed", "fraction_removed_no_embed", "flops_speedup"}
        loaded.compression = Compression(**{k: v for k, v in comp.items() if k not in derived})
    loaded.provenance = desc.get("provenance", {})
    loaded.history = desc.get("history", [])
    to_host(loaded.model)
    loaded.model.eval()
    return loaded
