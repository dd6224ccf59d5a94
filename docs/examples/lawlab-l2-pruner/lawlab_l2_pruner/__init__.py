"""An L2-magnitude FFN-channel pruner, registered with lawlab through an entry point."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from lawlab import hookimpl
from lawlab.api import CheckFailed, Params, Pruner


class L2Params(Params):
    multiple_of: int = Field(8, ge=1, description="Kept channels are rounded to a multiple of this.")


class L2MagnitudePruner(Pruner):
    name: ClassVar[str] = "l2-magnitude"
    description: ClassVar[str] = "remove the fraction r of FFN channels with the smallest L2 weight norm"
    Params: ClassVar[type[Params]] = L2Params

    def check(self, params: Any, ratios: Any, ctx: Any) -> None:
        for r in ratios:
            if not 0.0 <= r < 1.0:
                raise CheckFailed(f"ratio {r} is outside [0, 1)", allowed="0 <= r < 1")

    def prune(self, model: Any, ratio: float, params: Any, ctx: Any) -> Any:
        import torch

        from lawlab.accounting import compression, kept_count, measure, record, stopwatch
        from lawlab.models.loading import replace_module

        adapter = ctx.registry.get("architectures", model.model_type)  # reach layers only through it
        before = measure(model.model, adapter)
        with stopwatch() as t, torch.no_grad():
            for layer in adapter.layers(model.model):
                gate, up, down = adapter.mlp(layer)
                n = up.weight.shape[0]
                keep = kept_count(n, ratio, params.multiple_of)
                if keep < 1:
                    raise ValueError(f"ratio {ratio} leaves no FFN channel of {n}")
                norms = gate.weight.pow(2).sum(1) + up.weight.pow(2).sum(1) + down.weight.pow(2).sum(0)
                # Ties (r = 0 keeps all) break by channel number, so the result is deterministic.
                index = torch.argsort(norms, descending=True, stable=True)[:keep].sort().values
                # put each smaller matrix where the adapter's module sits: no attribute names
                replace_module(layer, gate, _rows(gate, index))
                replace_module(layer, up, _rows(up, index))
                replace_module(layer, down, _columns(down, index))
            adapter.set_intermediate_size(model.model, keep)
        model.compression = compression(self.name, ratio, before, measure(model.model, adapter), t["seconds"],
                                        {"kept_channels": keep, "criterion": "L2 norm of gate row, up row, down column"})
        record(model, {"step": "prune", "method": self.name, "ratio": ratio, "params": params.model_dump()})
        return model


def _rows(linear: Any, index: Any) -> Any:
    import torch

    new = torch.nn.Linear(linear.in_features, len(index), bias=linear.bias is not None, dtype=linear.weight.dtype)
    new.weight.data = linear.weight.data[index].clone()
    if linear.bias is not None:
        new.bias.data = linear.bias.data[index].clone()
    return new


def _columns(linear: Any, index: Any) -> Any:
    import torch

    new = torch.nn.Linear(len(index), linear.out_features, bias=linear.bias is not None, dtype=linear.weight.dtype)
    new.weight.data = linear.weight.data[:, index].clone()
    if linear.bias is not None:
        new.bias.data = linear.bias.data.clone()
    return new


@hookimpl
def register_pruners(register):
    register(L2MagnitudePruner())
