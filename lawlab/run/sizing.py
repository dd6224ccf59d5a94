"""Sizing a study before it runs: the standard error each evaluator will have per cell, and
which of the findings the plan can decide.

``size_plan(plan, registry)`` reads only the plan (its cells and their parameters) and what
each evaluator declares (:meth:`lawlab.api.Evaluator.precision`), so ``lawlab plan`` answers
instantly. A finding the plan cannot decide is named with what would decide it; one it can
decide in principle may still come out "undetermined" when the measured effects are smaller
than the noise stated here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from lawlab.findings.stats import FEW

# Questions a task needs for a binomial error of ±3 points at accuracy 0.5 (0.25 / 0.03²)
RETENTION_TARGET = 0.03
MIN_CLUSTERS_FOR_GAIN = 3  # over 2 pruned models, t on 1 df is ±12.7 standard errors
MIN_RATIOS_FOR_CURVATURE = 4  # a quadratic has 3 coefficients; r = 0 (the unpruned model) adds a point


@dataclass(frozen=True)
class EvaluatorSize:
    label: str
    kind: str
    stderr: float | None  # per cell, of the law's input
    parts: dict[str, float]
    questions: dict[str, int]
    assumption: str
    cells: int


@dataclass(frozen=True)
class Decidable:
    key: str  # rq1 ... rq5, laws
    part: str
    can: bool
    why: str  # what it rests on, or what would decide it


@dataclass
class Sizing:
    evaluators: list[EvaluatorSize] = field(default_factory=list)
    findings: list[Decidable] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"evaluators": [e.__dict__ for e in self.evaluators], "findings": [f.__dict__ for f in self.findings]}

    def summary(self) -> str:
        lines = ["Standard errors per cell (from each evaluator's parameters):"]
        for e in self.evaluators:
            if e.stderr is None:
                lines.append(f"  {e.label} ({e.kind}): not known before running")
                continue
            tasks = ", ".join(f"{t} ±{se:.3f} ({e.questions.get(t, '?')} q)" for t, se in e.parts.items())
            lines.append(f"  {e.label} ({e.kind}): ±{e.stderr:.3f} for the law's input; {tasks}; {e.assumption}")
        lines.append("What this plan can decide:")
        for f in self.findings:
            lines.append(f"  {f.key} {f.part}: {'yes' if f.can else 'NO'} ({f.why})")
        return "\n".join(lines)


def size_plan(plan: Any, registry: Any) -> Sizing:
    """The sizing of a plan: see the module docstring."""
    spec = plan.spec.spec
    out = Sizing()
    kinds: dict[str, str] = {}
    for i, e in enumerate(spec.evaluators):
        ev = registry.get("evaluators", e.evaluator)
        kinds[e.key] = ev.kind
        prec = ev.precision(plan.spec.params[f"evaluators[{i}].params"])
        cells = sum(1 for c in plan.cells if c.kind == "eval" and c.evaluator == e.key)
        out.evaluators.append(EvaluatorSize(
            e.key, ev.kind, prec.stderr if prec else None, dict(prec.parts) if prec else {},
            dict(prec.questions) if prec else {}, prec.assumption if prec else "", cells))
    evals = [c for c in plan.cells if c.kind == "eval"]
    calibration = {m.key: registry.get("pruners", m.method).calibration for m in spec.methods}
    out.findings = [*_rq1(evals, kinds, out.evaluators), *_rq2(evals, kinds), _rq3(evals, kinds),
                    _rq4(evals, kinds), _rq5(evals, kinds, calibration), _laws(evals, kinds)]
    return out


def _of(evals: Sequence[Any], kinds: dict[str, str], kind: str) -> list[Any]:
    return [c for c in evals if kinds.get(c.evaluator) == kind]


def _rq1(evals: Sequence[Any], kinds: dict[str, str], sizes: list[EvaluatorSize]) -> list[Decidable]:
    out = []
    for kind, part in (("intrinsic", "loss shape"), ("extrinsic", "accuracy shape")):
        curves: dict[tuple[str, str], set[float]] = {}
        for c in _of(evals, kinds, kind):
            if c.variant.method and not c.variant.size:
                curves.setdefault((c.variant.model, c.variant.method), set()).add(c.variant.ratio)
        enough = [k for k, rs in curves.items() if len(rs) >= MIN_RATIOS_FOR_CURVATURE]
        out.append(Decidable("rq1", part, bool(enough),
                             f"{len(enough)} of {len(curves)} curve(s) have {MIN_RATIOS_FOR_CURVATURE}+ ratios without "
                             "RFT" if curves else f"no {kind} evaluator on pruned variants without RFT"))
    ext = [c for c in _of(evals, kinds, "extrinsic") if 0 < c.variant.ratio < 0.5]
    has = {bool(c.variant.size) for c in ext}
    # the gain is a mean over pruned models measured with and without RFT: its interval rests on
    # their number (below FEW it is Student's t on G - 1 df, whatever the questions)
    sides: dict[tuple[str, tuple[Any, ...]], set[bool]] = {}
    for c in ext:
        v = c.variant
        sides.setdefault((c.evaluator, (v.model, v.method, v.ratio, v.seed)), set()).add(bool(v.size))
    paired_models: dict[str, int] = {}
    for (evaluator, _), got in sides.items():
        paired_models[evaluator] = paired_models.get(evaluator, 0) + (got == {True, False})
    main = min((e for e in sizes if e.kind == "extrinsic" and e.stderr), key=lambda e: e.stderr or 1.0, default=None)
    se, tasks = (main.stderr, len(main.parts)) if main else (None, 1)
    if has != {True, False}:
        out.append(Decidable("rq1", "retention gain by RFT", False,
                             "needs extrinsic results at 0 < r < 0.5 both without and with RFT"))
    else:
        # one cell's retention A/A0 has about √2 times the error of one accuracy, relative to it
        cell = math.sqrt(2) * se / 0.5 if se else None
        # questions a task so that √2 · √(0.25 / (tasks · n)) / 0.5 = 3 points
        need = math.ceil(2 * 0.25 / (tasks * (RETENTION_TARGET * 0.5) ** 2)) if se else None
        why = (f"retention of one cell ±{cell:.1%} at accuracy 0.5; about {need} questions a task for ±3 points"
               if cell else "extrinsic errors not known before running")
        why += "; pruned models with and without RFT: " + ", ".join(f"{e} {n}" for e, n in sorted(paired_models.items()))
        short = sorted(e for e, n in paired_models.items() if n < MIN_CLUSTERS_FOR_GAIN)
        if short:
            why += (f" ({', '.join(short)}: under {MIN_CLUSTERS_FOR_GAIN}, no gain can be decided; below {FEW} the "
                    "interval is Student's t over them: add ratios below 0.5, methods or seeds)")
        out.append(Decidable("rq1", "retention gain by RFT", max(paired_models.values(), default=0)
                             >= MIN_CLUSTERS_FOR_GAIN, why))
    return out


def _rq2(evals: Sequence[Any], kinds: dict[str, str]) -> list[Decidable]:
    rt = _of(evals, kinds, "runtime")
    models = {c.variant.model for c in rt}
    mid = {c.variant.model for c in rt if 0.5 <= c.variant.ratio <= 0.9}
    return [
        Decidable("rq2", "speed-up band 24-35%", bool(mid),
                  f"runtime at r = 0.5-0.9 on {len(mid)} model(s)" if mid else "needs runtime at r = 0.5-0.9"),
        Decidable("rq2", "bigger models gain more", len(models) >= 2,
                  f"{len(models)} model(s) with runtime" + ("" if len(models) >= 2 else "; needs two")),
    ]


def _rq3(evals: Sequence[Any], kinds: dict[str, str]) -> Decidable:
    ok = all(any(c.variant.size for c in _of(evals, kinds, k)) for k in ("intrinsic", "extrinsic"))
    return Decidable("rq3", "RFT recovers intrinsic more than extrinsic", ok,
                     "intrinsic and extrinsic results after RFT" if ok else "needs both kinds evaluated after RFT")


def _rq4(evals: Sequence[Any], kinds: dict[str, str]) -> Decidable:
    by_method: dict[str, set[str]] = {}
    for c in _of(evals, kinds, "extrinsic"):
        if c.variant.method:
            by_method.setdefault(c.variant.method, set()).add(c.variant.model)
    shared = [m for m, ms in by_method.items() if len(ms) >= 2]
    return Decidable("rq4", "smaller model at a lower ratio wins", bool(shared),
                     f"methods on two models or more: {', '.join(shared)}; pairs need kept sizes within 10%"
                     if shared else "needs one method on two models, at ratios whose kept sizes match")


def _rq5(evals: Sequence[Any], kinds: dict[str, str], calibration: dict[str, bool]) -> Decidable:
    per_model: dict[str, set[bool]] = {}
    for c in evals:
        if c.variant.method in calibration:
            per_model.setdefault(c.variant.model, set()).add(calibration[c.variant.method])
    both = [m for m, k in per_model.items() if k == {True, False}]
    return Decidable("rq5", "calibration-based vs -free at matched size", bool(both),
                     f"both kinds on {', '.join(both)}" if both else "needs a calibration-based and a "
                     "calibration-free method on one model")


def _laws(evals: Sequence[Any], kinds: dict[str, str]) -> Decidable:
    pruned = [c for c in evals if c.variant.method]
    models = {c.variant.model for c in pruned}
    clusters = {(c.variant.model, c.variant.method, c.variant.ratio, c.variant.seed) for c in pruned}
    sizes = {c.variant.size for c in pruned}
    why = (f"{len(models)} model(s): held out by " + ("model" if len(models) >= 2 else "ratio")
           + f"; {len(clusters)} clusters (pruned models) for cluster-robust intervals")
    if len(sizes) < 2:
        return Decidable("laws", "eq. 1 beats no change held out", False, why + "; needs RFT sizes for γ")
    return Decidable("laws", "eq. 1 beats no change held out", len(clusters) > 4, why)
