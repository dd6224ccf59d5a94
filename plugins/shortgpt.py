"""ShortGPT (Men et al., 2024, *ShortGPT: Layers in Large Language Models are More
Redundant Than You Expect*): remove whole decoder layers, those that change the residual
stream least.

Block Influence of layer i: BI_i = 1 − E[cos(x_in, x_out)], the cosine between the hidden
state entering the layer and the one leaving it, for every token of every calibration
window, averaged. One pass through the unpruned model scores all layers; the ⌈…⌋ lowest
are removed at once (the paper's one-shot removal). The kept layers are renumbered (their
``layer_idx``, which the KV cache is indexed by) and ``num_hidden_layers`` and
``layer_types`` follow, so the result is a stock transformers model.

The ratio is the fraction of layers removed: round(r·L) layers (ties down), at least one
kept; the effective ratio (layers removed / L) and the parameters actually removed are
recorded. Re-implemented from the paper (its code carries no licence); the cosine is taken
in float32 and averaged in float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from pydantic import Field

from lawlab import hookimpl
from lawlab.accounting import check_ratios
from lawlab.api import CheckContext, LoadedModel, Params, Pruner, RunContext

SUPPORTED = ("llama", "mistral", "qwen2", "gemma3_text", "gemma3")


class ShortGPTParams(Params):
    calibration_dataset: str = Field(
        "wikitext2", description="Registered dataset whose train split gives the calibration text (the paper: PG19)."
    )
    calibration_samples: int = Field(64, ge=1, description="Number of calibration windows.")
    calibration_seqlen: int = Field(256, ge=8, description="Tokens per calibration window, BOS included.")
    batch_size: int = Field(8, ge=1, description="Windows per forward pass.")


def layers_removed(n_layers: int, ratio: float) -> int:
    """round(ratio · n_layers), ties down; a clear error when no layer would be left."""
    from lawlab.accounting import kept_count

    kept = kept_count(n_layers, ratio, 1, "nearest")
    if kept < 1:
        raise ValueError(f"ratio {ratio} removes all {n_layers} layers; use a smaller ratio")
    return n_layers - kept


def block_influence(model: Any, adapter: Any, ids: Any, batch_size: int) -> Any:
    """BI per layer (float64): 1 − the mean over all tokens of cos(layer input, layer output)."""
    import torch

    layers = adapter.layers(model)
    sums = torch.zeros(len(layers), dtype=torch.float64)
    tokens = 0

    def hook_for(i: int) -> Any:
        def hook(module: Any, args: tuple, kwargs: dict, output: Any) -> None:
            x_in = args[0] if args else kwargs["hidden_states"]
            x_out = output[0] if isinstance(output, tuple) else output
            cos = torch.nn.functional.cosine_similarity(x_in.float(), x_out.float(), dim=-1)
            sums[i] += cos.double().sum().cpu()
        return hook

    handles = [layer.register_forward_hook(hook_for(i), with_kwargs=True) for i, layer in enumerate(layers)]
    try:
        device = adapter.embeddings(model).weight.device
        for start in range(0, len(ids), batch_size):
            batch = ids[start:start + batch_size]
            model(input_ids=batch.to(device), use_cache=False)
            tokens += batch.numel()
    finally:
        for h in handles:
            h.remove()
    return 1.0 - sums / tokens


def remove_layers(model: Any, adapter: Any, drop: Sequence[int]) -> None:
    """Delete layers ``drop`` and renumber the rest (``layer_idx`` indexes the KV cache)."""
    import torch

    decoder_layers = adapter.layers(model)
    kept = [layer for i, layer in enumerate(decoder_layers) if i not in set(drop)]
    holder = next(m for m in model.modules() if getattr(m, "layers", None) is decoder_layers)
    holder.layers = torch.nn.ModuleList(kept)
    for new_index, layer in enumerate(kept):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_index
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    types = getattr(config, "layer_types", None)
    if types is not None and len(types) == len(decoder_layers):
        config.layer_types = [t for i, t in enumerate(types) if i not in set(drop)]
    config.num_hidden_layers = len(kept)


class ShortGPT(Pruner):
    name: ClassVar[str] = "shortgpt"
    description: ClassVar[str] = (
        "remove the round(r·L) decoder layers of lowest Block Influence (1 − cos of a layer's input and output "
        "on calibration data); depth pruning"
    )
    calibration: ClassVar[bool] = True
    Params: ClassVar[type[Params]] = ShortGPTParams

    def supports(self, model_type: str) -> str | None:
        if model_type in SUPPORTED:
            return None
        return f"shortgpt renumbers the KV cache of {', '.join(SUPPORTED)}, not {model_type!r}"

    def check(self, params: Any, ratios: Sequence[float], ctx: CheckContext) -> None:
        from lawlab.calibration import check_calibration

        check_ratios(ratios)
        check_calibration(ctx, params.calibration_dataset, params.calibration_samples, params.calibration_seqlen)

    def check_model(self, config: dict[str, Any], ratio: float, params: Any) -> str | None:
        n = (config.get("text_config") or config).get("num_hidden_layers")
        if not isinstance(n, int):
            return None
        try:
            layers_removed(n, ratio)
        except ValueError as exc:
            return str(exc)
        return None

    def prune(self, model: LoadedModel, ratio: float, params: Any, ctx: RunContext) -> LoadedModel:
        import torch

        from lawlab.accounting import compression, measure, record, stopwatch
        from lawlab.calibration import calibration_windows

        if (reason := self.supports(model.model_type)) is not None:
            raise ValueError(reason)
        adapter = ctx.registry.get("architectures", model.model_type)
        n_layers = len(adapter.layers(model.model))
        n_drop = layers_removed(n_layers, ratio)
        before = measure(model.model, adapter)
        data = ctx.load_dataset(params.calibration_dataset, "train")
        model.model.eval()
        with stopwatch() as t, torch.no_grad():
            ids, windows = calibration_windows(model.tokenizer, data.texts, params.calibration_samples,
                                               params.calibration_seqlen, ctx.seed, params.calibration_dataset,
                                               ctx.cache_dir)
            bi = block_influence(model.model, adapter, ids, params.batch_size)
            drop = sorted(torch.sort(bi, stable=True).indices[:n_drop].tolist())
            remove_layers(model.model, adapter, drop)
        after = measure(model.model, adapter)
        details = {
            "seed": ctx.seed, "layers": n_layers, "layers_removed": drop, "block_influence": bi.tolist(),
            "effective_ratio": n_drop / n_layers, "ratio_meaning": "fraction of decoder layers removed",
            "calibration": {"dataset": params.calibration_dataset, "checksum": data.checksum,
                            "source": data.source, "samples": params.calibration_samples,
                            "seqlen": params.calibration_seqlen, "tokens": int(ids.numel()), "windows": windows},
        }
        model.compression = compression(self.name, ratio, before, after, t["seconds"], details)
        record(model, {"step": "prune", "method": self.name, "ratio": ratio,
                       "params": params.model_dump(mode="json"), "seed": ctx.seed, "layers_removed": drop,
                       "calibration_windows": {k: windows[k] for k in ("count", "seqlen", "seed", "windows_sha256")}})
        return model


@hookimpl
def register_pruners(register):
    register(ShortGPT())
