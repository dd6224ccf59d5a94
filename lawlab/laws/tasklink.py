"""Accuracy in two steps, through task loss: compression → task loss → accuracy.

Bhagia et al. 2024 (*Establishing Task Scaling Laws via Compute-Efficient Model Ladders*,
OLMo) predict a task's accuracy from compute in two steps: a power law for the task loss
(the negative log-likelihood of the right answer), then a sigmoid from task loss to
accuracy, ``acc = b + a / (1 + exp(k (loss - x0)))``. Task loss is measured on every
question and is far less noisy than 0/1 accuracy, so a law fitted on it, carried through
the link, can predict accuracy better than a law fitted on accuracy itself. Here the first
step is a compression law (any law form) fitted on an lm-eval cell's ``task_loss``; the
two routes, and "no change" (accuracy = the unpruned model's), are compared by held-out
error: each model held out in turn where there are several, else each ratio.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Link:
    """A fitted sigmoid ``acc = b + a / (1 + exp(k (loss - x0)))`` (k > 0: accuracy falls
    as task loss rises); ``skipped`` says why there is none."""

    a: float = math.nan
    b: float = math.nan
    k: float = math.nan
    x0: float = math.nan
    rmse: float = math.nan  # in-sample, accuracy units
    n: int = 0
    skipped: str | None = None

    def predict(self, loss: Any) -> Any:
        import numpy as np

        z = np.clip(self.k * (np.asarray(loss, float) - self.x0), -60, 60)
        return self.b + self.a / (1 + np.exp(z))

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Link:
        return cls(**d)

    def summary(self) -> str:
        if self.skipped:
            return f"task loss -> accuracy link: not fitted ({self.skipped})"
        return (f"acc = {self.b:.4g} + {self.a:.4g} / (1 + exp({self.k:.4g} (loss - {self.x0:.4g})))"
                f"  [n = {self.n}, RMSE {self.rmse:.4g}]")


def fit_link(loss: Sequence[float], acc: Sequence[float]) -> Link:
    """Least-squares sigmoid from task loss to accuracy, from several starting points
    (the best is kept); needs at least 5 points."""
    import numpy as np
    from scipy.optimize import OptimizeWarning, curve_fit

    x, y = np.asarray(loss, float), np.asarray(acc, float)
    if len(x) < 5:
        return Link(n=len(x), skipped=f"{len(x)} points; a sigmoid needs at least 5")
    if np.ptp(x) <= 0:
        return Link(n=len(x), skipped="every point has the same task loss")

    def f(v: Any, a: float, b: float, k: float, x0: float) -> Any:
        return b + a / (1 + np.exp(np.clip(k * (v - x0), -60, 60)))

    best: tuple[float, Any] | None = None
    spread = float(np.ptp(x))
    for k0 in (1.0, 4.0, 16.0):
        for x0 in np.quantile(x, [0.25, 0.5, 0.75]):
            start = [max(float(np.ptp(y)), 1e-3), float(y.min()), k0 / spread, float(x0)]
            try:
                with warnings.catch_warnings():  # the covariance is not used: its warning says nothing here
                    warnings.simplefilter("ignore", OptimizeWarning)
                    theta, _ = curve_fit(f, x, y, p0=start, bounds=([0, -1, 0, -np.inf], [2, 1, np.inf, np.inf]),
                                         maxfev=20000)
            except (RuntimeError, ValueError):  # no convergence from this start: try the next
                continue
            sse = float(np.sum((f(x, *theta) - y) ** 2))
            if best is None or sse < best[0]:
                best = (sse, theta)
    if best is None:
        return Link(n=len(x), skipped="the sigmoid did not converge from any start")
    sse, (a, b, k, x0) = best
    return Link(float(a), float(b), float(k), float(x0), math.sqrt(sse / len(x)), len(x))


@dataclass(frozen=True)
class TwoStepComparison:
    """Held-out accuracy error of three routes, fold by fold (``by`` held out in turn):
    ``two_step`` (law on task loss, then the link), ``direct`` (the law on accuracy) and
    ``null`` (no change: the unpruned model's accuracy)."""

    by: str
    rmse: dict[str, float | None]
    folds: list[dict[str, Any]] = field(default_factory=list)
    n: int = 0
    skipped: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def summary(self) -> str:
        if self.skipped:
            return f"two-step accuracy: not compared ({self.skipped})"
        parts = ", ".join(f"{k} {v:.4g}" if v is not None else f"{k} -" for k, v in self.rmse.items())
        return f"held-out accuracy RMSE, leave one {self.by} out, {self.n} points: {parts}"


def _cells(rows: Sequence[dict[str, Any]], metric: str, dataset: str) -> dict[str, dict[str, Any]]:
    return {r["cell_key"]: r for r in rows if r.get("metric") == metric and r.get("dataset") == dataset
            and r.get("value") is not None and r.get("L0") is not None}


def compare_two_step(
    rows: Sequence[dict[str, Any]],
    form: str,
    dataset: str,
    *,
    accuracy: str = "accuracy",
    loss: str = "task_loss",
    by: str | None = None,
) -> TwoStepComparison:
    """Compare, by held-out error, accuracy predicted through task loss with the law fitted
    on accuracy directly. ``rows`` are the tidy rows (``lawlab.store.load_table``);
    ``dataset`` the series both metrics share (``mean5``, ``piqa``...); ``form`` a
    registered law form; ``by`` ``model`` or ``ratio`` (default: model when there are
    several)."""
    import numpy as np

    from lawlab.laws.data import is_base, law_data
    from lawlab.laws.fit import fit_law
    from lawlab.laws.forms import LawFitError

    acc, tl = _cells(rows, accuracy, dataset), _cells(rows, loss, dataset)
    keys = [k for k in acc if k in tl]
    if not keys:
        return TwoStepComparison(by or "model", {}, skipped=f"no cell has both {accuracy} and {loss} on {dataset}")
    by = by or ("model" if len({acc[k]["model"] for k in keys}) > 1 else "ratio")
    pruned = [k for k in keys if not is_base(acc[k])]
    errors: dict[str, list[float]] = {"two_step": [], "direct": [], "null": []}
    folds = []
    for held in sorted({str(acc[k][by]) for k in pruned}):
        train = [k for k in keys if str(acc[k][by]) != held]
        test = [k for k in pruned if str(acc[k][by]) == held]
        train_pruned = [k for k in train if not is_base(acc[k])]
        link = fit_link([tl[k]["value"] for k in train], [acc[k]["value"] for k in train])
        try:
            on_loss = fit_law(form, [tl[k] for k in train_pruned], metric_kind="intrinsic")
            on_acc = fit_law(form, [acc[k] for k in train_pruned], metric_kind="extrinsic")
        except LawFitError as exc:
            folds.append({by: held, "skipped": str(exc)})
            continue
        if link.skipped or on_loss.skipped or on_acc.skipped:
            folds.append({by: held, "skipped": str(link.skipped or on_loss.skipped or on_acc.skipped)})
            continue
        d_loss, d_acc = law_data([tl[k] for k in test]), law_data([acc[k] for k in test])
        truth = np.asarray(d_acc.y, float)
        predicted = {
            "two_step": link.predict(on_loss.predict(d_loss.L0, d_loss.r, d_loss.D)),
            "direct": np.asarray(on_acc.predict(d_acc.L0, d_acc.r, d_acc.D), float),
            "null": np.asarray(d_acc.L0, float),
        }
        fold: dict[str, Any] = {by: held, "n": len(test)}
        for route, p in predicted.items():
            errors[route].extend((p - truth).tolist())
            fold[route] = float(np.sqrt(np.mean((p - truth) ** 2)))
        folds.append(fold)
    n = len(errors["null"])
    if not n:
        why = next((f["skipped"] for f in folds if "skipped" in f), "no pruned cell")
        return TwoStepComparison(by, {}, folds, skipped=f"no {by} could be held out: {why}")
    rmse: dict[str, float | None] = {route: float(np.sqrt(np.mean(np.square(e)))) for route, e in errors.items()}
    return TwoStepComparison(by, rmse, folds, n)
