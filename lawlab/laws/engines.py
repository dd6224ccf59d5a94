"""The estimators behind :func:`lawlab.laws.fit.fit_law`: the design matrix, OLS in log
space, NLS (lmfit) from several starts, and goodness of fit."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lawlab.api import LawForm
from lawlab.laws.data import LawData, position
from lawlab.laws.forms import LawFitError

if TYPE_CHECKING:  # pragma: no cover
    pass


def extra(form: LawForm, columns: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword a form that needs per-row columns takes (:attr:`LawForm.needs`), else nothing."""
    return {"columns": columns} if form.needs else {}


def predict_on(form: LawForm, d: LawData, theta: dict[str, float], opts: Any) -> Any:
    """The form's prediction for the rows of ``d``."""
    return form.predict(d.L0, d.r, d.D, theta, opts, **extra(form, d.columns))


def log_offset(form: LawForm, d: LawData, opts: Any) -> Any:
    import numpy as np

    # a form that keeps the base method has no offset (and need not take ``columns`` there)
    overridden = type(form).log_offset is not LawForm.log_offset
    value = form.log_offset(d.L0, d.r, d.D, opts, **extra(form, d.columns)) if overridden else None
    return np.zeros(len(d)) if value is None else np.broadcast_to(np.asarray(value, float), (len(d),))


def design_matrix(form: LawForm, d: LawData, opts: Any) -> Any:
    import numpy as np

    X = np.asarray(form.log_design(d.L0, d.r, d.D, opts, **extra(form, d.columns)), float).reshape(len(d), -1)
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
    """Which of L0, r, D (and the numeric columns the form needs) each design column depends
    on (probed at two points per input)."""
    import numpy as np

    base = {"L0": 1.7, "r": 0.3, "D": 7.0, **{n: 0.2 for n in form.needs}}
    other = {"L0": 2.9, "r": 0.6, "D": 130.0, **{n: 0.5 for n in form.needs}}

    def design(point: dict[str, float]) -> Any:
        L0, r, D = (np.array([point[k]]) for k in ("L0", "r", "D"))
        cols = {n: np.array([point[n]]) for n in form.needs}
        return np.asarray(form.log_design(L0, r, D, opts, **extra(form, cols)), float).reshape(-1)

    ref = design(base)
    deps: list[set[str]] = [set() for _ in ref]
    for key in base:
        moved = design({k: other[k] if k == key else base[k] for k in base})
        for j in np.flatnonzero(~np.isclose(moved, ref, rtol=1e-9, atol=1e-12)):
            deps[j].add(key)
    return deps


def check_identified(form: LawForm, d: LawData, X: Any, opts: Any, notes: list[str]) -> bool:
    """Raise when the rows cannot tell a parameter apart; return whether the design has a
    constant column (an intercept), which decides the R² convention."""
    import numpy as np

    names = [p.name for p in form.parameters]
    n, p = X.shape
    if n <= p:
        raise LawFitError(f"{form.name} has {p} parameters and needs more rows than that to estimate errors; "
                          f"got {n} row(s)")
    values = {"L0": d.L0, "r": d.r, "D": d.D, **d.columns}
    constant = [j for j in range(p) if np.ptp(X[:, j]) <= 1e-12 * max(1.0, np.abs(X[:, j]).max())]
    deps = _inputs_of_columns(form, opts)
    for j in constant:
        flat = sorted(v for v in deps[j] - {"L0"} if np.ptp(values[v]) == 0)
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
class Estimate:
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


def ols(X: Any, z: Any, clusters: Sequence[str] | None = None) -> Estimate:
    """Ordinary least squares by statsmodels, with the iid covariance or, given cluster labels,
    the cluster-robust one (CR1: statsmodels' small-sample correction G/(G−1)·(N−1)/(N−K),
    and t intervals on G − 1 degrees of freedom)."""
    import numpy as np
    import statsmodels.api as sm

    res = sm.OLS(z, X).fit()
    est = Estimate(np.asarray(res.params), np.asarray(res.bse), np.asarray(res.resid), z, df=float(res.df_resid))
    if clusters is not None:
        groups = np.unique(np.asarray(clusters), return_inverse=True)[1]
        rob = res.get_robustcov_results(cov_type="cluster", groups=groups, use_correction=True,
                                        df_correction=True, use_t=True)
        est.stderr, est.cov_type = np.asarray(rob.bse), "cluster"
        est.n_clusters, est.df = int(groups.max()) + 1, float(rob.df_resid_inference)
    return est


def nls(form: LawForm, d: LawData, opts: Any, space: str, starts: Sequence[Any],
        max_nfev: int | None = None) -> Estimate:
    """lmfit least squares from each start; the lowest χ² wins."""
    import lmfit
    import numpy as np

    z = np.log(d.y) if space == "log" else d.y

    def residual(pars: lmfit.Parameters) -> Any:
        pred = np.asarray(predict_on(form, d, pars.valuesdict(), opts), float)
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
            result = lmfit.minimize(residual, params, method="leastsq", max_nfev=max_nfev)
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
    return Estimate(theta, stderr, best.residual, z, best.aic, best.bic, best.redchi, df=float(best.nfree),
                     success=bool(best.success), message=message)


def starting_points(form: LawForm, n_random: int, rng: Any, first: Sequence[Any] = ()) -> list[Any]:
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


def goodness(z: Any, resid: Any, p: int, centred: bool) -> dict[str, float | None]:
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


def estimate(form: LawForm, d: LawData, opts: Any, method: str, space: str, starts: Sequence[Any]) -> Estimate:
    import numpy as np

    if method == "ols":
        X = design_matrix(form, d, opts)
        if np.linalg.matrix_rank(X) < X.shape[1]:
            raise LawFitError("rank-deficient design")
        return ols(X, np.log(d.y) - log_offset(form, d, opts))
    return nls(form, d, opts, space, starts)


