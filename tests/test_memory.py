"""The memory plan: one working model on the device per stage, copies made from the host,
and estimates from the config that agree with what tiny real models allocate."""

from __future__ import annotations

import gc
import json
import weakref
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import PAPER_CONFIGS, RANDOM_PRUNENET, TINY_LORA, tiny_study
from lawlab_plugins.lora import lora_params, saved_bytes_per_token

from lawlab.cli.main import main
from lawlab.models.loading import Residency, copy_to_device, watching_placements
from lawlab.registry import get_registry
from lawlab.run.memory import GIB, Shapes, StageRequest, count_parameters, estimate_model
from lawlab.testing import save_tiny, tiny_model

PAPER_SPEC = Path(__file__).parent.parent / "specs" / "compression-laws-paper.toml"

# ratios, RFT and evaluators that touch every kind of stage, kept small
RESIDENCY_SPEC = {
    "rft": [TINY_LORA],
    "evaluators": [
        {"evaluator": "cross-entropy",
         "params": {"datasets": ["tiny-corpus"], "window": 32, "batch_size": 8, "token_limit": 256}},
        {"evaluator": "runtime",
         "params": {"benchmark": False, "prompt_tokens": 8, "decode_tokens": 2, "warmup": 0, "repeats": 1}},
    ],
}


class PlacementSpy:
    """Tracks which modules lawlab has placed on the working device (weakly, so dropped
    models leave), the most resident at once during each stage, and deep copies of
    parameters that were on the device at the time."""

    def __init__(self) -> None:
        self.on_device: weakref.WeakSet[torch.nn.Module] = weakref.WeakSet()
        self.stage = "setup"
        self.peak: dict[str, int] = {}
        self.device_param_copies: list[str] = []
        self.events: list[tuple[str, str]] = []

    def __call__(self, event: str, module: torch.nn.Module, device: str) -> None:
        self.events.append((self.stage, event))
        if event == "to_host":
            self.on_device.discard(module)
        else:
            self.on_device.add(module)
        self.count()

    def count(self) -> int:
        n = len(self.on_device)
        if n > 1:  # a dropped model may wait for the collector: count only live ones
            gc.collect()
            n = len(self.on_device)
        self.peak[self.stage] = max(self.peak.get(self.stage, 0), n)
        return n

    def device_params(self) -> set[int]:
        return {id(p) for m in list(self.on_device) for p in m.parameters()}

    @contextmanager
    def in_stage(self, name: str, model: torch.nn.Module | None):
        self.stage = name
        if model is not None:  # the stage computes with a model lawlab put on the device
            assert model in self.on_device, f"{name}: its model was never placed on the device"
        self.count()
        try:
            yield
        finally:
            self.count()
            self.stage = "between"


def spy_on_stages(monkeypatch: pytest.MonkeyPatch, spy: PlacementSpy) -> None:
    """Wrap the real plugins' working methods (they still run) to mark stage boundaries."""
    registry = get_registry()
    counter = {"n": 0}

    def label(kind: str, name: str) -> str:
        counter["n"] += 1
        return f"{counter['n']:03d} {kind} {name}"

    for name in registry.names("pruners"):
        pruner = registry.get("pruners", name)

        def prune(model, ratio, params, ctx, _orig=pruner.prune, _name=name):
            with spy.in_stage(label("prune", _name), model.model):
                return _orig(model, ratio, params, ctx)

        monkeypatch.setattr(pruner, "prune", prune)
    for name in registry.names("rft_recipes"):
        recipe = registry.get("rft_recipes", name)

        def train(model, data, size, params, ctx, _orig=recipe.train, _name=name):
            with spy.in_stage(label("rft", _name), model.model):
                return _orig(model, data, size, params, ctx)

        monkeypatch.setattr(recipe, "train", train)
    for name in registry.names("evaluators"):
        evaluator = registry.get("evaluators", name)

        def evaluate(model, params, ctx, _orig=evaluator.evaluate, _name=name):
            with spy.in_stage(label("eval", _name), model.model):
                return _orig(model, params, ctx)

        monkeypatch.setattr(evaluator, "evaluate", evaluate)

    original = torch.nn.Parameter.__deepcopy__

    def deepcopy(param, memo):
        if id(param) in spy.device_params():
            spy.device_param_copies.append(spy.stage)
        return original(param, memo)

    monkeypatch.setattr(torch.nn.Parameter, "__deepcopy__", deepcopy)


@pytest.mark.slow  # a whole study with every kind of stage (≈30 s of CPU)
def test_one_working_model_on_the_device_per_stage(tmp_path, monkeypatch):
    spec = tmp_path / "spec.toml"
    spec.write_text(tiny_study(tmp_path / "out", study={"name": "residency"}, execution={"keep_artifacts": "none"},
                               **RESIDENCY_SPEC))
    spy = PlacementSpy()
    spy_on_stages(monkeypatch, spy)
    with watching_placements(spy):
        assert main(["run", str(spec), "--no-report", "-q"]) == 0

    stages = {s: n for s, n in spy.peak.items() if s[:3].isdigit()}
    kinds = [s.split()[1] for s in stages]
    assert kinds.count("prune") == 1 and kinds.count("rft") == 2 and kinds.count("eval") == 8
    for stage, n in stages.items():
        # the paired runtime evaluator borrows the base model beside the variant it times
        allowed = 2 if stage.endswith("runtime") else 1
        assert n <= allowed, f"{stage}: {n} models on the device"
    unpaired = [n for s, n in stages.items() if not s.endswith("runtime")]
    assert max(unpaired) == 1
    assert spy.device_param_copies == []  # no deep copy ever read a device tensor
    # every pruned or recovered model began as a copy written from the host to the device
    copies = [s for s, e in spy.events if e == "copy"]
    assert len(copies) == 1 + 2
    # between stages, at most the working model stays on the device
    assert spy.peak.get("between", 0) <= 1


def test_copy_to_device_copies_from_the_host_and_keeps_ties():
    model = tiny_model("llama", tied=True).model
    copy = copy_to_device(model, "cpu")
    assert copy is not model
    assert copy.lm_head.weight is copy.model.embed_tokens.weight  # tied stays tied
    for (name, a), b in zip(model.state_dict().items(), copy.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
        assert a.data_ptr() != b.data_ptr(), name  # new memory, not a view of the parent
    with torch.no_grad():
        copy.model.embed_tokens.weight.add_(1.0)
    assert not torch.equal(copy.model.embed_tokens.weight, model.model.embed_tokens.weight)
    meta = tiny_model("llama").model.to("meta")
    with pytest.raises(RuntimeError, match="from the host"):
        copy_to_device(meta, "cpu")


def test_residency_moves_the_previous_working_model_to_the_host():
    events: list[tuple[str, int]] = []
    residency = Residency("cpu")
    a, b = tiny_model("llama", seed=1), tiny_model("llama", seed=2)
    with watching_placements(lambda e, m, d: events.append((e, id(m)))):
        residency.working(a)
        residency.working(a)  # already there: nothing moves
        residency.working(b)
        child = residency.working_copy(b)
        residency.borrow(a)
        residency.end_stage()
    ids = {id(a.model): "a", id(b.model): "b", id(child.model): "child"}
    assert [(e, ids[i]) for e, i in events] == [
        ("to_device", "a"),
        ("to_host", "a"), ("to_device", "b"),
        ("to_host", "b"), ("to_host", "b"), ("copy", "child"),
        ("to_device", "a"),
        ("to_host", "a"),
    ]
    assert residency.resident is child
    del child
    gc.collect()
    assert residency.resident is None  # a dropped model is not held here either


# --------------------------------------------------------------------------- estimates


TINY_ARCHITECTURES = {
    "llama": dict(model_type="llama", hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, vocab_size=300, tie_word_embeddings=False),
    "qwen2 tied": dict(model_type="qwen2", hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, vocab_size=300, tie_word_embeddings=True),
    "gemma3_text qk-norm": dict(model_type="gemma3_text", hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                                num_attention_heads=4, num_key_value_heads=1, head_dim=32, vocab_size=300,
                                tie_word_embeddings=True),
}


@pytest.mark.parametrize("name", TINY_ARCHITECTURES)
def test_the_meta_device_count_is_the_real_models(name):
    """Built on the meta device, a config has the parameters the same config built for real
    allocates (a tied head once), whatever the architecture adds to a dense decoder."""
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = TINY_ARCHITECTURES[name]
    torch.manual_seed(0)
    real = AutoModelForCausalLM.from_config(AutoConfig.for_model(**cfg))
    unique = {id(p): p.numel() for p in real.parameters()}
    assert count_parameters(cfg) == sum(unique.values()) == Shapes.from_config(cfg).params
    formula = replace(Shapes.from_config(cfg), counted=None).params
    if name.startswith("gemma3"):  # q and k norms and two more norms a layer the formula misses
        assert count_parameters(cfg) - formula == 2 * (2 * 32 + 2 * 64)
    else:
        assert formula == count_parameters(cfg)


def test_published_counts_and_the_dense_formula_for_the_papers_configs():
    """The counts of the model cards, exact: Qwen2.5-0.5B's 494,032,768 (its card), and
    Llama-3.2-1B's 1,235,814,400 (the card's 1.23B: embeddings 128256 x 2048 tied, 16
    layers of 60,821,504, a final norm). The dense formula, kept for architectures
    transformers does not know, agrees on every paper config."""
    assert count_parameters(PAPER_CONFIGS["Qwen/Qwen2.5-0.5B"]) == 494_032_768
    assert count_parameters(PAPER_CONFIGS["meta-llama/Llama-3.2-1B"]) == 128256 * 2048 + 16 * 60_821_504 + 2048
    assert count_parameters(PAPER_CONFIGS["meta-llama/Llama-3.2-1B"]) == 1_235_814_400
    for repo, cfg in PAPER_CONFIGS.items():
        shapes = Shapes.from_config(cfg)
        assert shapes.exact and replace(shapes, counted=None).params == shapes.params, repo


def test_an_architecture_transformers_does_not_know_is_counted_from_its_shapes():
    cfg = {**TINY_ARCHITECTURES["llama"], "model_type": "no-such-architecture"}
    shapes = Shapes.from_config(cfg)
    assert count_parameters(cfg) is None and not shapes.exact
    assert shapes.params == count_parameters(TINY_ARCHITECTURES["llama"])  # the dense formula
    est = estimate_model("odd", shapes, "float32", [])
    assert not est.exact and est.to_dict()["params_exact"] is False
    assert "(from the layer shapes)" in est.summary()


def test_weights_lora_and_kv_terms_equal_what_a_tiny_model_allocates():
    from peft import LoraConfig
    from peft.tuners.lora import LoraModel

    loaded = tiny_model("qwen2", tied=False)
    config = loaded.model.config.to_dict()
    shapes = Shapes.from_config(config)
    net = loaded.model
    assert shapes.params * 4 == sum(p.numel() * p.element_size() for p in net.parameters())
    est = estimate_model("tiny", shapes, "float32", [])
    assert est.peak_device == shapes.params * 4  # load only: the weights

    ids = torch.randint(0, shapes.vocab, (3, 20))
    with torch.no_grad():
        cache = net(input_ids=ids, use_cache=True).past_key_values
    kv = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
    assert shapes.kv_cache_bytes(60, 4) == kv

    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    lora = LoraModel(net, LoraConfig(r=4, target_modules=targets), "default")
    trainable = sum(p.numel() for n, p in lora.named_parameters() if "lora_" in n)
    assert lora_params(shapes, 4) == trainable


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_training_activation_estimate_is_within_10_percent_of_saved_tensors(dtype):
    """Bytes autograd saves for backward per token and layer, measured with saved-tensor
    hooks on a LoRA-wrapped model of realistic proportions, against the estimate."""
    from peft import LoraConfig
    from peft.tuners.lora import LoraModel
    from transformers import AutoConfig, AutoModelForCausalLM

    torch_dtype = getattr(torch, dtype)

    def saved_bytes(layers: int) -> int:
        config = AutoConfig.for_model(
            "llama", hidden_size=192, intermediate_size=512, num_hidden_layers=layers, num_attention_heads=6,
            num_key_value_heads=2, vocab_size=300, tie_word_embeddings=False,
        )
        torch.manual_seed(0)
        net = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
        for p in net.parameters():
            p.requires_grad_(False)
        targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
        LoraModel(net, LoraConfig(r=8, lora_dropout=0.05, target_modules=targets), "default")
        weights = {p.untyped_storage().data_ptr() for p in net.parameters()}
        seen: dict[int, int] = {}

        def pack(t):
            ptr = t.untyped_storage().data_ptr()
            if ptr not in weights:
                seen.setdefault(ptr, t.untyped_storage().nbytes())
            return t

        net.train()
        ids = torch.randint(0, 300, (2, 48))
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast(
            "cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16"
        ):
            net(input_ids=ids, labels=ids, use_cache=False)
        return sum(seen.values()), Shapes.from_config(config.to_dict())

    one, shapes = saved_bytes(1)
    two, _ = saved_bytes(2)
    measured = (two - one) / (2 * 48)  # per token, one layer
    estimate = saved_bytes_per_token(shapes, 4 if dtype == "float32" else 2)
    assert abs(estimate - measured) / measured < 0.10, (estimate, measured)
    assert estimate >= measured  # an estimate that errs, errs on the safe side


# --------------------------------------------------------------------------- plan and validate


def _local_spec(tmp_path: Path, **execution: object) -> Path:
    folder = save_tiny(tiny_model("llama", tied=False), tmp_path / "model")
    spec = tmp_path / "spec.toml"
    spec.write_text(tiny_study(
        tmp_path / "out", study={"name": "fits"}, execution={"device": "auto", **execution},
        models=[{"name": "small", "source": "local", "params": {"path": folder.as_posix()}}],
        methods=[{**RANDOM_PRUNENET, "ratios": [0.5]}], rft=[{**TINY_LORA, "sizes": [8]}],
        evaluators=[{"evaluator": "cross-entropy", "params": {"datasets": ["tiny-corpus"], "window": 32}}],
    ))
    return spec


def test_validate_refuses_a_model_that_does_not_fit_the_declared_device(tmp_path, capsys):
    spec = _local_spec(tmp_path, device_memory_gb=0.001)
    assert main(["validate", str(spec)]) == 2
    err = capsys.readouterr()
    text = " ".join((err.out + err.err).split())
    assert "models[0]" in text and "'small'" in text
    assert "GiB on the device at its peak" in text and "0.001 GiB declared in execution.device_memory_gb" in text

    ok = _local_spec(tmp_path, device_memory_gb=1)
    assert main(["validate", str(ok)]) == 0


def test_plan_prints_each_models_peak_and_the_14b_fits_80_gib(paper_configs_cached, capsys):
    main(["plan", str(PAPER_SPEC), "--json"])
    plan = json.loads(capsys.readouterr().out)
    memory = plan["memory"]
    assert set(memory) == {
        "qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-3b", "qwen2.5-7b", "qwen2.5-14b",
        "llama-3.2-1b", "llama-3.2-3b", "llama-3-8b",
    }
    q14 = memory["qwen2.5-14b"]
    assert q14["dtype"] == "bfloat16"  # the spec declares its GPU: estimates are for it
    assert q14["params"] == 14_770_033_664 and q14["params_exact"]  # the card's 14.7B
    assert q14["peak_device_bytes"] < 0.92 * 80 * GIB
    stages = {s["stage"]: s for s in q14["stages"]}
    assert stages["rft lora"]["device_bytes"] < 0.92 * 80 * GIB
    main(["plan", str(PAPER_SPEC)])
    out = capsys.readouterr().out
    assert "Peak memory" in out and "qwen2.5-14b" in out


def test_rft_estimate_grows_with_tokens_per_pass_and_not_with_accumulation():
    shapes = Shapes.from_config(PAPER_CONFIGS["Qwen/Qwen2.5-14B"])
    lora = get_registry().get("rft_recipes", "lora")

    def rft(batch_size: int):
        params = lora.Params(batch_size=batch_size, max_length=1024, grad_accumulation=8 // batch_size)
        return estimate_model("q", shapes, "bfloat16", [StageRequest("rft", "lora", lora.memory(params, shapes, 2))])

    one, four = rft(1), rft(4)
    act1, act4 = (m.stages[1].terms["activations"] for m in (one, four))
    assert act4 == 4 * act1
    assert four.peak_device > 80 * GIB > one.peak_device  # why the paper spec accumulates


def test_a_parent_from_an_artifact_waits_on_the_host_and_is_copied_to_the_device(tmp_path):
    """The Ray executor's path: a worker loads its parent from shared storage, then runs the cell."""
    from lawlab.api import CheckContext
    from lawlab.environment import cache_dir
    from lawlab.run.plan import make_plan
    from lawlab.run.worker import CellWorker, load_model, save_model
    from lawlab.spec.load import load_spec

    spec = tmp_path / "spec.toml"
    spec.write_text(tiny_study(tmp_path / "out", study={"name": "residency"}, execution={"keep_artifacts": "none"},
                               **RESIDENCY_SPEC))
    registry = get_registry()
    resolved = load_spec(spec, (), registry=registry)
    plan = make_plan(resolved, CheckContext(spec.resolve(), resolved.offline, registry, cache_dir()))
    worker = CellWorker(plan, device="cpu", dtype="float32")
    base = worker.run(plan.of_kind("base")[0], None).model
    save_model(base, tmp_path / "artifact", worker.registry)

    events: list[tuple[str, object]] = []
    with watching_placements(lambda e, m, d: events.append((e, m))):
        parent = load_model(tmp_path / "artifact", worker.context(tmp_path))
        loaded = list(events)
        child = worker.run(plan.of_kind("prune")[0], parent).model
    assert loaded == [("to_host", parent.model)]
    moves_of_parent = [e for e, m in events if m is parent.model]
    assert "to_device" not in moves_of_parent and "copy" not in moves_of_parent
    assert [e for e, m in events if m is child.model] == ["copy", "to_device"]  # copied from the host, adopted
    assert child.model is not parent.model
    assert sum(p.numel() for p in child.model.parameters()) < sum(p.numel() for p in parent.model.parameters())


# Gemma-3-270M's sizes (its config.json): a 262k vocabulary makes logits most of an eval's peak.
GEMMA3_270M = {"model_type": "gemma3_text", "hidden_size": 640, "intermediate_size": 2048, "num_hidden_layers": 18,
               "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 256, "vocab_size": 262144,
               "tie_word_embeddings": True, "max_position_embeddings": 32768}


def test_lm_eval_estimate_follows_the_backend_the_spec_chose():
    """HFLM holds logits for batch × sequence tokens; lawlab's packed scorer declares its own
    pass (batch_size × 128 tokens, 2²⁴ logits at a time), and the plan uses it."""
    shapes = Shapes.from_config(GEMMA3_270M)
    evaluator = get_registry().get("evaluators", "lm-eval")

    def eval_stage(backend: str):
        params = evaluator.Params(backend=backend)
        req = StageRequest("eval", "lm-eval", evaluator.memory(params, shapes, 4))
        return estimate_model("gemma", shapes, "float32", [req]).stages[1]

    hf, lawlab = eval_stage("hf"), eval_stage("lawlab")
    assert hf.terms["logits"] == 8 * 1024 * 262144 * 8  # batch 8 × the longest request assumed, float32 + its copy
    assert lawlab.terms["logits"] == 2**24 * 12  # a float32 chunk, its copy and its log-softmax
    # 8 × 128 packed tokens a pass, but a 1,024-token request runs alone: the layer sees 1,024
    assert lawlab.terms["layer forward"] == shapes.layer_forward_bytes(1024, 4)
    assert hf.device > 17 * GIB > 2 * GIB > lawlab.device


def test_cross_entropy_declares_batch_size_windows_with_every_tokens_logits():
    shapes = Shapes.from_config(GEMMA3_270M)
    evaluator = get_registry().get("evaluators", "cross-entropy")
    params = evaluator.Params()
    req = StageRequest("eval", "cross-entropy", evaluator.memory(params, shapes, 4))
    stage = estimate_model("gemma", shapes, "float32", [req]).stages[1]
    tokens = params.batch_size * params.window
    assert stage.terms["logits"] == tokens * 262144 * 8


def test_the_core_reads_no_plugin_parameter_and_defaults_name_none():
    """memory.py names no plugin parameter; a plugin that declares nothing gets a default
    that needs none (one longest request at a time; a recipe's weights only)."""
    import ast

    import lawlab.run.memory as memory
    from lawlab.api import Evaluator, RFTRecipe

    strings = {n.value for n in ast.walk(ast.parse(Path(memory.__file__).read_text()))
               if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    assert not strings & {"batch_size", "max_length", "window", "rank", "calibration_samples",
                          "benchmark_batch_size", "paired", "lora"}

    class Quiet(Evaluator):
        name = "quiet"
        kind = "extrinsic"

        def evaluate(self, model, params, ctx):
            return []

    class Plain(RFTRecipe):
        name = "plain"

        def train(self, model, data, size, params, ctx):
            return model, []

    shapes = Shapes.from_config(GEMMA3_270M)
    est = estimate_model("gemma", shapes, "float32", [
        StageRequest("eval", "quiet", Quiet().memory(None, shapes, 4)),
        StageRequest("rft", "plain", Plain().memory(None, shapes, 4)),
    ])
    evaluation, training = est.stages[1], est.stages[2]
    assert evaluation.terms["logits"] == memory.LONGEST_REQUEST * 262144 * 8
    assert evaluation.terms["layer forward"] == shapes.layer_forward_bytes(memory.LONGEST_REQUEST, 4)
    assert training.terms == {"weights": shapes.params * 4}
