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
    """The rows a law of ``kind`` describes: that kind, ``law_input``, not a base row, and
    float weights (a quantised variant is a point of the cross-axis laws, not of f(r, D))."""
    return [
        r for r in rows
        if (kind is None or r.get("kind") == kind) and r.get("law_input", True) and not is_base(r)
        and not r.get("quant")
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
        raise LawFitError(f"row {i} ({_where(row)}): {key} is missing")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise LawFitError(f"row {i} ({_where(row)}): {key} = {value!r} is not a number") from None


def _where(row: dict[str, Any]) -> str:
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
                              f"({_where(d.rows[i])}): {label} = {arr[i]}")
        bad = np.flatnonzero(~test(arr))
        if bad.size:
            i = int(bad[0])
            raise LawFitError(f"{label} must be {need}; {bad.size} row(s) break this, first: row {i} "
                              f"({_where(d.rows[i])}): {label} = {arr[i]:g}")


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
    cov_type: str = "iid"  # "cluster": cluster-robust (CR1) intervals, "iid": classical ones
    n_clusters: int | None = None
    df_inference: float | None = None  # degrees of freedom of the t intervals and tests
    converged: bool = True  # the optimiser's verdict (NLS); a fit that did not converge says so
    r2_centred: float | None = None  # against the mean of the dependent, whatever the design
    r2_centred_adj: float | None = None
    r2_beyond_L0: float | None = None  # 1 − RSS / Σ log²(L/L0): what the law explains beyond "no change"
    heldout: dict[str, Any] | None = None  # held-out error of the law and of "no change" (L = L0)
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
        raise LawFitError(f"{form.name}: the log design is not finite in {bad.size} row(s); first: row {i} "
                          f"({_where(d.rows[i])})")
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
    df: float | None = None  # degrees of freedom of the t intervals
    cov_type: str = "iid"
    n_clusters: int | None = None
    success: bool = True  # the optimiser's own verdict (lmfit), always True for OLS
    message: str = ""


def _ols(X: Any, z: Any, clusters: Sequence[str] | None = None) -> _Estimate:
    """Ordinary least squares by statsmodels, with the iid covariance or, given cluster labels,
    the cluster-robust one (CR1: statsmodels' small-sample correction G/(G−1)·(N−1)/(N−K),
    and t intervals on G − 1 degrees of freedom)."""
    import numpy as np
    import statsmodels.api as sm

    res = sm.OLS(z, X).fit()
    est = _Estimate(np.asarray(res.params), np.asarray(res.bse), np.asarray(res.resid), z, df=float(res.df_resid))
    if clusters is not None:
        groups = np.unique(np.asarray(clusters), return_inverse=True)[1]
        rob = res.get_robustcov_results(cov_type="cluster", groups=groups, use_correction=True,
                                        df_correction=True, use_t=True)
        est.stderr, est.cov_type = np.asarray(rob.bse), "cluster"
        est.n_clusters, est.df = int(groups.max()) + 1, float(rob.df_resid_inference)
    return est


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
        # A start that wanders off overflows numpy; its warnings say nothing the verdict below
        # does not, so they are kept with the start rather than shown.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = lmfit.minimize(residual, params, method="leastsq")
        result.lawlab_warnings = sorted({str(w.message) for w in caught})
        # A start that converged beats one that stopped early, whatever their χ².
        if best is None or (result.success, -result.chisqr) > (best.success, -best.chisqr):
            best = result
    assert best is not None
    names = [p.name for p in form.parameters]
    theta = np.array([best.params[n].value for n in names])
    errs = [best.params[n].stderr for n in names]
    stderr = None if any(e is None or not np.isfinite(e) for e in errs) else np.array(errs, float)
    if not best.errorbars:
        stderr = None
    message = str(best.message or "")
    if best.lawlab_warnings:
        message += " (numerical warnings: " + "; ".join(best.lawlab_warnings)[:300] + ")"
    return _Estimate(theta, stderr, best.residual, z, best.aic, best.bic, best.redchi, df=float(best.nfree),
                     success=bool(best.success), message=message)


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


def cluster_of(row: dict[str, Any]) -> str:
    """The cluster a result row belongs to: one pruned model (model, method, r, seed), whose
    D cells share it. Rows without a seed column share the study's one seed."""
    ratio = row.get("ratio")
    r = f"{float(ratio):g}" if ratio not in (None, "") else ""
    return "|".join((str(row.get("model") or ""), str(row.get("method") or ""), r, str(row.get("seed") or "")))


def _clusters(d: LawData, p: int, notes: list[str]) -> list[str] | None:
    labels = [cluster_of(r) for r in d.rows]
    g = len(set(labels))
    if g == len(labels):
        notes.append("no two rows share a pruned model (model, method, r, seed), so the intervals are iid")
        return None
    if g <= p + 1:
        notes.append(f"only {g} clusters (pruned models) for {p} parameters: too few for a cluster-robust interval, "
                     "so the intervals are iid and too narrow")
        return None
    return labels


def _r2_beyond_L0(d: LawData, predicted: Any) -> float | None:
    import numpy as np

    if np.any(predicted <= 0):
        return None
    null = np.log(d.y / d.L0)
    tss = float(null @ null)
    rss = float(np.sum((np.log(d.y) - np.log(predicted)) ** 2))
    return 1 - rss / tss if tss > 0 else None


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
    resample: Literal["cells", "clusters", "models"] = "cells",
    seed: int = 0,
    starts: int = 8,
    group: dict[str, str] | None = None,
    cov: Literal["cluster", "iid"] = "cluster",
    heldout: bool = True,
) -> FitResult:
    """Fit one law form to the given rows (all of them: select with :func:`law_rows`).

    ``method="ols"`` is the paper's least squares in log space (log-linear forms only);
    ``"nls"`` is lmfit from the declared initial values, the OLS solution when there is
    one, and ``starts`` random points. ``bootstrap`` > 0 adds percentile intervals from
    that many refits on rows (``resample="cells"``) or whole models (``"models"``)
    drawn with replacement.

    ``cov="cluster"`` (the default) gives OLS intervals that are robust to the study's
    clusters: the rows of one pruned model (model, method, r, seed; its D cells) share it,
    so they are not independent evidence. Where no cluster holds two rows, or there are no
    more clusters than parameters, the iid interval is used and a note says why.
    ``heldout`` adds the law's held-out error beside that of "no change" (L = L0):
    leave-one-model-out with two models or more, else leave-one-ratio-out.
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
    if cov not in ("cluster", "iid"):
        raise LawFitError(f"cov must be 'cluster' or 'iid', not {cov!r}")
    clusters = _clusters(d, p, notes) if cov == "cluster" else None
    rng = np.random.default_rng(seed)

    centred = True
    offset = np.zeros(len(d))
    if form.log_linear:
        X = _design(form, d, opts)
        centred = _check_identified(form, d, X, opts, notes)
        offset = _offset(form, d, opts)
    if method == "ols":
        est = _ols(X, np.log(d.y) - offset, clusters)
    else:
        first = [_ols(X, np.log(d.y) - offset).theta] if form.log_linear else []
        est = _nls(form, d, opts, space, _starts(form, starts, rng, first))
        if not form.log_linear or space == "linear":
            centred = True
        if est.stderr is None:
            notes.append("lmfit could not estimate the covariance: a parameter is not identified by these rows")
        if not est.success:
            notes.append(f"the nonlinear fit did not converge: {est.message}")
        if clusters is not None:
            notes.append("nonlinear fits give iid intervals; fit by OLS (or bootstrap with resample = 'clusters') "
                         "for intervals that respect the clusters")
    if method == "nls" and space == "log":
        est.z = est.z - offset  # the same dependent as OLS, so R² and F agree between the two

    dof = len(d) - p
    gof = _goodness(est.z, est.resid, p, centred)
    df_t = est.df if est.df is not None and (est.cov_type == "cluster" or method == "ols") else dof
    tq = float(stats.t.ppf(1 - (1 - LEVEL) / 2, df_t))
    names = [q.name for q in form.parameters]
    params = []
    for j, name in enumerate(names):
        value = float(est.theta[j])
        se = None if est.stderr is None else float(est.stderr[j])
        pe = ParamEstimate(name, value, se)
        if se is not None and se > 0:
            pe.ci = (value - tq * se, value + tq * se)
            pe.tvalue = value / se
            pe.pvalue = float(2 * stats.t.sf(abs(pe.tvalue), df_t))
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
        cov_type=est.cov_type if method == "ols" else "iid", n_clusters=est.n_clusters, df_inference=df_t,
        converged=est.success, _form=form, _options=opts,
    )
    centred_fit = _goodness(est.z, est.resid, p, True)
    result.r2_centred, result.r2_centred_adj = centred_fit["r2"], centred_fit["r2_adj"]
    result.r2_beyond_L0 = _r2_beyond_L0(d, predicted)
    if heldout:
        scheme = "leave-one-model-out" if len(set(d.models)) >= 2 else "leave-one-ratio-out"
        result.heldout = {"scheme": scheme, **cross_validate(
            form, rows, CV_SCHEMES[scheme], metric_kind=metric_kind, method=method, space=space, ratio=ratio,
            options=opts, seed=seed, starts=starts, cov="iid")}
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
    if resample in ("models", "clusters"):
        by_unit: dict[str, list[int]] = {}
        units = d.models if resample == "models" else [cluster_of(r) for r in d.rows]
        for i, m in enumerate(units):
            by_unit.setdefault(m, []).append(i)
        groups = list(by_unit.values())
        if len(groups) < 3:
            raise LawFitError(f"resampling whole {resample} needs at least 3 of them; these rows have {len(groups)}")
    elif resample != "cells":
        raise LawFitError(f"resample must be 'cells', 'clusters' or 'models', not {resample!r}")
    draws, failed = [], 0
    for _ in range(n_boot):
        if resample in ("models", "clusters"):
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
                                      resample=law.resample, cov=law.interval)
                    except LawFitError as exc:
                        res = FitResult(form.name, group, method, law.metric, formula=form.formula,
                                        space=law.space if method == "nls" else "log", ratio=law.ratio,
                                        options=opts.model_dump(mode="json"), n=len(group_rows), skipped=str(exc))
                    res.law = law.key
                    results.append(res)
    return results


def print_fits(fits: Sequence[FitResult], console: Any) -> None:
    """One rich table of fitted laws: coefficients ± standard errors and goodness of fit."""
    from rich.table import Table

    t = Table(title="fitted laws", title_justify="left")
    for col in ("law", "group", "fit", "n", "coefficients (± s.e.)", "adj. R²", "F", "feasible"):
        t.add_column(col, justify="right" if col in ("n", "adj. R²", "F") else "left")
    for f in fits:
        group = "pooled" if f.group.get("by") == "pooled" else f"{f.group['by']}={f.group['value']}"
        if f.skipped:
            t.add_row(f.law or f.form, group, f.method, str(f.n), f"[dim]skipped: {f.skipped}[/dim]", "", "", "")
            continue
        coefs = "  ".join(f"{p.name} {p.value:.3f}" + (f" ± {p.stderr:.3f}" if p.stderr is not None else "")
                          for p in f.params)
        adj = _fmt(f.r2_adj, ".3f") + (" (u)" if f.r2_kind == "uncentred" else "")
        t.add_row(f.law or f.form, group, f.method, str(f.n), coefs, adj, _fmt(f.fstat, ".4g"),
                  "yes" if not f.feasibility else "[red]no[/red]")
    console.print(t)
    if any(f.r2_kind == "uncentred" for f in fits):
        console.print("(u): uncentred R² of a regression through the origin, as statsmodels reports it")


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
    fit_args = {**fit_args, "heldout": False}
    errors: list[Any] = []
    per_fold: dict[str, dict[str, float]] = {}
    failed: list[str] = []
    for v in values:
        train = [r for r in rows if str(r.get(by)) != v]
        test = [r for r in rows if str(r.get(by)) == v]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the nominal-ratio notice, said once by the full fit
                fit = fit_law(form, train, **fit_args)
                d = law_data(test, fit_args.get("ratio", "nominal"))
        except LawFitError as exc:
            failed.append(f"{by}={v}: {exc}")
            continue
        pred = np.asarray(fit.predict(d.L0, d.r, d.D), float)
        log_err = np.log(d.y) - np.log(np.clip(pred, 1e-300, None))
        e = np.column_stack([d.y - pred, log_err, d.y - d.L0, np.log(d.y / d.L0)])
        errors.append(e)
        rms = np.sqrt(np.mean(e**2, axis=0))
        per_fold[v] = {"n": len(d), "rmse_log": float(rms[1]), "null_rmse_log": float(rms[3])}
    if not errors:
        return {"rmse": None, "folds": 0, "failed": failed}
    rms = np.sqrt(np.mean(np.concatenate(errors) ** 2, axis=0))
    return {"rmse": float(rms[0]), "rmse_log": float(rms[1]), "null_rmse": float(rms[2]),
            "null_rmse_log": float(rms[3]), "beats_null": bool(rms[1] < rms[3]), "folds": len(per_fold),
            "failed": failed, "per_fold": per_fold}


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
            fit = fit_law(form, rows, heldout=False, **args)
        except LawFitError as exc:
            fit = FitResult(form.name, {"by": "pooled", "value": "all"}, m, metric_kind, formula=form.formula,
                            n=len(rows), skipped=str(exc))
            table_rows.append(ComparisonRow(form.name, m, len(form.parameters), fit, None, {}))
            continue
        z = np.asarray(fit.data["residual"], float)
        dep = _dependent(fit, form)
        r2c = _goodness(dep, z, len(form.parameters), True)["r2_adj"]
        cv = {name: cross_validate(form, rows, by, **args) for name, by in CV_SCHEMES.items()}
        scheme = "leave-one-model-out" if len({str(r.get("model")) for r in rows}) >= 2 else "leave-one-ratio-out"
        fit.heldout = {"scheme": scheme, **cv[scheme]}
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
