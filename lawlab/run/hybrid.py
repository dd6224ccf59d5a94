"""One quantisation step of a hybrid variant, run and accounted for.

The record a quantise cell stores is its parent's pruning record (or, for an unpruned
parent, one with nothing removed) with two additions: ``storage``, the accounting of
:mod:`lawlab.storage` after quantisation, and ``quantization``, what each layer got and
what stayed float, as the quantiser recorded it.
"""

from __future__ import annotations

from typing import Any

from lawlab import accounting
from lawlab.api import LoadedModel, Quantizer, RunContext
from lawlab.storage import account


def quantize_step(quantizer: Quantizer, model: LoadedModel, params: Any, adapter: Any,
                  ctx: RunContext) -> tuple[LoadedModel, dict[str, Any]]:
    """Quantise ``model`` (a working copy: it is changed) and return it with its record."""
    if model.compression is not None:
        record = model.compression.as_dict()
    else:  # quantising the unpruned model: parameters and FLOPs as they are
        size = accounting.measure(model.model, adapter)
        record = accounting.compression("", 0.0, size, size, 0.0).as_dict()
    with accounting.stopwatch() as t:
        quantized = quantizer.quantize(model, params, ctx)
    step = next(h for h in reversed(quantized.history) if h.get("step") == "quantize")
    record["storage"] = account(quantized, adapter, params_original=record["params_original"])
    record["quantization"] = step | {"seconds": t["seconds"]}
    return quantized, record
