"""The report's document model: sections made of a few block types (paragraph, warning, table,
figure, preformatted text, list), and how numbers and formulas are written in its cells.

Built once by :mod:`lawlab.report.tables` and rendered by :mod:`lawlab.report.render` to HTML
and Markdown, so the two never disagree.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lawlab.report.figures import GREEK

if TYPE_CHECKING:  # pragma: no cover
    from lawlab.laws.results import FitResult
    from lawlab.report.figures import Drawing

# --------------------------------------------------------------------------- formatting


def fmt(v: Any, digits: int = 3) -> str:
    """A number as the report prints it: ``digits`` decimals in the usual range, else
    ``digits`` significant figures (small coefficients keep their precision)."""
    if v is None or v == "":
        return "–"
    if isinstance(v, str):
        return v
    v = float(v)
    if v != v:  # NaN
        return "–"
    if 0.1 <= abs(v) < 1e5:
        return f"{v:.{digits}f}"
    return "0" if v == 0 else f"{v:.{digits}g}"


def fmt_f(v: float | None) -> str:
    """The F-statistic as the paper prints it: whole numbers once it is large."""
    if v is None:
        return "–"
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.1f}"


def fmt_ci(value: float | None, ci: Sequence[float] | None) -> str:
    return fmt(value) + (f" [{fmt(ci[0])}, {fmt(ci[1])}]" if ci else "")


def symbol(name: str) -> str:
    """How a formula writes a parameter: beta as β, beta_q as β_q."""
    head, sep, tail = name.partition("_")
    return GREEK.get(name) or (GREEK[head] + sep + tail if sep and head in GREEK else name)


def _whole(sym: str) -> str:
    """A pattern for ``sym`` as a whole symbol, never part of a longer name."""
    return rf"(?<!\w){re.escape(sym)}(?!\w)"


def fitted_function(fit: FitResult) -> str:
    """The law written out with its coefficients, as the paper's tables show it."""
    text = fit.formula
    unwritten = []  # parameters the formula names generically (one efficiency per setting: eff_q)
    for p in sorted(fit.params, key=lambda p: -len(p.name)):
        # whole symbols only: β must not eat the β of β_q, nor a the a of another name
        pattern = _whole(symbol(p.name))
        if re.search(pattern, text) is None:
            unwritten.append(f"{p.name} = {fmt(p.value, 2)}")
        text = re.sub(pattern, fmt(p.value, 2), text)
    for name, value in fit.options.items():
        if name in GREEK:
            text = re.sub(_whole(GREEK[name]), f"{value:g}", text)
    text = text.replace("(−-", "(")  # minus a negative value: (−a) with a < 0
    if unwritten:
        text += "; " + ", ".join(sorted(unwritten))
    if fit.options.get("d_unit", 1) != 1:
        text += f"  (D in units of {fit.options['d_unit']:g} samples)"
    return text


def formula_html(text: str) -> str:
    """Exponents as superscripts and L0/S0 with subscripts, after escaping."""
    out = html.escape(text)
    out = re.sub(r"\^(-?\d+(?:\.\d+)?(?:e-?\d+)?|[^\s·()]+)", r"<sup>\1</sup>", out)
    return re.sub(r"\b([LS])0\b", r"\1<sub>0</sub>", out)


def when(t: float | None) -> str:
    """A wall-clock time as the report prints it (local time), or a dash."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "–"


def r2_text(f: FitResult) -> str:
    """Adjusted R², marked (u) when it is uncentred."""
    return fmt(f.r2_adj) + (" (u)" if f.r2_kind == "uncentred" else "")


def feasible_text(f: FitResult) -> str:
    verdict = "yes" if not f.feasibility else "NO: " + "; ".join(f.feasibility)
    return verdict if f.converged else verdict + " (the nonlinear fit did not converge)"


def beyond_null_text(f: FitResult) -> str:
    """What the law explains beyond "no change" (L = L0): R² of log(L/L0), and its held-out
    log error beside that of L = L0."""
    h = f.heldout or {}
    law, null = h.get("rmse_log"), h.get("null_rmse_log")
    held = f"{law:.3g} vs {null:.3g}" if law is not None and null is not None else "-"
    return f"{fmt(f.r2_beyond_L0)}; {held}"


# --------------------------------------------------------------------------- the document


@dataclass
class Table:
    name: str  # file stem under tables/
    title: str
    header: list[str]
    cells: list[list[str]]
    records: list[dict[str, Any]] = field(default_factory=list)  # raw values for the CSV
    caption: str = ""
    formula_columns: tuple[int, ...] = ()


@dataclass
class Section:
    id: str
    title: str
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def warn(self, text: str) -> None:
        self.blocks.append(("warn", text))

    def table(self, table: Table) -> None:
        self.blocks.append(("table", table))

    def figure(self, drawing: Drawing) -> None:
        self.blocks.append(("figure", drawing))

    def pre(self, summary: str, text: str) -> None:
        self.blocks.append(("pre", (summary, text)))

    def items(self, items: Sequence[str]) -> None:
        if items:
            self.blocks.append(("list", list(items)))

