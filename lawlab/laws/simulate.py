"""Simulated results from a known law, for tests and for checking a fit recovers its truth."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from lawlab.api import LawForm
from lawlab.laws.forms import resolve_form

if TYPE_CHECKING:  # pragma: no cover
    pass


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
    quant: Mapping[str, float] | None = None,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Rows drawn from a law with known coefficients: one per (model, r, D), ``models``
    mapping each model to its L0, with Gaussian noise of sd ``noise`` on log L or on L.
    ``quant`` maps quantisation settings (labels) to their declared ratio q: each (model,
    r, D) is then drawn in float weights and in every setting, as a hybrid pipeline
    makes them. For testing fits and for planning how many cells a study needs."""
    import numpy as np

    form = resolve_form(form)
    opts = form.Params.model_validate(options or {})
    rng = np.random.default_rng(seed)
    settings = {"": 0.0, **quant} if quant else {"": 0.0}
    rows = []
    for model, L0 in models.items():
        for label, q in settings.items():
            known = {"q": np.array([q]), "quant": np.array([label], dtype=object)}
            extra = {"columns": {n: known[n] for n in form.needs}} if form.needs else {}
            for r in ratios:
                for D in sizes:
                    value = float(form.predict(np.array([L0]), np.array([r]), np.array([D]), theta, opts,
                                               **extra)[0])
                    e = rng.normal(0, noise)
                    value = value * math.exp(e) if noise_space == "log" else value + e
                    row = {"model": model, "family": model, "method": "simulated", "calibration": "free",
                           "ratio": r, "ratio_effective": r, "rft_dataset": "sim" if D else "", "D": D,
                           "evaluator": "simulated", "kind": kind, "metric": "simulated", "dataset": "sim",
                           "value": value, "L0": L0, "law_input": True}
                    if quant:
                        row.update(method=f"simulated+{label}" if label else "simulated", quant=label,
                                   quant_ratio=q)
                    rows.append(row)
    return rows
