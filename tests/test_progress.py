"""The study's progress display as a terminal shows it."""

from __future__ import annotations

import io
import re
import time
from types import SimpleNamespace

from lawlab.run.progress import StudyProgress
from lawlab.terminal import LawlabConsole

_CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def test_every_inner_loop_shows_its_rate():
    buf = io.StringIO()
    term = LawlabConsole(file=buf, force_terminal=True, width=120, color_system=None)
    progress = StudyProgress(term)
    progress.start_study("study", total=3)
    try:
        for loop in range(3):
            progress.cell_started(SimpleNamespace(label=lambda loop=loop: f"cell {loop}"))
            progress.start(f"inner loop {loop}", total=4)
            for _ in range(3):
                time.sleep(0.02)
                progress.advance()
            buf.seek(0)
            buf.truncate()
            progress._bars.refresh()  # draw now rather than at the next tick of the refresh thread
            lines = _CONTROL.sub("", buf.getvalue()).splitlines()
            row = next(ln for ln in lines if f"inner loop {loop}" in ln)
            # 3 steps in ≈ 0.06 s: tens of steps per second, and nothing but that in the column
            rate = re.search(r"3/4\s+(\d+\.\d)/s", row)
            assert rate and 0.5 < float(rate.group(1)) < 200, row
            study = next(ln for ln in lines if f"cell {loop}" in ln)
            assert "/s" not in study  # the study's own bar counts cells and shows no rate
            progress.done()
            progress.cell_finished(SimpleNamespace(label=lambda loop=loop: f"cell {loop}"), "done", 0.1)
    finally:
        progress.finish_study()
