"""The spec language: valid specs round-trip, bad ones exit 2 naming the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import TINY_SPEC, tiny_study

from lawlab.cli.main import main
from lawlab.spec.load import apply_overrides, load_spec, parse_spec, read_toml
from lawlab.spec.models import Spec


def test_valid_spec_round_trips_every_section(tiny_spec):
    resolved = load_spec(tiny_spec())
    spec = resolved.spec
    assert spec.study.seed == 1
    assert spec.methods[0].ratios == [0.0, 0.25, 0.5]
    assert spec.rft[0].sizes == [0, 8]
    # plugin params are validated and their defaults filled in
    assert resolved.params["rft[0].params"].rank == 4
    assert resolved.params["evaluators[0].params"].window == 32
    # through JSON and back, nothing changes, and the hash is stable
    again = Spec.model_validate(json.loads(json.dumps(spec.canonical())))
    assert again == spec
    assert again.spec_hash() == spec.spec_hash()
    for section in ("study", "models", "methods", "rft", "evaluators", "laws", "execution"):
        assert getattr(again, section) == getattr(spec, section)


def test_overrides_change_fields_and_keep_types(tiny_spec):
    resolved = load_spec(tiny_spec(), ["study.seed=7", "methods[0].ratios=[0.1, 0.2]", "study.name=other"])
    assert resolved.spec.study.seed == 7
    assert resolved.spec.methods[0].ratios == [0.1, 0.2]
    assert resolved.spec.study.name == "other"


def test_override_of_missing_index_is_an_error(tiny_spec, capsys):
    assert main(["validate", str(tiny_spec()), "--set", "methods[3].ratios=[0.1]"]) == 2
    assert "methods[3].ratios" in capsys.readouterr().err


def test_schema_is_json_schema_of_the_spec(capsys):
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["title"] == "lawlab study spec"
    assert {"study", "models", "methods", "rft", "evaluators", "laws", "execution"} <= set(schema["properties"])


def _edit(old: str, new: str):
    def apply(text: str) -> str:
        assert old in text, old
        return text.replace(old, new, 1)

    return apply


def _append(extra: str):
    return lambda text: text + "\n" + extra


# (id, edit of the tiny spec, strings the error must contain)
MALFORMED = [
    ("seed-type", _edit("seed = 1", 'seed = "one"'), ["study.seed", "one"]),
    ("seed-negative", _edit("seed = 1", "seed = -3"), ["study.seed", "-3"]),
    ("name-spaces", _edit('name = "tiny"', 'name = "my study"'), ["study.name", "my study"]),
    ("unknown-top-key", lambda t: "colour = 1\n" + t, ["unknown key 'colour'", "allowed: study, models"]),
    ("unknown-study-key", _edit("seed = 1", "seed = 1\nnmae = 2"), ["study.nmae", "unknown key"]),
    ("unknown-source", _edit('source = "tiny"', 'source = "hubb"'), ["models[0].source", "'hubb'", "registered:"]),
    ("unknown-method", _edit('method = "random-prunenet"', 'method = "random-prunet"'),
     ["methods[0].method", "Did you mean 'random-prunenet'"]),
    ("ratio-one", _edit("ratios = [0.0, 0.25, 0.5]", "ratios = [0.0, 1.0]"), ["methods[0].ratios", "outside [0, 1)"]),
    ("ratio-negative", _edit("ratios = [0.0, 0.25, 0.5]", "ratios = [-0.1]"), ["methods[0].ratios", "-0.1"]),
    ("ratios-empty", _edit("ratios = [0.0, 0.25, 0.5]", "ratios = []"), ["methods[0].ratios", "at least one"]),
    ("ratios-repeat", _edit("ratios = [0.0, 0.25, 0.5]", "ratios = [0.5, 0.5]"), ["methods[0].ratios", "repeat"]),
    ("ratio-type", _edit("ratios = [0.0, 0.25, 0.5]", 'ratios = ["half"]'), ["methods[0].ratios[0]", "half"]),
    ("duplicate-models", _append('[[models]]\nname = "tiny-llama"\nsource = "tiny"'), ["models", "'tiny-llama' appears twice"]),
    ("no-models", lambda t: t.replace('[[models]]\nname = "tiny-llama"\nsource = "tiny"\nparams = { model_type = "llama" }\n', ""),
     ["models", "missing"]),
    ("evaluators-missing", lambda t: t.replace(
        '[[evaluators]]\nevaluator = "cross-entropy"\nparams = { datasets = ["tiny-corpus"], window = 32, batch_size = 8 }\n', ""),
     ["evaluators", "missing"]),
    ("size-negative", _edit("sizes = [0, 8]", "sizes = [0, -8]"), ["rft[0].sizes", "0 or more"]),
    ("sizes-without-data", _edit('datasets = ["tiny-corpus"]\nsizes', "datasets = []\nsizes"), ["rft[0]", "need at least one dataset"]),
    ("unknown-rft-dataset", _edit('datasets = ["tiny-corpus"]\nsizes', 'datasets = ["tiny-corpsu"]\nsizes'),
     ["rft[0].datasets[0]", "Did you mean 'tiny-corpus'"]),
    ("unknown-recipe", _edit('recipe = "lora"', 'recipe = "qlora"'), ["rft[0].recipe", "'qlora'"]),
    ("unknown-evaluator", _edit('evaluator = "cross-entropy"', 'evaluator = "crossentropy"'),
     ["evaluators[0].evaluator", "Did you mean 'cross-entropy'"]),
    ("unknown-evaluator-param", _edit("window = 32", "windw = 32"), ["evaluators[0].params.windw", "unknown key"]),
    ("evaluator-param-type", _edit("window = 32", 'window = "big"'), ["evaluators[0].params.window", "big"]),
    ("unknown-rft-param", _edit("rank = 4", "rnak = 4"), ["rft[0].params.rnak", "did you mean 'rank'"]),
    ("rft-param-range", _edit("rank = 4", "rank = 0"), ["rft[0].params.rank"]),
    ("unknown-source-param", _edit('params = { model_type = "llama" }', 'params = { model_type = "llama", size = 3 }'),
     ["models[0].params.size", "unknown key"]),
    ("source-param-choice", _edit('model_type = "llama"', 'model_type = "gpt2"'), ["models[0].params.model_type", "gpt2"]),
    ("unknown-model-type", _edit('source = "tiny"', 'source = "tiny"\nmodel_type = "gpt2"'),
     ["models[0].model_type", "unknown architecture 'gpt2'", "llama"]),
    ("method-unknown-model", _edit("ratios = [0.0, 0.25, 0.5]", 'ratios = [0.0, 0.25, 0.5]\nmodels = ["tiny-qwen"]'),
     ["methods[0].models[0]", "no model is named 'tiny-qwen'"]),
    ("unknown-law", _edit('form = "compression-law"', 'form = "compresion-law"'), ["laws[0].form", "Did you mean 'compression-law'"]),
    ("law-metric-unmeasured", _edit('metric = "intrinsic"', 'metric = "extrinsic"'),
     ["laws[0].metric", "no evaluator in the spec measures 'extrinsic'"]),
    ("law-group-by", _edit('metric = "intrinsic"', 'metric = "intrinsic"\ngroup_by = ["family"]'),
     ["laws[0].group_by[0]", "family"]),
    ("device", _edit('device = "cpu"', 'device = "gpu"'), ["execution.device", "gpu"]),
    ("dtype", _edit('device = "cpu"', 'device = "cpu"\ndtype = "float8"'), ["execution.dtype", "float8", "bfloat16"]),
    ("executor", _edit('device = "cpu"', 'device = "cpu"\nexecutor = "slurm"'), ["execution.executor", "'slurm'", "local"]),
    ("keep-artifacts", _edit('device = "cpu"', 'device = "cpu"\nkeep_artifacts = "some"'), ["execution.keep_artifacts", "some"]),
    ("toml-syntax", _edit("seed = 1", "seed = = 1"), ["TOML syntax error", "line 3"]),
    ("ratio-leaves-no-channel", _edit("ratios = [0.0, 0.25, 0.5]", "ratios = [0.0, 0.99]"),
     ["methods[0].ratios[1]", "leaves no FFN channel of 128", "given: 0.99"]),
    ("window-over-context", _edit("window = 32", "window = 512"),
     ["evaluators[0].params", "window 512 is longer than the model's context (256 tokens)"]),
    ("slice-leaves-no-hidden", _edit('method = "random-prunenet"\nratios = [0.0, 0.25, 0.5]',
                                     'method = "slicegpt"\nratios = [0.9]\nparams = { calibration_dataset = "tiny-corpus", calibration_samples = 2, calibration_seqlen = 16 }'),
     ["methods[0].ratios[0]", "leaves no hidden dimension of 64"]),
    ("local-missing-folder", _edit('source = "tiny"\nparams = { model_type = "llama" }', 'source = "local"\nparams = { path = "no/such/folder" }'),
     ["models[0].params", "no/such/folder"]),
]


@pytest.mark.parametrize("case", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_spec_exits_2_naming_the_field(case, tiny_spec, tmp_path, capsys):
    _, edit, expected = case
    out = tmp_path / "out"
    spec = tiny_spec(edit, output=out)
    code = main(["validate", str(spec)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert str(spec) in err  # the file is named
    for text in expected:
        assert text in err, f"{text!r} not in:\n{err}"
    assert "Traceback" not in err
    assert not out.exists()  # nothing written


def test_missing_spec_file(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "nope.toml")]) == 2
    assert "file not found" in capsys.readouterr().err


def test_run_with_bad_spec_writes_nothing(tiny_spec, tmp_path, capsys):
    out = tmp_path / "out"
    spec = tiny_spec(_edit("ratios = [0.0, 0.25, 0.5]", "ratios = [1.5]"), output=out)
    assert main(["run", str(spec)]) == 2
    assert not out.exists()


def test_all_problems_are_reported_at_once(tiny_spec, capsys):
    def both(text: str) -> str:
        return text.replace("seed = 1", "seed = -1").replace('device = "cpu"', 'device = "gpu"')

    assert main(["validate", str(tiny_spec(both))]) == 2
    err = capsys.readouterr().err
    assert "2 problems" in err and "study.seed" in err and "execution.device" in err


def test_structural_parse_needs_no_plugins(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(tiny_study("x", **TINY_SPEC))
    spec = parse_spec(apply_overrides(read_toml(path), [], path), path)
    assert spec.models[0].source == "tiny"
    assert spec.output_dir() == Path("x")


# --------------------------------------------------------------------------- the spec vs this machine


@pytest.fixture
def empty_hub_cache(tmp_path, monkeypatch):
    """Offline (as every test), with a hub cache that holds nothing."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))


def test_what_this_machine_lacks_is_not_a_spec_problem(tiny_spec, tmp_path, capsys, empty_hub_cache):
    """validate says ok and lists each reason once; --here and run refuse (exit 2)."""
    out = tmp_path / "out"

    def lacking(text: str) -> str:
        text = text.replace('datasets = ["tiny-corpus"]\nsizes', 'datasets = ["wikitext2", "alpaca"]\nsizes')
        text = text.replace('params = { datasets = ["tiny-corpus"]', 'params = { datasets = ["wikitext2"]')
        return text.replace('device = "cpu"', 'device = "cuda:99"')

    spec = tiny_spec(lacking, output=out)
    assert main(["validate", str(spec)]) == 0
    printed = capsys.readouterr().out
    assert "cannot run on this machine" in printed
    assert printed.count("wikitext2 (Salesforce/wikitext@main)") == 1  # used three times, listed once
    assert "alpaca (tatsu-lab/alpaca@main)" in printed
    assert "a device this machine lacks: cuda:99" in printed
    assert f"lawlab fetch {spec}" in printed
    assert main(["validate", "--here", str(spec)]) == 2
    assert main(["run", str(spec)]) == 2
    assert "this machine cannot run it" in capsys.readouterr().err
    assert not out.exists()


def test_spec_problems_still_fail_next_to_machine_ones(tiny_spec, capsys, empty_hub_cache):
    def both(text: str) -> str:
        text = text.replace('datasets = ["tiny-corpus"]\nsizes', 'datasets = ["wikitext2"]\nsizes')
        return text.replace("ratios = [0.0, 0.25, 0.5]", "ratios = [1.5]")

    assert main(["validate", str(tiny_spec(both))]) == 2
    assert "methods[0].ratios" in capsys.readouterr().err


def test_paper_spec_validates_offline_and_says_why_it_cannot_run_here(capsys, empty_hub_cache):
    paper = Path(__file__).parents[1] / "specs" / "compression-laws-paper.toml"
    assert main(["validate", str(paper)]) == 0
    printed = capsys.readouterr().out
    assert "cannot run on this machine" in printed
    assert "models that need the hub: Qwen/Qwen2.5-0.5B@main" in printed
    assert "datasets that need the hub: wikitext2" in printed
    assert main(["validate", "--here", str(paper)]) == 2


def test_a_plugin_name_left_out_is_the_registered_default(tiny_spec):
    """No default in the spec names a plugin: a recipe or executor left out is the one
    registered plugin of its kind that declares itself the default."""
    path = tiny_spec(lambda t: t.replace('recipe = "lora"\n', ""))
    assert 'recipe = "lora"' not in path.read_text() and "executor" not in path.read_text()
    resolved = load_spec(path)
    assert resolved.spec.rft[0].recipe == "lora" and resolved.spec.execution.executor == "local"
    # the same spec, and so the same hash and cell keys, as one that names them
    named = load_spec(tiny_spec(lambda t: t + '\n[execution]\nexecutor = "local"\n' if "[execution]" not in t
                                else t.replace("[execution]", '[execution]\nexecutor = "local"'), name="named.toml"))
    assert named.spec.spec_hash() == resolved.spec.spec_hash()


def test_without_one_default_the_spec_must_name_the_plugin(tiny_spec, capsys):
    from lawlab.registry import get_registry

    registry = get_registry()
    local = registry.get("executors", "local")
    try:
        type(local).default = False  # no executor is the default now
        assert main(["validate", str(tiny_spec())]) == 2
    finally:
        type(local).default = True
    err = capsys.readouterr().err
    assert "execution.executor: name one: of the installed executors none is the default" in err
    assert "allowed: local, ray" in err
