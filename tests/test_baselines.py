"""The field's baselines (magnitude, wanda, wanda-sp, shortgpt) on tiny real models: each
choice (mask, heads, channels, layers) equals a direct computation of the method's score on
the same calibration windows, recomputed here without lawlab's layer walk; r = 0 changes
nothing; N:M masks hold exactly N zeros per group; sparsity survives save, reload and RFT."""

from __future__ import annotations

import pytest
import torch
from lawlab_plugins import lora, shortgpt, wanda, wanda_sp

from lawlab.api import CheckContext, CheckFailed
from lawlab.calibration import calibration_windows
from lawlab.sparsity import SPARSE, projections, sparsity
from lawlab.testing import tiny_model, tiny_registry, tiny_run_context

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

REGISTRY = tiny_registry(wanda, wanda_sp, shortgpt, lora)
CALIBRATION = {"calibration_dataset": "tiny-corpus", "calibration_samples": 8, "calibration_seqlen": 32,
               "batch_size": 3}
NAMES = ("q", "k", "v", "o", "gate", "up", "down")


def pruner(name):
    return REGISTRY.get("pruners", name)


def windows(ctx, pruned):
    """The calibration windows rebuilt from what the pruned model recorded."""
    rec = pruned.compression.details["calibration"]["windows"]
    data = ctx.load_dataset(pruned.compression.details["calibration"]["dataset"], "train")
    ids, again = calibration_windows(pruned.tokenizer, data.texts, rec["count"], rec["seqlen"], rec["seed"],
                                     "tiny-corpus", ctx.cache_dir)
    assert again["windows_sha256"] == rec["windows_sha256"] and again["token_offsets"] == rec["token_offsets"]
    return ids


def layer_linears(adapter, layer):
    return dict(zip(NAMES, (*adapter.attention(layer), *adapter.mlp(layer)), strict=True))


def input_sq_norms(model, modules, ids):
    """Sum over every token of the squared inputs of ``modules``, from full forward passes."""
    sums = {}

    def hook_for(name):
        def hook(mod, args, out):
            x = args[0].reshape(-1, args[0].shape[-1]).double()
            sums[name] = sums.get(name, 0) + x.pow(2).sum(0)
        return hook

    handles = [m.register_forward_hook(hook_for(n)) for n, m in modules.items()]
    with torch.no_grad():
        model(input_ids=ids, use_cache=False)
    for h in handles:
        h.remove()
    return sums


# --------------------------------------------------------------------------- magnitude


def test_magnitude_zeroes_the_smallest_of_each_matrix(tmp_path):
    ctx = tiny_run_context(tmp_path, REGISTRY)
    original = tiny_model("llama")
    pruned = pruner("magnitude").prune(tiny_model("llama"), 0.3, pruner("magnitude").Params(), ctx)
    adapter = REGISTRY.get("architectures", "llama")
    for (name, a), (_, b) in zip(projections(original.model, adapter), projections(pruned.model, adapter), strict=True):
        w = a.weight.detach().abs().flatten()
        k = int(w.numel() * 0.3)
        expected = torch.zeros_like(w, dtype=torch.bool)
        expected[torch.argsort(w, stable=True)[:k]] = True
        assert torch.equal(b.weight.detach().flatten() == 0, expected), name
    c = pruned.compression
    assert c.details[SPARSE]["fraction"] == pytest.approx(0.3, abs=0.002)
    assert c.params_original - c.params_kept == c.details[SPARSE]["zeros"]
    assert c.flops_per_token == c.flops_per_token_original  # dense kernels multiply the zeros too


def test_zero_ratio_changes_nothing(tmp_path):
    ctx = tiny_run_context(tmp_path, REGISTRY)
    for name, params in (("magnitude", {}), ("wanda", CALIBRATION), ("wanda-sp", CALIBRATION),
                         ("shortgpt", CALIBRATION)):
        original = tiny_model("qwen2").model.state_dict()
        pruned = pruner(name).prune(tiny_model("qwen2"), 0.0, pruner(name).Params(**params), ctx)
        after = pruned.model.state_dict()
        assert after.keys() == original.keys(), name
        assert all(torch.equal(after[k], original[k]) for k in after), name


@pytest.mark.parametrize(("name", "structure"), [("magnitude", "4:8"), ("wanda", "2:4")])
def test_n_m_masks_hold_n_zeros_in_every_group(tmp_path, name, structure):
    n, m = map(int, structure.split(":"))
    ctx = tiny_run_context(tmp_path, REGISTRY)
    params = pruner(name).Params(**({**CALIBRATION} if name == "wanda" else {}), structure=structure)
    pruned = pruner(name).prune(tiny_model("mistral"), n / m, params, ctx)
    adapter = REGISTRY.get("architectures", "mistral")
    for lname, lin in projections(pruned.model, adapter):
        zeros = (lin.weight == 0).reshape(lin.weight.shape[0], -1, m).sum(-1)
        assert (zeros == n).all(), lname
    assert pruned.compression.details[SPARSE]["fraction"] == n / m


def test_n_m_refuses_other_ratios(tmp_path):
    cctx = CheckContext(spec_path=tmp_path / "s.toml", offline=True, registry=REGISTRY, cache_dir=tmp_path)
    mag = pruner("magnitude")
    mag.check(mag.Params(structure="2:4"), [0.0, 0.5], cctx)
    with pytest.raises(CheckFailed, match="2/4"):
        mag.check(mag.Params(structure="2:4"), [0.3], cctx)
    with pytest.raises(CheckFailed, match="0 < N < M"):
        mag.check(mag.Params(structure="4:4"), [1.0 - 1e-9], cctx)
    with pytest.raises(ValueError):
        mag.Params(structure="half")


# --------------------------------------------------------------------------- wanda


@pytest.mark.parametrize("model_type", ["llama", "gemma3_text"])
def test_wanda_masks_equal_a_direct_computation(tmp_path, model_type):
    """Layer by layer: the inputs of layer i's projections come from a full forward pass of
    a model whose layers before i are already pruned; |W|·‖X‖ ranked within each row."""
    ctx = tiny_run_context(tmp_path, REGISTRY, seed=5)
    ratio = 0.4
    pruned = pruner("wanda").prune(tiny_model(model_type), ratio, pruner("wanda").Params(**CALIBRATION), ctx)
    ids = windows(ctx, pruned)
    reference = tiny_model(model_type)
    adapter = REGISTRY.get("architectures", model_type)
    for i, layer in enumerate(adapter.layers(reference.model)):
        lins = layer_linears(adapter, layer)
        sums = input_sq_norms(reference.model, lins, ids)
        ours = layer_linears(adapter, adapter.layers(pruned.model)[i])
        with torch.no_grad():
            for name, lin in lins.items():
                score = lin.weight.double().abs() * sums[name].sqrt()
                k = int(score.shape[1] * ratio)
                expected = torch.zeros_like(score, dtype=torch.bool)
                expected.scatter_(1, torch.argsort(score, dim=1, stable=True)[:, :k], True)
                got = ours[name].weight == 0
                assert torch.equal(got, expected), f"layer {i} {name}: {int((got != expected).sum())} differ"
                lin.weight[expected] = 0  # the next layer is calibrated on this pruned one
    assert pruned.compression.details["calibration"]["windows"]["count"] == 8
    assert pruned.history[-1]["calibration_windows"]["windows_sha256"]


def test_wanda_differs_from_magnitude(tmp_path):
    ctx = tiny_run_context(tmp_path, REGISTRY)
    a = pruner("wanda").prune(tiny_model("llama"), 0.5, pruner("wanda").Params(**CALIBRATION), ctx)
    b = pruner("magnitude").prune(tiny_model("llama"), 0.5, pruner("magnitude").Params(), ctx)
    adapter = REGISTRY.get("architectures", "llama")
    za = torch.cat([lin.weight.flatten() == 0 for _, lin in projections(a.model, adapter)])
    zb = torch.cat([lin.weight.flatten() == 0 for _, lin in projections(b.model, adapter)])
    assert not torch.equal(za, zb)


# --------------------------------------------------------------------------- wanda-sp


@pytest.mark.parametrize(("model_type", "overrides", "ratio"),
                         [("llama", {"num_key_value_heads": 4}, 0.5), ("qwen2", {}, 0.6)])
def test_wanda_sp_removes_what_a_direct_computation_ranks_lowest(tmp_path, model_type, overrides, ratio):
    ctx = tiny_run_context(tmp_path, REGISTRY, seed=2)
    sp = pruner("wanda-sp")
    pruned = sp.prune(tiny_model(model_type, **overrides), ratio, sp.Params(**CALIBRATION), ctx)
    ids = windows(ctx, pruned)
    details = pruned.compression.details
    reference = tiny_model(model_type, **overrides)
    adapter = REGISTRY.get("architectures", model_type)
    hd, heads, kv = 16, 4, overrides.get("num_key_value_heads", 2)
    g = heads // kv
    for i, layer in enumerate(adapter.layers(reference.model)):
        o, down = adapter.attention(layer)[3], adapter.mlp(layer)[2]
        sums = input_sq_norms(reference.model, {"o": o, "down": down}, ids)
        with torch.no_grad():
            col = (o.weight.double().abs() * sums["o"].sqrt()).mean(0)
            group_score = col.reshape(kv, g * hd).sum(1)
            ch = (down.weight.double().abs() * sums["down"].sqrt()).mean(0)
            groups = sorted(torch.argsort(group_score, stable=True)[:details["kv_groups_removed_per_layer"]].tolist())
            channels = sorted(torch.argsort(ch, stable=True)[:details["channels_removed_per_layer"]].tolist())
            assert details["removed"][i] == {"kv_groups": groups, "channels": channels}, f"layer {i}"
            # zero what was removed: the same function as removing it, for the next layer's inputs
            for grp in groups:
                o.weight[:, grp * g * hd:(grp + 1) * g * hd] = 0
            down.weight[:, channels] = 0
    with torch.no_grad():  # the physically smaller model computes what the zeroed one does
        assert torch.allclose(pruned.model(ids).logits, reference.model(ids).logits, atol=1e-4)
    assert pruned.model.config.num_key_value_heads == kv - details["kv_groups_removed_per_layer"]
    c = pruned.compression
    removed = 1 - c.params_kept_no_embed / c.params_original_no_embed
    assert removed == pytest.approx(ratio, abs=0.05)  # r: the fraction of non-embedding weights removed


def test_wanda_sp_removal_plan():
    smol = {"hidden_size": 576, "intermediate_size": 1536, "num_attention_heads": 9, "num_key_value_heads": 3}
    plan = wanda_sp.plan_removal(smol, 0.5)
    assert plan["groups"] == 1 and plan["group_size"] == 3 and plan["head_dim"] == 64
    assert plan["removed_weights"] / plan["layer_weights"] == pytest.approx(0.5, abs=0.001)
    gemma = {"hidden_size": 640, "intermediate_size": 2048, "num_attention_heads": 4, "num_key_value_heads": 1,
             "head_dim": 256}
    plan = wanda_sp.plan_removal(gemma, 0.5)
    assert plan["groups"] == 0  # one KV head: only FFN channels go
    assert plan["removed_weights"] / plan["layer_weights"] == pytest.approx(0.5, abs=0.001)
    assert "more than wanda-sp can remove" in pruner("wanda-sp").check_model(gemma, 0.9, None)
    assert "phi3" in pruner("wanda-sp").supports("phi3")


# --------------------------------------------------------------------------- shortgpt


def test_shortgpt_removes_the_layers_of_lowest_block_influence(tmp_path):
    ctx = tiny_run_context(tmp_path, REGISTRY, seed=1)
    sg = pruner("shortgpt")
    pruned = sg.prune(tiny_model("gemma3_text", num_hidden_layers=6), 0.5, sg.Params(**CALIBRATION), ctx)
    ids = windows(ctx, pruned)
    reference = tiny_model("gemma3_text", num_hidden_layers=6)
    adapter = REGISTRY.get("architectures", "gemma3_text")
    last = {}
    handle = adapter.final_norm(reference.model).register_forward_pre_hook(lambda m, a: last.update(x=a[0]))
    with torch.no_grad():
        hs = reference.model(input_ids=ids, output_hidden_states=True, use_cache=False).hidden_states
    handle.remove()
    states = [*hs[:6], last["x"]]  # the last entry of hidden_states is after the final norm
    bi = torch.tensor([1 - torch.nn.functional.cosine_similarity(states[i].double(), states[i + 1].double(), dim=-1)
                       .mean().item() for i in range(6)])
    details = pruned.compression.details
    assert torch.allclose(torch.tensor(details["block_influence"]), bi, atol=1e-5)
    assert details["layers_removed"] == sorted(torch.argsort(bi)[:3].tolist())
    assert details["effective_ratio"] == 0.5
    kept = [i for i in range(6) if i not in details["layers_removed"]]
    layers = adapter.layers(pruned.model)
    assert [layer.self_attn.layer_idx for layer in layers] == [0, 1, 2]
    assert pruned.model.config.num_hidden_layers == 3
    assert pruned.model.config.layer_types == [reference.model.config.layer_types[i] for i in kept]
    with torch.no_grad():  # generation with a KV cache uses the renumbered indices
        out = pruned.model.generate(ids[:1, :8], max_new_tokens=3, do_sample=False)
    assert out.shape[1] == 11


def test_shortgpt_rounds_to_whole_layers():
    assert shortgpt.layers_removed(30, 0.1) == 3 and shortgpt.layers_removed(18, 0.1) == 2
    assert shortgpt.layers_removed(2, 0.3) == 1
    assert "removes all 2 layers" in pruner("shortgpt").check_model({"num_hidden_layers": 2}, 0.9, None)


# --------------------------------------------------------------------------- storage and RFT


def test_sparsity_survives_save_reload_and_rft(tmp_path):
    from transformers import AutoModelForCausalLM

    from lawlab.testing import save_tiny

    ctx = tiny_run_context(tmp_path, REGISTRY)
    pruned = pruner("wanda").prune(tiny_model("llama"), 0.5, pruner("wanda").Params(**CALIBRATION), ctx)
    adapter = REGISTRY.get("architectures", "llama")
    before = sparsity(pruned.model, adapter)
    reloaded = AutoModelForCausalLM.from_pretrained(save_tiny(pruned, tmp_path / "saved"))
    assert sparsity(reloaded, adapter) == before and before["fraction"] == 0.5

    recipe = REGISTRY.get("rft_recipes", "lora")
    data = ctx.load_dataset("tiny-corpus", "train")
    params = recipe.Params(max_length=32, learning_rate=5e-3, batch_size=4)
    masks = [lin.weight == 0 for _, lin in projections(pruned.model, adapter)]
    trained, _ = recipe.train(pruned, data, 8, params, ctx)
    entry = trained.history[-1]
    assert entry["sparsity_before"] == entry["sparsity_after"] == 0.5
    assert entry["sparsity_merged"] < 0.5  # the merge made the weights dense; the mask put the zeros back
    for mask, (_, lin) in zip(masks, projections(trained.model, adapter), strict=True):
        assert torch.equal(lin.weight == 0, mask)
