"""The torchao quantiser and the storage accounting, on tiny real models of every architecture."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torchao")

import torch

from lawlab.api import RunContext
from lawlab.registry import get_registry
from lawlab.sparsity import projections
from lawlab.storage import account, tensor_bytes
from lawlab.testing import TINY_TYPES, tiny_model

# Relative L2 error of the logits that 8-bit weights may cost a random tiny model (measured:
# 0.6-1.7 % weight-only, 1.0-2.4 % with int8 activations).
TOL_8BIT = 0.05


@pytest.fixture(scope="module")
def registry():
    return get_registry()


@pytest.fixture
def ctx(registry, tmp_path):
    return RunContext(seed=0, device="cpu", dtype="float32", cache_dir=tmp_path, work_dir=tmp_path,
                      offline=True, registry=registry)


def _quantize(registry, ctx, model_type, **params):
    q = registry.get("quantizers", "torchao")
    m = tiny_model(model_type)
    tokens = torch.randint(0, 300, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = m.model(tokens).logits
    qm = q.quantize(m, q.Params.model_validate(params), ctx)
    with torch.no_grad():
        out = qm.model(tokens).logits
    return qm, tokens, ref, out


@pytest.mark.parametrize("model_type", TINY_TYPES)
@pytest.mark.parametrize("scheme", ["weight", "dynamic"])
def test_8bit_logits_close_to_float(registry, ctx, model_type, scheme):
    _, _, ref, out = _quantize(registry, ctx, model_type, scheme=scheme)
    rel = float((out - ref).norm() / ref.norm())
    assert 0.0 < rel < TOL_8BIT  # changed (it did quantise), but little


def test_every_projection_recorded_and_the_rest_skipped(registry, ctx):
    qm, *_ = _quantize(registry, ctx, "llama", bits=4, group_size=32)
    step = qm.history[-1]
    adapter = registry.get("architectures", "llama")
    names = {n for n, _ in qm.model.named_modules()}
    assert len(step["layers"]) == len(projections(qm.model, adapter)) == 14
    assert all(layer["bits"] == 4 and layer["group_size"] == 32 for layer in step["layers"])
    assert {s["layer"] for s in step["skipped"]} == {"model.embed_tokens", "lm_head"}
    assert all(s["layer"] in names for s in step["skipped"])
    assert qm.format == "torchao" and step["label"] == "w4g32"
    # the head stays the float embedding, still tied
    assert qm.model.lm_head.weight.data_ptr() == qm.model.model.embed_tokens.weight.data_ptr()


def test_indivisible_group_fails_naming_the_layer_or_falls_back_when_asked(registry, ctx):
    with pytest.raises(ValueError, match=r"layer 0\.q .*input width 64.*group_size 48"):
        _quantize(registry, ctx, "llama", bits=4, group_size=48)
    qm, *_ = _quantize(registry, ctx, "llama", bits=4, group_size=48, indivisible="per-channel")
    layers = qm.history[-1]["layers"]
    fell_back = [la for la in layers if "fallback" in la]
    assert fell_back and all(la["shape"][1] % 48 for la in fell_back) and all(la["group_size"] is None for la in fell_back)
    # a width 48 divides keeps its groups (none here: 64 and 128), so every layer fell back
    assert len(fell_back) == len(layers)


def test_check_model_refuses_a_group_that_divides_no_width(registry):
    q = registry.get("quantizers", "torchao")
    config = {"hidden_size": 576, "intermediate_size": 1536, "num_attention_heads": 9, "head_dim": 64}
    assert q.check_model(config, q.Params(bits=4, group_size=32)) is None
    reason = q.check_model(config | {"intermediate_size": 1384}, q.Params(bits=4, group_size=32))
    assert "intermediate_size = 1384" in reason
    assert q.check_model(config | {"intermediate_size": 1384},
                         q.Params(bits=4, group_size=32, indivisible="per-channel")) is None


def test_params_refuse_dynamic_below_8_bits(registry):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="dynamic"):
        registry.get("quantizers", "torchao").Params(scheme="dynamic", bits=4)


def test_accounting_counts_packed_bits_scales_and_zero_points(registry, ctx):
    qm, *_ = _quantize(registry, ctx, "llama", bits=4, group_size=32)
    adapter = registry.get("architectures", "llama")
    acc = account(qm, adapter)
    expect = 0
    for _, lin in projections(qm.model, adapter):
        out_f, in_f = lin.weight.shape
        groups = out_f * in_f // 32
        expect += 4 * out_f * in_f + groups * (32 + 8)  # int4 values, a float32 scale and an int8 zero point per group
    floats = sum(p.numel() * 32 for n, p in qm.model.named_parameters() if "proj" not in n)
    assert acc["bits_stored"] == expect + floats
    assert acc["bits_per_weight_linear"] == pytest.approx(4 + 40 / 32)
    # held unpacked: one byte per 4-bit value in memory
    assert acc["bytes_in_memory"] > acc["bytes_stored"]
    r = acc["ratios"]
    assert r["pruning"] == 0.0
    assert 1 - r["storage"] == pytest.approx((1 - r["pruning"]) * (1 - r["quantization"]))


def test_saved_quantized_model_reloads_identically_and_its_bytes_match(registry, ctx, tmp_path):
    q = registry.get("quantizers", "torchao")
    for params in ({"scheme": "dynamic"}, {"bits": 4, "group_size": 32}):
        qm, tokens, _, out = _quantize(registry, ctx, "qwen2", **params)
        path = tmp_path / q.label(q.Params(**params))
        q.save_model(qm, path)
        back = q.load_model(path, ctx)
        with torch.no_grad():
            assert torch.equal(back.model(tokens).logits, out)
        adapter = registry.get("architectures", "qwen2")
        mem = account(qm, adapter)["bytes_in_memory"]
        assert account(back, adapter)["bytes_in_memory"] == mem
        written = (path / "quantized.pt").stat().st_size
        n_tensors = sum(len(t.__tensor_flatten__()[0]) if hasattr(t, "__tensor_flatten__") else 1
                        for t in qm.model.state_dict().values())
        # the archive holds the tensors' bytes plus, per tensor, its record and alignment
        assert mem <= written <= mem + 1024 * n_tensors
        assert Path(path / "quantization.json").exists()


def test_tensor_bytes_of_a_plain_tensor():
    assert tensor_bytes(torch.zeros(3, 4)) == 48
    assert tensor_bytes(torch.zeros(3, 4, dtype=torch.bfloat16)) == 24
