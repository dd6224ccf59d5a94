"""The planner: a validated spec resolved once into an immutable study plan.

A plan is a tree of cells per model::

    base ─┬─ eval (per evaluator)
          ├─ prune (per method, ratio > 0) ─┬─ eval
          │                                 └─ rft (per dataset, D > 0) ── eval
          └─ rft (ratio 0: the unpruned model recovered, when asked) ── eval

Every cell has a key: a hash of everything that determines its result (its plugin, the
plugin's parameters with defaults filled in, the seed, the dtype and its parent's key),
so a finished cell is recognised on the next run and changing one parameter re-runs only
the cells it affects. Work shared by several branches (r = 0 for two methods, the same
method listed twice) gets one key and is planned once.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Literal

from lawlab.api import CheckContext
from lawlab.run.pipelines import PlanHooks, plan_pipelines
from lawlab.spec.issues import SpecError, SpecIssue
from lawlab.spec.models import content_hash
from lawlab.spec.resolve import ResolvedSpec, dataset_ref

CellKind = Literal["base", "prune", "rft", "eval", "quantize"]
_COUNTED_KINDS = ("intrinsic", "extrinsic")  # the paper's Table 5 counts these evaluations


def _freeze(obj: Any) -> Any:
    if isinstance(obj, dict):
        return MappingProxyType({k: _freeze(v) for k, v in obj.items()})
    if isinstance(obj, list):
        return tuple(_freeze(v) for v in obj)
    return obj


def thaw(obj: Any) -> Any:
    """A frozen value (read-only mappings, tuples) as plain dicts and lists, for a plugin's ``Params``."""
    if isinstance(obj, MappingProxyType | dict):
        return {k: thaw(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return [thaw(v) for v in obj]
    return obj


@dataclass(frozen=True)
class Variant:
    """A model state that gets evaluated: a base model, pruned or not, recovered or not."""

    model: str
    method: str = ""  # method label; "" for the unpruned model
    ratio: float = 0.0
    rft: str = ""  # RFT label; "" for none
    rft_dataset: str = ""
    size: int = 0  # D, RFT samples
    seed: int | None = None  # the pruning seed, where a method asks for several (methods[].seeds)
    quant: str = ""  # the quantisation setting's label (a pipeline's quantiser); "" for float weights

    @property
    def label(self) -> str:
        """The method as results name it: a quantised variant's carries its setting (wanda-sp+w8a8)."""
        return f"{self.method}+{self.quant}" if self.quant else self.method

    def describe(self) -> str:
        parts = [self.model]
        if self.method:
            parts.append(f"{self.method}@{self.ratio:g}" + (f"#{self.seed}" if self.seed is not None else ""))
        if self.size:
            parts.append(f"{self.rft}:{self.rft_dataset}:{self.size}")
        if self.quant:
            parts.append(self.quant)
        return " / ".join(parts)


@dataclass(frozen=True)
class Cell:
    key: str
    kind: CellKind
    variant: Variant
    plugin: str  # the model source, pruner, recipe or evaluator that does the work
    params: Any  # that plugin's parameters (read-only mapping, defaults filled in)
    parent: str | None = None
    evaluator: str = ""  # evaluator label, for eval cells
    evaluator_kind: str = ""  # intrinsic, extrinsic or runtime
    dataset: tuple[str, Any] | None = None  # (dataset plugin, params) for rft cells
    inputs: Any = field(default_factory=lambda: MappingProxyType({}))  # the hashed content

    def params_dict(self) -> dict[str, Any]:
        return thaw(self.params)

    def label(self) -> str:
        what = {"base": "load", "prune": "prune", "rft": "rft", "quantize": "quantize",
                "eval": f"eval {self.evaluator}"}[self.kind]
        return f"{what}: {self.variant.describe()}"


@dataclass(frozen=True)
class Skipped:
    model: str
    method: str
    reason: str


@dataclass(frozen=True)
class Plan:
    spec: ResolvedSpec
    spec_hash: str
    cells: tuple[Cell, ...]
    skipped: tuple[Skipped, ...] = ()
    families: Any = field(default_factory=lambda: MappingProxyType({}))  # model -> family
    # model -> lawlab.run.memory.ModelMemory, for models whose sizes are known before loading
    memory: Any = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_key", {c.key: c for c in self.cells})

    def __iter__(self) -> Iterator[Cell]:
        return iter(self.cells)

    def __len__(self) -> int:
        return len(self.cells)

    def cell(self, key: str) -> Cell:
        return self._by_key[key]  # type: ignore[attr-defined]

    def children(self, key: str) -> list[Cell]:
        return [c for c in self.cells if c.parent == key]

    def of_kind(self, kind: CellKind) -> list[Cell]:
        return [c for c in self.cells if c.kind == kind]

    def ancestors(self, key: str) -> list[Cell]:
        out, cell = [], self.cell(key)
        while cell.parent is not None:
            cell = self.cell(cell.parent)
            out.append(cell)
        return out

    def experiment_count(self) -> dict[str, int]:
        """Experiments the way the paper's Table 5 counts them: evaluations (intrinsic or
        extrinsic) of compressed variants, per model family, with and without RFT."""
        counts: Counter[str] = Counter()
        for c in self.cells:
            if c.kind == "eval" and c.variant.label and c.evaluator_kind in _COUNTED_KINDS:
                counts[self.families.get(c.variant.model, c.variant.model)] += 1
        return dict(sorted(counts.items()))

    def summary_rows(self) -> list[dict[str, Any]]:
        """Per model: the cells of each kind and the paper-style experiment count."""
        rows = []
        for m in self.spec.spec.models:
            mine = [c for c in self.cells if c.variant.model == m.name]
            kinds = Counter(c.kind for c in mine)
            rows.append(
                {
                    "model": m.name,
                    "family": self.families.get(m.name, m.name),
                    "prune": kinds["prune"],
                    "quantize": kinds["quantize"],
                    "rft": kinds["rft"],
                    "eval": kinds["eval"],
                    "experiments": sum(
                        1
                        for c in mine
                        if c.kind == "eval" and c.variant.label and c.evaluator_kind in _COUNTED_KINDS
                    ),
                }
            )
        return rows


def family_of(name: str, declared: str | None) -> str:
    """A model's family: as declared, else its name up to the last '-' part that
    looks like a size (qwen2.5-7b -> qwen2.5)."""
    if declared:
        return declared
    parts = name.split("-")
    while len(parts) > 1 and any(ch.isdigit() for ch in parts[-1]) and parts[-1][-1].lower() in "bm":
        parts.pop()
    return "-".join(parts)


def applies(entry: Any, model: str) -> bool:
    """Does a method, RFT or evaluator entry (``models = [...]`` or all) apply to this model?"""
    return entry.models is None or model in entry.models


def selects(entry: Any, variant: Variant, study_seed: int) -> bool:
    """Does an evaluator entry's ``ratios`` / ``methods`` / ``sizes`` / ``seeds`` filter take this variant?
    The unpruned model always passes: it is every variant's L0."""
    if not variant.method:
        return entry.sizes is None or variant.size in entry.sizes
    if entry.ratios is not None and variant.ratio not in entry.ratios:
        return False
    if entry.methods is not None and variant.method not in entry.methods:
        return False
    if entry.seeds is not None and (study_seed if variant.seed is None else variant.seed) not in entry.seeds:
        return False
    return entry.sizes is None or variant.size in entry.sizes


def make_plan(resolved: ResolvedSpec, ctx: CheckContext) -> Plan:
    """Resolve the spec into cells. Raises ``SpecError`` for a method asked to prune an
    architecture it cannot (unless ``execution.on_unsupported = "skip"``)."""
    planner = _Planner(resolved, ctx)
    for i, m in enumerate(resolved.spec.models):
        planner.model(i, m)
    memory = plan_memory(resolved, ctx.registry, planner.configs, planner.skipped)
    issues = planner.issues + memory_issues(resolved, memory)
    if issues:
        raise SpecError(resolved.path, issues)
    return Plan(
        spec=resolved,
        spec_hash=resolved.spec.spec_hash(),
        cells=tuple(planner.cells.values()),
        skipped=tuple(planner.skipped),
        families=MappingProxyType(planner.families),
        memory=MappingProxyType(memory),
    )


class _Planner:
    """The cells of one spec, added model by model: base, its evaluations, each pruned
    variant, each recovered variant, and their evaluations. A cell's key is the hash of its
    inputs, so a cell asked for twice is planned once."""

    def __init__(self, resolved: ResolvedSpec, ctx: CheckContext):
        self.resolved, self.spec, self.ctx, self.registry = resolved, resolved.spec, ctx, ctx.registry
        self.seed, self.dtype = self.spec.study.seed, self.spec.execution.dtype
        self.cells: dict[str, Cell] = {}
        self.issues: list[SpecIssue] = []
        self.skipped: list[Skipped] = []
        self.families: dict[str, str] = {}
        self.configs: dict[str, Any] = {}  # model -> config.json, where known before loading
        self.evals = [
            (e, resolved.params_json(f"evaluators[{i}].params"), self.registry.get("evaluators", e.evaluator).kind)
            for i, e in enumerate(self.spec.evaluators)
        ]

    def add(self, kind: CellKind, variant: Variant, plugin: str, params: dict[str, Any], parent: str | None,
            **extra: Any) -> str:
        inputs: dict[str, object] = {
            "kind": kind, "plugin": plugin, "params": params, "parent": parent, "dtype": self.dtype}
        if kind in ("prune", "rft"):
            inputs["seed"] = variant.seed if kind == "prune" and variant.seed is not None else self.seed
        inputs.update({k: v for k, v in extra.items() if k in ("ratio", "size", "dataset", "identity", "model_type")})
        key = content_hash(inputs)[:20]
        if key not in self.cells:
            dataset = extra.get("dataset")
            self.cells[key] = Cell(
                key=key,
                kind=kind,
                variant=variant,
                plugin=plugin,
                params=_freeze(params),
                parent=parent,
                evaluator=extra.get("evaluator", ""),
                evaluator_kind=extra.get("evaluator_kind", ""),
                dataset=(dataset[0], _freeze(dataset[1])) if dataset else None,
                inputs=_freeze(inputs),
            )
        return key

    def add_evals(self, variant: Variant, parent: str) -> None:
        for e, params, kind in self.evals:
            if (variant.size and not e.after_rft) or not applies(e, variant.model) or not selects(e, variant, self.seed):
                continue
            self.add("eval", variant, e.evaluator, params, parent, evaluator=e.key, evaluator_kind=kind)

    def add_rft(self, variant: Variant, parent: str) -> list[tuple[Variant, str]]:
        added = []
        for i, r in enumerate(self.spec.rft):
            if not applies(r, variant.model) or (r.ratios is not None and variant.ratio not in r.ratios):
                continue
            if r.seeds is not None and (self.seed if variant.seed is None else variant.seed) not in r.seeds:
                continue
            params = self.resolved.params_json(f"rft[{i}].params")
            for ds in r.datasets:
                ds_plugin, ds_raw = dataset_ref(self.spec, ds)
                ds_params = self.resolved.params.get(f"datasets.{ds}.params")
                ds_json = ds_params.model_dump(mode="json") if ds_params is not None else ds_raw
                for size in r.sizes:
                    if size == 0:
                        continue  # D = 0 is the variant itself: no RFT, no cell
                    v = replace(variant, rft=r.key, rft_dataset=ds, size=size)
                    key = self.add("rft", v, r.plugin, params, parent, size=size, dataset=(ds_plugin, ds_json))
                    self.add_evals(v, key)
                    added.append((v, key))
        return added

    def model(self, i: int, m: Any) -> None:
        spec, resolved, ctx = self.spec, self.resolved, self.ctx
        self.families[m.name] = family_of(m.name, m.family)
        source = self.registry.get("model_sources", m.source)
        src_params = resolved.params[f"models[{i}].params"]
        model_type = m.model_type or source.model_type(src_params, ctx)
        identity = source.identity(src_params, ctx)
        config = source.config(src_params, ctx)  # None when sizes cannot be known before loading
        self.configs[m.name] = config
        if config is not None:
            for k, e in enumerate(spec.evaluators):
                if not applies(e, m.name):
                    continue
                evaluator = self.registry.get("evaluators", e.evaluator)
                if reason := evaluator.check_model(config, resolved.params[f"evaluators[{k}].params"]):
                    self.issues.append(SpecIssue(f"evaluators[{k}].params", f"on model {m.name!r}: {reason}"))
        base_v = Variant(m.name)
        base = self.add("base", base_v, m.source, src_params.model_dump(mode="json"), None, identity=identity,
                        model_type=model_type)
        self.add_evals(base_v, base)
        # RFT of the unpruned model only when a method asks for r = 0 (the reference point).
        if any(0.0 in meth.ratios for meth in spec.methods if applies(meth, m.name)):
            self.add_rft(base_v, base)
        for j, meth in enumerate(spec.methods):
            if applies(meth, m.name):
                self.method(j, meth, m.name, model_type, config, base)
        if spec.pipelines:
            hooks = PlanHooks(self.add, self.add_evals, self.add_rft)
            self.issues += plan_pipelines(resolved, self.registry, m.name, model_type, config, (base_v, base), hooks)

    def method(self, j: int, meth: Any, model: str, model_type: str | None, config: Any, base: str) -> None:
        """The pruned variants of one model by one method entry, each ratio and seed."""
        resolved = self.resolved
        pruner = self.registry.get("pruners", meth.method)
        reason = pruner.supports(model_type) if model_type else None
        if reason:
            if self.spec.execution.on_unsupported == "skip":
                self.skipped.append(Skipped(model, meth.key, reason))
                return
            self.issues.append(
                SpecIssue(
                    f"methods[{j}].method",
                    f"{meth.method!r} cannot prune model {model!r} ({model_type}): {reason}",
                    None,
                    f"restrict it with methods[{j}].models, or set execution.on_unsupported = \"skip\"",
                )
            )
            return
        params = resolved.params_json(f"methods[{j}].params")
        for k, ratio in enumerate(meth.ratios):
            if ratio == 0.0:
                continue  # r = 0 is the base model, already planned
            if config is not None and (
                reason := pruner.check_model(config, ratio, resolved.params[f"methods[{j}].params"])
            ):
                self.issues.append(
                    SpecIssue(f"methods[{j}].ratios[{k}]", f"on model {model!r}: {reason}", ratio, "a smaller ratio")
                )
                continue
            for s in meth.seeds or [None]:
                v = Variant(model, meth.key, ratio, seed=s)
                key = self.add("prune", v, meth.method, params, base, ratio=ratio)
                self.add_evals(v, key)
                self.add_rft(v, key)


def plan_memory(resolved: ResolvedSpec, registry: Any, configs: dict[str, Any], skipped: list[Skipped]) -> dict[str, Any]:
    """Each model's memory estimate per stage (:mod:`lawlab.run.memory`), where its config is known."""
    from lawlab.run.memory import DTYPE_BYTES, Shapes, StageRequest, compute_dtype, estimate_model

    spec = resolved.spec
    ex = spec.execution
    on_gpu = ex.device.startswith("cuda") or (ex.device == "auto" and _gpu_known(ex))
    dtype = compute_dtype(ex.dtype, on_gpu)
    b = DTYPE_BYTES[dtype]
    out = {}
    for m in spec.models:
        shapes = Shapes.from_config(configs[m.name]) if configs.get(m.name) else None
        if shapes is None:
            continue
        not_here = {s.method for s in skipped if s.model == m.name}
        # each plugin declares its own terms from its own params
        stages = [
            StageRequest("prune", meth.method, registry.get("pruners", meth.method).memory(
                resolved.params[f"methods[{j}].params"], shapes, b))
            for j, meth in enumerate(spec.methods)
            if applies(meth, m.name) and meth.key not in not_here and any(r > 0 for r in meth.ratios)
        ]
        stages += [  # a pipeline's pruning step is planned as a method's
            StageRequest("prune", s.method, registry.get("pruners", s.method).memory(
                resolved.params[f"pipelines[{i}].steps[{j}].params"], shapes, b))
            for i, p in enumerate(spec.pipelines) if applies(p, m.name)
            for j, s in enumerate(p.steps) if s.method and any(r > 0 for r in s.ratios or [])  # kind "prune"
        ]
        stages += [StageRequest("rft", r.plugin, registry.get("rft_recipes", r.plugin).memory(
                       resolved.params[f"rft[{i}].params"], shapes, b))
                   for i, r in enumerate(spec.rft) if any(d > 0 for d in r.sizes) and applies(r, m.name)]
        stages += [StageRequest("eval", e.evaluator, registry.get("evaluators", e.evaluator).memory(
                       resolved.params[f"evaluators[{i}].params"], shapes, b))
                   for i, e in enumerate(spec.evaluators) if applies(e, m.name)]
        out[m.name] = estimate_model(m.name, shapes, dtype, stages)
    return out


def _gpu_known(ex: Any) -> bool:
    from lawlab.run.memory import device_capacity

    return ex.device_memory_gb is not None or device_capacity(ex.device, None) is not None


def memory_issues(resolved: ResolvedSpec, memory: dict[str, Any]) -> list[SpecIssue]:
    """A model whose estimated device peak exceeds the device it will run on, when known."""
    from lawlab.run.memory import GIB, USABLE_FRACTION, device_capacity

    ex = resolved.spec.execution
    if not memory or ex.device in ("cpu", "mps"):
        return []
    capacity = device_capacity(ex.device, ex.device_memory_gb)
    if capacity is None:
        return []
    issues = []
    for i, m in enumerate(resolved.spec.models):
        est = memory.get(m.name)
        if est is None or est.peak_device <= capacity.usable:
            continue
        peak = est.peak
        issues.append(
            SpecIssue(
                f"models[{i}]",
                f"model {m.name!r} needs about {peak.device / GIB:.1f} GiB on the device at its peak "
                f"({peak.stage}: {peak.explain()}), more than the {USABLE_FRACTION:.0%} of the device lawlab "
                f"counts on ({capacity.usable / GIB:.1f} GiB of {capacity.source})",
                None,
                "a smaller batch_size or sequence length for that stage (RFT keeps its step with grad_accumulation), "
                "or a device with more memory",
            )
        )
    return issues


def stage_order(plan: Plan) -> list[Cell]:
    """Cells in the order the local scheduler runs them: depth first per model, so each
    base model is loaded once and each pruned model is made once and used by all its
    evaluations and RFT runs before the next one is made."""
    kids: dict[str | None, list[Cell]] = defaultdict(list)
    for c in plan.cells:
        kids[c.parent].append(c)
    order: list[Cell] = []

    def visit(cell: Cell) -> None:
        order.append(cell)
        # evaluations first: they need the model as it is, before anything else changes it
        for child in sorted(kids[cell.key], key=lambda c: c.kind != "eval"):
            visit(child)

    for root in kids[None]:
        visit(root)
    return order
