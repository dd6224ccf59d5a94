"""Storage accounting across compression kinds: what a variant keeps, zeros and stores.

Pruning removes parameters, sparsity zeroes them (shapes and dense storage unchanged) and
quantisation stores them in fewer bits. One record covers all three for any variant:

- ``params``: parameters kept (each tensor once, a tied head once), ``nonzeros`` among them
  (read from the dequantised values, so a quantised zero counts as a zero);
- ``bits_stored``: the bits the weights need on disk when packed: float tensors at their
  dtype, quantised ones as recorded by their quantiser (values at their bit width, plus
  every scale and zero point at its own width); ``bits_per_weight`` divides by ``params``
  and ``bits_per_weight_linear`` counts the decoder projections alone;
- ``bytes_in_memory``: what the tensors occupy now (a quantiser that holds 4-bit values
  unpacked, one per byte, shows it here);
- the declared ratio of each axis, and the combined storage ratio:
  pruning = 1 − params / params_original; sparsity = 1 − nonzeros / params;
  quantisation = 1 − bits_stored / (params × original_bits);
  storage = 1 − bits_stored / (params_original × original_bits), so that
  1 − storage = (1 − pruning)(1 − quantisation): dense storage keeps a sparse model's zeros.
"""

from __future__ import annotations

from typing import Any

from lawlab.api import LoadedModel
from lawlab.sparsity import projections


def tensor_bytes(t: Any) -> int:
    """Bytes a tensor occupies: a tensor subclass (a quantised weight) is the sum of the
    plain tensors it is stored as."""
    flatten = getattr(t, "__tensor_flatten__", None)
    if flatten is not None:
        names, _ = flatten()
        return sum(tensor_bytes(getattr(t, n)) for n in names)
    return t.numel() * t.element_size()


def dense(t: Any) -> Any:
    """The values a tensor stands for (a quantised weight dequantised)."""
    return t.dequantize() if hasattr(t, "__tensor_flatten__") and hasattr(t, "dequantize") else t


def quantized_layers(model: LoadedModel) -> dict[str, dict[str, Any]]:
    """The last quantisation step's per-layer record (module name -> what it got)."""
    for step in reversed(model.history):
        if step.get("step") == "quantize":
            return {layer["layer"]: layer for layer in step.get("layers", [])}
    return {}


def account(model: LoadedModel, adapter: Any, *, params_original: int | None = None,
            original_bits: int | None = None) -> dict[str, Any]:
    """The storage record of ``model`` (see the module docstring). ``params_original``:
    the unpruned model's parameter count (default: the pruning record's, else this
    model's); ``original_bits``: its bits per value (default: the embedding's dtype,
    which no quantiser here touches)."""
    net = model.model
    layers = quantized_layers(model)
    linear = {id(lin.weight) for _, lin in projections(net, adapter)}
    if original_bits is None:
        original_bits = 8 * adapter.embeddings(net).weight.element_size()
    params = nonzeros = bits = bits_linear = numel_linear = mem = 0
    for name, p in net.named_parameters():  # tied weights come once
        n = p.numel()
        module = name.rsplit(".", 1)[0]
        stored = layers[module]["stored_bits"] if module in layers and name.endswith("weight") else 8 * tensor_bytes(p)
        params += n
        nonzeros += int(dense(p.detach()).count_nonzero())
        bits += stored
        mem += tensor_bytes(p)
        if id(p) in linear:
            bits_linear += stored
            numel_linear += n
    if params_original is None:
        params_original = model.compression.params_original if model.compression else params
    return {
        "params": params,
        "params_original": params_original,
        "nonzeros": nonzeros,
        "original_bits": original_bits,
        "bits_stored": bits,
        "bytes_stored": bits / 8,
        "bytes_in_memory": mem,
        "bits_per_weight": bits / params,
        "bits_per_weight_linear": bits_linear / numel_linear if numel_linear else None,
        "quantized_layers": len(layers),
        "ratios": {
            "pruning": 1.0 - params / params_original,
            "sparsity": 1.0 - nonzeros / params,
            "quantization": 1.0 - bits / (params * original_bits),
            "storage": 1.0 - bits / (params_original * original_bits),
        },
    }
