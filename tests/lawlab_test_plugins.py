"""Plugins used only by tests (loaded with ``--plugin lawlab_test_plugins``)."""

from __future__ import annotations

import os
from typing import Any, ClassVar

from lawlab import hookimpl
from lawlab.api import Evaluator, Measurement, Params, Pruner


class FlakyParams(Params):
    fail_on_ratio: float | None = None  # raise for variants pruned at this ratio
    marker: str = ""  # raise only while this environment variable is set ("" = always)


class FlakyEvaluator(Evaluator):
    """Counts parameters; raises on demand, to test failure isolation."""

    name: ClassVar[str] = "flaky"
    Params: ClassVar[type[Params]] = FlakyParams
    kind: ClassVar[str] = "intrinsic"

    def evaluate(self, model: Any, params: Any, ctx: Any) -> list[Measurement]:
        ratio = model.compression.nominal_ratio if model.compression else 0.0
        at_ratio = params.fail_on_ratio is not None and abs(ratio - params.fail_on_ratio) < 1e-9
        if at_ratio and (not params.marker or os.environ.get(params.marker)):
            raise RuntimeError(f"flaky evaluator fails at r={ratio}")
        n = sum(p.numel() for p in model.model.parameters())
        return [Measurement("params", float(n), "model", law_input=False)]


class LlamaOnlyPruner(Pruner):
    """Claims to support llama only, to test plan-time refusal."""

    name: ClassVar[str] = "llama-only"

    def supports(self, model_type: str) -> str | None:
        return None if model_type == "llama" else f"only llama is supported, not {model_type}"

    def prune(self, model: Any, ratio: float, params: Any, ctx: Any) -> Any:
        return model


class BrokenParams(Params):
    fail_on_ratio: float = 0.5


class BrokenPruner(Pruner):
    """Delegates to random-prunenet but raises at one ratio: its subtree must be blocked."""

    name: ClassVar[str] = "broken"
    Params: ClassVar[type[Params]] = BrokenParams

    def prune(self, model: Any, ratio: float, params: Any, ctx: Any) -> Any:
        if abs(ratio - params.fail_on_ratio) < 1e-9:
            raise MemoryError(f"pretend out of memory at r={ratio}")
        real = ctx.registry.get("pruners", "random-prunenet")
        return real.prune(model, ratio, real.Params(), ctx)


class SleepyParams(Params):
    pid_file: str = ""  # the first cell to claim this file writes its PID in it, then sleeps
    seconds: float = 60.0


class SleepyEvaluator(Evaluator):
    """Counts parameters; the first cell to run sleeps with its PID on disk, so a test can
    kill the worker process in the middle of a cell (the retry finds the file and goes on)."""

    name: ClassVar[str] = "sleepy"
    Params: ClassVar[type[Params]] = SleepyParams
    kind: ClassVar[str] = "runtime"

    def evaluate(self, model: Any, params: Any, ctx: Any) -> list[Measurement]:
        import time

        try:
            fd = os.open(params.pid_file, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            pass
        else:
            os.write(fd, f"{os.getpid()}\n".encode())
            os.close(fd)
            time.sleep(params.seconds)
        n = sum(p.numel() for p in model.model.parameters())
        return [Measurement("params", float(n), "model", law_input=False)]


class AnsweringEvaluator(Evaluator):
    """Keeps per-question records of two made-up questions whose log-likelihoods follow the
    parameter count, to test that records travel from any executor to the store."""

    name: ClassVar[str] = "answering"
    kind: ClassVar[str] = "extrinsic"

    def evaluate(self, model: Any, params: Any, ctx: Any) -> list[Measurement]:
        from lawlab.questions import QUESTIONS, Question, QuestionTable

        n = float(sum(p.numel() for p in model.model.parameters()))
        table = QuestionTable("made-up", (Question("made-up", 0, 0, (-1.0, -n / 1e5), (1, 1), (2, 2), 1.0),
                                          Question("made-up", 1, 1, (-1.0, -n / 1e5), (1, 1), (2, 2), 0.0)))
        ctx.attach("made-up.jsonl.gz", table.encode(), kind=QUESTIONS, count=len(table))
        return [Measurement("accuracy", 0.5, "made-up", {"chance": 0.5}, law_input=True)]


@hookimpl
def register_evaluators(register):
    register(FlakyEvaluator())
    register(SleepyEvaluator())
    register(AnsweringEvaluator())


@hookimpl
def register_pruners(register):
    register(LlamaOnlyPruner())
    register(BrokenPruner())
