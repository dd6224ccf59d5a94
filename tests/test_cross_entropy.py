"""The cross-entropy evaluator against a hand-written loop, BOS handling, bad input."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from lawlab_plugins.architectures import DecoderAdapter
from lawlab_plugins.cross_entropy import CrossEntropy
from lawlab_plugins.datasets import TinyCorpus

from lawlab.api import CheckContext, CheckFailed, RunContext
from lawlab.registry import PluginInfo, Registry
from lawlab.testing import tiny_corpus, tiny_model

EV = CrossEntropy()


def registry() -> Registry:
    reg = Registry()
    info = PluginInfo("test", "test", None, None, True)
    reg.add("datasets", TinyCorpus(), info)
    reg.add("architectures", DecoderAdapter(), info)
    return reg


@pytest.fixture(scope="module")
def ctx(tmp_path_factory) -> RunContext:
    d = tmp_path_factory.mktemp("ce")
    return RunContext(
        seed=0, device="cpu", dtype="float32", cache_dir=d, work_dir=d, offline=True, registry=registry()
    )


def check_ctx(tmp_path: Path) -> CheckContext:
    return CheckContext(
        spec_path=tmp_path / "spec.toml", offline=True, registry=registry(), cache_dir=tmp_path
    )


def hand_written(model, tokenizer, window: int, bos: int | None) -> tuple[float, int]:
    """The textbook loop: one window at a time, HF's own shifted loss, weighted by tokens."""
    ids = tokenizer("\n\n".join(tiny_corpus(50, seed=1)), add_special_tokens=False, verbose=False)[
        "input_ids"
    ]
    step = window - 1 if bos is not None else window
    nll, n = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(ids), step):
            w = ([bos] if bos is not None else []) + ids[i : i + step]
            if len(w) < 2:
                continue
            x = torch.tensor([w])
            nll += model(input_ids=x, labels=x).loss.item() * (len(w) - 1)
            n += len(w) - 1
    return nll / n, n


def measured(out, metric):
    return next(m for m in out if m.metric == metric)


def test_matches_hand_written_loop_with_bos(ctx):
    m = tiny_model("llama")
    out = EV.evaluate(m, EV.Params(datasets=["tiny-corpus"], window=48, batch_size=3), ctx)
    ce, n = hand_written(m.model, m.tokenizer, 48, m.tokenizer.bos_token_id)
    got = measured(out, "cross_entropy")
    assert got.law_input and got.dataset == "tiny-corpus"
    assert got.value == pytest.approx(ce, abs=1e-5)
    assert measured(out, "tokens").value == n
    assert measured(out, "perplexity").value == pytest.approx(math.exp(got.value), rel=1e-12)
    # With a BOS every text token is scored exactly once.
    assert got.details["bos"] and got.details["scored_tokens"] == got.details["text_tokens"]


def test_without_bos_first_token_of_each_window_is_context(ctx):
    m = tiny_model("qwen2")
    tok = copy.deepcopy(m.tokenizer)
    tok.bos_token = None
    m.tokenizer = tok
    assert tok.bos_token_id is None
    out = EV.evaluate(m, EV.Params(datasets=["tiny-corpus"], window=40), ctx)
    ce, n = hand_written(m.model, tok, 40, None)
    got = measured(out, "cross_entropy")
    assert got.value == pytest.approx(ce, abs=1e-5)
    assert not got.details["bos"]
    assert got.details["scored_tokens"] == got.details["text_tokens"] - got.details["windows"] == n


def test_batch_size_and_token_limit(ctx):
    m = tiny_model("llama")
    one = measured(
        EV.evaluate(m, EV.Params(datasets=["tiny-corpus"], window=32, batch_size=1), ctx), "cross_entropy"
    )
    many = measured(
        EV.evaluate(m, EV.Params(datasets=["tiny-corpus"], window=32, batch_size=8), ctx), "cross_entropy"
    )
    assert one.value == pytest.approx(many.value, abs=1e-5)
    limited = EV.evaluate(m, EV.Params(datasets=["tiny-corpus"], window=32, token_limit=100), ctx)
    assert measured(limited, "tokens").value == 100
    assert measured(limited, "cross_entropy").details["windows"] == math.ceil(100 / 31)


def test_window_longer_than_context_is_an_error(ctx):
    m = tiny_model("llama")  # 256 positions
    with pytest.raises(ValueError, match="longer than the model's context"):
        EV.evaluate(m, EV.Params(datasets=["tiny-corpus"], window=257), ctx)


def test_token_limit_beyond_the_test_set(ctx, tmp_path):
    with pytest.raises(CheckFailed, match="token_limit") as err:
        EV.check(EV.Params(datasets=["tiny-corpus"], token_limit=10_000_000), check_ctx(tmp_path))
    assert err.value.field == "token_limit"
    EV.check(EV.Params(datasets=["tiny-corpus"], token_limit=1000), check_ctx(tmp_path))
    # More tokens than the tokenizer finds, yet fewer than the bytes: caught when run.
    with pytest.raises(ValueError, match="fewer than token_limit"):
        EV.evaluate(
            tiny_model("llama"), EV.Params(datasets=["tiny-corpus"], window=64, token_limit=3000), ctx
        )


def test_bad_params_rejected():
    with pytest.raises(ValueError):
        EV.Params(window=1)
    with pytest.raises(ValueError):
        EV.Params(datasets=[])
