"""Comparing law forms on the same rows: information criteria and cross-validated error,
ranked in one :class:`ComparisonTable`."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from lawlab.api import LawForm
from lawlab.laws.data import LawData, is_quantised, law_data
from lawlab.laws.engines import goodness, log_offset
from lawlab.laws.fit import fit_law
from lawlab.laws.forms import LawFitError, compared_forms, resolve_form
from lawlab.laws.results import FitResult, fmt_num, jsonable

if TYPE_CHECKING:  # pragma: no cover
    from lawlab.registry import Registry
    from lawlab.spec.models import LawEntry


@dataclass
class ComparisonRow:
    form: str
    method: str
    n_params: int
    fit: FitResult
    r2_centred_adj: float | None  # the same convention for every form, so rows compare
    cv: dict[str, dict[str, Any]]  # by scheme (CV_SCHEMES): rmse, folds, failed


@dataclass
class ComparisonTable:
    rows: list[ComparisonRow]
    rank_by: str
    metric_kind: str
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return jsonable({
            "rank_by": self.rank_by, "metric_kind": self.metric_kind, "notes": self.notes,
            "rows": [{"rank": i + 1, "form": r.form, "method": r.method, "n_params": r.n_params,
                      "r2_adj": r.fit.r2_adj, "r2_kind": r.fit.r2_kind, "r2_centred_adj": r.r2_centred_adj,
                      "fstat": r.fit.fstat, "aic": r.fit.aic, "bic": r.fit.bic, "cv": r.cv,
                      "feasibility": r.fit.feasibility, "skipped": r.fit.skipped, "fit": r.fit.to_dict()}
                     for i, r in enumerate(self.rows)],
        })

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ComparisonTable:
        rows = [ComparisonRow(r["form"], r["method"], r["n_params"], FitResult.from_dict(r["fit"]),
                              r.get("r2_centred_adj"), r.get("cv", {})) for r in d["rows"]]
        return cls(rows, d["rank_by"], d["metric_kind"], list(d.get("notes", [])))

    def summary(self) -> str:
        w = max([20, *(len(r.form) + 1 for r in self.rows)])  # a long name keeps a space before its fit
        head = (f"{'#':>2} {'form':<{w}}{'fit':<5}{'k':>3}{'adj R²':>9}{'adj R²c':>9}{'F':>10}{'AIC':>10}{'BIC':>10}"
                + "".join(f"{SCHEME_SHORT[k] + ' rmse':>11}" for k in CV_SCHEMES) + "  feasible")
        lines = [f"law forms ranked by {self.rank_by} ({self.metric_kind})", head, "-" * len(head)]
        for i, r in enumerate(self.rows):
            f = r.fit
            if f.skipped:
                lines.append(f"{i + 1:>2} {r.form:<{w}}{r.method:<5}{r.n_params:>3}  not fitted: {f.skipped}")
                continue
            cv = "".join(f"{fmt_num(r.cv.get(k, {}).get('rmse'), '.4g'):>11}" for k in CV_SCHEMES)
            lines.append(f"{i + 1:>2} {r.form:<{w}}{r.method:<5}{r.n_params:>3}{fmt_num(f.r2_adj, '.4f'):>9}"
                         f"{fmt_num(r.r2_centred_adj, '.4f'):>9}{fmt_num(f.fstat, '.4g'):>10}{fmt_num(f.aic, '.1f'):>10}"
                         f"{fmt_num(f.bic, '.1f'):>10}{cv}  "
                         + ("yes" if not f.feasibility else "NO: " + "; ".join(f.feasibility)))
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


# Each scheme holds out every row sharing one value of these columns (an axis setting is a
# pruning ratio with a quantisation setting, "" for float weights), fits the rest, predicts them.
CV_SCHEMES: dict[str, tuple[str, ...]] = {
    "leave-one-model-out": ("model",), "leave-one-ratio-out": ("ratio",),
    "leave-one-axis-setting-out": ("ratio", "quant"),
}
SCHEME_SHORT = {"leave-one-model-out": "LOMO", "leave-one-ratio-out": "LORO", "leave-one-axis-setting-out": "LOASO"}
RankBy = Literal["leave-one-model-out", "leave-one-ratio-out", "leave-one-axis-setting-out", "aic", "bic"]


def _fold(row: dict[str, Any], by: tuple[str, ...]) -> str:
    """The fold a row belongs to: its value of one column, or ``ratio=0.3, quant=w8`` for several."""
    if len(by) == 1:
        return str(row.get(by[0]))
    return ", ".join(f"{k}={row.get(k) or ('float' if k == 'quant' else row.get(k))}" for k in by)


def cross_validate(form: LawForm, rows: Sequence[dict[str, Any]], by: str | tuple[str, ...],
                   **fit_args: Any) -> dict[str, Any]:
    """Hold out each value of ``by`` (a column, or a tuple of them: one combination of their
    values) in turn, fit the rest, predict it. RMSE is in the metric's own units over every
    held-out row. Without quantised rows, leave-one-axis-setting-out would repeat
    leave-one-ratio-out fold for fold, so it is not run."""
    import numpy as np

    by = (by,) if isinstance(by, str) else by
    if "quant" in by and not any(is_quantised(r) for r in rows):
        return {"rmse": None, "folds": 0, "failed": [], "reason": "no quantised rows (the folds of leave-one-ratio-out)"}
    values = sorted({_fold(r, by) for r in rows})
    if len(values) < 2:
        return {"rmse": None, "folds": 0, "failed": [], "reason": f"only one {' × '.join(by)} in the data"}
    fit_args = {**fit_args, "heldout": False}
    errors: list[Any] = []
    per_fold: dict[str, dict[str, float]] = {}
    failed: list[str] = []
    for v in values:
        train = [r for r in rows if _fold(r, by) != v]
        test = [r for r in rows if _fold(r, by) == v]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the nominal-ratio notice, said once by the full fit
                fit = fit_law(form, train, **fit_args)
                d = law_data(test, fit_args.get("ratio", "nominal"), needs=form.needs)
                pred = np.asarray(fit.predict(d.L0, d.r, d.D, d.columns), float)
        except LawFitError as exc:
            failed.append(f"{v if len(by) > 1 else by[0] + '=' + v}: {exc}")
            continue
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
    rank_by: RankBy = "leave-one-model-out",
    registry: Registry | None = None,
    seed: int = 0,
) -> ComparisonTable:
    """Every form on the same rows, ranked. ``method="auto"`` fits log-linear forms by
    OLS and the others by lmfit, all in the same residual space (log unless told), so
    AIC and BIC compare. Forms that cannot be fitted rank last with the reason; among them
    a form of float weights given quantised rows (it does not declare the axis)."""
    import numpy as np

    table_rows = []
    notes = []
    quantised = sum(is_quantised(r) for r in rows)
    for f in forms:
        form = resolve_form(f, registry)
        m = method if method != "auto" else ("ols" if form.log_linear and space == "log" else "nls")
        args = dict(metric_kind=metric_kind, method=m, space=space, ratio=ratio,
                    options=(options or {}).get(form.name), seed=seed)
        try:
            if quantised and "quant" not in form.axes:
                raise LawFitError(f"{quantised} of the rows are quantised and {form.name} describes float "
                                  "weights only (it does not declare the quantisation axis)")
            fit = fit_law(form, rows, heldout=False, **args)
        except LawFitError as exc:
            fit = FitResult(form.name, {"by": "pooled", "value": "all"}, m, metric_kind, formula=form.formula,
                            n=len(rows), skipped=str(exc))
            table_rows.append(ComparisonRow(form.name, m, len(form.parameters), fit, None, {}))
            continue
        z = np.asarray(fit.data["residual"], float)
        dep = _dependent(fit, form)
        r2c = goodness(dep, z, len(fit.params), True)["r2_adj"]
        cv = {name: cross_validate(form, rows, by, **args) for name, by in CV_SCHEMES.items()}
        scheme = held_out_scheme(rows)
        fit.heldout = {"scheme": scheme, **cv[scheme]}
        table_rows.append(ComparisonRow(form.name, m, len(fit.params), fit, r2c, cv))
    if len({r.fit.dependent for r in table_rows if not r.fit.skipped}) > 1:
        notes.append("forms explain different dependents (log L vs log L − log L0): compare AIC/BIC and "
                     "the cross-validated RMSE (in the metric's units), not R² or F")

    def key(r: ComparisonRow) -> tuple[int, float]:
        if r.fit.skipped:
            return (2, 0.0)
        v = r.cv.get(rank_by, {}).get("rmse") if rank_by in CV_SCHEMES else getattr(r.fit, rank_by)
        return (0, v) if v is not None else (1, 0.0)

    table_rows.sort(key=key)
    return ComparisonTable(table_rows, rank_by, metric_kind, notes)


def _dependent(fit: FitResult, form: LawForm) -> Any:
    """The fit's dependent variable, rebuilt from its data."""
    import numpy as np

    y = np.asarray(fit.data["value"], float)
    if fit.space == "linear":
        return y
    d = LawData(*(np.asarray(fit.data[k], float) for k in ("L0", "r", "D", "value")), fit.data["model"], [],
                {n: np.asarray(fit.data[n]) for n in form.needs})
    return np.log(y) - log_offset(form, d, fit._options)




def held_out_scheme(rows: Sequence[dict[str, Any]]) -> RankBy:
    """How a law is judged out of sample: leave one model out where there are models enough,
    else leave one axis setting out where rows are quantised, else leave one ratio out."""
    if len({str(r.get("model")) for r in rows}) >= 2:
        return "leave-one-model-out"
    return "leave-one-axis-setting-out" if any(is_quantised(r) for r in rows) else "leave-one-ratio-out"


def compare_study(rows: Sequence[dict[str, Any]], laws: Sequence[LawEntry], registry: Registry, *,
                  seed: int = 0) -> dict[str, ComparisonTable]:
    """The one form comparison of a study, per metric kind with data: the spec's forms for that
    kind and every registered form that describes it, with the spec's options, on the same
    rows, ranked by held-out error (:func:`held_out_scheme`)."""
    from lawlab.laws.data import law_rows

    out = {}
    for kind in ("intrinsic", "extrinsic", "runtime"):
        mine = [law for law in laws if law.metric == kind]
        options = {law.form: law.params for law in mine}
        ratio = mine[0].ratio if mine else "nominal"
        # float variants: the spec's forms and every float form; where the study quantised,
        # all its variants again under the forms that declare the quantisation axis
        for key, axes in ((kind, ()), (across_axes(kind), ("quant",))):
            selected = [r for r in law_rows(rows, kind, axes) if r.get("value") is not None and r.get("L0") is not None]
            if not selected or (axes and not any(is_quantised(r) for r in selected)):
                continue
            spec_forms = [law.form for law in mine if set(_axes_of(registry, law.form)) == set(axes)]
            names = list(dict.fromkeys(spec_forms + compared_forms(kind, registry, axes)))
            forms = [registry.get("law_forms", n) for n in names if registry.has("law_forms", n)]
            if forms:
                out[key] = compare_forms(selected, forms, metric_kind=kind, ratio=ratio, options=options,
                                         registry=registry, rank_by=held_out_scheme(selected), seed=seed)
    return out


def across_axes(kind: str) -> str:
    """The key of a study's comparison of the cross-axis forms on every variant of ``kind``,
    quantised ones included (beside ``kind``, the float variants' comparison)."""
    return f"{kind}-across-axes"


def _axes_of(registry: Registry, form: str) -> tuple[str, ...]:
    return tuple(registry.get("law_forms", form).axes) if registry.has("law_forms", form) else ()
