"""random-PruneNet: remove the same fraction r of FFN intermediate channels in every
layer, chosen uniformly at random with the study's seed (the paper's calibration-free
method). Layers shrink physically and ``config.intermediate_size`` follows, so the result
is a stock transformers model (``save_pretrained`` / ``from_pretrained``).

The FFN-shrinking machinery here is shared with ``prunenet``, which differs only in how it
chooses the channels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from pydantic import Field

from lawlab import hookimpl
from lawlab.accounting import check_ratios
from lawlab.api import CheckContext, LoadedModel, Params, Pruner, RunContext
from lawlab.models.loading import replace_module


class ChannelParams(Params):
    multiple_of: int = Field(
        8, ge=1, description="Kept channels are rounded to a multiple of this (1: no rounding)."
    )
    rounding: Literal["nearest", "down"] = Field(
        "nearest", description="Round (1 - r)·n to the nearest multiple (ties down) or always down."
    )


def sliced_linear(linear: Any, index: Any, dim: int) -> Any:
    """A new ``nn.Linear`` keeping ``index`` along ``dim`` of the weight (0: outputs, 1: inputs)."""
    import torch

    w = linear.weight.data.index_select(dim, index.to(linear.weight.device))
    out_f, in_f = w.shape
    new = torch.nn.Linear(in_f, out_f, bias=linear.bias is not None, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(w)
        if linear.bias is not None:
            b = linear.bias.data
            new.bias.copy_(b.index_select(0, index.to(b.device)) if dim == 0 else b)
    return new


def intermediate_size(model: Any, adapter: Any) -> int:
    return adapter.mlp(adapter.layers(model)[0])[1].weight.shape[0]


def kept_channels(n: int, ratio: float, params: ChannelParams) -> int:
    """Channels kept per layer; a clear error when none would be left."""
    from lawlab.accounting import kept_count

    keep = kept_count(n, ratio, params.multiple_of, params.rounding)
    if keep < 1:
        raise ValueError(
            f"ratio {ratio} leaves no FFN channel of {n} (kept count rounds to a multiple of "
            f"{params.multiple_of}); use a smaller ratio or a smaller multiple_of"
        )
    return keep


def shrink_ffn(model: Any, adapter: Any, keep_index: Sequence[Any]) -> None:
    """Keep, in layer i, the channels ``keep_index[i]``: rows of gate and up, columns of down."""
    layers = adapter.layers(model)
    for layer, index in zip(layers, keep_index, strict=True):
        gate, up, down = adapter.mlp(layer)
        for lin, dim in ((gate, 0), (up, 0), (down, 1)):
            replace_module(layer, lin, sliced_linear(lin, index, dim))
    adapter.set_intermediate_size(model, len(keep_index[0]))


class FFNChannelPruner(Pruner):
    """Shared skeleton: choose ``keep`` channels per layer, shrink, account."""

    Params: ClassVar[type[Params]] = ChannelParams

    def check(self, params: Any, ratios: Sequence[float], ctx: CheckContext) -> None:
        check_ratios(ratios)

    def check_model(self, config: dict[str, Any], ratio: float, params: Any) -> str | None:
        n = config.get("intermediate_size")
        if not isinstance(n, int):
            return None
        try:
            kept_channels(n, ratio, params)
        except ValueError as exc:
            return str(exc)
        return None

    def pruned_config(self, config: dict[str, Any], ratio: float, params: Any) -> dict[str, Any] | None:
        n = config.get("intermediate_size")
        if not isinstance(n, int) or self.check_model(config, ratio, params):
            return None
        return config | {"intermediate_size": kept_channels(n, ratio, params)}

    def choose(self, model: LoadedModel, adapter: Any, keep: int, params: Any, ctx: RunContext) -> tuple[list[Any], dict]:
        """Sorted indices of the channels to keep, per layer, and details to record."""
        raise NotImplementedError

    def prune(self, model: LoadedModel, ratio: float, params: Any, ctx: RunContext) -> LoadedModel:
        import torch

        from lawlab.accounting import compression, measure, record, stopwatch

        adapter = ctx.registry.get("architectures", model.model_type)
        before = measure(model.model, adapter)
        n = intermediate_size(model.model, adapter)
        keep = kept_channels(n, ratio, params)
        with stopwatch() as t, torch.no_grad():
            index, details = self.choose(model, adapter, keep, params, ctx)
            shrink_ffn(model.model, adapter, index)
        after = measure(model.model, adapter)
        details = {"intermediate_size": n, "kept_channels": keep, "seed": ctx.seed, **details}
        details["channel_fraction_removed"] = 1 - keep / n
        model.compression = compression(self.name, ratio, before, after, t["seconds"], details)
        record(model, {"step": "prune", "method": self.name, "ratio": ratio,
                       "params": params.model_dump(mode="json"), **details})
        return model


class RandomPruneNet(FFNChannelPruner):
    name: ClassVar[str] = "random-prunenet"
    description: ClassVar[str] = (
        "remove the fraction r of FFN channels in every layer, uniformly at random (seeded); calibration-free"
    )

    def choose(self, model: LoadedModel, adapter: Any, keep: int, params: Any, ctx: RunContext) -> tuple[list[Any], dict]:
        import torch

        g = torch.Generator().manual_seed(ctx.seed)
        n = intermediate_size(model.model, adapter)
        # One draw per layer from one generator: layer i's choice depends only on (seed, i).
        index = [torch.randperm(n, generator=g)[:keep].sort().values for _ in adapter.layers(model.model)]
        return index, {"selection": "uniform without replacement, torch.randperm per layer"}


@hookimpl
def register_pruners(register):
    register(RandomPruneNet())
