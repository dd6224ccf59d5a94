"""Law forms as lawlab meets them: the sign each parameter must take, and :func:`law_form`,
the short way for a plugin to declare a third-party form from a function.

Importing this module is cheap, so a law plugin can import :func:`law_form` and
:func:`sign_violations` from here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from lawlab.api import LawForm, LawParameter, NoParams, Params

if TYPE_CHECKING:  # pragma: no cover
    from lawlab.registry import Registry

LEVEL = 0.95  # confidence level of every interval reported
MetricRule = Literal["loss", "accuracy"]


class LawFitError(ValueError):
    """The data cannot give a meaningful fit; the message says exactly why."""


# --------------------------------------------------------------------------- sign rules

# Which way each kind of metric must move: loss rises with r (and q) and falls with D,
# accuracy the opposite. Runtime falls with r, so it takes the accuracy rule.
_DIRECTION = {"loss": {"r": 1, "q": 1, "D": -1}, "accuracy": {"r": -1, "q": -1, "D": 1}}
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


def resolve_form(form: LawForm | str, registry: Registry | None = None) -> LawForm:
    """A form given by name is looked up among the registered law forms."""
    if isinstance(form, LawForm):
        return form
    if registry is None:
        from lawlab.registry import get_registry

        registry = get_registry()
    try:
        return registry.get("law_forms", form)
    except KeyError as exc:
        raise LawFitError(exc.args[0]) from None


def main_law(kind: str, registry: Registry | None = None) -> str:
    """The registered form that declares itself the law of metric ``kind`` (``role = "law"``):
    the paper's eq. 1 for loss and accuracy, its runtime law for runtime."""
    forms = compared_forms(kind, registry)
    if not forms or _registry(registry).get("law_forms", forms[0]).role != "law":
        raise LawFitError(f"no installed law form declares itself the law of {kind} results (role = 'law')")
    return forms[0]


def compared_forms(kind: str, registry: Registry | None = None, axes: Sequence[str] = ()) -> list[str]:
    """Every registered form that describes metric ``kind`` across exactly these compression
    ``axes`` beyond pruning (none: the float laws; ``("quant",)``: the cross-axis forms): the
    law first, then its alternatives."""
    reg = _registry(registry)
    named = [n for n in reg.names("law_forms")
             if kind in reg.get("law_forms", n).kinds and set(reg.get("law_forms", n).axes) == set(axes)]
    return sorted(named, key=lambda n: reg.get("law_forms", n).role != "law")


def _registry(registry: Registry | None) -> Registry:
    if registry is not None:
        return registry
    from lawlab.registry import get_registry

    return get_registry()
