"""Progress of a study: rich bars on a terminal, plain lines in logs and CI.

Three levels are shown: the study (cells done of cells to run), the current cell, and the
inner loop a plugin reports (training steps, evaluation batches) with rate and ETA.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from lawlab import api, terminal


class RateColumn(ProgressColumn):
    """Mean steps per second since the start of a task that asks for it (the inner loops).

    A column is handed the task it draws, so no lookup by task id is needed (the task list
    is not indexed by id once a task is removed). The mean since the start, not rich's
    ``Task.speed``, because that one looks back only ``speed_estimate_period`` (30 s) and
    stays blank while a training step takes longer than that."""

    def render(self, task: Task) -> Text:
        if not task.fields.get("show_rate") or not task.elapsed:
            return Text("")
        return Text(f"{task.completed / task.elapsed:.1f}/s")


class StudyProgress(api.Progress):
    """The executor's progress display; plugins see it as a plain :class:`api.Progress`."""

    def __init__(
        self,
        console: Console | None = None,
        *,
        quiet: bool = False,
        verbose: bool = False,
        record: Callable[[str], None] | None = None,
    ):
        self.console = console or terminal.console()
        self.quiet, self.verbose = quiet, verbose
        self.record = record or (lambda text: None)  # the run's log: which cell was running when
        self.live = self.console.is_terminal and not quiet
        self._bars: Progress | None = None
        self._study: TaskID | None = None
        self._inner: TaskID | None = None
        self._inner_desc = ""
        self._inner_total: int | None = None
        self._inner_started = 0.0
        self._cells_total = 0
        self._cells_done = 0

    # ----------------------------------------------------------------- study level

    def start_study(self, name: str, total: int, already: int = 0) -> None:
        self._cells_total = total
        self.record(f"study {name}: {total} cell(s) to run, {already} already done")
        if self.live:
            if already:
                self.console.print(f"resuming {name}: {already} cell(s) already done, {total} to run")
            self._bars = Progress(
                SpinnerColumn(),
                TextColumn("[progress.description]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                RateColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
                # stderr belongs to the run's log (lawlab.terminal.capture), not above the bars
                redirect_stderr=False,
            )
            self._bars.start()
            self._study = self._bars.add_task(f"[bold]{name}", total=total)
        elif not self.quiet:
            self._line(f"study {name}: {total} cell(s) to run" + (f", {already} already done" if already else ""))

    def cell_started(self, cell: Any) -> None:
        self.record(f"start {cell.label()}")
        if self._bars is not None and self._study is not None:
            self._bars.update(self._study, description=f"[bold]{cell.label()}")
        elif self.verbose and not self.quiet:
            self._line(f"start {cell.label()}")

    def cell_finished(self, cell: Any, status: str, seconds: float, error: str | None = None) -> None:
        self._cells_done += 1
        self.record(f"{status} {cell.label()} ({seconds:.1f} s)" + (f": {error}" if error else ""))
        if self._bars is not None and self._study is not None:
            self._bars.advance(self._study)
            if status != "done" or self.verbose:
                self._bars.console.print(f"{status} {cell.label()} ({seconds:.1f} s){': ' + error if error else ''}")
        elif not self.quiet or status != "done":
            mark = "ok" if status == "done" else status.upper()
            self._line(
                f"[{self._cells_done}/{self._cells_total}] {mark} {cell.label()} ({seconds:.1f} s)"
                + (f": {error}" if error else "")
            )

    def finish_study(self) -> None:
        if self._bars is not None:
            self._bars.stop()
            self._bars = None

    # ----------------------------------------------------------------- inner loop (plugins)

    def start(self, description: str, total: int | None = None) -> None:
        self._inner_desc, self._inner_total, self._inner_started = description, total, time.time()
        if self._bars is not None:
            if self._inner is not None:
                self._bars.remove_task(self._inner)
            self._inner = self._bars.add_task(f"  {description}", total=total, show_rate=True)
        elif self.verbose and not self.quiet:
            self._line(f"  {description}" + (f" ({total} steps)" if total else ""))

    def advance(self, n: int = 1) -> None:
        if self._bars is not None and self._inner is not None:
            self._bars.update(self._inner, advance=n)

    def done(self) -> None:
        if self._bars is not None and self._inner is not None:
            self._bars.remove_task(self._inner)
            self._inner = None
        elif self.verbose and not self.quiet and self._inner_desc:
            self._line(f"  {self._inner_desc}: {time.time() - self._inner_started:.1f} s")

    def log(self, message: str) -> None:
        self.record(message)
        if self.quiet:
            return
        if self._bars is not None:
            self._bars.console.print(message, highlight=False)
        else:
            self._line(message)

    def _line(self, text: str) -> None:
        self.console.print(f"{time.strftime('%H:%M:%S')} {text}", highlight=False, soft_wrap=True)
