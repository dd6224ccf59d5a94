"""The rows a law is fitted to: reading a results CSV, choosing the law's rows, and the
numeric arrays (:class:`LawData`) the engines take."""

from __future__ import annotations

import csv
import math
import warnings
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lawlab.laws.forms import LawFitError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np


NUMERIC = ("ratio", "ratio_effective", "D", "value", "L0")
REQUIRED = ("model", "ratio", "D", "value", "L0")
LAW_KINDS = ("intrinsic", "extrinsic", "runtime")  # the rows a law describes (a store also holds RFT losses)


def read_results_csv(path: str | Path, *, kind: str | None = None,
                     bad: list[str] | None = None) -> list[dict[str, Any]]:
    """Rows of a results CSV: the tidy export, or published numbers with only
    ``model, ratio, D, value, L0`` (``kind`` then comes from the argument).

    Every row a law would use is checked (:func:`row_problems`). A bad row raises
    :class:`LawFitError` naming its line as an editor counts it (the header is line 1),
    unless ``bad`` is a list: then each bad row is left out and described there."""
    try:
        return _read_csv(path, kind, bad)
    except UnicodeDecodeError:
        raise LawFitError(f"{path}: not a UTF-8 text file (save it as CSV UTF-8)") from None


def _read_csv(path: str | Path, kind: str | None, bad: list[str] | None) -> list[dict[str, Any]]:
    # utf-8-sig: a CSV saved by Excel starts with a byte-order mark that would join the first column's name
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None:
            raise LawFitError(f"{path}: empty file; a results CSV needs a header line with at least "
                              f"{', '.join(REQUIRED)}")
        names = [n.strip() for n in reader.fieldnames]
        missing = [c for c in REQUIRED if c not in names]
        if missing:
            raise LawFitError(f"{path}: missing column(s) {', '.join(missing)}; a results CSV needs "
                              f"at least {', '.join(REQUIRED)} (its header has: {', '.join(names) or 'nothing'})")
        reader.fieldnames = names
        rows = []
        for raw in reader:
            row: dict[str, Any] = {k: v for k, v in raw.items() if k is not None}
            row["_line"] = reader.line_num
            problems = _parse_row(row)
            row["law_input"] = str(row.get("law_input", "true")).strip().lower() not in ("false", "0", "no")
            row.setdefault("method", "")
            row.setdefault("family", row["model"])
            if kind and not row.get("kind"):
                row["kind"] = kind
            problems = problems or row_problems(row)
            if problems:
                text = f"{path}, {position(row)}: {'; '.join(problems)}"
                if bad is None:
                    raise LawFitError(text)
                bad.append(text)
                continue
            rows.append(row)
    return rows


def _parse_row(row: dict[str, Any]) -> list[str]:
    """The numeric columns as floats (blank: None); a text that is no number is a problem."""
    problems = []
    for key in NUMERIC:
        text = (row.get(key) or "").strip()
        try:
            row[key] = float(text) if text else None
        except ValueError:
            problems.append(f"{key} = {text!r} is not a number")
            row[key] = None
    return problems


def row_problems(row: dict[str, Any]) -> list[str]:
    """Why a law cannot use this row (empty when it can): a number missing, NaN or
    infinite, a value or L0 that is not > 0 (its logarithm is taken), r outside [0, 1),
    D < 0. Rows no law reads (``law_input`` false, or the base row) are not checked, nor
    is a blank ``ratio_effective`` (the nominal ratio stands in)."""
    if not row.get("law_input", True) or is_base(row) or row.get("kind") not in (None, "", *LAW_KINDS):
        return []
    problems = []
    for key, need, ok in (("ratio", "in [0, 1)", lambda v: 0 <= v < 1),
                          ("D", ">= 0", lambda v: v >= 0),
                          ("value", "> 0 (a power law takes its logarithm)", lambda v: v > 0),
                          ("L0", "> 0 (a power law takes its logarithm)", lambda v: v > 0),
                          # a finite number only: SliceGPT at a small r can add parameters (< 0),
                          # and the range is checked when a fit uses it (--ratio effective)
                          ("ratio_effective", "finite", lambda v: True)):
        value = row.get(key)
        if value is None or value == "":
            if key != "ratio_effective":  # optional: the nominal ratio stands in
                problems.append(f"{key} is blank")
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            problems.append(f"{key} = {value!r} is not a number")
            continue
        if not math.isfinite(number):
            problems.append(f"{key} = {number} (a finite number is needed)")
        elif not ok(number):
            problems.append(f"{key} = {number:g} must be {need}")
    return problems


def position(row: dict[str, Any], i: int | None = None) -> str:
    """Where a row is, as a person finds it: the CSV line, else its 1-based row number."""
    where = row_where(row)
    at = f"line {row['_line']}" if row.get("_line") else (f"row {i + 1}" if i is not None else "")
    return f"{at} ({where})" if at and where else (at or where)


def is_base(row: dict[str, Any]) -> bool:
    """An unpruned, un-recovered row: it gives L0, it is not a point of the law."""
    return not row.get("method") and not (row.get("ratio") or 0) and not (row.get("D") or 0)


def law_rows(rows: Iterable[dict[str, Any]], kind: str | None = None,
             axes: Collection[str] = ()) -> list[dict[str, Any]]:
    """The rows a law of ``kind`` describes: that kind, ``law_input``, not a base row, and
    float weights unless ``axes`` holds "quant" (a quantised variant is a point of the
    cross-axis forms, which declare that axis, not of f(r, D))."""
    return [
        r for r in rows
        if (kind is None or r.get("kind") == kind) and r.get("law_input", True) and not is_base(r)
        and (not r.get("quant") or "quant" in axes)
    ]


def is_quantised(row: dict[str, Any]) -> bool:
    return bool(row.get("quant"))


@dataclass
class LawData:
    """The fitted variables as arrays, the rows they came from, and the further per-row
    columns a form needs (:attr:`lawlab.api.LawForm.needs`), by name."""

    L0: np.ndarray
    r: np.ndarray
    D: np.ndarray
    y: np.ndarray
    models: list[str]
    rows: list[dict[str, Any]]
    columns: dict[str, np.ndarray] = field(default_factory=dict)

    def take(self, idx: Any) -> LawData:
        return LawData(self.L0[idx], self.r[idx], self.D[idx], self.y[idx],
                       [self.models[i] for i in idx], [self.rows[i] for i in idx],
                       {k: v[idx] for k, v in self.columns.items()})

    def __len__(self) -> int:
        return len(self.y)


def _number(row: dict[str, Any], key: str, i: int) -> float:
    value = row.get(key)
    if value is None or value == "":
        raise LawFitError(f"{position(row, i)}: {key} is missing")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise LawFitError(f"{position(row, i)}: {key} = {value!r} is not a number") from None


def row_where(row: dict[str, Any]) -> str:
    keys = ("model", "method", "ratio", "D", "dataset")
    return ", ".join(f"{k}={row[k]:g}" if isinstance(row[k], float) else f"{k}={row[k]}"
                     for k in keys if row.get(k) not in (None, ""))


def quant_ratio(row: dict[str, Any], i: int) -> float:
    """The quantisation axis' declared ratio q of a row: 0 for float weights, else its
    ``quant_ratio``, else what its combined storage ratio and pruned fraction imply
    (1 − storage = (1 − pruning)(1 − q), :mod:`lawlab.storage`)."""
    if not is_quantised(row):
        return 0.0
    if row.get("quant_ratio") not in (None, ""):
        q = _number(row, "quant_ratio", i)
    elif row.get("storage_ratio") not in (None, ""):
        pruned = row.get("ratio_effective")
        kept = 1 - (_number(row, "ratio_effective", i) if pruned not in (None, "") else _number(row, "ratio", i))
        q = 1 - (1 - _number(row, "storage_ratio", i)) / kept
    else:
        raise LawFitError(f"{position(row, i)}: a quantised row ({row['quant']}) needs quant_ratio or storage_ratio "
                          "for the quantisation axis q")
    if not 0 <= q < 1:
        raise LawFitError(f"{position(row, i)}: q = {q:g} must be in [0, 1)")
    return q


def _column(rows: Sequence[dict[str, Any]], name: str) -> np.ndarray:
    import numpy as np

    if name == "q":
        return np.array([quant_ratio(row, i) for i, row in enumerate(rows)], float)
    if name == "quant":
        return np.array([str(row.get("quant") or "") for row in rows], dtype=object)
    return np.array([_number(row, name, i) for i, row in enumerate(rows)], float)


def law_data(rows: Sequence[dict[str, Any]], ratio: str = "nominal", notes: list[str] | None = None,
             needs: Sequence[str] = ()) -> LawData:
    """Arrays from rows, checked: every number finite, values and L0 positive, r in
    [0, 1), D ≥ 0. ``ratio="effective"`` reads ``ratio_effective`` (nominal where absent).
    ``needs`` names further columns to read (:attr:`lawlab.api.LawForm.needs`)."""
    import numpy as np

    if ratio not in ("nominal", "effective"):
        raise LawFitError(f"ratio must be 'nominal' or 'effective', not {ratio!r}")
    fallback = 0
    cols: dict[str, list[float]] = {"L0": [], "r": [], "D": [], "y": []}
    for i, row in enumerate(rows):
        if ratio == "effective" and row.get("ratio_effective") not in (None, ""):
            r = _number(row, "ratio_effective", i)
        else:
            fallback += ratio == "effective"
            r = _number(row, "ratio", i)
        for key, value in (("L0", _number(row, "L0", i)), ("r", r), ("D", _number(row, "D", i)),
                           ("y", _number(row, "value", i))):
            cols[key].append(value)
    if fallback:
        msg = f"ratio_effective is missing in {fallback} of {len(rows)} rows; the nominal ratio was used there"
        warnings.warn(msg, stacklevel=3)
        if notes is not None:
            notes.append(msg)
    data = LawData(*(np.asarray(cols[k], float) for k in ("L0", "r", "D", "y")),
                   models=[str(r.get("model", "")) for r in rows], rows=list(rows),
                   columns={name: _column(rows, name) for name in needs})
    _check_values(data)
    return data


def _check_values(d: LawData) -> None:
    import numpy as np

    for label, arr, test, need in (
        ("value", d.y, lambda a: a > 0, "> 0 (the law is a power law: its logarithm is taken)"),
        ("L0", d.L0, lambda a: a > 0, "> 0 (the law is a power law: its logarithm is taken)"),
        ("ratio", d.r, lambda a: (a >= 0) & (a < 1), "in [0, 1)"),
        ("D", d.D, lambda a: a >= 0, ">= 0"),
    ):
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            i = int(bad[0])
            raise LawFitError(f"{label} is NaN or infinite in {bad.size} row(s); first: "
                              f"{position(d.rows[i], i)}: {label} = {arr[i]}")
        bad = np.flatnonzero(~test(arr))
        if bad.size:
            i = int(bad[0])
            raise LawFitError(f"{label} must be {need}; {bad.size} row(s) break this, first: "
                              f"{position(d.rows[i], i)}: {label} = {arr[i]:g}")


