"""Built-in law forms: the paper's compression law, its two ablations, the runtime law,
and the form from the authors' talk.

Every form works on arrays of (L0, r, D). D is the number of RFT samples as the results
table records it; ``d_unit`` rescales it before it enters the law (1000: thousands).
numpy is imported inside the methods so that loading the registry stays fast.
"""

from __future__ import annotations

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


BUILTIN_FORMS: tuple[type[LawForm], ...] = (CompressionLaw, AblationR, AblationD, RuntimeLaw, KeptFractionLaw)


@hookimpl
def register_law_forms(register):
    for form in BUILTIN_FORMS:
        register(form())
