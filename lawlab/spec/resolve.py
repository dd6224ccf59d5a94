"""The spec's second pass: every plugin name resolved against the registry, each entry's
``params`` validated by that plugin's ``Params``, and the plugins' checks run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from lawlab.api import CannotRunHere, CheckContext, CheckFailed, PluginKind
from lawlab.spec.issues import HereIssue, MachineError, SpecError, SpecIssue, issues_from_validation
from lawlab.spec.models import Spec


def dataset_ref(spec: Spec, name: str) -> tuple[str, dict[str, Any]]:
    """(dataset plugin, params) for a dataset name: a ``[datasets.NAME]`` entry of the
    spec, or a registered dataset used with its default parameters."""
    if name in spec.datasets:
        entry = spec.datasets[name]
        return entry.loader, entry.params
    return name, {}


@dataclass(frozen=True)
class ResolvedSpec:
    """A spec whose plugin parameters were validated: ``params[path]`` holds each entry's
    parsed ``Params`` (defaults filled in), keyed by the entry's dotted path."""

    spec: Spec
    path: Path
    params: dict[str, Any]
    offline: bool
    here: tuple[HereIssue, ...] = ()  # why this machine cannot run it (empty: it can)

    def params_json(self, entry_path: str) -> dict[str, Any]:
        return self.params[entry_path].model_dump(mode="json")

    def require_here(self) -> None:
        """Raise ``MachineError`` unless this machine can run the study."""
        if self.here:
            raise MachineError(self.path, self.here)


class _Checker:
    def __init__(self, spec: Spec, ctx: CheckContext):
        self.spec, self.ctx, self.registry = spec, ctx, ctx.registry
        self.issues: list[SpecIssue] = []
        self.here: list[HereIssue] = []
        self.params: dict[str, Any] = {}

    def plugin(self, kind: PluginKind, name: str, path: str) -> Any | None:
        if not self.registry.has(kind, name):
            self.issues.append(SpecIssue(path, self.registry.unknown(kind, name)))
            return None
        return self.registry.get(kind, name)

    def parse_params(self, plugin: Any, raw: dict[str, Any], path: str) -> Any | None:
        try:
            parsed = plugin.Params.model_validate(raw)
        except ValidationError as err:
            self.issues.extend(issues_from_validation(err, plugin.Params, prefix=path))
            return None
        self.params[path] = parsed
        return parsed

    def run_check(self, path: str, fn: Any, *args: Any, params_path: str | None = None) -> None:
        """Run a plugin check; a failure naming a field of the params is reported at
        ``params_path`` (where those params are written), else at ``path``."""
        try:
            fn(*args)
        except CannotRunHere as exc:
            where = f"{params_path or path}.{exc.field}" if exc.field else path
            self.here.append(HereIssue(exc.kind, exc.item, where, exc.message, exc.fix))
        except CheckFailed as exc:
            where = f"{params_path or path}.{exc.field}" if exc.field else path
            self.issues.append(SpecIssue(where, exc.message, None, exc.allowed))

    def known_models(self, entry: Any, p: str) -> None:
        model_names = {m.name for m in self.spec.models}
        for j, name in enumerate(entry.models or []):
            if name not in model_names:
                self.issues.append(
                    SpecIssue(f"{p}.models[{j}]", f"no model is named {name!r}", None, ", ".join(sorted(model_names)))
                )

    def known_methods(self, entry: Any, p: str) -> None:
        method_labels = {m.key for m in self.spec.methods}
        for j, name in enumerate(getattr(entry, "methods", None) or []):
            if name not in method_labels:
                self.issues.append(SpecIssue(f"{p}.methods[{j}]", f"no method is labelled {name!r}", None,
                                             ", ".join(sorted(method_labels)) or "no method in the spec"))

    def models(self) -> None:
        for i, m in enumerate(self.spec.models):
            p = f"models[{i}]"
            src = self.plugin("model_sources", m.source, f"{p}.source")
            if src is not None and (parsed := self.parse_params(src, m.params, f"{p}.params")) is not None:
                self.run_check(f"{p}.params", src.check, parsed, self.ctx)
            if m.model_type is not None and not self.registry.has("architectures", m.model_type):
                self.plugin("architectures", m.model_type, f"{p}.model_type")

    def methods(self) -> None:
        for i, meth in enumerate(self.spec.methods):
            p = f"methods[{i}]"
            pruner = self.plugin("pruners", meth.method, f"{p}.method")
            self.known_models(meth, p)
            if pruner is not None and (parsed := self.parse_params(pruner, meth.params, f"{p}.params")) is not None:
                self.run_check(f"{p}.params", pruner.check, parsed, meth.ratios, self.ctx)

    def pipelines(self) -> None:
        if self.spec.pipelines:
            from lawlab.run.pipelines import check_pipelines

            check_pipelines(self, self.spec, self.ctx)

    def rft(self) -> None:
        for i, r in enumerate(self.spec.rft):
            p = f"rft[{i}]"
            recipe = self.plugin("rft_recipes", r.recipe or "", f"{p}.recipe")
            self.known_models(r, p)
            for j, ds in enumerate(r.datasets):
                self.dataset(ds, "train", f"{p}.datasets[{j}]")
            if recipe is None or (parsed := self.parse_params(recipe, r.params, f"{p}.params")) is None:
                continue
            for j, ds in enumerate(r.datasets):
                for d in r.sizes:
                    if d > 0:
                        self.run_check(f"{p}.datasets[{j}]", recipe.check, parsed, ds, d, self.ctx)

    def evaluators(self) -> None:
        for i, e in enumerate(self.spec.evaluators):
            p = f"evaluators[{i}]"
            ev = self.plugin("evaluators", e.evaluator, f"{p}.evaluator")
            self.known_models(e, p)
            self.known_methods(e, p)
            if ev is not None and (parsed := self.parse_params(ev, e.params, f"{p}.params")) is not None:
                for ds in ev.datasets(parsed):
                    self.dataset(ds, "test", f"{p}.params")
                self.run_check(f"{p}.params", ev.check, parsed, self.ctx)
                self.params[f"{p}.params"] = ev.resolve(parsed, self.ctx)

    def laws(self) -> None:
        for i, law in enumerate(self.spec.laws):
            p = f"laws[{i}]"
            form = self.plugin("law_forms", law.form, f"{p}.form")
            if form is not None:
                self.parse_params(form, law.params, f"{p}.params")
                if law.fit in ("ols", "both") and not form.log_linear:
                    self.issues.append(SpecIssue(
                        f"{p}.fit", f"law form {law.form!r} is not linear in log space, so it cannot be fitted by OLS",
                        law.fit, "nls",
                    ))
            known = [e for e in self.spec.evaluators if self.registry.has("evaluators", e.evaluator)]
            kinds = {self.registry.get("evaluators", e.evaluator).kind for e in known}
            if len(known) == len(self.spec.evaluators) and law.metric not in kinds:
                self.issues.append(SpecIssue(
                    f"{p}.metric", f"no evaluator in the spec measures {law.metric!r} metrics", law.metric,
                    ", ".join(sorted(kinds)),
                ))

    def execution(self) -> None:
        ex = self.spec.execution
        executor = self.plugin("executors", ex.executor or "", "execution.executor")
        if executor is not None and (parsed := self.parse_params(executor, ex.params, "execution.params")) is not None:
            self.run_check("execution.params", executor.check, parsed, self.ctx)
        self.run_check("execution.device", _check_device, ex.device)

    def dataset(self, name: str, split: str, path: str) -> None:
        plugin_name, raw = dataset_ref(self.spec, name)
        if name not in self.spec.datasets and not self.registry.has("datasets", name):
            from lawlab.registry import unknown_name_message

            known = sorted(set(self.registry.names("datasets")) | set(self.spec.datasets))
            self.issues.append(SpecIssue(path, unknown_name_message("datasets", name, known)))
            return
        plugin = self.plugin("datasets", plugin_name, f"datasets.{name}.loader" if name in self.spec.datasets else path)
        if plugin is None:
            return
        key = f"datasets.{name}.params"
        parsed = self.params.get(key) or self.parse_params(plugin, raw, key)
        if parsed is None:
            return
        # A hub dataset's own check looks in the cache when the hub cannot be reached.
        self.run_check(path, plugin.check, parsed, split, self.ctx,
                       params_path=key if name in self.spec.datasets else None)


def resolve_spec(spec: Spec, path: Path, ctx: CheckContext) -> ResolvedSpec:
    """The second pass: plugin names, plugin params and plugin checks."""
    spec = with_default_plugins(spec, ctx.registry, path)
    c = _Checker(spec, ctx)
    # in the spec's order, so the issues are listed as the file reads
    for check in (c.models, c.methods, c.pipelines, c.rft, c.evaluators, c.laws, c.execution):
        check()
    if c.issues:
        raise SpecError(path, c.issues)
    return ResolvedSpec(spec=spec, path=path, params=c.params, offline=ctx.offline, here=tuple(c.here))


def default_plugin(registry: Any, kind: PluginKind) -> str | list[str]:
    """The one registered plugin of ``kind`` that declares itself the default, or the names of
    those that do (none, or several: the spec has to name one)."""
    named = [n for n in registry.names(kind) if getattr(registry.get(kind, n), "default", False)]
    return named[0] if len(named) == 1 else named


def with_default_plugins(spec: Spec, registry: Any, path: Path) -> Spec:
    """The spec with each plugin name it leaves out (an RFT recipe, the executor) filled in
    from the plugins registered: the one of its kind that declares itself the default."""
    issues: list[SpecIssue] = []

    def pick(kind: PluginKind, where: str) -> str | None:
        found = default_plugin(registry, kind)
        if isinstance(found, str):
            return found
        why = "several declare themselves the default: " + ", ".join(found) if found else "none is the default"
        issues.append(SpecIssue(where, f"name one: of the installed {kind.replace('_', ' ')} {why}", None,
                                ", ".join(registry.names(kind)) or "none is installed"))
        return None

    rft = [r if r.recipe is not None else r.model_copy(update={"recipe": pick("rft_recipes", f"rft[{i}].recipe")})
           for i, r in enumerate(spec.rft)]
    execution = spec.execution
    if execution.executor is None:
        execution = execution.model_copy(update={"executor": pick("executors", "execution.executor")})
    if issues:
        raise SpecError(path, issues)
    return spec.model_copy(update={"rft": rft, "execution": execution})


def _check_device(device: str) -> None:
    from lawlab import environment

    missing = environment.missing_device(device)
    if missing:
        raise CannotRunHere(missing, kind="device", item=device, fix='device = "auto" (or "cpu"), or a machine with it')
