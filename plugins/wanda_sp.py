"""Wanda-sp (An et al., 2024, *Fluctuation-based Adaptive Structured Pruning for Large
Language Models*, the FLAP repository's ``prune_wanda_sp``): Wanda's score summed per
attention head and per FFN channel, the lowest removed physically.

Layer by layer, each calibrated on what the already-pruned layers before it produce (as
Wanda), the inputs of ``o_proj`` and ``down_proj`` give ‖X_j‖₂; a column's score is the
mean over output rows of |W_ij|·‖X_j‖₂. A head scores the sum of its columns, an FFN
channel its own column. Every layer loses the same number of heads and channels (the
reference's rule), so the result is a stock transformers model with smaller
``num_attention_heads``, ``num_key_value_heads`` and ``intermediate_size``.

The ratio r is the fraction of the decoder projections' weights removed (about the
fraction of non-embedding parameters; the effective fraction is recorded). Heads go first:
⌊r·units⌋ per layer, as the reference removes ⌊r·heads⌋; the FFN channels removed then
make up the rest of r, as FLAP's own ``cal_remove_neuron`` sizes them.

Departures from the reference code: with grouped-query attention the unit is a KV group
(one key/value head and the query heads that share it, scored as the sum of their query
heads), because a query head alone cannot leave its group; on a model with one KV head no
head is removed and r comes from the FFN alone. The reference removes ⌊r·heads⌋ heads and
⌊r·channels⌋ channels, the same r of both kinds (for multi-head attention, one head per
group, the rule here gives the same count); ties are broken by index instead of keeping
every unit at the threshold; ‖X_j‖² is summed in float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from pydantic import Field

from lawlab import hookimpl
from lawlab.accounting import check_ratios
from lawlab.api import CheckContext, LoadedModel, Params, Pruner, RunContext
from lawlab.models.loading import replace_module

SUPPORTED = ("llama", "mistral", "qwen2", "gemma3_text", "gemma3")


class WandaSPParams(Params):
    calibration_dataset: str = Field(
        "wikitext2", description="Registered dataset whose train split gives the calibration text (the paper: C4)."
    )
    calibration_samples: int = Field(64, ge=1, description="Number of calibration windows (the paper: 128).")
    calibration_seqlen: int = Field(
        256, ge=8, description="Tokens per calibration window, BOS included (the paper: 128)."
    )
    batch_size: int = Field(8, ge=1, description="Windows per forward pass through a layer.")


def _text_config(model: Any) -> Any:
    return model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config


def _keep_linear(linear: Any, index: Any, dim: int) -> Any:
    """A new ``nn.Linear`` keeping ``index`` along ``dim`` of the weight (0: outputs, 1: inputs)."""
    import torch

    w = linear.weight.detach().index_select(dim, index.to(linear.weight.device))
    new = torch.nn.Linear(w.shape[1], w.shape[0], bias=linear.bias is not None, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(w)
        if linear.bias is not None:
            b = linear.bias.detach()
            new.bias.copy_(b.index_select(0, index.to(b.device)) if dim == 0 else b)
    return new


def plan_removal(config: dict[str, Any], ratio: float) -> dict[str, int]:
    """Units removed per layer for a ratio: KV groups (⌊r·groups⌋), then FFN channels so
    that the projections lose r of their weights in all (at most all channels but one)."""
    d, n = config["hidden_size"], config["intermediate_size"]
    heads, kv = config["num_attention_heads"], config.get("num_key_value_heads") or config["num_attention_heads"]
    hd = config.get("head_dim") or d // heads
    g = heads // kv
    group_weights = 2 * g * hd * d + 2 * hd * d  # q rows and o columns of g heads; k and v rows
    layer_weights = kv * group_weights + 3 * d * n
    groups = int(ratio * kv)
    rest = ratio * layer_weights - groups * group_weights
    channels = min(n - 1, max(0, int(rest / (3 * d))))
    return {"groups": groups, "channels": channels, "head_dim": hd, "group_size": g, "kv_heads": kv,
            "intermediate_size": n, "layer_weights": layer_weights,
            "removed_weights": groups * group_weights + channels * 3 * d}


def head_scores(o_proj: Any, sq_norms: Any, head_dim: int) -> Any:
    """Per query head: the sum over its columns of the mean over rows of |W|·‖X‖."""
    col = (o_proj.weight.detach().abs().to(sq_norms.dtype) * sq_norms.sqrt().reshape(1, -1)).mean(0)
    return col.reshape(-1, head_dim).sum(1)


def channel_scores(down: Any, sq_norms: Any) -> Any:
    """Per FFN channel: the mean over rows of |W|·‖X‖ of its column of ``down_proj``."""
    return (down.weight.detach().abs().to(sq_norms.dtype) * sq_norms.sqrt().reshape(1, -1)).mean(0)


def lowest(scores: Any, k: int) -> Any:
    """Sorted indices of what is kept once the ``k`` lowest scores go (ties: lower index goes first)."""
    import torch

    order = torch.sort(scores, stable=True).indices
    return order[k:].sort().values


class WandaSP(Pruner):
    name: ClassVar[str] = "wanda-sp"
    description: ClassVar[str] = (
        "remove the attention heads (KV groups) and FFN channels with the lowest summed Wanda score, the same "
        "number per layer, layers in sequence on calibration data; r = fraction of projection weights removed"
    )
    calibration: ClassVar[bool] = True
    Params: ClassVar[type[Params]] = WandaSPParams

    def supports(self, model_type: str) -> str | None:
        if model_type in SUPPORTED:
            return None
        return f"wanda-sp knows the attention layout of {', '.join(SUPPORTED)}, not {model_type!r}"

    def check(self, params: Any, ratios: Sequence[float], ctx: CheckContext) -> None:
        from lawlab.calibration import check_calibration

        check_ratios(ratios)
        check_calibration(ctx, params.calibration_dataset, params.calibration_samples, params.calibration_seqlen)

    def check_model(self, config: dict[str, Any], ratio: float, params: Any) -> str | None:
        config = config.get("text_config") or config
        try:
            plan = plan_removal(config, ratio)
        except (KeyError, TypeError):
            return None
        if plan["removed_weights"] < 0.9 * ratio * plan["layer_weights"]:
            return (f"ratio {ratio} asks for more than wanda-sp can remove while keeping a head group and a channel "
                    f"per layer ({plan['removed_weights'] / plan['layer_weights']:.2f} at most); use a smaller ratio")
        return None

    def pruned_config(self, config: dict[str, Any], ratio: float, params: Any) -> dict[str, Any] | None:
        config = config.get("text_config") or config
        try:
            plan = plan_removal(config, ratio)
        except (KeyError, TypeError):
            return None
        return config | {
            "num_attention_heads": config["num_attention_heads"] - plan["groups"] * plan["group_size"],
            "num_key_value_heads": plan["kv_heads"] - plan["groups"], "head_dim": plan["head_dim"],
            "intermediate_size": plan["intermediate_size"] - plan["channels"],
        }

    def prune(self, model: LoadedModel, ratio: float, params: Any, ctx: RunContext) -> LoadedModel:
        import torch

        from lawlab.accounting import compression, measure, record, stopwatch
        from lawlab.calibration import calibration_windows, walk_layers

        if (reason := self.supports(model.model_type)) is not None:
            raise ValueError(reason)
        adapter = ctx.registry.get("architectures", model.model_type)
        config = _text_config(model.model)
        layer0 = adapter.layers(model.model)[0]
        q0, k0 = adapter.attention(layer0)[:2]
        hd = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        shape = {"hidden_size": config.hidden_size, "intermediate_size": adapter.mlp(layer0)[0].out_features,
                 "num_attention_heads": q0.out_features // hd, "num_key_value_heads": k0.out_features // hd,
                 "head_dim": hd}
        plan = plan_removal(shape, ratio)
        before = measure(model.model, adapter)
        data = ctx.load_dataset(params.calibration_dataset, "train")
        removed: list[dict[str, list[int]]] = []

        def watch(layer: Any) -> dict[str, Any]:
            return {"o": adapter.attention(layer)[3], "down": adapter.mlp(layer)[2]}

        def act(i: int, layer: Any, sums: dict[str, Any]) -> None:
            q, k, v, o = adapter.attention(layer)
            gate, up, down = adapter.mlp(layer)
            groups = head_scores(o, sums["o"], hd).reshape(plan["kv_heads"], plan["group_size"]).sum(1)
            kept_groups = lowest(groups, plan["groups"])
            kept_channels = lowest(channel_scores(down, sums["down"]), plan["channels"])
            kv_cols = (kept_groups[:, None] * hd + torch.arange(hd)).flatten()
            q_heads = (kept_groups[:, None] * plan["group_size"] + torch.arange(plan["group_size"])).flatten()
            q_cols = (q_heads[:, None] * hd + torch.arange(hd)).flatten()
            for lin, index, dim in ((q, q_cols, 0), (k, kv_cols, 0), (v, kv_cols, 0), (o, q_cols, 1),
                                    (gate, kept_channels, 0), (up, kept_channels, 0), (down, kept_channels, 1)):
                replace_module(layer, lin, _keep_linear(lin, index, dim))
            removed.append({"kv_groups": sorted(set(range(plan["kv_heads"])) - set(kept_groups.tolist())),
                            "channels": sorted(set(range(plan["intermediate_size"])) - set(kept_channels.tolist()))})

        model.model.eval()
        with stopwatch() as t, torch.no_grad():
            ids, windows = calibration_windows(model.tokenizer, data.texts, params.calibration_samples,
                                               params.calibration_seqlen, ctx.seed, params.calibration_dataset,
                                               ctx.cache_dir)
            if plan["groups"] or plan["channels"]:
                walk_layers(model.model, adapter, ids, params.batch_size, watch, act)
        heads = shape["num_attention_heads"] - plan["groups"] * plan["group_size"]
        config.head_dim = hd  # explicit: hidden_size // heads no longer gives it
        config.num_attention_heads = heads
        config.num_key_value_heads = plan["kv_heads"] - plan["groups"]
        config.intermediate_size = plan["intermediate_size"] - plan["channels"]
        after = measure(model.model, adapter)
        details = {
            "seed": ctx.seed, "kv_groups_removed_per_layer": plan["groups"],
            "query_heads_removed_per_layer": plan["groups"] * plan["group_size"],
            "channels_removed_per_layer": plan["channels"], "removed": removed, **shape,
            "effective_ratio": plan["removed_weights"] / plan["layer_weights"],
            "ratio_meaning": "fraction of the decoder projections' weights removed",
            "calibration": {"dataset": params.calibration_dataset, "checksum": data.checksum,
                            "source": data.source, "samples": params.calibration_samples,
                            "seqlen": params.calibration_seqlen, "tokens": int(ids.numel()), "windows": windows},
        }
        model.compression = compression(self.name, ratio, before, after, t["seconds"], details)
        record(model, {"step": "prune", "method": self.name, "ratio": ratio,
                       "params": params.model_dump(mode="json"), "seed": ctx.seed,
                       "heads": heads, "kv_heads": config.num_key_value_heads,
                       "intermediate_size": config.intermediate_size,
                       "calibration_windows": {k: windows[k] for k in ("count", "seqlen", "seed", "windows_sha256")}})
        return model


@hookimpl
def register_pruners(register):
    register(WandaSP())
