"""What reaches the terminal, and what goes to the study's log instead.

lawlab's own progress, results and problems go to the terminal through :func:`console`.
Everything else a run's libraries write (Python warnings, library logging, stray stderr,
also from the processes they start) goes to ``OUTPUT/lawlab.log`` through
:func:`capture`, and with ``-v`` to the terminal too.

Tables never cut a number: off a terminal the console is as wide as its content needs,
and on a narrow terminal numeric columns keep their width while names wrap.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console, ConsoleDimensions
from rich.table import Table

LOG_NAME = "lawlab.log"
# Off a terminal nothing needs wrapping: a log or a file is read with a pager or an editor.
OFF_TERMINAL_WIDTH = 1000
# Library loggers whose warnings belong in the log rather than on the terminal.
LIBRARIES = ("transformers", "datasets", "accelerate", "peft", "lm_eval", "lm-eval", "torch", "huggingface_hub", "torchao")
# Progress bars of libraries: lawlab's own display says what they would, and in a log
# they are thousands of carriage returns.
_BAR_VARS = {"TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
_NUMBER = re.compile(r"^[\s(\[]*[-+−–]?[\d.,]+(e[-+]?\d+)?%?(\s*[±×]\s*[\d.e+-]+)?[\s)\]]*(\(u\))?$|^[-–]$")


# --------------------------------------------------------------------------- consoles


class LawlabConsole(Console):
    """A rich console whose tables wrap names, never numbers, and which off a terminal (a
    pipe, a file, a CI log) is as wide as its content unless ``COLUMNS`` says otherwise.

    Whether a width was fixed (the ``width`` argument, ``COLUMNS`` when it is built, as rich
    reads it, or the ``width``/``size`` setters) is kept here, so no private rich state is
    read; whether it is a terminal is asked on each use, as stdout may be swapped."""

    def __init__(self, *args: Any, width: int | None = None, **kwargs: Any):
        super().__init__(*args, width=width, **kwargs)
        columns = os.environ.get("COLUMNS", "")
        self.fixed_width = width is not None or columns.isdigit()

    @property
    def size(self) -> ConsoleDimensions:
        size = Console.size.fget(self)  # type: ignore[attr-defined]
        if not self.fixed_width and not self.is_terminal:
            return ConsoleDimensions(OFF_TERMINAL_WIDTH, size.height)
        return size

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self.fixed_width = True
        Console.size.fset(self, new_size)  # type: ignore[attr-defined]

    @property
    def width(self) -> int:
        return self.size.width

    @width.setter
    def width(self, width: int) -> None:
        self.fixed_width = True
        Console.width.fset(self, width)  # type: ignore[attr-defined]

    def print(self, *objects: Any, **kwargs: Any) -> None:  # type: ignore[override]
        for obj in objects:
            if isinstance(obj, Table):
                keep_numbers_whole(obj)
        super().print(*objects, **kwargs)


def console(*, stderr: bool = False, file: Any = None) -> LawlabConsole:
    """lawlab's console for stdout (or stderr); text is never wrapped (``soft_wrap``)."""
    return LawlabConsole(stderr=stderr, file=file, soft_wrap=True)


def _plain(cell: Any) -> str:
    return cell.plain if hasattr(cell, "plain") else re.sub(r"\[/?[a-z ]*\]", "", str(cell))


def keep_numbers_whole(table: Table) -> Table:
    """Make ``table`` wrap its text columns first and fold (never ellipsise) a cell that
    still does not fit, so a number is never shown cut short."""
    for column in table.columns:
        column.overflow = "fold"
        cells = [_plain(c).strip() for c in column.cells]
        cells = [c for c in cells if c]
        if cells and all(_NUMBER.match(c) for c in cells):
            column.no_wrap = True  # the text columns shrink first
            column.min_width = max(len(c) for c in cells)
        else:  # text with numbers in it ("beta -1.188 ± 0.012") wraps between them
            numbers = [len(w) for c in cells for w in c.split() if _NUMBER.match(w)]
            column.min_width = max([*numbers, column.min_width or 0]) or None  # a caller's minimum stands
    return table


def narrowest_width(table: Table) -> int:
    """The least width at which ``table`` shows every cell with no word cut: each column
    as wide as its longest word (header included), plus padding and borders."""
    from rich.text import Text

    keep_numbers_whole(table)  # as printing will: a numeric column does not wrap, its header neither
    total = 1  # the left border
    for column in table.columns:
        words = [w for c in [column.header, *column.cells]
                 for w in (Text.from_markup(c).plain if isinstance(c, str) else _plain(c)).split()]
        header = len(_plain(column.header)) if column.no_wrap else 0
        total += max(column.min_width or 0, header, max((len(w) for w in words), default=1)) + 3  # padding, border
    return total


def words_whole(table: Table, width: int) -> Table:
    """No word of a header or a cell is cut (each column at least its longest word), as
    long as the table still fits ``width``; narrower than that, text may fold."""
    from rich.text import Text

    for column in table.columns:
        words = [w for c in [column.header, *column.cells]
                 for w in (Text.from_markup(c).plain if isinstance(c, str) else _plain(c)).split()]
        column.min_width = max((len(w) for w in words), default=None)
    if narrowest_width(table) > width:
        for column in table.columns:
            column.min_width = None
    return table


# --------------------------------------------------------------------------- the run's log


class RunLog:
    """The study's log file, open while a run is captured. :meth:`write` adds lawlab's own
    lines (which cell was running), so a library's message can be traced to its cell."""

    def __init__(self, path: Path, fd: int):
        self.path, self.fd = path, fd

    def write(self, text: str) -> None:
        _write_all(self.fd, f"{time.strftime('%H:%M:%S')} lawlab: {text}\n".encode())


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


def _flush_std() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def _tee(read_fd: int, targets: list[int]) -> None:
    """Copy what arrives on ``read_fd`` to every target until every writer has closed it."""
    while chunk := os.read(read_fd, 65536):
        for fd in targets:
            with contextlib.suppress(OSError):
                _write_all(fd, chunk)
    os.close(read_fd)


def library_bars_off() -> None:
    """Turn off the libraries' progress bars (unless the user set these variables). Call
    it before tqdm is first imported: tqdm reads them then."""
    for key, value in _BAR_VARS.items():
        os.environ.setdefault(key, value)


@contextlib.contextmanager
def _libraries_to_log() -> Iterator[None]:
    """Library warnings at WARNING level (they reach the log, not the terminal), their
    progress bars off; restored afterwards."""
    saved_env = {k: os.environ.get(k) for k in (*_BAR_VARS, "TRANSFORMERS_VERBOSITY")}
    library_bars_off()
    os.environ["TRANSFORMERS_VERBOSITY"] = "warning"
    saved_levels = {name: logging.getLogger(name).level for name in LIBRARIES}
    for name in LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        yield
    finally:
        for name, level in saved_levels.items():
            logging.getLogger(name).setLevel(level)
        for key, old in saved_env.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


@contextlib.contextmanager
def capture(path: Path, *, verbose: bool = False) -> Iterator[RunLog]:
    """Send everything written to stderr (file descriptor 2, so child processes and C
    code too) to the log at ``path`` while the block runs; with ``verbose`` to the
    terminal as well. lawlab prints its own output on stdout, which stays untouched.

    An exception leaving the block is written to the log and then raised as usual, after
    stderr is restored, so the user still sees it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    log = RunLog(path, log_fd)
    log.write(f"started: {' '.join(sys.argv)} (pid {os.getpid()})")
    _flush_std()
    try:
        terminal = os.dup(2)
    except OSError:  # no stderr at all (a daemon): nothing to redirect
        terminal = None
    tee: threading.Thread | None = None
    if terminal is not None:
        if verbose:
            read_fd, write_fd = os.pipe()
            tee = threading.Thread(target=_tee, args=(read_fd, [log_fd, terminal]), daemon=True)
            tee.start()
            os.dup2(write_fd, 2)
            os.close(write_fd)
        else:
            os.dup2(log_fd, 2)
    try:
        with _libraries_to_log():
            yield log
    except BaseException as exc:
        _flush_std()
        log.write("stopped by " + "".join(traceback.format_exception_only(type(exc), exc)).strip())
        raise
    finally:
        _flush_std()
        if terminal is not None:
            os.dup2(terminal, 2)
        if tee is not None:
            tee.join(timeout=5)  # a child still holding the pipe keeps it open: do not wait for it
        log.write("ended")
        if tee is None or not tee.is_alive():  # a live tee still writes to both: leave them open
            if terminal is not None:
                os.close(terminal)
            os.close(log_fd)
