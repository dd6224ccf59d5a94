"""Per-question records: what a multiple-choice evaluator saw on each question, kept beside
its numbers so that differences between variants can be paired on the same questions.

An evaluator attaches one file per task to its cell (``RunContext.attach`` with
``kind = QUESTIONS``); the store writes it under ``records/CELL_KEY/`` and lists it in the
cell's provenance (file, sha256, count). The file is gzipped JSON lines: a header, then one
object per question::

    {"format": "lawlab-questions", "version": 1, "task": "arc_easy", ...header fields}
    {"subtask": "arc_easy", "doc_id": 0, "gold": 2, "ll": [-9.1, -7.3, -6.2, -8.0],
     "tokens": [3, 2, 4, 3], "bytes": [11, 7, 15, 9], "acc": 1.0, "acc_norm": 1.0}

``ll`` is the log-likelihood of each choice's scored continuation, ``tokens`` and ``bytes``
its length in tokens and in UTF-8 bytes (the continuation as scored, so a leading space
counts), ``gold`` the index of the right choice, ``acc``/``acc_norm`` the evaluator's own
0/1 outcome (``acc_norm`` is null where the task does not define it). A question is named
by ``(subtask, doc_id)``: a group such as MMLU numbers documents per subject.

From a record: the *task loss* of a question is the negative log-likelihood of its right
choice, per byte (the default) or per token; ``p_correct`` is the probability of the right
choice normalised over the choices (a softmax of ``ll``). Chance is 1 / number of choices.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

QUESTIONS = "questions"  # the attachment kind of a per-question file
FORMAT = "lawlab-questions"
VERSION = 1
SUFFIX = ".jsonl.gz"


@dataclass(frozen=True)
class Question:
    """One multiple-choice question as the model answered it."""

    subtask: str
    doc_id: int
    gold: int
    ll: tuple[float, ...]
    tokens: tuple[int, ...]
    bytes: tuple[int, ...]
    acc: float
    acc_norm: float | None = None

    @property
    def key(self) -> tuple[str, int]:
        return self.subtask, self.doc_id

    @property
    def n_choices(self) -> int:
        return len(self.ll)

    @property
    def ll_correct(self) -> float:
        return self.ll[self.gold]

    @property
    def nll_per_byte(self) -> float:
        return -self.ll[self.gold] / max(1, self.bytes[self.gold])

    @property
    def nll_per_token(self) -> float:
        return -self.ll[self.gold] / max(1, self.tokens[self.gold])

    @property
    def p_correct(self) -> float:
        """Softmax of the choices' log-likelihoods at the right one."""
        top = max(self.ll)
        return math.exp(self.ll[self.gold] - top) / sum(math.exp(x - top) for x in self.ll)

    @property
    def chance(self) -> float:
        return 1.0 / self.n_choices

    def to_dict(self) -> dict[str, Any]:
        return {
            "subtask": self.subtask, "doc_id": self.doc_id, "gold": self.gold, "ll": list(self.ll),
            "tokens": list(self.tokens), "bytes": list(self.bytes), "acc": self.acc, "acc_norm": self.acc_norm,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Question:
        return cls(
            str(d["subtask"]), int(d["doc_id"]), int(d["gold"]), tuple(float(x) for x in d["ll"]),
            tuple(int(x) for x in d["tokens"]), tuple(int(x) for x in d["bytes"]), float(d["acc"]),
            None if d.get("acc_norm") is None else float(d["acc_norm"]),
        )


def _mean(xs: Iterable[float]) -> float:
    values = list(xs)
    return math.fsum(values) / len(values) if values else math.nan


def _stderr(xs: Iterable[float]) -> float | None:
    values = list(xs)
    if len(values) < 2:
        return None
    m = _mean(values)
    return math.sqrt(math.fsum((x - m) ** 2 for x in values) / (len(values) - 1) / len(values))


@dataclass(frozen=True)
class QuestionTable:
    """A task's questions, in the evaluator's order. ``info`` is the file's header (the
    metric variant the task reports, lm-eval's version...)."""

    task: str
    questions: tuple[Question, ...]
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.questions)

    def __iter__(self) -> Iterator[Question]:
        return iter(self.questions)

    def by_key(self) -> dict[tuple[str, int], Question]:
        return {q.key: q for q in self.questions}

    def accuracy(self, variant: str = "acc") -> float:
        """Mean 0/1 outcome; ``variant`` is ``acc`` or ``acc_norm``."""
        return _mean(getattr(q, variant) for q in self.questions)

    @property
    def chance(self) -> float:
        """The accuracy of a uniform guess: mean over questions of 1 / choices."""
        return _mean(q.chance for q in self.questions)

    def task_loss(self, per: str = "byte") -> float:
        """Mean negative log-likelihood of the right choice, per ``byte`` or ``token``."""
        return _mean(q.nll_per_byte if per == "byte" else q.nll_per_token for q in self.questions)

    def task_loss_stderr(self, per: str = "byte") -> float | None:
        return _stderr(q.nll_per_byte if per == "byte" else q.nll_per_token for q in self.questions)

    @property
    def p_correct(self) -> float:
        return _mean(q.p_correct for q in self.questions)

    @property
    def p_correct_stderr(self) -> float | None:
        return _stderr(q.p_correct for q in self.questions)

    # ------------------------------------------------------------------ file form

    def encode(self) -> bytes:
        """The gzipped JSON-lines file (deterministic: no timestamp in the gzip header)."""
        text = io.StringIO()
        header = {"format": FORMAT, "version": VERSION, "task": self.task, "count": len(self.questions), **self.info}
        text.write(json.dumps(header, sort_keys=True) + "\n")
        for q in self.questions:
            text.write(json.dumps(q.to_dict(), separators=(",", ":")) + "\n")
        return gzip.compress(text.getvalue().encode(), mtime=0)

    @classmethod
    def decode(cls, data: bytes) -> QuestionTable:
        lines = gzip.decompress(data).decode().splitlines()
        header = json.loads(lines[0]) if lines else {}
        if header.get("format") != FORMAT or header.get("version") != VERSION:
            raise ValueError(f"not a {FORMAT} v{VERSION} file (header: {str(header)[:80]})")
        info = {k: v for k, v in header.items() if k not in ("format", "version", "task", "count")}
        questions = tuple(Question.from_dict(json.loads(line)) for line in lines[1:] if line)
        return cls(str(header["task"]), questions, info)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class CellQuestions:
    """The per-question records of one cell: ``tables`` by task, or why there are none
    (``missing``: a store written before records existed, an evaluator that keeps none,
    a file gone or changed)."""

    key: str
    tables: dict[str, QuestionTable]
    missing: str | None = None


def paired(a: QuestionTable, b: QuestionTable) -> list[tuple[Question, Question]]:
    """The questions both tables answered, matched by (subtask, doc_id), in ``a``'s order."""
    other = b.by_key()
    return [(q, other[q.key]) for q in a.questions if q.key in other]


def paired_bootstrap(
    pairs: Sequence[tuple[Question, Question]],
    value: str = "acc",
    *,
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """Mean of ``value(b) - value(a)`` over paired questions, with a percentile bootstrap
    interval over questions: (mean, low, high). ``value`` is a :class:`Question` field or
    property (``acc``, ``acc_norm``, ``nll_per_byte``, ``p_correct``...)."""
    import numpy as np

    if not pairs:
        return math.nan, math.nan, math.nan
    diffs = np.array([float(getattr(y, value)) - float(getattr(x, value)) for x, y in pairs])
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(diffs), size=(resamples, len(diffs)))
    means = diffs[idx].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(diffs.mean()), float(low), float(high)


# One row per question in `lawlab export --questions`.
EXPORT_COLUMNS = (
    "model", "method", "ratio", "rft", "rft_dataset", "D", "seed", "evaluator", "cell_key", "task", "subtask",
    "doc_id", "gold", "acc", "acc_norm", "ll_correct", "nll_per_token", "nll_per_byte", "p_correct_norm",
    "n_choices",
)


def export_row(cell: dict[str, Any], task: str, q: Question) -> dict[str, Any]:
    """One export row: the cell's variant columns (``cell``) and the question's outcome."""
    return {
        **{k: cell.get(k) for k in ("model", "method", "ratio", "rft", "rft_dataset", "D", "seed", "evaluator",
                                     "cell_key")},
        "task": task, "subtask": q.subtask, "doc_id": q.doc_id, "gold": q.gold, "acc": q.acc,
        "acc_norm": q.acc_norm, "ll_correct": q.ll_correct, "nll_per_token": q.nll_per_token,
        "nll_per_byte": q.nll_per_byte, "p_correct_norm": q.p_correct, "n_choices": q.n_choices,
    }
