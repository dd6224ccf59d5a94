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

Importing this module is cheap: numpy, scipy and lmfit load when a fit runs. The estimators
are in :mod:`lawlab.laws.engines`, the results object in :mod:`lawlab.laws.results`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from lawlab.api import LawForm, Params
from lawlab.laws.data import LawData, law_data, law_rows
from lawlab.laws.engines import (
    check_identified,
    design_matrix,
    estimate,
    goodness,
    log_offset,
    nls,
    ols,
    predict_on,
    starting_points,
)
from lawlab.laws.forms import LEVEL, LawFitError, metric_rule, resolve_form
from lawlab.laws.results import FitResult, ParamEstimate, fmt_num

if TYPE_CHECKING:  # pragma: no cover
    from lawlab.registry import Registry
    from lawlab.spec.models import LawEntry

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
    max_nfev: int | None = None,
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
    ``max_nfev`` caps lmfit's function evaluations per start (its default otherwise); a fit
    that stops before converging says so in ``converged`` and its notes.
    """
    import numpy as np

    form = resolve_form(form)
    rule = metric_rule(metric_kind)
    _check_options(form, method, space, cov)
    opts = options if isinstance(options, Params) else form.Params.model_validate(options or {})
    notes: list[str] = []
    d = law_data(rows, ratio, notes, form.needs)
    form = form.for_data(d.columns)
    p = len(form.parameters)
    if len(d) <= p:
        raise LawFitError(f"{form.name} has {p} parameters and needs more rows than that to estimate errors; "
                          f"got {len(d)} row(s)")
    clusters = _clusters(d, p, notes) if cov == "cluster" else None
    rng = np.random.default_rng(seed)

    centred = True
    offset = np.zeros(len(d))
    if form.log_linear:
        X = design_matrix(form, d, opts)
        centred = check_identified(form, d, X, opts, notes)
        offset = log_offset(form, d, opts)
    if method == "ols":
        est = ols(X, np.log(d.y) - offset, clusters)
        _propagate_l0_noise(form, d, opts, est, rng, notes)
    else:
        first = [ols(X, np.log(d.y) - offset).theta] if form.log_linear else []
        est = nls(form, d, opts, space, starting_points(form, starts, rng, first), max_nfev)
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
    gof = goodness(est.z, est.resid, p, centred)
    df_t = est.df if est.df is not None and (est.cov_type == "cluster" or method == "ols") else dof
    names = [q.name for q in form.parameters]
    params = _estimates(names, est, df_t)

    theta = dict(zip(names, (float(t) for t in est.theta), strict=True))
    predicted = np.asarray(predict_on(form, d, theta, opts), float)
    has_offset = bool(np.any(offset))
    result = FitResult(
        form=form.name, group=group or {"by": "pooled", "value": "all"}, method=method, metric_kind=metric_kind,
        formula=form.formula, space=space, ratio=ratio, options=opts.model_dump(mode="json"), params=params,
        n=len(d), dof=dof, r2_kind="centred" if centred else "uncentred",
        rmse=float(np.sqrt(np.mean((d.y - predicted) ** 2))),
        dependent=("log L − offset" if has_offset else "log L") if space == "log" else "L",
        feasibility=form.feasibility(theta, rule), notes=notes,
        data={"model": d.models, "L0": d.L0, "r": d.r, "D": d.D, "value": d.y, "predicted": predicted,
              "residual": est.resid, **d.columns},
        cov_type=est.cov_type if method == "ols" else "iid", n_clusters=est.n_clusters, df_inference=df_t,
        converged=est.success, _form=form, _options=opts,
    )
    centred_fit = goodness(est.z, est.resid, p, True)
    result.r2_centred, result.r2_centred_adj = centred_fit["r2"], centred_fit["r2_adj"]
    result.r2_beyond_L0 = _r2_beyond_L0(d, predicted)
    if heldout:
        # imported here: compare fits with fit_law
        from lawlab.laws.compare import CV_SCHEMES, cross_validate, held_out_scheme

        scheme = held_out_scheme(rows)

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


def _check_options(form: LawForm, method: str, space: str, cov: str) -> None:
    if method not in ("ols", "nls"):
        raise LawFitError(f"method must be 'ols' or 'nls', not {method!r}")
    if space not in ("log", "linear"):
        raise LawFitError(f"space must be 'log' or 'linear', not {space!r}")
    if method == "ols" and not form.log_linear:
        raise LawFitError(f"{form.name} is not linear in log space; fit it with method='nls'")
    if method == "ols" and space != "log":
        raise LawFitError("OLS fits the law in log space only; use method='nls' for space='linear'")
    if cov not in ("cluster", "iid"):
        raise LawFitError(f"cov must be 'cluster' or 'iid', not {cov!r}")


L0_DRAWS = 400  # redraws of the measured L0s whose spread is added to the OLS covariance


def _propagate_l0_noise(form: LawForm, d: LawData, opts: Any, est: Any, rng: Any, notes: list[str]) -> None:
    """Every cell of a model divides by (or regresses on) the same measured L0, so L0's own
    measurement error moves all of them together and no residual shows it. Where rows carry
    L0's relative standard error (``L0_rel_se``: the analysis records it from the unpruned
    cell's stderr), redraw each distinct L0 as L0·(1 + δ), δ ~ N(0, se), refit, and add the
    variance of the estimates across draws to the (cluster-robust) variance."""
    import numpy as np

    se = np.array([float(r.get("L0_rel_se") or 0.0) for r in d.rows])
    if not np.any(se > 0) or est.stderr is None:
        return
    keys = np.unique(np.column_stack([np.array(d.models, dtype=object), d.L0.astype(object)]).astype(str), axis=0,
                     return_inverse=True)[1].ravel()  # one draw per measured L0 (a model's series)
    draws = []
    for _ in range(L0_DRAWS):
        delta = rng.normal(0.0, 1.0, keys.max() + 1)[keys] * se
        moved = LawData(d.L0 * (1 + delta), d.r, d.D, d.y, d.models, d.rows, d.columns)
        X = design_matrix(form, moved, opts)
        z = np.log(d.y) - log_offset(form, moved, opts)
        draws.append(np.linalg.lstsq(X, z, rcond=None)[0])
    extra = np.var(np.asarray(draws), axis=0, ddof=1)
    before = np.asarray(est.stderr, float)
    est.stderr = np.sqrt(before**2 + extra)
    names = [q.name for q in form.parameters]
    grown = ", ".join(f"{n} ×{a / b:.2f}" for n, a, b in zip(names, est.stderr, before, strict=True) if b > 0)
    notes.append(f"intervals include the measurement noise of L0 (relative se {np.min(se[se > 0]):.2g}-"
                 f"{np.max(se):.2g}), propagated by {L0_DRAWS} redraws: standard errors {grown}")


def _estimates(names: Sequence[str], est: Any, df: float) -> list[ParamEstimate]:
    """Each parameter with its standard error, t interval at LEVEL and two-sided t test on df."""
    from scipy import stats

    tq = float(stats.t.ppf(1 - (1 - LEVEL) / 2, df))
    params = []
    for j, name in enumerate(names):
        value = float(est.theta[j])
        se = None if est.stderr is None else float(est.stderr[j])
        pe = ParamEstimate(name, value, se)
        if se is not None and se > 0:
            pe.ci = (value - tq * se, value + tq * se)
            pe.tvalue = value / se
            pe.pvalue = float(2 * stats.t.sf(abs(pe.tvalue), df))
        params.append(pe)
    return params


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
            est = estimate(form, d.take(idx), opts, method, space, [theta_hat])
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
        selected = law_rows(rows, law.metric, form.axes)
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
    still: one fit method goes to the title, and a group label may break at its spaces."""
    from rich.table import Table

    methods = {f.method for f in fits}
    one_method = not with_law and len(methods) == 1
    cols = ["law", "group", "fit", "n", "coefficients (± s.e.)", "adj. R²", "F", "feasible"]
    cols = [c for c in cols if (with_law or c != "law") and not (one_method and c == "fit")]
    t = Table(title=title + (f" ({methods.pop()})" if one_method else ""), title_justify="left")
    for col in cols:
        t.add_column(col, justify="right" if col in ("n", "adj. R²", "F") else "left")
    for f in fits:
        lead = ([f.law or f.form] if with_law else []) + [f.group_label] + ([] if one_method else [f.method]) + [str(f.n)]
        if f.skipped:
            t.add_row(*lead, f"[dim]skipped: {f.skipped}[/dim]", "", "", "")
            continue
        coefs = "\n".join(f"{p.name} {p.value:.3f}" + (f" ± {p.stderr:.3f}" if p.stderr is not None else "")
                           for p in f.params)  # one per line: a coefficient and its error stay together
        adj = fmt_num(f.r2_adj, ".3f") + (" (u)" if f.r2_kind == "uncentred" else "")
        t.add_row(*lead, coefs, adj, fmt_num(f.fstat, ".4g"), "yes" if not f.feasibility else "[red]no[/red]")
    for column in t.columns:  # labels are never cut inside a word, coefficients never inside a line
        cells = [str(c) for c in column.cells if not str(c).startswith("[dim]")]
        if column.header in ("law", "group", "fit", "feasible"):
            column.min_width = max((len(w) for c in [column.header, *cells] for w in c.split()), default=None)
        elif column.header.startswith("coefficients"):
            column.min_width = max((len(line) for c in cells for line in c.splitlines()), default=None)
    return t
