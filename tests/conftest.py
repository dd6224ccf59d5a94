"""Shared fixtures: a small valid spec of tiny models, written where a test wants it."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

# Tests never touch a network; keep HF libraries from trying.
os.environ.setdefault("LAWLAB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TESTS = Path(__file__).parent

# The paper's models as their config.json describes them (the fields that size them), so
# plans of the paper spec can be sized with no hub: see paper_configs_cached.
PAPER_CONFIGS = {
    "Qwen/Qwen2.5-0.5B": dict(model_type="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                              num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
                              tie_word_embeddings=True, max_position_embeddings=32768),
    "Qwen/Qwen2.5-1.5B": dict(model_type="qwen2", hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                              num_attention_heads=12, num_key_value_heads=2, vocab_size=151936,
                              tie_word_embeddings=True, max_position_embeddings=131072),
    "Qwen/Qwen2.5-3B": dict(model_type="qwen2", hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
                            num_attention_heads=16, num_key_value_heads=2, vocab_size=151936,
                            tie_word_embeddings=True, max_position_embeddings=32768),
    "Qwen/Qwen2.5-7B": dict(model_type="qwen2", hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                            num_attention_heads=28, num_key_value_heads=4, vocab_size=152064,
                            tie_word_embeddings=False, max_position_embeddings=131072),
    "Qwen/Qwen2.5-14B": dict(model_type="qwen2", hidden_size=5120, intermediate_size=13824, num_hidden_layers=48,
                             num_attention_heads=40, num_key_value_heads=8, vocab_size=152064,
                             tie_word_embeddings=False, max_position_embeddings=131072),
    "meta-llama/Llama-3.2-1B": dict(model_type="llama", hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                                    num_attention_heads=32, num_key_value_heads=8, head_dim=64, vocab_size=128256,
                                    tie_word_embeddings=True, max_position_embeddings=131072),
    "meta-llama/Llama-3.2-3B": dict(model_type="llama", hidden_size=3072, intermediate_size=8192, num_hidden_layers=28,
                                    num_attention_heads=24, num_key_value_heads=8, head_dim=128, vocab_size=128256,
                                    tie_word_embeddings=True, max_position_embeddings=131072),
    "meta-llama/Meta-Llama-3-8B": dict(model_type="llama", hidden_size=4096, intermediate_size=14336,
                                       num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                                       vocab_size=128256, tie_word_embeddings=False, max_position_embeddings=8192),
}


@pytest.fixture
def paper_configs_cached(tmp_path: Path, monkeypatch) -> dict[str, dict]:
    """A hub cache holding only the paper models' config.json, no weights (as a fetch cut
    short leaves it): a plan sizes them from it, and they still need the hub to run."""
    from huggingface_hub import constants

    cache = tmp_path / "hub-cache"
    for repo, config in PAPER_CONFIGS.items():
        folder = cache / f"models--{repo.replace('/', '--')}"
        commit = hashlib.sha1(repo.encode()).hexdigest()
        (folder / "refs").mkdir(parents=True)
        (folder / "refs" / "main").write_text(commit)
        (folder / "snapshots" / commit).mkdir(parents=True)
        (folder / "snapshots" / commit / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return PAPER_CONFIGS


def missing_packs(*names: str) -> list[str]:
    from lawlab.registry import get_registry

    registry = get_registry()
    return [n for n in names if not registry.get("packs", n).installed()]


def needs_pack(*names: str):
    """Mark a test that reads offline packs: ``pack`` (so ``make test-fast`` leaves it
    out), and skipped, naming the missing packs and the command, when they are absent."""
    missing = missing_packs(*names)

    def mark(test):
        test = pytest.mark.pack(test)
        reason = f"needs the {', '.join(missing)} pack(s): lawlab packs install {' '.join(missing)}"
        return pytest.mark.skipif(bool(missing), reason=reason)(test)

    return mark

# The blocks tests' specs share (lawlab.testing.spec_toml writes them as TOML).
TINY_LLAMA = {"name": "tiny-llama", "source": "tiny", "params": {"model_type": "llama"}}
RANDOM_PRUNENET = {"method": "random-prunenet", "ratios": [0.0, 0.5]}
TINY_LORA = {"recipe": "lora", "datasets": ["tiny-corpus"], "sizes": [0, 8],
             "params": {"max_length": 32, "batch_size": 4, "rank": 4}}
TINY_CROSS_ENTROPY = {"evaluator": "cross-entropy", "params": {"datasets": ["tiny-corpus"], "window": 32, "batch_size": 8}}


def tiny_study(output: str | Path | None = None, **sections) -> str:
    """:func:`lawlab.testing.spec_toml` of one tiny llama pruned by random-prunenet at r = 0
    and 0.5; ``sections`` (``models``, ``methods``, ``evaluators``, ...) replace or add."""
    from lawlab.testing import spec_toml

    return spec_toml(output, **{"models": [TINY_LLAMA], "methods": [RANDOM_PRUNENET], **sections})


# The tiny_spec fixture's sections: what every stage needs, at three ratios.
TINY_SPEC = {"methods": [{**RANDOM_PRUNENET, "ratios": [0.0, 0.25, 0.5]}], "rft": [TINY_LORA],
             "evaluators": [TINY_CROSS_ENTROPY], "laws": [{"form": "compression-law", "metric": "intrinsic"}]}


@pytest.fixture
def tiny_spec(tmp_path: Path):
    """Write the tiny spec (:data:`TINY_SPEC`, optionally edited) and return its path."""

    def write(edit=None, name: str = "spec.toml", output: Path | None = None, **sections) -> Path:
        """``sections`` replace TINY_SPEC's; ``edit`` maps the spec text to the text written."""
        text = tiny_study(output or tmp_path / "out", **{**TINY_SPEC, **sections})
        path = tmp_path / name
        path.write_text(edit(text) if edit else text)
        return path

    return write


@pytest.fixture
def results_csv(tmp_path):
    """A results CSV in the export format, simulated from the paper's LLaMA-3-8B extrinsic law."""
    from lawlab.laws.simulate import simulate
    from lawlab.testing import write_rows_csv

    models = {"qwen-0.5b": 0.42, "qwen-1.5b": 0.50, "qwen-3b": 0.56, "llama-8b": 0.62}
    rows = simulate("compression-law", {"alpha": 0.98, "beta": -1.18, "gamma": -0.14}, models=models,
                    noise=0.02, seed=3)
    return write_rows_csv(rows, tmp_path / "results.csv")
