"""Memory estimates from a model's config alone: what each stage of a study needs on the
device and on the host, before anything is loaded.

The executor's memory plan (see :mod:`lawlab.run.scheduler`) keeps one working model on the
device; the base model and the pruned parent wait on the host. So a stage's device peak
is one model's weights plus what the stage itself allocates, and the host holds at most
the base, the pruned parent, one artifact shard being written, and the process itself.

With ``W`` the weights (parameters × bytes of the dtype), ``T`` tokens in one forward pass
(batch × sequence), ``V`` the vocabulary, ``b`` the bytes of the compute dtype:

- load: ``W``.
- prune, calibration-free: ``W`` + one layer's FFN (the replacement is built beside it).
- prune, calibration-based: ``W`` + the calibration activations (three copies of samples
  × length × hidden in the model dtype: a block's inputs, midpoints and outputs) + one
  layer's forward + a hidden² float64 Gram matrix; the eigendecomposition on the host.
- RFT: ``W`` + what the recipe declares (its trainable state and optimiser moments, the
  activations it saves for backward, its logits).
- evaluation: ``W`` + logits (``T · V · (b + 4)``) + the KV cache + one layer's
  activations; an evaluator that compares with the base model holds it too (``+ W_base``),
  one that scores a bounded chunk of logits at a time counts only that chunk.

Each plugin declares its own terms (``memory(params, shapes, dtype_bytes)`` on
:class:`lawlab.api.Pruner`, :class:`~lawlab.api.RFTRecipe` and :class:`~lawlab.api.Evaluator`,
returning :class:`lawlab.api.MemoryTerms`) from its own params, with the helpers below;
this module reads no plugin's parameters. Numbers are bytes; reports use GiB.
"""

from __future__ import annotations

import functools
import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from lawlab.api import MemoryTerms

GIB = 2**30
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "float64": 8}
# What the CUDA context, the caching allocator's fragmentation and the libraries take
# beyond the tensors counted here: a study is refused above this share of the device.
USABLE_FRACTION = 0.92
PROCESS_HOST_BYTES = 3 * GIB  # python, torch, transformers, tokenizers, lm-eval loaded
SHARD_BYTES = 5 * GIB  # save_pretrained's default shard, staged on the host while saving
# Tokens assumed per request of an extrinsic benchmark with no declared length: the
# paper's zero-shot tasks stay under it, bar the longest MMLU prompts (peaks grow linearly).
LONGEST_REQUEST = 1024

# --------------------------------------------------------------------------- shapes


def count_parameters(config: Mapping[str, Any]) -> int | None:
    """Every parameter of the model a config.json describes (tied weights once), counted
    on the model itself built on the meta device, so any architecture is exact (qk-norms,
    biases, experts); None for a model_type transformers has no causal LM for."""
    return _count(json.dumps(dict(config), sort_keys=True, default=str))


@functools.lru_cache(maxsize=64)
def _count(config_json: str) -> int | None:  # keyed by content: the plan asks once per model and stage
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    fields = json.loads(config_json)
    model_type = fields.pop("model_type", None)
    if model_type not in CONFIG_MAPPING_NAMES or model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return None
    config = AutoConfig.for_model(model_type, **fields)
    # torch's meta device, not accelerate's init_empty_weights: that one re-registers each
    # parameter and so unties tied embeddings (Qwen2.5-0.5B would count 630M, not 494M)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=False)
    return sum(p.numel() for p in model.parameters())  # parameters() yields a shared one once


@dataclass(frozen=True)
class Shapes:
    """The sizes of a decoder-only transformer that memory depends on."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    max_positions: int = 4096
    qkv_bias: bool = False
    counted: int | None = None  # count_parameters(config); None: from the shapes below

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Shapes | None:
        """From config.json's fields (``text_config`` too); None when sizes are missing."""
        text = config.get("text_config") or config
        try:
            hidden, heads = int(text["hidden_size"]), int(text["num_attention_heads"])
            shapes = cls(
                hidden=hidden,
                intermediate=int(text["intermediate_size"]),
                layers=int(text["num_hidden_layers"]),
                heads=heads,
                kv_heads=int(text.get("num_key_value_heads") or heads),
                head_dim=int(text.get("head_dim") or hidden // heads),
                vocab=int(text["vocab_size"]),
                tied=bool(text.get("tie_word_embeddings", True)),
                max_positions=int(text.get("max_position_embeddings") or 4096),
                qkv_bias=text.get("model_type") == "qwen2" or bool(text.get("attention_bias")),
            )
        except (KeyError, TypeError, ValueError):
            return None
        return replace(shapes, counted=count_parameters(config))

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def layer_params(self) -> int:
        q = self.heads * self.head_dim
        attn = self.hidden * (q + 2 * self.kv_dim) + q * self.hidden
        if self.qkv_bias:
            attn += q + 2 * self.kv_dim
        return attn + 3 * self.hidden * self.intermediate + 2 * self.hidden  # + two norms

    @property
    def exact(self) -> bool:
        return self.counted is not None

    @property
    def params(self) -> int:
        """The exact count where the model could be built, else the dense decoder's formula."""
        if self.counted is not None:
            return self.counted
        embeddings = self.vocab * self.hidden * (1 if self.tied else 2)
        return embeddings + self.layers * self.layer_params + self.hidden

    def kv_cache_bytes(self, tokens: int, b: int) -> int:
        return 2 * self.layers * self.kv_dim * tokens * b

    def layer_forward_bytes(self, tokens: int, b: int) -> int:
        """One layer's transient activations in inference (residual, q/k/v, MLP)."""
        return tokens * (4 * self.hidden + 2 * self.kv_dim + 3 * self.intermediate) * b


# --------------------------------------------------------------------------- estimates


@dataclass(frozen=True)
class StageMemory:
    """One stage's estimated peak: device and host bytes, and the device terms by name."""

    stage: str  # "load", then "<kind> <plugin>": "prune <pruner>", "rft <recipe>", "eval <evaluator>"
    device: int
    host: int
    terms: Mapping[str, int] = field(default_factory=dict)

    def explain(self) -> str:
        return " + ".join(f"{name} {v / GIB:.1f}" for name, v in self.terms.items()) + " GiB"


@dataclass(frozen=True)
class ModelMemory:
    """A model's estimates for every stage a study runs on it."""

    model: str
    params: int
    dtype: str
    stages: tuple[StageMemory, ...]
    exact: bool = True  # params counted on the built model, not from the shapes (Shapes.params)

    @property
    def weights(self) -> int:
        return self.params * DTYPE_BYTES[self.dtype]

    @property
    def peak(self) -> StageMemory:
        return max(self.stages, key=lambda s: s.device)

    @property
    def peak_device(self) -> int:
        return self.peak.device

    @property
    def peak_host(self) -> int:
        return max(s.host for s in self.stages)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "params": self.params,
            "params_exact": self.exact,
            "dtype": self.dtype,
            "weights_bytes": self.weights,
            "peak_device_bytes": self.peak_device,
            "peak_stage": self.peak.stage,
            "peak_host_bytes": self.peak_host,
            "stages": [{"stage": s.stage, "device_bytes": s.device, "host_bytes": s.host, "terms": dict(s.terms)}
                       for s in self.stages],
        }

    def summary(self) -> str:
        counted = "" if self.exact else " (from the layer shapes)"
        lines = [f"{self.model}: {self.params / 1e9:.2f}B parameters{counted} in {self.dtype}, "
                 f"peak {self.peak_device / GIB:.1f} GiB on the device ({self.peak.stage}), "
                 f"{self.peak_host / GIB:.1f} GiB on the host"]
        lines += [f"  {s.stage:28} {s.device / GIB:7.1f} GiB = {s.explain()}" for s in self.stages]
        return "\n".join(lines)


def calibration_terms(shapes: Shapes, b: int, *, samples: int, length: int, batch: int) -> MemoryTerms:
    """A calibration-based pruner's terms: ``samples`` windows of ``length`` tokens, run
    ``batch`` windows a pass (see the module doc)."""
    from lawlab.api import MemoryTerms

    return MemoryTerms(
        {
            # a block's inputs, its midpoints and its outputs for every window coexist
            "calibration activations": 3 * samples * length * shapes.hidden * b,
            "layer forward": shapes.layer_forward_bytes(batch * length, b),
            "Gram matrix (float64)": 8 * shapes.hidden**2,
        },
        host=3 * 8 * shapes.hidden**2,  # the eigendecomposition in float64 on the CPU
    )


def forward_terms(shapes: Shapes, b: int, *, tokens: int, logit_elements: int | None = None) -> dict[str, int]:
    """One inference pass of ``tokens`` tokens: the logits (every token's, or a bounded
    chunk of ``logit_elements``), the KV cache and one layer's activations."""
    if logit_elements is None:
        logits = tokens * shapes.vocab * (b + 4)
    else:  # a bounded chunk: the head's output, a float32 copy and its log-softmax
        logits = min(tokens * shapes.vocab, logit_elements) * (b + 8)
    return {"logits": logits, "KV cache": shapes.kv_cache_bytes(tokens, b),
            "layer forward": shapes.layer_forward_bytes(tokens, b)}


@dataclass(frozen=True)
class StageRequest:
    """A stage to estimate: its kind, the plugin's name and the terms it declared."""

    kind: str  # "prune", "rft" or "eval"
    plugin: str
    declared: MemoryTerms


def estimate_model(name: str, shapes: Shapes, dtype: str, stages: list[StageRequest]) -> ModelMemory:
    """Every stage's estimate for one model (the base load first)."""
    b = DTYPE_BYTES[dtype]
    weights = shapes.params * b
    held = weights + min(weights, SHARD_BYTES) + PROCESS_HOST_BYTES  # base on the host, a shard being saved
    out = [StageMemory("load", weights, weights + PROCESS_HOST_BYTES, {"weights": weights})]
    for req in stages:
        terms = {"weights": weights, **req.declared.device}
        # while pruning, the base is the parent; after, the pruned parent waits on the host beside it
        host = (held if req.kind == "prune" else held + weights) + req.declared.host
        out.append(StageMemory(f"{req.kind} {req.plugin}", sum(terms.values()), host, terms))
    return ModelMemory(name, shapes.params, dtype, tuple(out), shapes.exact)


# --------------------------------------------------------------------------- the device


@dataclass(frozen=True)
class DeviceCapacity:
    bytes: int
    source: str  # where the number comes from, for messages

    @property
    def usable(self) -> int:
        return int(self.bytes * USABLE_FRACTION)


def device_capacity(device_setting: str, declared_gb: float | None) -> DeviceCapacity | None:
    """The memory of the device a study will run on, when known: as declared in the spec,
    else the visible NVIDIA GPU's (torch is imported only when the driver is there)."""
    if declared_gb is not None:
        return DeviceCapacity(int(declared_gb * GIB), f"{declared_gb:g} GiB declared in execution.device_memory_gb")
    if device_setting != "auto" and not device_setting.startswith("cuda"):
        return None
    if not (Path("/proc/driver/nvidia").exists() or shutil.which("nvidia-smi")):
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    index = int(device_setting.split(":")[1]) if ":" in device_setting else torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    return DeviceCapacity(int(props.total_memory), f"{props.total_memory / GIB:.1f} GiB of {props.name} (cuda:{index})")


def compute_dtype(dtype_setting: str, on_gpu: bool) -> str:
    """The dtype estimates assume: as set, else what ``auto`` resolves to (bfloat16 on a
    GPU, float32 on the CPU)."""
    if dtype_setting != "auto":
        return dtype_setting
    return "bfloat16" if on_gpu else "float32"
