"""LoRA RFT: lowers loss, same seed same numbers, merges into a plain model, bad sizes."""

from __future__ import annotations

import pytest
import torch
from lawlab_plugins.architectures import DecoderAdapter
from lawlab_plugins.cross_entropy import windowed_cross_entropy
from lawlab_plugins.datasets import TinyCorpus
from lawlab_plugins.lora import LoRA, chunk_samples
from torch.optim.optimizer import register_optimizer_step_pre_hook

from lawlab.api import CheckContext, CheckFailed, LoadedModel, RunContext
from lawlab.registry import PluginInfo, Registry
from lawlab.testing import tiny_model

RECIPE = LoRA()
FAST = dict(max_length=64, learning_rate=5e-3, batch_size=4)


def registry() -> Registry:
    reg = Registry()
    info = PluginInfo("test", "test", None, None, True)
    reg.add("datasets", TinyCorpus(), info)
    reg.add("architectures", DecoderAdapter(), info)
    return reg


def run_ctx(tmp_path, seed: int = 0) -> RunContext:
    return RunContext(
        seed=seed,
        device="cpu",
        dtype="float32",
        cache_dir=tmp_path,
        work_dir=tmp_path,
        offline=True,
        registry=registry(),
    )


def train_split(ctx):
    ds = TinyCorpus()
    return ds.load(ds.Params(), "train", ctx)


def test_lowers_loss_merges_and_is_deterministic(tmp_path):
    ctx = run_ctx(tmp_path)
    data = train_split(ctx)
    params = RECIPE.Params(**FAST, epochs=4)
    samples = chunk_samples(tiny_model("llama").tokenizer, data, params)[:16]

    def ce(model) -> float:
        nll, n = windowed_cross_entropy(model.model, samples, 8, "cpu")
        return nll / n

    runs = []
    for _ in range(2):
        m = tiny_model("llama")
        names_before = sorted(n for n, _ in m.model.named_parameters())
        before = ce(m)
        m, out = RECIPE.train(m, data, 16, params, ctx)
        runs.append((m, out, before, ce(m)))
        # A plain model again: same parameters, no LoRA modules left.
        assert sorted(n for n, _ in m.model.named_parameters()) == names_before
        assert not any("lora" in n for n, _ in m.model.named_modules())
        assert type(m.model).__name__ == "LlamaForCausalLM"

    (m1, out1, before, after), (m2, out2, _, after2) = runs
    assert after < before - 0.15  # trained on these very samples: the loss must fall
    metrics = {x.metric: x for x in out1}
    assert metrics["rft_samples"].value == 16
    assert metrics["rft_tokens"].value == 16 * 64
    curve = metrics["rft_loss"].details["curve"]
    assert len(curve) == 4 * 4 and curve[-1][1] == 4 * 16 * 64
    assert m1.history[-1]["size"] == 16 and m1.history[-1]["dataset_checksum"] == data.checksum
    # Same seed: identical numbers and identical weights.
    assert after == after2
    assert [x.value for x in out1 if x.metric != "rft_seconds" and "per_s" not in x.metric] == [
        x.value for x in out2 if x.metric != "rft_seconds" and "per_s" not in x.metric
    ]
    for (n, a), (_, b) in zip(m1.model.state_dict().items(), m2.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), n


def test_other_seed_other_samples(tmp_path):
    data = train_split(run_ctx(tmp_path))
    params = RECIPE.Params(**FAST, samples="document")
    _, a = RECIPE.train(tiny_model("llama"), data, 8, params, run_ctx(tmp_path, seed=0))
    _, b = RECIPE.train(tiny_model("llama"), data, 8, params, run_ctx(tmp_path, seed=1))
    tokens = lambda out: next(x.value for x in out if x.metric == "rft_tokens")  # noqa: E731
    assert tokens(a) != tokens(b)  # different documents drawn


class Wrapped(torch.nn.Module):
    """A non-stock model class (as SliceGPT makes): a module holding a decoder."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.config = inner.config

    def forward(self, **kwargs):
        return self.inner(**kwargs)


def test_works_on_a_non_stock_module(tmp_path):
    ctx = run_ctx(tmp_path)
    base = tiny_model("llama")
    wrapped = LoadedModel(Wrapped(base.model), base.tokenizer, "sliced-llama", format="slicegpt")
    before = {k: v.clone() for k, v in wrapped.model.state_dict().items()}
    out_model, out = RECIPE.train(wrapped, train_split(ctx), 8, RECIPE.Params(**FAST), ctx)
    assert isinstance(out_model.model, Wrapped) and out_model.format == "slicegpt"
    after = out_model.model.state_dict()
    assert after.keys() == before.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    # Every attention and MLP projection of both layers was adapted and merged; nothing else moved.
    assert len(changed) == 2 * 7 and all(k.endswith("_proj.weight") for k in changed)
    assert next(x for x in out if x.metric == "rft_loss").details["targets"] == 14


def test_size_larger_than_the_dataset(tmp_path):
    cctx = CheckContext(spec_path=tmp_path / "s.toml", offline=True, registry=registry(), cache_dir=tmp_path)
    doc = RECIPE.Params(samples="document")
    RECIPE.check(doc, "tiny-corpus", 200, cctx)
    with pytest.raises(CheckFailed, match="holds 200 non-empty texts"):
        RECIPE.check(doc, "tiny-corpus", 201, cctx)
    with pytest.raises(CheckFailed, match="chunks of 1024 tokens"):
        RECIPE.check(RECIPE.Params(), "tiny-corpus", 1000, cctx)
    RECIPE.check(RECIPE.Params(cap_to_available=True), "tiny-corpus", 10**6, cctx)

    ctx = run_ctx(tmp_path)
    with pytest.raises(ValueError, match="lower D or set cap_to_available"):
        RECIPE.train(tiny_model("llama"), train_split(ctx), 500, RECIPE.Params(**FAST), ctx)
    # Document mode, 8 tokens each, in big batches: every sample of the split, cheaply.
    capped = RECIPE.Params(samples="document", max_length=8, batch_size=100, cap_to_available=True)
    _, out = RECIPE.train(tiny_model("llama"), train_split(ctx), 500, capped, ctx)
    rec = next(x for x in out if x.metric == "rft_loss").details
    assert rec["size_requested"] == 500 and rec["size"] == rec["available"] == 200


def test_fp32_adapters_on_a_bf16_base_merge_back_to_bf16(tmp_path):
    """On a bf16 base (a GPU's dtype "auto") AdamW must update fp32 adapters, and the
    merged model must come back bf16 with the adapters' update in it."""
    ctx = run_ctx(tmp_path)
    m = tiny_model("llama")
    m.model.to(torch.bfloat16)
    before = {k: v.clone() for k, v in m.model.state_dict().items()}
    stepped: list[set[torch.dtype]] = []

    def watch(optimizer, args, kwargs):  # what AdamW is about to update, step by step
        stepped.append({p.dtype for group in optimizer.param_groups for p in group["params"]})

    handle = register_optimizer_step_pre_hook(watch)
    try:
        m, out = RECIPE.train(m, train_split(ctx), 8, RECIPE.Params(**FAST), ctx)
    finally:
        handle.remove()
    assert stepped and all(dtypes == {torch.float32} for dtypes in stepped)
    assert next(x for x in out if x.metric == "rft_loss").details["adapter_dtype"] == "float32"
    assert {p.dtype for p in m.model.parameters()} == {torch.bfloat16}
    after = m.model.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) == 2 * 7 and all(k.endswith("_proj.weight") for k in changed)
