"""lawlab's console: as wide as its content off a terminal, unless a width was fixed."""

from __future__ import annotations

import io

from rich.table import Table

from lawlab.terminal import OFF_TERMINAL_WIDTH, LawlabConsole, console


def test_width_off_a_terminal_and_when_fixed(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    off = console(file=io.StringIO())
    assert off.width == OFF_TERMINAL_WIDTH
    # A wide table is printed whole on one line per row, nothing folded.
    table = Table("name", "value")
    table.add_row("x" * 300, "1.234")
    off.print(table)
    assert any(len(line) > 300 for line in off.file.getvalue().splitlines())

    off.width = 70  # rich's public setter fixes it
    assert off.width == 70
    assert LawlabConsole(file=io.StringIO(), force_terminal=True).width != OFF_TERMINAL_WIDTH  # a terminal's own size

    monkeypatch.setenv("COLUMNS", "90")
    assert console(file=io.StringIO()).width == 90
