"""Tools for testing lawlab and its plugins: tiny real models of each supported
architecture, and the conformance kit every pruner plugin should pass.

Tiny models are ordinary transformers models built from a config (a few hundred KB),
with a byte-level BPE tokenizer trained here on a fixed text, so tests exercise the
same code paths as a real model without any download.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from lawlab.api import LoadedModel

TINY_TYPES = ("llama", "qwen2", "mistral", "gemma3_text")

# A small fixed corpus: enough structure for a BPE to learn merges, and for tests that
# need a dataset to have train and test splits.
_WORDS = (
    "the model prunes channels of every layer and recovers with a short fine tuning run "
    "while the loss rises with the ratio and falls with more data the law predicts the "
    "accuracy of a compressed network from its ratio its size and the tokens of recovery "
    "a researcher fits the law to many cells and compares forms on held out models"
).split()


def tiny_corpus(n_docs: int = 200, seed: int = 0) -> list[str]:
    """Deterministic pseudo-sentences built from a fixed vocabulary."""
    import random

    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        n = rng.randint(8, 40)
        docs.append(" ".join(rng.choice(_WORDS) for _ in range(n)).capitalize() + ".")
    return docs


@functools.cache
def tiny_tokenizer(vocab_size: int = 384) -> Any:
    """A byte-level BPE tokenizer trained on :func:`tiny_corpus`, with BOS/EOS/PAD."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(tiny_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", model_max_length=256
    )


def tiny_config(model_type: str = "llama", *, tied: bool = True, vocab_size: int | None = None, **overrides: Any) -> Any:
    """A transformers config for a 2-layer model of ``model_type``: hidden 64, MLP 128,
    4 heads over 2 KV heads (GQA), so every structural feature is present."""
    from transformers import AutoConfig

    tok = tiny_tokenizer()
    common: dict[str, Any] = dict(
        vocab_size=vocab_size or len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=tied,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    if model_type == "gemma3_text":
        common.update(head_dim=16, sliding_window=64, query_pre_attn_scalar=16, layer_types=None)
    common.update(overrides)
    return AutoConfig.for_model(model_type, **common)


def tiny_model(model_type: str = "llama", *, tied: bool = True, seed: int = 0, **overrides: Any) -> LoadedModel:
    """A freshly initialised tiny causal LM (float32, eval mode) with its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    config = tiny_config(model_type, tied=tied, **overrides)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    _scale_norms(model)
    model.eval()
    return LoadedModel(
        model=model,
        tokenizer=tiny_tokenizer(),
        model_type=config.model_type,
        provenance={"source": "lawlab.testing.tiny_model", "model_type": model_type, "seed": seed, "tied": tied},
    )


def _scale_norms(model: Any) -> None:
    """Give norms non-trivial weights: with all-ones weights a bug that forgets to fold a
    norm into the next layer would go unnoticed."""
    import torch

    g = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and p.ndim == 1:
                p.copy_(p + 0.3 * torch.randn(p.shape, generator=g))


def save_tiny(model: LoadedModel, path: Path) -> Path:
    """Save a tiny model as an ordinary HF folder (safetensors + tokenizer)."""
    path = Path(path)
    model.model.save_pretrained(path, safe_serialization=True)
    model.tokenizer.save_pretrained(path)
    return path
