"""Weight quantisation with torchao: int8 weights, int8 weights with int8 dynamic activations,
and 2- to 8-bit grouped weights, on the decoder layers' linear projections.

Chosen by measurement on a 2-core CPU (SmolLM2-135M, PTB, torch 2.13 CPU, torchao 0.18):
int8 weight-only costs 0.004 nats and runs slower than float32 (weights dequantised per
call); int8 dynamic activations cost 0.04 nats and run 1.6× faster (the only setting that is
faster here); 4-bit group 32 costs 0.56 nats and saves memory only; torchao's packed int4
path needs a CUDA-only kernel package, so sub-8-bit weights are held unpacked, one int8 per
value (``bytes_in_memory`` says so; the declared storage counts the packed bits).

What stays float is recorded as skipped with the reason: the embeddings and the output head
(as the int8 and int4 references keep them), and norms. A group size that does not divide a
layer's input width is an error naming the layer, unless ``indivisible = "per-channel"``
asks for one scale per output channel on that layer, which is then recorded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from lawlab import hookimpl
from lawlab.api import CheckFailed, LoadedModel, Params, Quantizer, RunContext
from lawlab.sparsity import projections

WEIGHTS_FILE = "quantized.pt"
RECORD_FILE = "quantization.json"
FORMAT_VERSION = 1


class TorchaoParams(Params):
    scheme: Literal["weight", "dynamic"] = Field(
        "weight", description="weight: weights only, activations in float; dynamic: int8 weights and int8 "
        "activations quantised per token at run time (bits must be 8)."
    )
    bits: int = Field(8, ge=2, le=8, description="Bits per weight value (8, or 2-7 for grouped low-bit weights).")
    group_size: int | None = Field(
        None, ge=8, description="Input values sharing one scale and zero point; None: one per output channel."
    )
    indivisible: Literal["error", "per-channel"] = Field(
        "error", description="A layer whose input width the group size does not divide: fail naming it, or give "
        "that layer one scale per output channel (recorded per layer)."
    )

    @model_validator(mode="after")
    def _dynamic_is_int8(self) -> TorchaoParams:
        if self.scheme == "dynamic" and (self.bits != 8 or self.group_size is not None):
            raise ValueError("scheme 'dynamic' is int8 per channel: bits = 8 and no group_size")
        return self


# Loggers that speak once while torchao imports: its optional CUDA kernels are absent on a
# CPU machine, and torch's own handler (which writes straight to the terminal, not to
# lawlab's log) objects to how torchao registers two enums. Neither concerns a study.
_IMPORT_NOISE = ("torchao", "torch.utils._pytree")


def _torchao() -> Any:
    import logging
    import sys

    if "torchao.quantization" not in sys.modules:
        levels = {name: logging.getLogger(name).level for name in _IMPORT_NOISE}
        for name in _IMPORT_NOISE:
            logging.getLogger(name).setLevel(logging.ERROR)
        try:
            import torchao.quantization  # noqa: F401
        finally:
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)
    import torchao.quantization as q

    return q


def _config(params: TorchaoParams, per_channel: bool = False) -> Any:
    """The torchao config of one setting (``per_channel`` for a layer the group size cannot take)."""
    import torch

    q = _torchao()
    group = None if per_channel else params.group_size
    if params.scheme == "dynamic":
        return q.Int8DynamicActivationInt8WeightConfig()
    if params.bits == 8 and group is None:
        return q.Int8WeightOnlyConfig()
    granularity = q.PerGroup(group) if group is not None else q.PerAxis(0)
    return q.IntxWeightOnlyConfig(weight_dtype=getattr(torch, f"int{params.bits}"), granularity=granularity)


def inner_tensors(t: Any) -> dict[str, Any]:
    """The plain tensors a quantised tensor is stored as (data, scales, zero points)."""
    names, _ = t.__tensor_flatten__()
    return {n: getattr(t, n) for n in names}


def _stored_bits(t: Any, bits: int) -> int:
    """Bits the weight needs when its values are packed at ``bits``: values plus every scale
    and zero point at the width they are kept in."""
    total = 0
    for name, inner in inner_tensors(t).items():
        total += inner.numel() * (bits if name == "qdata" else 8 * inner.element_size())
    return total


def _apply(model: Any, params: TorchaoParams, plan: dict[str, bool]) -> None:
    """Quantise the modules named in ``plan`` (fqn -> per-channel fallback) in place."""
    q = _torchao()
    for fallback in (False, True):
        names = {n for n, fb in plan.items() if fb == fallback}
        if names:
            q.quantize_(model, _config(params, fallback), filter_fn=lambda _m, fqn, names=names: fqn in names)


class TorchaoQuantizer(Quantizer):
    name = "torchao"
    Params = TorchaoParams
    description = "torchao weight quantisation of the decoder projections: int8, int8 + dynamic int8 activations, 2-8 bit groups"

    def check(self, params: TorchaoParams, ctx: Any) -> None:
        try:
            _torchao()
        except ImportError:
            raise CheckFailed(
                "the torchao quantiser needs torchao", allowed="pip install 'lawlab[quantize]'"
            ) from None

    def check_model(self, config: dict[str, Any], params: TorchaoParams) -> str | None:
        g = params.group_size
        if g is None or params.indivisible == "per-channel":
            return None
        widths = {"hidden_size": config.get("hidden_size"), "intermediate_size": config.get("intermediate_size")}
        heads, head_dim = config.get("num_attention_heads"), config.get("head_dim")
        if heads and head_dim:
            widths["num_attention_heads × head_dim"] = heads * head_dim
        bad = [f"{k} = {w}" for k, w in widths.items() if w and w % g]
        if bad:
            return f"group_size {g} does not divide {', '.join(bad)}; set indivisible = \"per-channel\" or a divisor"
        return None

    def label(self, params: TorchaoParams) -> str:
        if params.scheme == "dynamic":
            return "w8a8"
        return f"w{params.bits}" + (f"g{params.group_size}" if params.group_size else "")

    def plan_layers(
        self, model: LoadedModel, adapter: Any, params: TorchaoParams
    ) -> tuple[dict[str, bool], list[dict[str, Any]]]:
        """Which linear modules get quantised (fqn -> per-channel fallback) and what stays
        float, with why. Raises ``ValueError`` for an indivisible width unless allowed."""
        fqn = {id(m): n for n, m in model.model.named_modules()}
        plan: dict[str, bool] = {}
        for short, lin in projections(model.model, adapter):
            width = lin.in_features
            fallback = bool(params.group_size and width % params.group_size)
            if fallback and params.indivisible == "error":
                raise ValueError(
                    f"layer {short} ({fqn[id(lin)]}) has input width {width}, which group_size "
                    f"{params.group_size} does not divide; set indivisible = \"per-channel\" or a divisor of it"
                )
            plan[fqn[id(lin)]] = fallback
        skipped = [
            {"layer": fqn[id(adapter.embeddings(model.model))], "reason": "embedding kept in float"},
        ]
        head = adapter.head(model.model)
        skipped.append({"layer": fqn[id(head)], "reason": "output head kept in float"
                        + (" (tied to the embedding)" if adapter.tied(model.model) else "")})
        return plan, skipped

    def quantize(self, model: LoadedModel, params: TorchaoParams, ctx: RunContext) -> LoadedModel:
        adapter = ctx.registry.get("architectures", model.model_type)
        plan, skipped = self.plan_layers(model, adapter, params)
        _apply(model.model, params, plan)
        modules = dict(model.model.named_modules())
        layers = []
        for name, fallback in plan.items():
            w = modules[name].weight
            layers.append({
                "layer": name, "shape": list(w.shape), "bits": params.bits,
                "group_size": None if fallback else params.group_size,
                "activations": "int8 dynamic" if params.scheme == "dynamic" else "float",
                "stored_bits": _stored_bits(w, params.bits),
                "tensor": type(w).__name__,
                **({"fallback": "per-channel: group size does not divide the width"} if fallback else {}),
            })
        model.history.append({
            "step": "quantize", "quantizer": self.name, "label": self.label(params),
            "params": params.model_dump(mode="json"), "layers": layers, "skipped": skipped,
            "library": _library_version(),
        })
        model.format = self.name
        return model

    def save_model(self, model: LoadedModel, path: Path) -> None:
        import torch

        path.mkdir(parents=True, exist_ok=True)
        model.model.config.save_pretrained(path)
        model.tokenizer.save_pretrained(path)
        torch.save(model.model.state_dict(), path / WEIGHTS_FILE)
        record = next(h for h in reversed(model.history) if h.get("step") == "quantize")
        (path / RECORD_FILE).write_text(json.dumps({
            "format_version": FORMAT_VERSION, "params": record["params"],
            "layers": {layer["layer"]: layer["group_size"] is None and record["params"]["group_size"] is not None
                       for layer in record["layers"]},
        }, indent=2))

    def load_model(self, path: Path, ctx: RunContext) -> LoadedModel:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        record = json.loads((path / RECORD_FILE).read_text())
        if record.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path} is not a torchao model of format version {FORMAT_VERSION}")
        config = AutoConfig.from_pretrained(path)
        model = AutoModelForCausalLM.from_config(config, dtype=ctx.torch_dtype())
        params = TorchaoParams.model_validate(record["params"])
        _apply(model, params, record["layers"])  # the same layers get the same tensor types
        state = torch.load(path / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        model.load_state_dict(state, assign=True)
        model.tie_weights()
        model.eval()
        return LoadedModel(model, AutoTokenizer.from_pretrained(path), config.model_type, format=self.name)


def _library_version() -> str:
    from importlib.metadata import version

    return f"torchao=={version('torchao')}"


@hookimpl
def register_quantizers(register: Any) -> None:
    register(TorchaoQuantizer())
