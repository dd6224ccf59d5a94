"""A fitted law as a results object (:class:`FitResult`, one :class:`ParamEstimate` per
parameter), statsmodels-shaped: it carries its own numbers, text summary and JSON form."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lawlab.api import LawForm
from lawlab.files import jsonable
from lawlab.laws.forms import LEVEL, MetricRule, metric_rule

if TYPE_CHECKING:  # pragma: no cover
    pass


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
    def group_label(self) -> str:
        """The group as every table, summary and command prints it: "pooled" or "model = x"."""
        by = self.group.get("by")
        return "pooled" if by == "pooled" else f"{by} = {self.group.get('value')}"

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

    def predict(self, L0: Any, r: Any, D: Any, columns: dict[str, Any] | None = None) -> Any:
        """The fitted law's prediction for arrays (or numbers) L0, r, D, and the further
        ``columns`` a form across axes needs (:attr:`lawlab.api.LawForm.needs`)."""
        if self._form is None:
            from lawlab.registry import get_registry

            self._form = get_registry().get("law_forms", self.form)
            self._options = self._form.Params.model_validate(self.options)
        extra = {"columns": columns or {}} if self._form.needs else {}
        return self._form.predict(L0, r, D, self.theta, self._options, **extra)

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if not k.startswith("_")}
        out["params"] = [p.__dict__ for p in self.params]
        return jsonable(out)

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
        group = self.group_label
        lines = [title.center(width), "=" * width]
        if self.skipped:
            return "\n".join([*lines, f"Group: {group}", f"Not fitted: {self.skipped}", "=" * width])
        opts = ", ".join(f"{k}={v}" for k, v in self.options.items()) or "-"
        left = [f"Formula: {self.formula}", f"Group: {group}", f"Metric: {self.metric_kind} ({self.rule} sign rule)",
                f"Dependent: {self.dependent}", f"Options: {opts}", f"Ratio: {self.ratio}"]
        right = [f"Rows: {self.n}", f"Df resid: {self.dof}",
                 f"R² ({self.r2_kind}): {fmt_num(self.r2)}", f"Adj. R² ({self.r2_kind}): {fmt_num(self.r2_adj)}",
                 f"F: {fmt_num(self.fstat)}  Prob(F): {fmt_num(self.f_pvalue, '.3g')}",
                 f"AIC: {fmt_num(self.aic)}  BIC: {fmt_num(self.bic)}  red. χ²: {fmt_num(self.redchi, '.3g')}"]
        lines += [f"{a:<52}{b}" for a, b in zip(left, right, strict=True)]
        lines.append("-" * width)
        lo, hi = f"[{(1 - LEVEL) / 2:.3f}", f"{1 - (1 - LEVEL) / 2:.3f}]"
        head = f"{'':<10}{'coef':>10}{'std err':>10}{'t':>8}{'P>|t|':>8}{lo:>10}{hi:>9}"
        if self.bootstrap:
            head += f"{'boot ' + lo:>15}{hi:>9}"
        lines.append(head)
        for p in self.params:
            ci = p.ci or (None, None)
            line = (f"{p.name:<10}{fmt_num(p.value, '.4f'):>10}{fmt_num(p.stderr, '.4f'):>10}{fmt_num(p.tvalue, '.2f'):>8}"
                    f"{fmt_num(p.pvalue, '.3f'):>8}{fmt_num(ci[0], '.4f'):>10}{fmt_num(ci[1], '.4f'):>9}")
            if self.bootstrap:
                b = p.bootstrap_ci or (None, None)
                line += f"{fmt_num(b[0], '.4f'):>15}{fmt_num(b[1], '.4f'):>9}"
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


def fmt_num(v: float | None, spec: str = ".4g") -> str:
    return "-" if v is None else format(v, spec)
