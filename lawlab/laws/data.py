"""The rows a law is fitted to: reading a results CSV, choosing the law's rows, and the
numeric arrays (:class:`LawData`) the engines take."""

from __future__ import annotations

import csv
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lawlab.laws.forms import LawFitError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np


NUMERIC = ("ratio", "ratio_effective", "D", "value", "L0")


def read_results_csv(path: str | Path, *, kind: str | None = None) -> list[dict[str, Any]]:
    """Rows of a results CSV: the tidy export, or published numbers with only
    ``model, ratio, D, value, L0`` (``kind`` then comes from the argument)."""
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"model", "ratio", "D", "value", "L0"} - set(reader.fieldnames or ())
        if missing:
            raise LawFitError(f"{path}: missing column(s) {', '.join(sorted(missing))}; a results CSV needs "
                              "at least model, ratio, D, value, L0")
        rows = []
        for raw in reader:
            row: dict[str, Any] = dict(raw)
            for key in NUMERIC:
                text = (row.get(key) or "").strip()
                row[key] = float(text) if text else None
            row["law_input"] = str(row.get("law_input", "true")).strip().lower() not in ("false", "0", "no")
            row.setdefault("method", "")
            row.setdefault("family", row["model"])
            if kind and not row.get("kind"):
                row["kind"] = kind
            rows.append(row)
    return rows


def is_base(row: dict[str, Any]) -> bool:
    """An unpruned, un-recovered row: it gives L0, it is not a point of the law."""
    return not row.get("method") and not (row.get("ratio") or 0) and not (row.get("D") or 0)


def law_rows(rows: Iterable[dict[str, Any]], kind: str | None = None) -> list[dict[str, Any]]:
    """The rows a law of ``kind`` describes: that kind, ``law_input``, not a base row."""
    return [
        r for r in rows
        if (kind is None or r.get("kind") == kind) and r.get("law_input", True) and not is_base(r)
    ]


@dataclass
class LawData:
    """The fitted variables as arrays, and the rows they came from."""

    L0: np.ndarray
    r: np.ndarray
    D: np.ndarray
    y: np.ndarray
    models: list[str]
    rows: list[dict[str, Any]]

    def take(self, idx: Any) -> LawData:
        return LawData(self.L0[idx], self.r[idx], self.D[idx], self.y[idx],
                       [self.models[i] for i in idx], [self.rows[i] for i in idx])

    def __len__(self) -> int:
        return len(self.y)


def _number(row: dict[str, Any], key: str, i: int) -> float:
    value = row.get(key)
    if value is None or value == "":
        raise LawFitError(f"row {i} ({row_where(row)}): {key} is missing")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise LawFitError(f"row {i} ({row_where(row)}): {key} = {value!r} is not a number") from None


def row_where(row: dict[str, Any]) -> str:
    keys = ("model", "method", "ratio", "D", "dataset")
    return ", ".join(f"{k}={row[k]}" for k in keys if row.get(k) not in (None, ""))


def law_data(rows: Sequence[dict[str, Any]], ratio: str = "nominal", notes: list[str] | None = None) -> LawData:
    """Arrays from rows, checked: every number finite, values and L0 positive, r in
    [0, 1), D ≥ 0. ``ratio="effective"`` reads ``ratio_effective`` (nominal where absent)."""
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
                   models=[str(r.get("model", "")) for r in rows], rows=list(rows))
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
            raise LawFitError(f"{label} is NaN or infinite in {bad.size} row(s); first: row {i} "
                              f"({row_where(d.rows[i])}): {label} = {arr[i]}")
        bad = np.flatnonzero(~test(arr))
        if bad.size:
            i = int(bad[0])
            raise LawFitError(f"{label} must be {need}; {bad.size} row(s) break this, first: row {i} "
                              f"({row_where(d.rows[i])}): {label} = {arr[i]:g}")


