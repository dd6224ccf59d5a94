"""Behaviour of the built-in pruners and of ratio accounting, on tiny real models."""

from __future__ import annotations

import pytest
import torch
from lawlab_plugins import prunenet, random_prunenet, slicegpt

from lawlab.accounting import kept_count, measure
from lawlab.api import CheckContext, CheckFailed
from lawlab.testing import tiny_model, tiny_registry, tiny_run_context

REGISTRY = tiny_registry(random_prunenet, prunenet, slicegpt)
IDS = torch.tensor([[1, 40, 41, 42, 43, 44, 45, 46, 47]])
CALIBRATION = {"calibration_dataset": "tiny-corpus", "calibration_samples": 8, "calibration_seqlen": 32}


def logits(m):
    with torch.no_grad():
        return m.model(IDS).logits


def check_ctx(tmp_path):
    return CheckContext(spec_path=tmp_path / "spec.toml", offline=True, registry=REGISTRY, cache_dir=tmp_path)


# --------------------------------------------------------------------------- accounting


def test_kept_count_rounding():
    assert kept_count(1536, 0.0) == 1536
    assert kept_count(1536, 0.1) == 1384  # 0.9·1536/8 = 172.8 → 173 multiples of 8
    assert kept_count(1536, 0.1, rounding="down") == 1376
    assert kept_count(576, 0.5, multiple_of=1) == 288
    assert kept_count(100, 0.5, multiple_of=8) == 48  # 6.25 → 6 (nearest)
    assert kept_count(128, 0.9, multiple_of=64) == 0  # callers turn 0 into an error
    with pytest.raises(ValueError):
        kept_count(128, 1.0)


def test_accounting_counts_tied_once_and_flops(tmp_path):
    m = tiny_model("llama", tied=True)
    adapter = REGISTRY.get("architectures", "llama")
    size = measure(m.model, adapter, context=100)
    vocab, d, inter, layers = 384, 64, 128, 2
    per_layer = d * d + 2 * d * (d // 2) + d * d + 3 * d * inter
    norms = layers * 2 * d + d
    assert size.params == vocab * d + layers * per_layer + norms
    assert size.params_no_embed == layers * per_layer + norms
    assert size.flops_per_token == 2 * (layers * per_layer + vocab * d) + layers * 4 * 100 * d
    untied = measure(tiny_model("llama", tied=False).model, adapter)
    assert untied.params == size.params + vocab * d
    assert untied.params_no_embed == size.params_no_embed


# --------------------------------------------------------------------------- random-prunenet


def test_random_prunenet_equals_zeroed_channels(tmp_path):
    ctx = tiny_run_context(tmp_path, REGISTRY, seed=3)
    original = tiny_model("qwen2")
    adapter = REGISTRY.get("architectures", "qwen2")
    pruner = REGISTRY.get("pruners", "random-prunenet")
    pruned = pruner.prune(tiny_model("qwen2"), 0.5, pruner.Params(), ctx)
    # Same seed, same draw: the removed channels, zeroed in the original, give the same logits.
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for layer in adapter.layers(original.model):
            keep = torch.randperm(128, generator=g)[:64]
            mask = torch.ones(128, dtype=torch.bool)
            mask[keep] = False
            adapter.mlp(layer)[2].weight[:, mask] = 0
    assert torch.allclose(logits(pruned), logits(original), atol=1e-5)
    gate, up, down = adapter.mlp(adapter.layers(pruned.model)[0])
    assert gate.weight.shape == (64, 64) and up.weight.shape == (64, 64) and down.weight.shape == (64, 64)
    assert pruned.model.config.intermediate_size == 64
    c = pruned.compression
    assert c.params_original - c.params_kept == 2 * 3 * 64 * 64
    assert c.details["kept_channels"] == 64 and pruned.history[-1]["method"] == "random-prunenet"


def test_random_prunenet_seed_changes_choice(tmp_path):
    pruner = REGISTRY.get("pruners", "random-prunenet")
    a = pruner.prune(tiny_model(), 0.5, pruner.Params(), tiny_run_context(tmp_path / "a", REGISTRY, seed=0))
    b = pruner.prune(tiny_model(), 0.5, pruner.Params(), tiny_run_context(tmp_path / "b", REGISTRY, seed=1))
    assert not torch.equal(logits(a), logits(b))


def test_ratio_leaving_no_channel_is_a_clear_error(tmp_path):
    pruner = REGISTRY.get("pruners", "random-prunenet")
    with pytest.raises(ValueError, match="leaves no FFN channel of 128"):
        pruner.prune(tiny_model(), 0.9, pruner.Params(multiple_of=64), tiny_run_context(tmp_path, REGISTRY))
    with pytest.raises(CheckFailed, match="outside"):
        pruner.check(pruner.Params(), [0.5, 1.0], check_ctx(tmp_path))


# --------------------------------------------------------------------------- prunenet


def test_ks_distance():
    a = torch.tensor([1.0, 2.0, 3.0])
    assert prunenet.ks_distance(a, a) == 0.0
    assert prunenet.ks_distance(a, a + 10) == 1.0
    assert prunenet.ks_distance(a, torch.tensor([1.0, 2.0])) == pytest.approx(1 / 3)


# Training, the policy cache and reuse across ratios: tests/test_prunenet.py.


# --------------------------------------------------------------------------- slicegpt


def test_slicegpt_exact_at_zero_with_qwen2_biases_and_unties(tmp_path):
    pruner = REGISTRY.get("pruners", "slicegpt")
    m = tiny_model("qwen2", tied=True)
    adapter = REGISTRY.get("architectures", "qwen2")
    with torch.no_grad():  # non-zero q/k/v biases, so a wrong bias rotation would show
        for layer in adapter.layers(m.model):
            for lin in adapter.attention(layer)[:3]:
                lin.bias.normal_()
    reference = logits(m)
    pruned = pruner.prune(m, 0.0, pruner.Params(**CALIBRATION), tiny_run_context(tmp_path, REGISTRY))
    assert torch.allclose(logits(pruned), reference, atol=1e-4)
    assert not adapter.tied(pruned.model) and pruned.format == "slicegpt"
    c = pruned.compression
    assert c.details["untie_params"] == 384 * 64
    # r = 0 adds the skip rotations and the untied head, minus the folded norm weights.
    assert c.params_kept == c.params_original + c.details["overhead_params"] - (2 * 2 + 1) * 64


def test_slicegpt_shapes_and_slice_head(tmp_path):
    pruner = REGISTRY.get("pruners", "slicegpt")
    ctx = tiny_run_context(tmp_path, REGISTRY)
    plain = pruner.prune(tiny_model("llama"), 0.25, pruner.Params(**CALIBRATION), ctx)
    sliced_head = pruner.prune(tiny_model("llama"), 0.25, pruner.Params(**CALIBRATION, slice_head=True), ctx)
    adapter = REGISTRY.get("architectures", "llama")
    assert adapter.embeddings(plain.model).weight.shape == (384, 48)
    assert adapter.head(plain.model).weight.shape == (384, 64)
    assert adapter.head(sliced_head.model).weight.shape == (384, 48)
    assert sliced_head.compression.params_kept == plain.compression.params_kept - (384 + 48 + 128) * 16  # head, last skip, last down
    assert torch.isfinite(logits(sliced_head)).all()


def test_slicegpt_bad_input(tmp_path):
    pruner = REGISTRY.get("pruners", "slicegpt")
    assert pruner.supports("gemma3_text") is None and pruner.supports("llama") is None
    assert "supports llama" in pruner.supports("phi3")
    with pytest.raises(CheckFailed) as err:
        pruner.check(pruner.Params(calibration_dataset="nope"), [0.3], check_ctx(tmp_path))
    assert err.value.field == "calibration_dataset" and "tiny-corpus" in err.value.allowed
    with pytest.raises(CheckFailed, match="calibration data too short") as err:
        pruner.check(pruner.Params(**{**CALIBRATION, "calibration_samples": 100_000}), [0.3], check_ctx(tmp_path))
    assert err.value.field == "calibration_samples"
    pruner.check(pruner.Params(**CALIBRATION), [0.3], check_ctx(tmp_path))  # enough: passes
    with pytest.raises(ValueError, match="calibration data too short"):
        pruner.prune(tiny_model(), 0.3, pruner.Params(**{**CALIBRATION, "calibration_samples": 5000}),
                     tiny_run_context(tmp_path, REGISTRY))
    with pytest.raises(ValueError, match="leaves no hidden dimension"):
        pruner.prune(tiny_model(), 0.9, pruner.Params(**CALIBRATION, multiple_of=16), tiny_run_context(tmp_path, REGISTRY))
