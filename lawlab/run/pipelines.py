"""Hybrid pipelines: a variant made by an ordered list of compression steps.

A ``[[pipelines]]`` entry lists steps, each one plugin with its own settings: a pruning
step (a pruner at its ratios), a quantisation step (a quantiser at each of its settings)
and, optionally, where the spec's ``[[rft]]`` entries recover the model. The grid is the
product of the steps' settings. The planned tree, for ``prune → quantise`` with RFT at
its default place (after pruning, the deployment order)::

    base ── prune (r) ─┬─ eval                    the pruned model alone: one axis
                       ├─ quantize (s) ── eval    pruned, then quantised
                       └─ rft (D) ─┬─ eval
                                   └─ quantize (s) ── eval

With ``{ rft = "here" }`` after the quantiser, RFT trains on the quantised model instead
(QLoRA-style), which only a recipe declaring ``quantized_base`` can do. A pruning step
plans the very cells a ``[[methods]]`` entry with the same pruner, params and ratio would
(the same keys: the work is shared), so existing specs and their cell keys are untouched.

What cannot be planned is refused at validation at its spec path: more than one pruning
or quantisation step, pruning after quantisation, RFT before any compression, a quantiser
after a pruner whose models are not stock transformers, RFT on a quantised model by a
recipe that merges its adapter, a setting's label used twice, and (at plan time, when the
model's config is known) a group size the model's widths, or a pruned width the pruner
announces, cannot take.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from lawlab.api import CheckContext, Pruner
from lawlab.spec.issues import SpecIssue
from lawlab.spec.models import PipelineEntry, Spec
from lawlab.spec.resolve import ResolvedSpec


def step_path(i: int, j: int) -> str:
    return f"pipelines[{i}].steps[{j}]"


def _makes_stock_models(pruner: Any) -> bool:
    """A pruner whose models save as stock transformers models (it does not save its own format)."""
    return type(pruner).save_model is Pruner.save_model


# --------------------------------------------------------------------------- validation


def check_pipelines(c: Any, spec: Spec, ctx: CheckContext) -> None:
    """Resolve and check every pipeline's steps; ``c`` is the spec checker (issues, params)."""
    model_names = {m.name for m in spec.models}
    for i, p in enumerate(spec.pipelines):
        for j, name in enumerate(p.models or []):
            if name not in model_names:
                c.issues.append(SpecIssue(f"pipelines[{i}].models[{j}]", f"no model is named {name!r}", None,
                                          ", ".join(sorted(model_names))))
        plugins: dict[int, Any] = {}
        for j, step in enumerate(p.steps):
            path = step_path(i, j)
            if step.kind == "prune":
                pruner = c.plugin("pruners", step.method, f"{path}.method")
                if pruner is not None and (parsed := c.parse_params(pruner, step.params, f"{path}.params")) is not None:
                    c.run_check(f"{path}.params", pruner.check, parsed, step.ratios, ctx)
                plugins[j] = pruner
            elif step.kind == "quantize":
                quantizer = c.plugin("quantizers", step.quantizer, f"{path}.quantizer")
                plugins[j] = quantizer
                if quantizer is None:
                    continue
                labels: dict[str, int] = {}
                for k, raw in enumerate(step.settings or [{}]):
                    spath = f"{path}.settings[{k}]"
                    if (parsed := c.parse_params(quantizer, raw, spath)) is None:
                        continue
                    c.run_check(spath, quantizer.check, parsed, ctx)
                    label = quantizer.label(parsed)
                    if label in labels:
                        c.issues.append(SpecIssue(spath, f"the same setting as settings[{labels[label]}] ({label})",
                                                  raw, "distinct settings"))
                    labels[label] = k
        c.issues.extend(order_issues(i, p, plugins, spec, c.registry))


def order_issues(i: int, p: PipelineEntry, plugins: dict[int, Any], spec: Spec, registry: Any) -> list[SpecIssue]:
    """Steps that cannot follow one another (see the module docstring)."""
    issues: list[SpecIssue] = []
    seen: dict[str, int] = {}
    for j, step in enumerate(p.steps):
        path, kind = step_path(i, j), step.kind
        if kind in seen:
            what = {"prune": "one pruning step", "quantize": "one quantisation step", "rft": "one rft = \"here\""}[kind]
            issues.append(SpecIssue(path, f"a pipeline has at most {what}; steps[{seen[kind]}] is one already",
                                    None, "a second pipeline for another combination"))
            continue
        if kind == "prune" and "quantize" in seen:
            issues.append(SpecIssue(path, "pruning cannot follow quantisation (the pruners work on float weights)",
                                    None, "prune first, then quantise"))
        if kind == "rft" and not ({"prune", "quantize"} & set(seen)):
            issues.append(SpecIssue(path, "RFT recovers a compressed model: it follows a pruning or quantisation step",
                                    None, "move rft = \"here\" after a compression step, or drop it"))
        if kind == "quantize" and "prune" in seen:
            pruner = plugins.get(seen["prune"])
            if pruner is not None and not _makes_stock_models(pruner):
                issues.append(SpecIssue(path, f"a quantiser cannot follow {pruner.name!r}: its models are not stock "
                                        "transformers models (they save in their own format)", None,
                                        "a pruner whose models are stock (random-prunenet, wanda, wanda-sp...)"))
        if kind == "rft" and "quantize" in seen:
            for r, entry in enumerate(spec.rft):
                if registry.has("rft_recipes", entry.recipe) and not registry.get("rft_recipes", entry.recipe).quantized_base:
                    issues.append(SpecIssue(path, f"RFT after quantisation trains on a quantised base, which recipe "
                                            f"{entry.recipe!r} (rft[{r}]) cannot: it merges its adapter into the weights",
                                            None, "RFT before the quantiser (the deployment order), or a recipe with "
                                            "quantized_base"))
        seen[kind] = j
    return issues


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class PlanHooks:
    """What the planner lends the pipeline planner: add a cell (returns its key), add a
    variant's evaluations, and add its RFT cells (returns each recovered variant and key)."""

    add: Callable[..., str]
    add_evals: Callable[[Any, str], None]
    add_rft: Callable[[Any, str], list[tuple[Any, str]]]


def plan_pipelines(resolved: ResolvedSpec, registry: Any, model: str, model_type: str | None,
                   config: dict[str, Any] | None, base: tuple[Any, str], hooks: PlanHooks) -> list[SpecIssue]:
    """Add the cells of every pipeline that applies to ``model``; returns what cannot be planned."""
    spec, issues = resolved.spec, []
    for i, p in enumerate(spec.pipelines):
        if p.models is not None and model not in p.models:
            continue
        kinds = {s.kind: j for j, s in enumerate(p.steps)}
        heads = [base]
        if "prune" in kinds:
            heads, found = _prune_heads(resolved, registry, i, kinds["prune"], model, model_type, config, base, hooks)
            issues += found
        if "quantize" not in kinds:
            for v, key in heads:
                hooks.add_rft(v, key)
            continue
        j = kinds["quantize"]
        rft_first = kinds.get("rft", -1) < j
        sources = [*heads, *(pair for v, key in heads for pair in hooks.add_rft(v, key))] if rft_first else heads
        quantizer = registry.get("quantizers", p.steps[j].quantizer)
        for k in range(len(p.steps[j].settings or [{}])):
            spath = f"{step_path(i, j)}.settings[{k}]"
            params = resolved.params[spath]
            if config is not None and (reason := quantizer.check_model(config, params)):
                issues.append(SpecIssue(spath, f"on model {model!r}: {reason}"))
                continue
            issues += _pruned_width_issues(resolved, registry, i, kinds.get("prune"), quantizer, params, config, spath, model)
            for v, key in sources:
                qv = replace(v, quant=quantizer.label(params))
                qkey = hooks.add("quantize", qv, quantizer.name, params.model_dump(mode="json"), key)
                hooks.add_evals(qv, qkey)
                if not rft_first:
                    hooks.add_rft(qv, qkey)
    return issues


def _prune_heads(resolved: ResolvedSpec, registry: Any, i: int, j: int, model: str, model_type: str | None,
                 config: dict[str, Any] | None, base: tuple[Any, str], hooks: PlanHooks
                 ) -> tuple[list[tuple[Any, str]], list[SpecIssue]]:
    """The pruning step's variants (the unpruned model where r = 0), planned as a method entry's."""
    spec, step, path = resolved.spec, resolved.spec.pipelines[i].steps[j], step_path(i, j)
    pruner = registry.get("pruners", step.method)
    if model_type and (reason := pruner.supports(model_type)):
        if spec.execution.on_unsupported == "skip":
            return [], []
        return [], [SpecIssue(f"{path}.method", f"{step.method!r} cannot prune model {model!r} ({model_type}): {reason}",
                              None, f"restrict it with pipelines[{i}].models, or set execution.on_unsupported = \"skip\"")]
    params = resolved.params[f"{path}.params"]
    heads, issues = [], []
    for k, ratio in enumerate(step.ratios or []):
        if ratio == 0.0:
            heads.append(base)
            continue
        if config is not None and (reason := pruner.check_model(config, ratio, params)):
            issues.append(SpecIssue(f"{path}.ratios[{k}]", f"on model {model!r}: {reason}", ratio, "a smaller ratio"))
            continue
        v = replace(base[0], method=step.method, ratio=ratio)
        key = hooks.add("prune", v, step.method, params.model_dump(mode="json"), base[1], ratio=ratio)
        hooks.add_evals(v, key)
        heads.append((v, key))
    return heads, issues


def _pruned_width_issues(resolved: ResolvedSpec, registry: Any, i: int, j: int | None, quantizer: Any, params: Any,
                         config: dict[str, Any] | None, spath: str, model: str) -> list[SpecIssue]:
    """A setting the pruned shapes cannot take, where the pruner announces them (``pruned_config``)."""
    if j is None or config is None:
        return []
    step = resolved.spec.pipelines[i].steps[j]
    pruner = registry.get("pruners", step.method)
    announce = getattr(pruner, "pruned_config", None)
    issues = []
    for ratio in step.ratios or []:
        pruned = announce(config, ratio, resolved.params[f"{step_path(i, j)}.params"]) if announce and ratio else None
        if pruned is not None and (reason := quantizer.check_model(pruned, params)):
            issues.append(SpecIssue(spath, f"on model {model!r} pruned by {step.method!r} at r = {ratio:g}: {reason}"))
    return issues
