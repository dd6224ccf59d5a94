"""Architecture adapters for the decoder-only families the paper studies.

All four keep their layers at ``model.model.layers`` with the usual projection names;
they differ in biases (qwen2: q/k/v), norms (gemma3: sandwich norms around both
sub-blocks, q/k norms, RMSNorm weights stored as w - 1) and activation (gemma3: GELU-tanh).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from lawlab import hookimpl
from lawlab.api import ArchitectureAdapter


class DecoderAdapter(ArchitectureAdapter):
    """The transformers layout shared by LLaMA-style causal LMs."""

    model_type: ClassVar[str] = "llama"
    description: ClassVar[str] = "LLaMA layout: GQA attention, SwiGLU MLP, RMSNorm, tied or untied head"

    def _decoder(self, model: Any) -> Any:
        # A PeftModel or a causal-LM wrapper: walk down to the module holding `layers`.
        inner = model
        for attr in ("base_model", "model"):
            while hasattr(inner, attr) and not hasattr(inner, "layers"):
                inner = getattr(inner, attr)
        return inner

    def layers(self, model: Any) -> Sequence[Any]:
        return self._decoder(model).layers

    def mlp(self, layer: Any) -> tuple[Any, Any, Any]:
        m = layer.mlp
        return m.gate_proj, m.up_proj, m.down_proj

    def attention(self, layer: Any) -> tuple[Any, Any, Any, Any]:
        a = layer.self_attn
        return a.q_proj, a.k_proj, a.v_proj, a.o_proj

    def norms(self, layer: Any) -> dict[str, Any]:
        return {"input": layer.input_layernorm, "post_attention": layer.post_attention_layernorm}

    def final_norm(self, model: Any) -> Any:
        return self._decoder(model).norm

    def embeddings(self, model: Any) -> Any:
        return self._decoder(model).embed_tokens

    def head(self, model: Any) -> Any:
        return model.get_output_embeddings()


class MistralAdapter(DecoderAdapter):
    model_type: ClassVar[str] = "mistral"
    description: ClassVar[str] = "Mistral: the LLaMA layout (sliding-window attention does not change it)"


class Qwen2Adapter(DecoderAdapter):
    model_type: ClassVar[str] = "qwen2"
    description: ClassVar[str] = "Qwen2: the LLaMA layout with biases on q, k and v"


class Gemma3Adapter(DecoderAdapter):
    """Gemma 3 text models: in Gemma3 ``post_attention_layernorm`` normalises the
    attention *output* before the residual add, and ``pre_feedforward_layernorm`` is the
    norm in front of the MLP (the role ``post_attention`` plays in LLaMA)."""

    model_type: ClassVar[str] = "gemma3_text"
    description: ClassVar[str] = "Gemma 3 (text): sandwich norms, q/k norms, GELU-tanh gate, (1 + w) RMSNorm"
    norm_weight_offset: ClassVar[float] = 1.0

    def norms(self, layer: Any) -> dict[str, Any]:
        a = layer.self_attn
        return {
            "input": layer.input_layernorm,
            "post_attention_output": layer.post_attention_layernorm,
            "pre_feedforward": layer.pre_feedforward_layernorm,
            "post_feedforward": layer.post_feedforward_layernorm,
            "q": a.q_norm,
            "k": a.k_norm,
        }


class Gemma3WrapperAdapter(Gemma3Adapter):
    """``model_type = "gemma3"`` configs: the multimodal wrapper, whose text decoder sits at
    ``model.model.language_model`` and whose image features enter the residual stream
    through the projector's ``mm_input_projection_weight``."""

    model_type: ClassVar[str] = "gemma3"

    def _decoder(self, model: Any) -> Any:
        # Walk wrapper → Gemma3Model → language_model (``base_model`` of Gemma3Model is
        # itself, so the LLaMA walk would not end there).
        inner = model
        while not hasattr(inner, "layers"):
            step = next((getattr(inner, a) for a in ("language_model", "base_model", "model")
                         if getattr(inner, a, inner) is not inner), None)
            if step is None:
                raise ValueError(f"no decoder layers found in {type(model).__name__}")
            inner = step
        return inner

    def residual_projections(self, model: Any) -> list[tuple[Any, str]]:
        """(module, parameter name) of weights other than the embeddings that write the
        residual stream (a method rotating the stream must rotate them too)."""
        return [(m, "mm_input_projection_weight") for m in model.modules() if hasattr(m, "mm_input_projection_weight")]


@hookimpl
def register_architectures(register):
    for adapter in (DecoderAdapter(), MistralAdapter(), Qwen2Adapter(), Gemma3Adapter(), Gemma3WrapperAdapter()):
        register(adapter)
