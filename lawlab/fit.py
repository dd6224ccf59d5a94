"""Fitting compression laws to a table of results.

Log-linear forms are fitted as the paper fits eq. 1: ordinary least squares on
log L = X θ (+ a fixed offset for forms where L0 enters with exponent 1), no intercept
unless the form has one. Any form can also be fitted by non-linear least squares (lmfit)
in log or linear space, from several starting points. Both give a :class:`FitResult`
with standard errors, t intervals, goodness of fit and, on request, bootstrap intervals.

R² convention (as statsmodels): when the design has a column that is constant over the
rows (an intercept, or α·log L0 in a per-model fit where L0 does not vary) R² is the
usual centred one; otherwise the regression goes through the origin and R², adjusted R²
and F are *uncentred* (relative to Σ log² L, not to its variance). Every result says which.

Importing this module is cheap (numpy, scipy and lmfit load when a fit runs), so a law
plugin can import :func:`law_form` and :func:`sign_violations` from here.
"""

from __future__ import annotations

import csv
import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from lawlab.api import LawForm, LawParameter, NoParams, Params

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from lawlab.plugins import Registry
    from lawlab.spec import LawEntry

LEVEL = 0.95  # confidence level of every interval reported
MetricRule = Literal["loss", "accuracy"]


class LawFitError(ValueError):
    """The data cannot give a meaningful fit; the message says exactly why."""


# --------------------------------------------------------------------------- sign rules

# Which way each kind of metric must move: loss rises with r and falls with D,
# accuracy the opposite. Runtime falls with r, so it takes the accuracy rule.
_DIRECTION = {"loss": {"r": 1, "D": -1}, "accuracy": {"r": -1, "D": 1}}
_RULE_OF_KIND = {"intrinsic": "loss", "extrinsic": "accuracy", "runtime": "accuracy", "loss": "loss", "accuracy": "accuracy"}


def metric_rule(kind: str) -> MetricRule:
    """The sign rule for a metric kind: ``intrinsic`` → loss, ``extrinsic``/``runtime`` → accuracy."""
    try:
        return _RULE_OF_KIND[kind]  # type: ignore[return-value]
    except KeyError:
        raise LawFitError(f"unknown metric kind {kind!r}; use one of {', '.join(_RULE_OF_KIND)}") from None


def sign_violations(theta: dict[str, float], metric: str, terms: dict[str, tuple[str, int]]) -> list[str]:
    """Feasibility from signs. ``terms`` maps a parameter to (variable, direction of its
    base): ``{"beta": ("r", +1)}`` says β is the exponent of a term that grows with r."""
    rule = metric_rule(metric)
    out = []
    for name, (var, base) in terms.items():
        need = _DIRECTION[rule][var] * base
        value = theta[name]
        if value * need <= 0:
            moves = "rise" if value * base > 0 else ("fall" if value * base < 0 else "not change")
            what = "runtime" if metric == "runtime" else rule  # runtime takes the rule, not the name
            out.append(
                f"{name} = {value:.4g}: {what} would {moves} with {var} "
                f"({what if what == 'runtime' else what + '-like metrics'} need {name} {'>' if need > 0 else '<'} 0)"
            )
    return out


# --------------------------------------------------------------------------- third-party forms


def law_form(
    name: str,
    parameters: Sequence[LawParameter | str | tuple[Any, ...]],
    function: Callable[..., Any],
    *,
    formula: str = "",
    description: str = "",
    log_design: Callable[[Any, Any, Any], Any] | None = None,
    log_offset: Callable[[Any, Any, Any], Any] | None = None,
    signs: dict[str, tuple[str, int]] | None = None,
    options: type[Params] | None = None,
) -> LawForm:
    """A law form from a function and a parameter list, ready to ``register``.

    ``function(L0, r, D, **theta)`` returns the predicted metric (``options=`` is passed
    too when an ``options`` model is given). Parameters are :class:`LawParameter`, bare
    names, or ``(name, initial[, min, max])``. ``log_design(L0, r, D)`` (with optional
    ``log_offset``) makes the form log-linear so OLS can fit it; ``signs`` gives its
    feasibility rule as in :func:`sign_violations`::

        law_form("exp-law", [("a", 1.0), ("b", -1.0)], lambda L0, r, D, a, b: L0**a * np.exp(b * r))
    """
    params = tuple(_parameter(p) for p in parameters)
    if not params:
        raise ValueError(f"law form {name!r} needs at least one parameter")
    unknown = set(signs or ()) - {p.name for p in params}
    if unknown:
        raise ValueError(f"signs names parameters the form does not have: {sorted(unknown)}")

    def call_options(opts: Any) -> dict[str, Any]:
        return {"options": opts} if options is not None else {}

    def predict(self: LawForm, L0: Any, r: Any, D: Any, theta: dict[str, float], opts: Any) -> Any:
        return function(L0, r, D, **theta, **call_options(opts))

    attrs: dict[str, Any] = {
        "name": name,
        "description": description,
        "formula": formula or f"L = {getattr(function, '__name__', 'f')}(L0, r, D)",
        "parameters": params,
        "Params": options or NoParams,
        "log_linear": log_design is not None,
        "predict": predict,
        "feasibility": lambda self, theta, metric: sign_violations(theta, metric, signs or {}),
    }
    if log_design is not None:
        attrs["log_design"] = lambda self, L0, r, D, opts: log_design(L0, r, D, **call_options(opts))
    if log_offset is not None:
        attrs["log_offset"] = lambda self, L0, r, D, opts: log_offset(L0, r, D, **call_options(opts))
    cls = type(f"LawForm[{name}]", (LawForm,), attrs)
    return cls()


def _parameter(p: LawParameter | str | tuple[Any, ...]) -> LawParameter:
    if isinstance(p, LawParameter):
        return p
    if isinstance(p, str):
        return LawParameter(p, 0.0)
    return LawParameter(str(p[0]), *(float(v) for v in p[1:4]))


# --------------------------------------------------------------------------- the data

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
    where = _where(row)
    at = f"line {row['_line']}" if row.get("_line") else (f"row {i + 1}" if i is not None else "")
    return f"{at} ({where})" if at and where else (at or where)


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
        raise LawFitError(f"{position(row, i)}: {key} is missing")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise LawFitError(f"{position(row, i)}: {key} = {value!r} is not a number") from None


def _where(row: dict[str, Any]) -> str:
    keys = ("model", "method", "ratio", "D", "dataset")
    return ", ".join(f"{k}={row[k]:g}" if isinstance(row[k], float) else f"{k}={row[k]}"
                     for k in keys if row.get(k) not in (None, ""))


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
            raise LawFitError(f"{label} is NaN or infinite in {bad.size} row(s); first: "
                              f"{position(d.rows[i], i)}: {label} = {arr[i]}")
        bad = np.flatnonzero(~test(arr))
        if bad.size:
            i = int(bad[0])
            raise LawFitError(f"{label} must be {need}; {bad.size} row(s) break this, first: "
                              f"{position(d.rows[i], i)}: {label} = {arr[i]:g}")


# --------------------------------------------------------------------------- results


@dataclass
class ParamEstimate:
    name: str
    value: float
    stderr: float | None = None
    ci: tuple[float, float] | None = None  # t interval at LEVEL
    tvalue: float | None = None
    pvalue: float | None = None
    bootstrap_ci: tuple[float, float] | None = None  # percentile interval at LEVEL


@dataclass
class FitResult:
    """One fitted law: a form, a group of rows, a method. ``skipped`` says why there is
    no fit when the group could not give one."""

    form: str
    group: dict[str, str]
    method: str  # "ols" | "nls"
    metric_kind: str  # "intrinsic" | "extrinsic" | "runtime" | "loss" | "accuracy"
    law: str = ""  # the spec's label for the law
    formula: str = ""
    space: str = "log"
    ratio: str = "nominal"
    options: dict[str, Any] = field(default_factory=dict)
    params: list[ParamEstimate] = field(default_factory=list)
    n: int = 0
    dof: int = 0
    r2: float | None = None
    r2_adj: float | None = None
    r2_kind: str = ""  # "uncentred" | "centred"
    fstat: float | None = None
    f_pvalue: float | None = None
    aic: float | None = None
    bic: float | None = None
    redchi: float | None = None
    rmse: float | None = None  # in the metric's own units
    dependent: str = ""  # what the fit explained (log L, log L − log L0, L)
    feasibility: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: dict[str, list[Any]] = field(default_factory=dict)
    bootstrap: dict[str, Any] | None = None
    skipped: str | None = None
    _form: LawForm | None = field(default=None, repr=False, compare=False)
    _options: Any = field(default=None, repr=False, compare=False)

    @property
    def theta(self) -> dict[str, float]:
        return {p.name: p.value for p in self.params}

    @property
    def rule(self) -> MetricRule:
        return metric_rule(self.metric_kind)

    def __getitem__(self, name: str) -> ParamEstimate:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(f"{self.form} has no parameter {name!r}; it has {', '.join(self.theta)}")

    def draws(self) -> dict[str, list[float]] | None:
        """Bootstrap draws by parameter, or None without a bootstrap."""
        if not self.bootstrap or not self.bootstrap.get("draws"):
            return None
        names = [p.name for p in self.params]
        return {n: [d[i] for d in self.bootstrap["draws"]] for i, n in enumerate(names)}

    def predict(self, L0: Any, r: Any, D: Any) -> Any:
        """The fitted law's prediction for arrays (or numbers) L0, r, D."""
        if self._form is None:
            from lawlab.plugins import get_registry

            self._form = get_registry().get("law_forms", self.form)
            self._options = self._form.Params.model_validate(self.options)
        return self._form.predict(L0, r, D, self.theta, self._options)

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if not k.startswith("_")}
        out["params"] = [p.__dict__ for p in self.params]
        return _jsonable(out)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FitResult:
        d = dict(d)
        d["params"] = [
            ParamEstimate(**{**p, **{k: tuple(p[k]) for k in ("ci", "bootstrap_ci") if p.get(k)}})
            for p in d.get("params", [])
        ]
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def summary(self) -> str:
        """A plain-text table in the manner of statsmodels."""
        width = 86
        title = f"{self.form} — {self.method.upper()} ({self.space} space)"
        group = "pooled" if self.group.get("by") == "pooled" else f"{self.group.get('by')} = {self.group.get('value')}"
        lines = [title.center(width), "=" * width]
        if self.skipped:
            return "\n".join([*lines, f"Group: {group}", f"Not fitted: {self.skipped}", "=" * width])
        opts = ", ".join(f"{k}={v}" for k, v in self.options.items()) or "-"
        left = [f"Formula: {self.formula}", f"Group: {group}", f"Metric: {self.metric_kind} ({self.rule} sign rule)",
                f"Dependent: {self.dependent}", f"Options: {opts}", f"Ratio: {self.ratio}"]
        right = [f"Rows: {self.n}", f"Df resid: {self.dof}",
                 f"R² ({self.r2_kind}): {_fmt(self.r2)}", f"Adj. R² ({self.r2_kind}): {_fmt(self.r2_adj)}",
                 f"F: {_fmt(self.fstat)}  Prob(F): {_fmt(self.f_pvalue, '.3g')}",
                 f"AIC: {_fmt(self.aic)}  BIC: {_fmt(self.bic)}  red. χ²: {_fmt(self.redchi, '.3g')}"]
        lines += [f"{a:<52}{b}" for a, b in zip(left, right, strict=True)]
        lines.append("-" * width)
        lo, hi = f"[{(1 - LEVEL) / 2:.3f}", f"{1 - (1 - LEVEL) / 2:.3f}]"
        head = f"{'':<10}{'coef':>10}{'std err':>10}{'t':>8}{'P>|t|':>8}{lo:>10}{hi:>9}"
        if self.bootstrap:
            head += f"{'boot ' + lo:>15}{hi:>9}"
        lines.append(head)
        for p in self.params:
            ci = p.ci or (None, None)
            line = (f"{p.name:<10}{_fmt(p.value, '.4f'):>10}{_fmt(p.stderr, '.4f'):>10}{_fmt(p.tvalue, '.2f'):>8}"
                    f"{_fmt(p.pvalue, '.3f'):>8}{_fmt(ci[0], '.4f'):>10}{_fmt(ci[1], '.4f'):>9}")
            if self.bootstrap:
                b = p.bootstrap_ci or (None, None)
                line += f"{_fmt(b[0], '.4f'):>15}{_fmt(b[1], '.4f'):>9}"
            lines.append(line)
        lines.append("-" * width)
        lines.append("Feasibility: " + ("ok" if not self.feasibility else "VIOLATED — " + "; ".join(self.feasibility)))
        if self.bootstrap:
            b = self.bootstrap
            lines.append(f"Bootstrap: {b['n']} resamples of {b['resample']} (seed {b['seed']}), {b['failed']} failed")
        lines += [f"Note: {n}" for n in self.notes]
        lines.append("=" * width)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def _fmt(v: float | None, spec: str = ".4g") -> str:
    return "-" if v is None else format(v, spec)


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if hasattr(v, "tolist"):
        return _jsonable(v.tolist())
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


# --------------------------------------------------------------------------- the engines


def _offset(form: LawForm, d: LawData, opts: Any) -> Any:
    import numpy as np

    fn = getattr(form, "log_offset", None)
    value = None if fn is None else fn(d.L0, d.r, d.D, opts)
    return np.zeros(len(d)) if value is None else np.broadcast_to(np.asarray(value, float), (len(d),))


def _design(form: LawForm, d: LawData, opts: Any) -> Any:
    import numpy as np

    X = np.asarray(form.log_design(d.L0, d.r, d.D, opts), float).reshape(len(d), -1)
    names = [p.name for p in form.parameters]
    if X.shape[1] != len(names):
        raise LawFitError(f"{form.name}: log_design gave {X.shape[1]} columns for {len(names)} parameters")
    bad = np.flatnonzero(~np.isfinite(X).all(axis=1))
    if bad.size:
        i = int(bad[0])
        raise LawFitError(f"{form.name}: the log design is not finite in {bad.size} row(s); first: "
                          f"{position(d.rows[i], i)}")
    return X


def _inputs_of_columns(form: LawForm, opts: Any) -> list[set[str]]:
    """Which of L0, r, D each design column depends on (probed at two points per input)."""
    import numpy as np

    base = {"L0": 1.7, "r": 0.3, "D": 7.0}
    other = {"L0": 2.9, "r": 0.6, "D": 130.0}
    ref = np.asarray(form.log_design(*(np.array([base[k]]) for k in base), opts), float).reshape(-1)
    deps: list[set[str]] = [set() for _ in ref]
    for key in base:
        args = [np.array([other[k] if k == key else base[k]]) for k in base]
        moved = np.asarray(form.log_design(*args, opts), float).reshape(-1)
        for j in np.flatnonzero(~np.isclose(moved, ref, rtol=1e-9, atol=1e-12)):
            deps[j].add(key)
    return deps


def _check_identified(form: LawForm, d: LawData, X: Any, opts: Any, notes: list[str]) -> bool:
    """Raise when the rows cannot tell a parameter apart; return whether the design has a
    constant column (an intercept), which decides the R² convention."""
    import numpy as np

    names = [p.name for p in form.parameters]
    n, p = X.shape
    if n <= p:
        raise LawFitError(f"{form.name} has {p} parameters and needs more rows than that to estimate errors; "
                          f"got {n} row(s)")
    values = {"L0": d.L0, "r": d.r, "D": d.D}
    constant = [j for j in range(p) if np.ptp(X[:, j]) <= 1e-12 * max(1.0, np.abs(X[:, j]).max())]
    deps = _inputs_of_columns(form, opts)
    for j in constant:
        flat = sorted(v for v in deps[j] & {"r", "D"} if np.ptp(values[v]) == 0)
        if flat:
            var = flat[0]
            raise LawFitError(
                f"{names[j]} cannot be identified: every row has the same {var} ({values[var][0]:g}), so its "
                f"column of the design is constant and {names[j]} would only act as an intercept"
            )
        if deps[j] == {"L0"}:
            notes.append(f"L0 is the same in every row, so {names[j]}·log L0 acts as the intercept "
                         f"({names[j]} = intercept / log L0), as in the paper's per-model fits")
    rank = np.linalg.matrix_rank(X)
    if rank < p:
        _, _, vt = np.linalg.svd(X)
        tied = [names[j] for j in np.flatnonzero(np.abs(vt[-1]) > 1e-6)]
        raise LawFitError(f"the columns of {', '.join(tied)} are linearly dependent in these rows, so they cannot "
                          f"be told apart (rank {rank} < {p} parameters)")
    return bool(constant)


@dataclass
class _Estimate:
    theta: Any  # np.ndarray, parameters order
    stderr: Any  # np.ndarray or None
    resid: Any  # in the fit space
    z: Any  # the dependent in the fit space
    aic: float | None = None
    bic: float | None = None
    redchi: float | None = None


def _ols(X: Any, z: Any) -> _Estimate:
    import numpy as np

    theta, *_ = np.linalg.lstsq(X, z, rcond=None)
    resid = z - X @ theta
    n, p = X.shape
    s2 = resid @ resid / (n - p)
    cov = s2 * np.linalg.inv(X.T @ X)
    return _Estimate(theta, np.sqrt(np.diag(cov)), resid, z)


def _nls(form: LawForm, d: LawData, opts: Any, space: str, starts: Sequence[Any]) -> _Estimate:
    """lmfit least squares from each start; the lowest χ² wins."""
    import lmfit
    import numpy as np

    z = np.log(d.y) if space == "log" else d.y

    def residual(pars: lmfit.Parameters) -> Any:
        pred = np.asarray(form.predict(d.L0, d.r, d.D, pars.valuesdict(), opts), float)
        fitted = np.log(np.clip(pred, 1e-300, None)) if space == "log" else pred
        # A start far from the data can overflow; a large finite residual steers it back.
        return np.nan_to_num(z - fitted, nan=1e6, posinf=1e6, neginf=-1e6)

    best = None
    for start in starts:
        params = lmfit.Parameters()
        for spec, value in zip(form.parameters, start, strict=True):
            params.add(spec.name, value=float(np.clip(value, spec.min, spec.max)), min=spec.min, max=spec.max)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = lmfit.minimize(residual, params, method="leastsq")
        if best is None or result.chisqr < best.chisqr:
            best = result
    assert best is not None
    names = [p.name for p in form.parameters]
    theta = np.array([best.params[n].value for n in names])
    errs = [best.params[n].stderr for n in names]
    stderr = None if any(e is None or not np.isfinite(e) for e in errs) else np.array(errs, float)
    return _Estimate(theta, stderr, best.residual, z, best.aic, best.bic, best.redchi)


def _starts(form: LawForm, n_random: int, rng: Any, first: Sequence[Any] = ()) -> list[Any]:
    """The declared initial values, any given starts, then random ones inside the bounds."""
    import numpy as np

    out = [np.array([p.initial for p in form.parameters], float), *(np.asarray(s, float) for s in first)]
    for _ in range(n_random):
        point = []
        for p in form.parameters:
            if math.isfinite(p.min) and math.isfinite(p.max):
                # Bounds of laws are wide; draw near the initial value rather than anywhere.
                lo, hi = max(p.min, p.initial - 3), min(p.max, p.initial + 3)
                point.append(rng.uniform(lo, hi))
            else:
                point.append(float(np.clip(p.initial + rng.normal(0, max(1.0, abs(p.initial))), p.min, p.max)))
        out.append(np.array(point))
    return out


def _goodness(z: Any, resid: Any, p: int, centred: bool) -> dict[str, float | None]:
    from scipy import stats

    n = len(z)
    rss = float(resid @ resid)
    tss = float(((z - z.mean()) ** 2).sum()) if centred else float(z @ z)
    k_const = 1 if centred else 0
    r2 = 1 - rss / tss if tss > 0 else None
    out: dict[str, float | None] = {"r2": r2, "r2_adj": None, "fstat": None, "f_pvalue": None}
    if r2 is not None:
        out["r2_adj"] = 1 - (1 - r2) * (n - k_const) / (n - p)
        df_model = p - k_const
        if df_model > 0 and rss > 0:
            f = ((tss - rss) / df_model) / (rss / (n - p))
            out["fstat"], out["f_pvalue"] = f, float(stats.f.sf(f, df_model, n - p))
    out["aic"] = n * math.log(rss / n) + 2 * p if rss > 0 else None
    out["bic"] = n * math.log(rss / n) + math.log(n) * p if rss > 0 else None
    out["redchi"] = rss / (n - p)
    return out


def _estimate(form: LawForm, d: LawData, opts: Any, method: str, space: str, starts: Sequence[Any]) -> _Estimate:
    import numpy as np

    if method == "ols":
        X = _design(form, d, opts)
        if np.linalg.matrix_rank(X) < X.shape[1]:
            raise LawFitError("rank-deficient design")
        return _ols(X, np.log(d.y) - _offset(form, d, opts))
    return _nls(form, d, opts, space, starts)


# --------------------------------------------------------------------------- fit_law


def _resolve_form(form: LawForm | str, registry: Registry | None = None) -> LawForm:
    if isinstance(form, LawForm):
        return form
    if registry is None:
        from lawlab.plugins import get_registry

        registry = get_registry()
    try:
        return registry.get("law_forms", form)
    except KeyError as exc:
        raise LawFitError(exc.args[0]) from None


def fit_law(
    form: LawForm | str,
    rows: Sequence[dict[str, Any]],
    *,
    metric_kind: str,
    method: Literal["ols", "nls"] = "ols",
    space: Literal["log", "linear"] = "log",
    ratio: Literal["nominal", "effective"] = "nominal",
    options: Any = None,
    bootstrap: int = 0,
    resample: Literal["cells", "models"] = "cells",
    seed: int = 0,
    starts: int = 8,
    group: dict[str, str] | None = None,
) -> FitResult:
    """Fit one law form to the given rows (all of them: select with :func:`law_rows`).

    ``method="ols"`` is the paper's least squares in log space (log-linear forms only);
    ``"nls"`` is lmfit from the declared initial values, the OLS solution when there is
    one, and ``starts`` random points. ``bootstrap`` > 0 adds percentile intervals from
    that many refits on rows (``resample="cells"``) or whole models (``"models"``)
    drawn with replacement.
    """
    import numpy as np
    from scipy import stats

    form = _resolve_form(form)
    rule = metric_rule(metric_kind)
    if method not in ("ols", "nls"):
        raise LawFitError(f"method must be 'ols' or 'nls', not {method!r}")
    if space not in ("log", "linear"):
        raise LawFitError(f"space must be 'log' or 'linear', not {space!r}")
    if method == "ols" and not form.log_linear:
        raise LawFitError(f"{form.name} is not linear in log space; fit it with method='nls'")
    if method == "ols" and space != "log":
        raise LawFitError("OLS fits the law in log space only; use method='nls' for space='linear'")
    opts = options if isinstance(options, Params) else form.Params.model_validate(options or {})
    notes: list[str] = []
    d = law_data(rows, ratio, notes)
    p = len(form.parameters)
    if len(d) <= p:
        raise LawFitError(f"{form.name} has {p} parameters and needs more rows than that to estimate errors; "
                          f"got {len(d)} row(s)")
    rng = np.random.default_rng(seed)

    centred = True
    offset = np.zeros(len(d))
    if form.log_linear:
        X = _design(form, d, opts)
        centred = _check_identified(form, d, X, opts, notes)
        offset = _offset(form, d, opts)
    if method == "ols":
        est = _ols(X, np.log(d.y) - offset)
    else:
        first = [_ols(X, np.log(d.y) - offset).theta] if form.log_linear else []
        est = _nls(form, d, opts, space, _starts(form, starts, rng, first))
        if not form.log_linear or space == "linear":
            centred = True
        if est.stderr is None:
            notes.append("lmfit could not estimate the covariance: a parameter is not identified by these rows")
    if method == "nls" and space == "log":
        est.z = est.z - offset  # the same dependent as OLS, so R² and F agree between the two

    dof = len(d) - p
    gof = _goodness(est.z, est.resid, p, centred)
    tq = float(stats.t.ppf(1 - (1 - LEVEL) / 2, dof))
    names = [q.name for q in form.parameters]
    params = []
    for j, name in enumerate(names):
        value = float(est.theta[j])
        se = None if est.stderr is None else float(est.stderr[j])
        pe = ParamEstimate(name, value, se)
        if se is not None and se > 0:
            pe.ci = (value - tq * se, value + tq * se)
            pe.tvalue = value / se
            pe.pvalue = float(2 * stats.t.sf(abs(pe.tvalue), dof))
        params.append(pe)

    theta = dict(zip(names, (float(t) for t in est.theta), strict=True))
    predicted = np.asarray(form.predict(d.L0, d.r, d.D, theta, opts), float)
    has_offset = bool(np.any(offset))
    result = FitResult(
        form=form.name, group=group or {"by": "pooled", "value": "all"}, method=method, metric_kind=metric_kind,
        formula=form.formula, space=space, ratio=ratio, options=opts.model_dump(mode="json"), params=params,
        n=len(d), dof=dof, r2_kind="centred" if centred else "uncentred",
        rmse=float(np.sqrt(np.mean((d.y - predicted) ** 2))),
        dependent=("log L − offset" if has_offset else "log L") if space == "log" else "L",
        feasibility=form.feasibility(theta, rule), notes=notes,
        data={"model": d.models, "L0": d.L0, "r": d.r, "D": d.D, "value": d.y, "predicted": predicted,
              "residual": est.resid},
        _form=form, _options=opts,
    )
    for key in ("r2", "r2_adj", "fstat", "f_pvalue"):
        setattr(result, key, gof[key])
    # lmfit's own information criteria for NLS; the same formulas (n ln(RSS/n) + 2p) for OLS.
    result.aic = est.aic if est.aic is not None else gof["aic"]
    result.bic = est.bic if est.bic is not None else gof["bic"]
    result.redchi = est.redchi if est.redchi is not None else gof["redchi"]
    if bootstrap:
        _bootstrap(result, form, d, opts, method, space, bootstrap, resample, seed, est.theta)
    return result


def _bootstrap(res: FitResult, form: LawForm, d: LawData, opts: Any, method: str, space: str,
               n_boot: int, resample: str, seed: int, theta_hat: Any) -> None:
    import numpy as np

    rng = np.random.default_rng([seed, 1])
    if resample == "models":
        by_model: dict[str, list[int]] = {}
        for i, m in enumerate(d.models):
            by_model.setdefault(m, []).append(i)
        groups = list(by_model.values())
        if len(groups) < 3:
            raise LawFitError(f"resampling whole models needs at least 3 models; these rows have {len(groups)}")
    elif resample != "cells":
        raise LawFitError(f"resample must be 'cells' or 'models', not {resample!r}")
    draws, failed = [], 0
    for _ in range(n_boot):
        if resample == "models":
            idx = np.concatenate([groups[k] for k in rng.integers(0, len(groups), len(groups))])
        else:
            idx = rng.integers(0, len(d), len(d))
        try:
            est = _estimate(form, d.take(idx), opts, method, space, [theta_hat])
        except (LawFitError, np.linalg.LinAlgError):
            failed += 1  # e.g. a resample with every D equal
            continue
        draws.append(est.theta)
    if len(draws) < 2:
        res.notes.append(f"bootstrap: only {len(draws)} of {n_boot} resamples could be fitted; no intervals")
    else:
        arr = np.array(draws)
        lo, hi = np.quantile(arr, [(1 - LEVEL) / 2, 1 - (1 - LEVEL) / 2], axis=0)
        for j, pe in enumerate(res.params):
            pe.bootstrap_ci = (float(lo[j]), float(hi[j]))
    res.bootstrap = {"n": n_boot, "resample": resample, "seed": seed, "failed": failed,
                     "draws": [list(map(float, t)) for t in draws]}


# --------------------------------------------------------------------------- fit_study

GROUP_COLUMN = {"model": "model", "method": "method", "calibration": "calibration", "dataset": "dataset"}


def groups_of(rows: Sequence[dict[str, Any]], by: str) -> list[tuple[str, list[dict[str, Any]]]]:
    """(value, rows) for each value of the grouping column, sorted; pooled is one group."""
    if by == "pooled":
        return [("all", list(rows))]
    if by not in GROUP_COLUMN:
        raise LawFitError(f"cannot group by {by!r}; use pooled, {', '.join(GROUP_COLUMN)}")
    out: dict[str, list[dict[str, Any]]] = {}
    shared = []
    for r in rows:
        value = str(r.get(GROUP_COLUMN[by]) or "")
        # The unpruned model recovered with RFT (r = 0, no method) is every method's r = 0
        # point, so it joins each method's (and calibration's) group instead of its own.
        if not value and by in ("method", "calibration") and not (r.get("ratio") or 0):
            shared.append(r)
            continue
        out.setdefault(value, []).append(r)
    if shared:
        for members in out.values():
            members.extend(shared)
        if not out:
            out[""] = shared
    return sorted(out.items())


def fit_study(rows: Sequence[dict[str, Any]], laws: Sequence[LawEntry], registry: Registry, *,
              seed: int = 0) -> list[FitResult]:
    """Every law of a spec, for each of its groupings and group values and fit methods.
    A group that cannot be fitted gives a result with ``skipped`` set, never an exception."""
    results = []
    for law in laws:
        form = registry.get("law_forms", law.form)
        opts = form.Params.model_validate(law.params)
        selected = law_rows(rows, law.metric)
        methods = ["ols", "nls"] if law.fit == "both" else [law.fit]
        for by in law.group_by:
            for value, group_rows in groups_of(selected, by):
                for method in methods:
                    group = {"by": by, "value": value}
                    try:
                        space = law.space if method == "nls" else "log"  # OLS is always in log space
                        res = fit_law(form, group_rows, metric_kind=law.metric, method=method, space=space,
                                      ratio=law.ratio, options=opts, bootstrap=law.bootstrap, seed=seed, group=group,
                                      resample=getattr(law, "resample", "cells"))
                    except LawFitError as exc:
                        res = FitResult(form.name, group, method, law.metric, formula=form.formula,
                                        space=law.space if method == "nls" else "log", ratio=law.ratio,
                                        options=opts.model_dump(mode="json"), n=len(group_rows), skipped=str(exc))
                    res.law = law.key
                    results.append(res)
    return results


def print_fits(fits: Sequence[FitResult], console: Any) -> None:
    """Rich tables of fitted laws: coefficients ± standard errors and goodness of fit. One
    table with a law column when it fits the console; else one table per law under its
    label, so on a narrow terminal no name is cut inside a word."""
    from lawlab.terminal import narrowest_width

    table = _fits_table(fits, "fitted laws", with_law=True)
    if narrowest_width(table) <= console.width:
        console.print(table)
    else:
        labels = list(dict.fromkeys(f.law or f.form for f in fits))
        for label in labels:
            t = _fits_table([f for f in fits if (f.law or f.form) == label], f"fitted law {label}", with_law=False)
            if narrowest_width(t) > console.width:  # still too narrow: text folds, numbers stay whole
                for column in t.columns:
                    column.min_width = None
            console.print(t)
    if any(f.r2_kind == "uncentred" for f in fits):
        console.print("(u): uncentred R² of a regression through the origin, as statsmodels reports it")


def _fits_table(fits: Sequence[FitResult], title: str, *, with_law: bool) -> Any:
    """The fits as a table; without the law column (one law per table) it is narrower
    still: one fit method goes to the title and a group label may break after "by:"."""
    from rich.table import Table

    methods = {f.method for f in fits}
    one_method = not with_law and len(methods) == 1
    cols = ["law", "group", "fit", "n", "coefficients (± s.e.)", "adj. R²", "F", "feasible"]
    cols = [c for c in cols if (with_law or c != "law") and not (one_method and c == "fit")]
    t = Table(title=title + (f" ({methods.pop()})" if one_method else ""), title_justify="left")
    for col in cols:
        t.add_column(col, justify="right" if col in ("n", "adj. R²", "F") else "left")
    for f in fits:
        by = f.group.get("by")
        group = "pooled" if by == "pooled" else (f"{by}={f.group['value']}" if with_law else f"{by}: {f.group['value']}")
        lead = ([f.law or f.form] if with_law else []) + [group] + ([] if one_method else [f.method]) + [str(f.n)]
        if f.skipped:
            t.add_row(*lead, f"[dim]skipped: {f.skipped}[/dim]", "", "", "")
            continue
        coefs = "\n".join(f"{p.name} {p.value:.3f}" + (f" ± {p.stderr:.3f}" if p.stderr is not None else "")
                           for p in f.params)  # one per line: a coefficient and its error stay together
        adj = _fmt(f.r2_adj, ".3f") + (" (u)" if f.r2_kind == "uncentred" else "")
        t.add_row(*lead, coefs, adj, _fmt(f.fstat, ".4g"), "yes" if not f.feasibility else "[red]no[/red]")
    for column in t.columns:  # labels are never cut inside a word, coefficients never inside a line
        cells = [str(c) for c in column.cells if not str(c).startswith("[dim]")]
        if column.header in ("law", "group", "fit", "feasible"):
            column.min_width = max((len(w) for c in [column.header, *cells] for w in c.split()), default=None)
        elif column.header.startswith("coefficients"):
            column.min_width = max((len(line) for c in cells for line in c.splitlines()), default=None)
    return t


# --------------------------------------------------------------------------- comparing forms


@dataclass
class ComparisonRow:
    form: str
    method: str
    n_params: int
    fit: FitResult
    r2_centred_adj: float | None  # the same convention for every form, so rows compare
    cv: dict[str, dict[str, Any]]  # "leave-one-model-out" / "leave-one-ratio-out": rmse, folds, failed


@dataclass
class ComparisonTable:
    rows: list[ComparisonRow]
    rank_by: str
    metric_kind: str
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return _jsonable({
            "rank_by": self.rank_by, "metric_kind": self.metric_kind, "notes": self.notes,
            "rows": [{"rank": i + 1, "form": r.form, "method": r.method, "n_params": r.n_params,
                      "r2_adj": r.fit.r2_adj, "r2_kind": r.fit.r2_kind, "r2_centred_adj": r.r2_centred_adj,
                      "fstat": r.fit.fstat, "aic": r.fit.aic, "bic": r.fit.bic, "cv": r.cv,
                      "feasibility": r.fit.feasibility, "skipped": r.fit.skipped, "fit": r.fit.to_dict()}
                     for i, r in enumerate(self.rows)],
        })

    def summary(self) -> str:
        head = (f"{'#':>2} {'form':<20}{'fit':<5}{'k':>3}{'adj R²':>9}{'adj R²c':>9}{'F':>10}{'AIC':>10}{'BIC':>10}"
                f"{'LOMO rmse':>11}{'LORO rmse':>11}  feasible")
        lines = [f"law forms ranked by {self.rank_by} ({self.metric_kind})", head, "-" * len(head)]
        for i, r in enumerate(self.rows):
            f = r.fit
            if f.skipped:
                lines.append(f"{i + 1:>2} {r.form:<20}{r.method:<5}{r.n_params:>3}  not fitted: {f.skipped}")
                continue
            cv = [_fmt(r.cv[k].get("rmse"), ".4g") for k in CV_SCHEMES]
            lines.append(f"{i + 1:>2} {r.form:<20}{r.method:<5}{r.n_params:>3}{_fmt(f.r2_adj, '.4f'):>9}"
                         f"{_fmt(r.r2_centred_adj, '.4f'):>9}{_fmt(f.fstat, '.4g'):>10}{_fmt(f.aic, '.1f'):>10}"
                         f"{_fmt(f.bic, '.1f'):>10}{cv[0]:>11}{cv[1]:>11}  "
                         + ("yes" if not f.feasibility else "NO: " + "; ".join(f.feasibility)))
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


CV_SCHEMES = {"leave-one-model-out": "model", "leave-one-ratio-out": "ratio"}


def cross_validate(form: LawForm, rows: Sequence[dict[str, Any]], by: str, **fit_args: Any) -> dict[str, Any]:
    """Hold out each value of ``by`` (model or ratio) in turn, fit the rest, predict it.
    RMSE is in the metric's own units over every held-out row."""
    import numpy as np

    values = sorted({str(r.get(by)) for r in rows})
    if len(values) < 2:
        return {"rmse": None, "folds": 0, "failed": [], "reason": f"only one {by} in the data"}
    errors: list[float] = []
    failed: list[str] = []
    for v in values:
        train = [r for r in rows if str(r.get(by)) != v]
        test = [r for r in rows if str(r.get(by)) == v]
        try:
            fit = fit_law(form, train, **fit_args)
            d = law_data(test, fit_args.get("ratio", "nominal"))
        except LawFitError as exc:
            failed.append(f"{by}={v}: {exc}")
            continue
        errors.extend(d.y - np.asarray(fit.predict(d.L0, d.r, d.D), float))
    rmse = float(np.sqrt(np.mean(np.square(errors)))) if errors else None
    return {"rmse": rmse, "folds": len(values) - len(failed), "failed": failed}


def compare_forms(
    rows: Sequence[dict[str, Any]],
    forms: Sequence[LawForm | str],
    *,
    metric_kind: str,
    method: Literal["auto", "ols", "nls"] = "auto",
    space: Literal["log", "linear"] = "log",
    ratio: Literal["nominal", "effective"] = "nominal",
    options: dict[str, dict[str, Any]] | None = None,
    rank_by: Literal["leave-one-model-out", "leave-one-ratio-out", "aic", "bic"] = "leave-one-model-out",
    registry: Registry | None = None,
    seed: int = 0,
) -> ComparisonTable:
    """Every form on the same rows, ranked. ``method="auto"`` fits log-linear forms by
    OLS and the others by lmfit, all in the same residual space (log unless told), so
    AIC and BIC compare. Forms that cannot be fitted rank last with the reason."""
    import numpy as np

    table_rows = []
    notes = []
    for f in forms:
        form = _resolve_form(f, registry)
        m = method if method != "auto" else ("ols" if form.log_linear and space == "log" else "nls")
        args = dict(metric_kind=metric_kind, method=m, space=space, ratio=ratio,
                    options=(options or {}).get(form.name), seed=seed)
        try:
            fit = fit_law(form, rows, **args)
        except LawFitError as exc:
            fit = FitResult(form.name, {"by": "pooled", "value": "all"}, m, metric_kind, formula=form.formula,
                            n=len(rows), skipped=str(exc))
            table_rows.append(ComparisonRow(form.name, m, len(form.parameters), fit, None, {}))
            continue
        z = np.asarray(fit.data["residual"], float)
        dep = _dependent(fit, form)
        r2c = _goodness(dep, z, len(form.parameters), True)["r2_adj"]
        cv = {name: cross_validate(form, rows, by, **args) for name, by in CV_SCHEMES.items()}
        table_rows.append(ComparisonRow(form.name, m, len(form.parameters), fit, r2c, cv))
    if len({r.fit.dependent for r in table_rows if not r.fit.skipped}) > 1:
        notes.append("forms explain different dependents (log L vs log L − log L0): compare AIC/BIC and "
                     "the cross-validated RMSE (in the metric's units), not R² or F")

    def key(r: ComparisonRow) -> tuple[int, float]:
        if r.fit.skipped:
            return (2, 0.0)
        v = r.cv[rank_by].get("rmse") if rank_by in CV_SCHEMES else getattr(r.fit, rank_by)
        return (0, v) if v is not None else (1, 0.0)

    table_rows.sort(key=key)
    return ComparisonTable(table_rows, rank_by, metric_kind, notes)


def _dependent(fit: FitResult, form: LawForm) -> Any:
    """The fit's dependent variable, rebuilt from its data."""
    import numpy as np

    y = np.asarray(fit.data["value"], float)
    if fit.space == "linear":
        return y
    d = LawData(*(np.asarray(fit.data[k], float) for k in ("L0", "r", "D", "value")), fit.data["model"], [])
    return np.log(y) - _offset(form, d, fit._options)


# --------------------------------------------------------------------------- simulation


def simulate(
    form: LawForm | str,
    theta: dict[str, float],
    *,
    models: dict[str, float],
    ratios: Sequence[float] = (0.1, 0.3, 0.5, 0.7, 0.9),
    sizes: Sequence[float] = (0, 1000, 4000, 25000),
    noise: float = 0.0,
    noise_space: Literal["log", "linear"] = "log",
    kind: str = "extrinsic",
    options: dict[str, Any] | None = None,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Rows drawn from a law with known coefficients: one per (model, r, D), ``models``
    mapping each model to its L0, with Gaussian noise of sd ``noise`` on log L or on L.
    For testing fits and for planning how many cells a study needs."""
    import numpy as np

    form = _resolve_form(form)
    opts = form.Params.model_validate(options or {})
    rng = np.random.default_rng(seed)
    rows = []
    for model, L0 in models.items():
        for r in ratios:
            for D in sizes:
                value = float(form.predict(np.array([L0]), np.array([r]), np.array([D]), theta, opts)[0])
                e = rng.normal(0, noise)
                value = value * math.exp(e) if noise_space == "log" else value + e
                rows.append({"model": model, "family": model, "method": "simulated", "calibration": "free",
                             "ratio": r, "ratio_effective": r, "rft_dataset": "sim" if D else "", "D": D,
                             "evaluator": "simulated", "kind": kind, "metric": "simulated", "dataset": "sim",
                             "value": value, "L0": L0, "law_input": True})
    return rows
