"""Built-in law forms: the paper's compression law, its two ablations, the runtime law,
the form from the authors' talk, and three forms across compression axes (eq. 1 with an
exponent per axis, effective parameters, the P² law), which take quantised variants too.

Every form works on arrays of (L0, r, D). D is the number of RFT samples as the results
table records it; ``d_unit`` rescales it before it enters the law (1000: thousands).
numpy is imported inside the methods so that loading the registry stays fast.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import Field

from lawlab import hookimpl
from lawlab.api import LawForm, LawParameter, Params
from lawlab.laws.forms import sign_violations

_UNIT = "Divide D (RFT samples) by this before it enters the law: 1 keeps samples, 1000 uses thousands."


class RFTOptions(Params):
    epsilon: float = Field(1.0, gt=0, description="ε in 1/(D+ε): keeps the no-RFT case (D = 0) finite; the paper uses 1.")
    d_unit: float = Field(1.0, gt=0, description=_UNIT)


def _d(D: Any, options: Any) -> Any:
    return D / options.d_unit


class CompressionLaw(LawForm):
    name: ClassVar[str] = "compression-law"
    role: ClassVar[Literal["law", "alternative"]] = "law"
    description: ClassVar[str] = "The paper's eq. 1: base performance, compression ratio and RFT size."
    formula: ClassVar[str] = "L = L0^α · (1+r)^β · (1 + 1/(D+ε))^γ"
    Params: ClassVar[type[Params]] = RFTOptions
    parameters: ClassVar[tuple[LawParameter, ...]] = (
        LawParameter("alpha", 1.0, -5.0, 5.0, "exponent of the base model's performance L0"),
        LawParameter("beta", 0.0, -20.0, 20.0, "exponent of (1+r): > 0 for loss, < 0 for accuracy"),
        LawParameter("gamma", 0.0, -20.0, 20.0, "exponent of the RFT term: > 0 for loss, < 0 for accuracy"),
    )
    log_linear: ClassVar[bool] = True

    def predict(self, L0: Any, r: Any, D: Any, theta: dict[str, float], options: Any) -> Any:
        import numpy as np

        rft = 1 + 1 / (_d(np.asarray(D, float), options) + options.epsilon)
        return np.asarray(L0, float) ** theta["alpha"] * (1 + np.asarray(r, float)) ** theta["beta"] * rft ** theta["gamma"]

    def log_design(self, L0: Any, r: Any, D: Any, options: Any) -> Any:
        import numpy as np

        rft = np.log1p(1 / (_d(np.asarray(D, float), options) + options.epsilon))
        return np.column_stack([np.log(L0), np.log1p(r), rft])

    def feasibility(self, theta: dict[str, float], metric: str) -> list[str]:
        return sign_violations(theta, metric, {"beta": ("r", 1), "gamma": ("D", -1)})


class AblationR(LawForm):
    name: ClassVar[str] = "ablation-r"
    kinds: ClassVar[tuple[str, ...]] = ("intrinsic", "extrinsic", "runtime")  # eq. 2's pooled shape too
    description: ClassVar[str] = (
        "The paper's eq. 2 (no RFT term). On runtime rows, pooled, it is the paper's Fig. 6 law S = S0^α (1+r)^β."
    )
    formula: ClassVar[str] = "L = L0^α · (1+r)^β"
    parameters: ClassVar[tuple[LawParameter, ...]] = CompressionLaw.parameters[:2]
    log_linear: ClassVar[bool] = True

    def predict(self, L0: Any, r: Any, D: Any, theta: dict[str, float], options: Any) -> Any:
        import numpy as np

        return np.asarray(L0, float) ** theta["alpha"] * (1 + np.asarray(r, float)) ** theta["beta"]

    def log_design(self, L0: Any, r: Any, D: Any, options: Any) -> Any:
        import numpy as np

        return np.column_stack([np.log(L0), np.log1p(r)])

    def feasibility(self, theta: dict[str, float], metric: str) -> list[str]:
        return sign_violations(theta, metric, {"beta": ("r", 1)})


class AblationD(LawForm):
    name: ClassVar[str] = "ablation-d"
    description: ClassVar[str] = "The paper's eq. 3 (no compression-ratio term)."
    formula: ClassVar[str] = "L = L0^α · (1 + 1/(D+ε))^γ"
    Params: ClassVar[type[Params]] = RFTOptions
    parameters: ClassVar[tuple[LawParameter, ...]] = (CompressionLaw.parameters[0], CompressionLaw.parameters[2])
    log_linear: ClassVar[bool] = True

    def predict(self, L0: Any, r: Any, D: Any, theta: dict[str, float], options: Any) -> Any:
        import numpy as np

        rft = 1 + 1 / (_d(np.asarray(D, float), options) + options.epsilon)
        return np.asarray(L0, float) ** theta["alpha"] * rft ** theta["gamma"]

    def log_design(self, L0: Any, r: Any, D: Any, options: Any) -> Any:
        import numpy as np

        rft = np.log1p(1 / (_d(np.asarray(D, float), options) + options.epsilon))
        return np.column_stack([np.log(L0), rft])

    def feasibility(self, theta: dict[str, float], metric: str) -> list[str]:
        return sign_violations(theta, metric, {"gamma": ("D", -1)})


class RuntimeLaw(LawForm):
    """The paper's Table 4 law S = C (1+r)^β, with C measured relative to the unpruned
    runtime S0 (column L0): the paper's per-model constant is C·S0. Relative C makes one
    law meaningful across models too; C ≈ 1 means the law passes through S0 at r = 0."""

    name: ClassVar[str] = "runtime-law"
    role: ClassVar[Literal["law", "alternative"]] = "law"
    kinds: ClassVar[tuple[str, ...]] = ("runtime",)
    description: ClassVar[str] = "Runtime S = S0 · C · (1+r)^β (Table 4: the paper's C is C·S0); fit per model."
    formula: ClassVar[str] = "S = S0 · exp(log_C) · (1+r)^β"
    parameters: ClassVar[tuple[LawParameter, ...]] = (
        LawParameter("log_C", 0.0, -10.0, 10.0, "log of C, the runtime at r = 0 relative to the measured S0"),
        LawParameter("beta", -1.0, -20.0, 20.0, "exponent of (1+r): < 0 when compression speeds inference up"),
    )
    log_linear: ClassVar[bool] = True

    def predict(self, L0: Any, r: Any, D: Any, theta: dict[str, float], options: Any) -> Any:
        import numpy as np

        return np.asarray(L0, float) * np.exp(theta["log_C"]) * (1 + np.asarray(r, float)) ** theta["beta"]

    def log_offset(self, L0: Any, r: Any, D: Any, options: Any) -> Any:
        import numpy as np

        return np.log(L0)

    def log_design(self, L0: Any, r: Any, D: Any, options: Any) -> Any:
        import numpy as np

        return np.column_stack([np.ones(len(np.atleast_1d(r))), np.log1p(r)])

    def feasibility(self, theta: dict[str, float], metric: str) -> list[str]:
        # Runtime falls with r, like accuracy: the accuracy sign rule (β < 0) applies.
        return sign_violations(theta, metric, {"beta": ("r", 1)})


class KeptFractionLaw(LawForm):
    """The form shown in the authors' talk: L = L0 · P0 · (1−r)^α · (1 + D/(D+ε))^β.

    L0 enters with exponent 1 (an offset in log space) and P0, the pruning constant, is
    free; fitted as log_P0 the form is linear in log space, so OLS applies."""

    name: ClassVar[str] = "kept-fraction-law"
    description: ClassVar[str] = ("The form of the authors' talk (Chakraborty, Enough of Scaling Laws! Let's Focus on "
                                  "Downscaling): L = L0 · P0 · (1−r)^α · (1 + D/(D+ε))^β, P0 a pruning constant.")
    formula: ClassVar[str] = "L = L0 · exp(log_P0) · (1−r)^α · (1 + D/(D+ε))^β"
    Params: ClassVar[type[Params]] = RFTOptions
    parameters: ClassVar[tuple[LawParameter, ...]] = (
        LawParameter("log_P0", 0.0, -10.0, 10.0, "log of the pruning constant P0"),
        LawParameter("alpha", 0.0, -20.0, 20.0, "exponent of the kept fraction (1−r): < 0 for loss, > 0 for accuracy"),
        LawParameter("beta", 0.0, -20.0, 20.0, "exponent of the RFT term: < 0 for loss, > 0 for accuracy"),
    )
    log_linear: ClassVar[bool] = True

    def _rft(self, D: Any, options: Any) -> Any:
        import numpy as np

        d = _d(np.asarray(D, float), options)
        return 1 + d / (d + options.epsilon)

    def predict(self, L0: Any, r: Any, D: Any, theta: dict[str, float], options: Any) -> Any:
        import numpy as np

        kept = 1 - np.asarray(r, float)
        return np.asarray(L0, float) * np.exp(theta["log_P0"]) * kept ** theta["alpha"] * self._rft(D, options) ** theta["beta"]

    def log_offset(self, L0: Any, r: Any, D: Any, options: Any) -> Any:
        import numpy as np

        return np.log(L0)

    def log_design(self, L0: Any, r: Any, D: Any, options: Any) -> Any:
        import numpy as np

        r = np.asarray(r, float)
        return np.column_stack([np.ones(len(r)), np.log1p(-r), np.log(self._rft(D, options))])

    def feasibility(self, theta: dict[str, float], metric: str) -> list[str]:
        # (1−r) falls and the RFT term rises with D, so both signs are the mirror of eq. 1.
        return sign_violations(theta, metric, {"alpha": ("r", -1), "beta": ("D", 1)})


# --------------------------------------------------------------------------- across compression axes
#
# These forms take quantised variants too (axes = ("quant",)) and read per-row columns
# beyond (L0, r, D) through ``columns`` (see lawlab.api.LawForm). Without columns a row is
# float weights: q = 0 and no quantisation setting.


def _q(columns: Mapping[str, Any] | None, r: Any) -> Any:
    import numpy as np

    q = (columns or {}).get("q")
    return np.zeros_like(np.asarray(r, float)) if q is None else np.asarray(q, float)


class AxesLaw(LawForm):
    """The paper's eq. 1 with one exponent per compression axis: pruning r as in eq. 1 and
    the quantisation axis' declared ratio q = 1 − bits stored / (params · original bits),
    both through (1 + ratio)^exponent, so the axes multiply. Log-linear: fitted by OLS."""

    name: ClassVar[str] = "axes-law"
    description: ClassVar[str] = "The paper's eq. 1 with one exponent per compression axis (pruning r, quantisation q)."
    formula: ClassVar[str] = "L = L0^α · (1+r)^β · (1+q)^β_q · (1 + 1/(D+ε))^γ"
    Params: ClassVar[type[Params]] = RFTOptions
    axes: ClassVar[tuple[str, ...]] = ("quant",)
    needs: ClassVar[tuple[str, ...]] = ("q",)
    parameters: ClassVar[tuple[LawParameter, ...]] = (
        *CompressionLaw.parameters[:2],
        LawParameter("beta_q", 0.0, -20.0, 20.0, "exponent of (1+q): > 0 for loss, < 0 for accuracy"),
        CompressionLaw.parameters[2],
    )
    log_linear: ClassVar[bool] = True

    def predict(self, L0: Any, r: Any, D: Any, theta: dict[str, float], options: Any, *,
                columns: Mapping[str, Any] | None = None) -> Any:
        eq1 = CompressionLaw().predict(L0, r, D, theta, options)
        return eq1 * (1 + _q(columns, r)) ** theta["beta_q"]

    def log_design(self, L0: Any, r: Any, D: Any, options: Any, *, columns: Mapping[str, Any] | None = None) -> Any:
        import numpy as np

        X = CompressionLaw().log_design(L0, r, D, options)
        return np.column_stack([X[:, :2], np.log1p(_q(columns, r)), X[:, 2]])

    def feasibility(self, theta: dict[str, float], metric: str) -> list[str]:
        return sign_violations(theta, metric, {"beta": ("r", 1), "beta_q": ("q", 1), "gamma": ("D", -1)})


def _setting_name(label: str) -> str:
    """The parameter of a quantisation setting's efficiency (lmfit names are identifiers)."""
    return "eff_" + re.sub(r"\W", "_", label)


class EffectiveParamsLaw(LawForm):
    """Performance as a power law in effective parameters (Frantar et al. 2025, *Compression
    Scaling Laws*; Panferov et al. 2025): N_eff = N · Π eff(Cᵢ), one multiplier per
    compression, so the compressions compose multiplicatively. Pruning keeps the fraction
    (1 − r) of the parameters at full efficiency (that fixes the scale: the exponent a and
    an efficiency of pruning would otherwise be one number); each quantisation setting gets
    its own fitted efficiency eff_<setting> (the paper's W4 weight-only ≈ 0.92, W4A4 ≈ 0.75),
    float weights 1. With L0 the loss of N parameters, L = L0 · (N_eff/N)^−a, and the
    paper's RFT term for recovery. Not log-linear (a multiplies log eff): fitted by lmfit."""

    name: ClassVar[str] = "effective-params-law"
    description: ClassVar[str] = ("Power law in effective parameters N·(1−r)·eff_q (Frantar et al. 2025): one fitted "
                                  "efficiency per quantisation setting, multiplicative across compressions.")
    formula: ClassVar[str] = "L = L0 · ((1−r) · eff_q)^(−a) · (1 + 1/(D+ε))^γ"
    Params: ClassVar[type[Params]] = RFTOptions
    axes: ClassVar[tuple[str, ...]] = ("quant",)
    needs: ClassVar[tuple[str, ...]] = ("quant",)
    parameters: ClassVar[tuple[LawParameter, ...]] = (
        LawParameter("a", 0.1, -20.0, 20.0, "exponent of the effective parameters: > 0 for loss, < 0 for accuracy"),
        CompressionLaw.parameters[2],
    )

    def for_data(self, columns: Mapping[str, Any]) -> LawForm:
        labels = sorted({str(v) for v in columns.get("quant", ())} - {""})
        effs = tuple(LawParameter(_setting_name(label), 0.9, 0.01, 2.0,
                                  f"effective-parameter multiplier of quantisation setting {label}") for label in labels)
        return type(type(self).__name__, (EffectiveParamsLaw,), {"parameters": EffectiveParamsLaw.parameters + effs})()

    def predict(self, L0: Any, r: Any, D: Any, theta: dict[str, float], options: Any, *,
                columns: Mapping[str, Any] | None = None) -> Any:
        import numpy as np

        from lawlab.laws.forms import LawFitError

        r = np.asarray(r, float)
        labels = (columns or {}).get("quant")
        eff = np.ones_like(r)
        for i, label in enumerate([] if labels is None else labels):
            if label:
                key = _setting_name(str(label))
                if key not in theta:
                    raise LawFitError(f"no efficiency was fitted for quantisation setting {label}: the rows it was "
                                      "fitted to have none")
                eff[i] = theta[key]
        rft = 1 + 1 / (_d(np.asarray(D, float), options) + options.epsilon)
        return np.asarray(L0, float) * ((1 - r) * eff) ** -theta["a"] * rft ** theta["gamma"]

    def feasibility(self, theta: dict[str, float], metric: str) -> list[str]:
        return sign_violations(theta, metric, {"a": ("r", 1), "gamma": ("D", -1)})


class P2Law(LawForm):
    """The P² law for post-training after pruning (Chen et al. 2024, arXiv:2411.10272, ACL
    2025): L = L0 + (1/ρ)^γ (1/N0)^δ (N_C/N0^α + D_C/D^β + E), ρ the pruning rate, N0 the
    model's size before pruning, D the post-training data.

    What rows of one model family can identify: N0 does not vary within a model (and a
    family here has too few sizes to separate δ, α, N_C and E), so (1/N0)^δ (N_C/N0^α + E)
    is one constant A and (1/N0)^δ D_C one constant D_C; δ, α, N_C and E are not fitted.
    D enters as D + ε (the paper fits D > 0 only; ε keeps the no-RFT rows finite, as in
    eq. 1). Across axes, ρ is the combined compression rate 1 − (1−r)(1−q) (the storage
    ratio): the published form on float rows (q = 0), and the quantised unpruned model
    (r = 0) is compressed too. Additive in L, unlike the other forms: fitted by lmfit."""

    name: ClassVar[str] = "p2-law"
    description: ClassVar[str] = ("The P² law (Chen et al. 2024) with N0 constant: L = L0 + (1/ρ)^γ (A + D_C/(D+ε)^β), "
                                  "ρ = 1 − (1−r)(1−q) the compression rate across axes.")
    formula: ClassVar[str] = "L = L0 + (1/ρ)^γ · (A + D_C / (D+ε)^β),  ρ = 1 − (1−r)(1−q)"
    Params: ClassVar[type[Params]] = RFTOptions
    axes: ClassVar[tuple[str, ...]] = ("quant",)
    needs: ClassVar[tuple[str, ...]] = ("q",)
    parameters: ClassVar[tuple[LawParameter, ...]] = (
        LawParameter("gamma", -1.0, -10.0, 10.0, "exponent of 1/ρ: < 0, so the change grows with the compression rate"),
        LawParameter("A", 0.5, -100.0, 100.0, "the change at ρ = 1 with unlimited RFT data, (1/N0)^δ (N_C/N0^α + E)"),
        LawParameter("D_C", 0.5, -100.0, 100.0, "the part RFT data removes, (1/N0)^δ D_C"),
        LawParameter("beta", 0.5, 0.0, 10.0, "exponent of the RFT data: > 0, the recovery saturates"),
    )

    def predict(self, L0: Any, r: Any, D: Any, theta: dict[str, float], options: Any, *,
                columns: Mapping[str, Any] | None = None) -> Any:
        import numpy as np

        rho = 1 - (1 - np.asarray(r, float)) * (1 - _q(columns, r))
        data = _d(np.asarray(D, float), options) + options.epsilon
        with np.errstate(divide="ignore"):  # ρ = 0: no compression, no change (γ < 0)
            scale = rho ** -theta["gamma"]
        return np.asarray(L0, float) + scale * (theta["A"] + theta["D_C"] * data ** -theta["beta"])

    def feasibility(self, theta: dict[str, float], metric: str) -> list[str]:
        out = []
        if theta["gamma"] >= 0:
            out.append(f"gamma = {theta['gamma']:.4g}: the change would not grow with ρ (P² needs gamma < 0)")
        if theta["beta"] <= 0:
            out.append(f"beta = {theta['beta']:.4g}: more RFT data would not recover more (P² needs beta > 0)")
        return out


BUILTIN_FORMS: tuple[type[LawForm], ...] = (CompressionLaw, AblationR, AblationD, RuntimeLaw, KeptFractionLaw,
                                            AxesLaw, EffectiveParamsLaw, P2Law)


@hookimpl
def register_law_forms(register):
    for form in BUILTIN_FORMS:
        register(form())
