"""Hybrid pipelines: their plan and keys, old specs' keys, refusals at the spec path, and a
small hybrid study run end to end whose saved quantised variant reloads and scores the same."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from test_plan import plan_of

from lawlab.spec.issues import SpecError

ROOT = Path(__file__).parent.parent

# Cell keys of specs written before pipelines existed (digest of the sorted keys, their
# count, and the spec hash), taken on the commit before pipelines: the keys must never move.
# The spec hash (provenance only) moved once, when [[laws]] gained `interval` (the default
# interval became cluster-robust, so a spec's fits mean something else) and entries gained
# their ratio, size, seed and method filters; the keys did not.
OLD_KEYS = {
    "tiny": (12, "ce8d7118f04edeeb", "d27483cdccfac7e9"),
    "quickstart": (49, "a43603dd7d906bbd", "40b4ae20ca9ac248"),
}

PIPELINE = """
[[pipelines]]
label = "rp"
steps = [
  {{ method = "random-prunenet", ratios = [0.25, 0.5] }},
  {{ quantizer = "torchao", settings = [ {{ scheme = "dynamic" }}, {{ bits = 4, group_size = 32 }} ] }},
]

[[laws]]"""


def with_pipeline(text: str, block: str = PIPELINE) -> str:
    return text.replace("[[laws]]", block.format(), 1)


def digest(plan) -> tuple[int, str, str]:
    keys = sorted(c.key for c in plan)
    return len(keys), hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16], plan.spec_hash[:16]


def test_specs_without_pipelines_keep_their_keys_and_hash(tiny_spec):
    assert digest(plan_of(tiny_spec(output=Path("/tmp/tiny-out")))) == OLD_KEYS["tiny"]  # the output is in the hash
    assert digest(plan_of(ROOT / "specs" / "quickstart.toml")) == OLD_KEYS["quickstart"]


def test_a_pipeline_plans_the_product_of_its_steps_and_shares_the_pruning(tiny_spec):
    pytest.importorskip("torchao")
    old = plan_of(tiny_spec())
    plan = plan_of(tiny_spec(with_pipeline))
    assert {c.key for c in old} < {c.key for c in plan}  # nothing planned before moves
    kinds = [c.kind for c in plan]
    assert kinds.count("prune") == 2  # the methods entry's prunes, shared
    quant = plan.of_kind("quantize")
    # 2 ratios x (pruned, pruned + RFT D=8) x 2 settings, each evaluated once
    assert len(quant) == 8
    assert {c.variant.quant for c in quant} == {"w8a8", "w4g32"}
    assert {plan.cell(c.parent).kind for c in quant} == {"prune", "rft"}  # prune → RFT → quantise
    assert len([c for c in plan.of_kind("eval") if c.variant.quant]) == 8
    labels = {c.variant.label for c in quant}
    assert labels == {"random-prunenet+w8a8", "random-prunenet+w4g32"}
    assert all("w8a8" in c.label() or "w4g32" in c.label() for c in quant)
    # a setting's parameters are in its key: another group size is another cell
    other = plan_of(tiny_spec(lambda t: with_pipeline(t, PIPELINE.replace("group_size = 32", "group_size = 16"))))
    assert {c.key for c in other.of_kind("quantize")} != {c.key for c in quant}


def test_pruners_announce_their_pruned_widths():
    from lawlab.registry import get_registry

    smollm2 = {"hidden_size": 576, "intermediate_size": 1536, "num_attention_heads": 9, "num_key_value_heads": 3,
               "head_dim": 64}
    reg = get_registry()
    rp = reg.get("pruners", "random-prunenet")
    assert rp.pruned_config(smollm2, 0.1, rp.Params())["intermediate_size"] == 1384  # = 8 x 173: no group of 32
    sp = reg.get("pruners", "wanda-sp")
    pruned = sp.pruned_config(smollm2, 0.5, sp.Params())
    assert pruned["num_key_value_heads"] == 2 and pruned["num_attention_heads"] == 6
    assert pruned["intermediate_size"] < 1536


def test_rft_on_the_quantised_model_needs_a_recipe_that_can(tiny_spec):
    pytest.importorskip("torchao")
    block = PIPELINE.replace("] }},\n]", "] }},\n  {{ rft = \"here\" }},\n]")
    with pytest.raises(SpecError) as err:
        plan_of(tiny_spec(lambda t: with_pipeline(t, block)))
    (issue,) = err.value.issues
    assert issue.path == "pipelines[0].steps[2]" and "'lora'" in issue.message and "quantised base" in issue.message


@pytest.mark.parametrize(
    ("steps", "path", "words"),
    [
        ('{ quantizer = "torchao" }, { method = "random-prunenet", ratios = [0.5] }',
         "pipelines[0].steps[1]", "pruning cannot follow quantisation"),
        ('{ method = "slicegpt", ratios = [0.5] }, { quantizer = "torchao" }',
         "pipelines[0].steps[1]", "own format"),
        ('{ quantizer = "torchao" }, { quantizer = "torchao", settings = [{ bits = 4 }] }',
         "pipelines[0].steps[1]", "at most one quantisation step"),
        ('{ rft = "here" }, { quantizer = "torchao" }', "pipelines[0].steps[0]", "follows a pruning or quantisation"),
        ('{ quantizer = "torchao", settings = [{ bits = 8 }, {}] }', "pipelines[0].steps[0].settings[1]",
         "the same setting"),
        ('{ quantizer = "torchao", settings = [{ bits = 4, group_size = 48 }] }',
         "pipelines[0].steps[0].settings[0]", "group_size 48 does not divide hidden_size = 64"),
        ('{ method = "random-prunenet", ratios = [0.1] }, { quantizer = "torchao", settings = [{ bits = 4, group_size = 32 }] }',
         "pipelines[0].steps[1].settings[0]",
         "pruned by 'random-prunenet' at r = 0.1: group_size 32 does not divide intermediate_size = 112"),
        ('{ quantizer = "torchao", settings = [{ bits = 9 }] }', "pipelines[0].steps[0].settings[0].bits",
         "less than or equal to 8"),
        ('{ method = "random-prunenet", quantizer = "torchao", ratios = [0.5] }', "pipelines[0].steps[0]",
         "exactly one of"),
        ('{ quantizr = "torchao" }', "pipelines[0].steps[0].quantizr", "unknown key"),
    ],
)
def test_impossible_pipelines_are_named_at_their_path(tiny_spec, steps, path, words):
    pytest.importorskip("torchao")
    block = f"[[pipelines]]\nsteps = [ {steps} ]\n\n[[laws]]".replace("{", "{{").replace("}", "}}")
    with pytest.raises(SpecError) as err:
        plan_of(tiny_spec(lambda t: with_pipeline(t, block)))
    assert any(i.path == path and words in i.message for i in err.value.issues), err.value.render()


@pytest.mark.slow
def test_a_hybrid_study_runs_and_its_saved_variant_reloads_identically(tiny_spec, tmp_path):
    pytest.importorskip("torchao")
    from lawlab.api import RunContext
    from lawlab.cli.main import main
    from lawlab.registry import get_registry
    from lawlab.run.store import Store, load_table
    from lawlab.run.worker import load_model

    out = tmp_path / "hybrid"

    def edit(text: str) -> str:
        text = with_pipeline(text).replace('device = "cpu"', 'device = "cpu"\nkeep_artifacts = "all"')
        text = text.replace("ratios = [0.25, 0.5]", "ratios = [0.5]").replace("sizes = [0, 8]", "sizes = [0]")
        return text.replace("ratios = [0.0, 0.25, 0.5]", "ratios = [0.0, 0.5]")

    assert main(["run", str(tiny_spec(edit, output=out)), "--no-report", "-q"]) == 0
    rows = [r for r in load_table(out) if r["metric"] == "cross_entropy" and r["law_input"]]
    quant = [r for r in rows if r["quant"]]
    assert {r["quant"] for r in quant} == {"w8a8", "w4g32"}
    for r in quant:
        assert r["method"].startswith("random-prunenet+") and r["ratio"] == 0.5
        assert 0.5 < r["storage_ratio"] < 1 and r["bits_per_weight"] < 32
    pruned = next(r for r in rows if r["method"] == "random-prunenet")
    assert pruned["bits_per_weight"] == 32.0 and pruned["storage_ratio"] == pytest.approx(pruned["ratio_effective"])
    with Store(out) as store:
        row = next(r for r in quant if r["quant"] == "w4g32")
        parent = store.db.execute("SELECT parent FROM cells WHERE key = ?", (row["cell_key"],)).fetchone()[0]
        record = store.cell(parent).compression
        artifact = store.artifact_dir(parent)
    assert record["storage"]["ratios"]["pruning"] == pytest.approx(record["fraction_removed"])
    assert len(record["quantization"]["layers"]) == 14  # 2 decoder layers x 7 projections
    registry = get_registry()
    ctx = RunContext(seed=1, device="cpu", dtype="float32", cache_dir=tmp_path, work_dir=tmp_path,
                     offline=True, registry=registry)
    back = load_model(artifact, ctx)
    evaluator = registry.get("evaluators", "cross-entropy")
    params = evaluator.Params(datasets=["tiny-corpus"], window=32, batch_size=8)
    (m,) = [x for x in evaluator.evaluate(back, params, ctx) if x.law_input]
    assert m.value == pytest.approx(row["value"], abs=1e-6)
    assert json.loads((artifact / "quantization.json").read_text())["params"]["group_size"] == 32
