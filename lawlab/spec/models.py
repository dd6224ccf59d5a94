"""The study spec: a TOML file, validated by pydantic before anything runs.

Validation has two passes. The first is structural (types, ranges, unknown keys) and
needs no plugins. The second resolves every plugin name against the registry, validates
each entry's ``params`` against that plugin's own ``Params`` model, and runs the plugins'
``check``. Every problem found is reported at once, each with the file, the dotted path of
the field, what was given and what is allowed.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lawlab.api import CannotRunHere, CheckContext, CheckFailed, PluginKind

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SLUG = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Study(Strict):
    name: str = Field(pattern=SLUG, description="Name of the study; used in the output folder and report.")
    seed: int = Field(0, ge=0, description="Seed for pruning choices, RFT sampling and training.")
    output: str | None = Field(
        None, description="Output folder (relative to the current directory); default runs/<name>."
    )
    description: str = Field("", description="Free text, shown in the report.")


class ModelEntry(Strict):
    name: str = Field(pattern=SLUG, description="Your label for the model, unique in the spec.")
    source: str = Field(description="Model source plugin: hub, local, gguf, pack, ...")
    params: dict[str, Any] = Field(default_factory=dict, description="The source's parameters.")
    family: str | None = Field(
        None, description="Family label used to group counts and fits (e.g. qwen2.5, llama-3)."
    )
    model_type: str | None = Field(
        None, description="config.model_type, when the source cannot tell it without loading."
    )


class MethodEntry(Strict):
    method: str = Field(description="Pruning method plugin: random-prunenet, prunenet, slicegpt, ...")
    label: str | None = Field(None, pattern=SLUG, description="Unique label; default: the method name.")
    ratios: list[float] = Field(description="Nominal compression ratios r, each in [0, 1).")
    models: list[str] | None = Field(None, description="Only these models (default: all).")
    seeds: list[int] | None = Field(
        None, description="Prune once per seed at each ratio (replicates of a random method, each its own pruned "
        "model: a cluster with its D cells); default: the study's seed only."
    )
    params: dict[str, Any] = Field(default_factory=dict, description="The pruner's parameters.")

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (not v or len(set(v)) != len(v) or min(v) < 0):
            raise ValueError("seeds must be a non-empty list of distinct integers >= 0")
        return v

    @field_validator("ratios")
    @classmethod
    def _ratios(cls, v: list[float]) -> list[float]:
        if not v:
            raise ValueError("needs at least one ratio")
        for r in v:
            if not 0.0 <= r < 1.0:
                raise ValueError(f"ratio {r} is outside [0, 1)")
        if len(set(v)) != len(v):
            raise ValueError("ratios repeat")
        return v

    @property
    def key(self) -> str:
        return self.label or self.method


class RFTEntry(Strict):
    recipe: str = Field("lora", description="RFT recipe plugin.")
    label: str | None = Field(None, pattern=SLUG, description="Unique label; default: the recipe name.")
    datasets: list[str] = Field(default_factory=list, description="Training datasets.")
    sizes: list[int] = Field(description="Sample counts D; 0 means no RFT (planned once).")
    models: list[str] | None = Field(None, description="Only these models (default: all).")
    ratios: list[float] | None = Field(
        None, description="Only the variants pruned at these ratios (default: every ratio); r = 0 means the "
        "unpruned model."
    )
    params: dict[str, Any] = Field(default_factory=dict, description="The recipe's parameters.")

    @field_validator("sizes")
    @classmethod
    def _sizes(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("needs at least one size")
        if any(d < 0 for d in v):
            raise ValueError("sizes are sample counts, 0 or more")
        if len(set(v)) != len(v):
            raise ValueError("sizes repeat")
        return v

    @model_validator(mode="after")
    def _datasets_for_training(self) -> RFTEntry:
        if any(d > 0 for d in self.sizes) and not self.datasets:
            raise ValueError("sizes above 0 need at least one dataset in 'datasets'")
        return self

    @property
    def key(self) -> str:
        return self.label or self.recipe


class EvaluatorEntry(Strict):
    evaluator: str = Field(description="Evaluator plugin: cross-entropy, lm-eval, runtime, ...")
    label: str | None = Field(None, pattern=SLUG, description="Unique label; default: the evaluator name.")
    models: list[str] | None = Field(
        None, description="Only these models (default: all); a law then fits the models it has."
    )
    ratios: list[float] | None = Field(
        None, description="Only the variants at these ratios (default: all); the unpruned model is always "
        "evaluated, as every variant's L0. A costly benchmark can run where a finding is decided."
    )
    sizes: list[int] | None = Field(
        None, description="Only the variants recovered with these D (default: all; 0 means no RFT)."
    )
    seeds: list[int] | None = Field(
        None, description="Only the variants pruned with these seeds (methods[].seeds; default: all)."
    )
    methods: list[str] | None = Field(
        None, description="Only the variants pruned by these methods (their labels; default: all)."
    )
    params: dict[str, Any] = Field(default_factory=dict, description="The evaluator's parameters.")
    after_rft: bool = Field(
        True,
        description="Evaluate the RFT-recovered variants too; false for what RFT cannot change, such as the "
        "runtime of a model whose LoRA adapter is merged back (same shapes, same speed).",
    )

    @property
    def key(self) -> str:
        return self.label or self.evaluator


GroupBy = Literal["pooled", "model", "method", "calibration", "dataset"]


class PipelineStep(Strict):
    """One step of a hybrid pipeline: exactly one of ``method``, ``quantizer`` or ``rft``."""

    method: str | None = Field(None, description="A pruning step: the pruner plugin (with ratios and params).")
    ratios: list[float] | None = Field(None, description="The pruning step's nominal ratios r, each in [0, 1).")
    params: dict[str, Any] = Field(default_factory=dict, description="The pruner's parameters.")
    quantizer: str | None = Field(None, description="A quantisation step: the quantiser plugin (with settings).")
    settings: list[dict[str, Any]] | None = Field(
        None, description="The quantiser's parameters, one table per setting: each is one branch of the grid "
        "(default: one setting, the quantiser's defaults)."
    )
    rft: Literal["here"] | None = Field(
        None, description="Where the [[rft]] entries recover the model: 'here'. Without it, RFT follows the "
        "pruning step (prune → RFT → quantise, the deployment order)."
    )

    @field_validator("ratios")
    @classmethod
    def _ratios(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and (not v or len(set(v)) != len(v) or not all(0.0 <= r < 1.0 for r in v)):
            raise ValueError("ratios: one or more distinct values, each in [0, 1)")
        return v

    @model_validator(mode="after")
    def _one_kind(self) -> PipelineStep:
        kinds = [k for k in ("method", "quantizer", "rft") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("a step is exactly one of: method (pruning), quantizer, rft = \"here\"")
        if (self.method is None) != (self.ratios is None):
            raise ValueError("ratios belong to a pruning step, and a pruning step needs them")
        if self.settings is not None and (self.quantizer is None or not self.settings):
            raise ValueError("settings belong to a quantisation step, one table or more")
        if self.params and self.method is None:
            raise ValueError("params belong to a pruning step (a quantiser's go in settings)")
        return self

    @property
    def kind(self) -> Literal["prune", "quantize", "rft"]:
        return "prune" if self.method else "quantize" if self.quantizer else "rft"


class PipelineEntry(Strict):
    label: str | None = Field(None, pattern=SLUG, description="Unique label; default: its steps' plugins joined by '+'.")
    steps: list[PipelineStep] = Field(min_length=1, description="Compression steps in the order they are applied.")
    models: list[str] | None = Field(None, description="Only these models (default: all).")

    @property
    def key(self) -> str:
        return self.label or "+".join(s.method or s.quantizer or "rft" for s in self.steps)


class LawEntry(Strict):
    form: str = Field(description="Law form plugin: compression-law, ablation-r, ablation-d, runtime-law, ...")
    label: str | None = Field(None, pattern=SLUG, description="Unique label; default: form:metric.")
    metric: Literal["intrinsic", "extrinsic", "runtime"] = Field(
        description="Which measurements the law describes."
    )
    group_by: list[GroupBy] = Field(
        default_factory=lambda: ["pooled"],
        description="Groupings to fit, each a separate set of fits: pooled (one fit of all rows), or one fit per "
        "model, method, calibration (free or based) or test dataset.",
    )
    fit: Literal["ols", "nls", "both"] = Field(
        "ols", description="ols: least squares in log space (the paper's way, log-linear forms only); nls: lmfit."
    )
    space: Literal["log", "linear"] = Field("log", description="Residual space for nls fits.")
    ratio: Literal["nominal", "effective"] = Field(
        "nominal", description="Use the nominal r (as the paper) or the fraction of parameters removed."
    )
    bootstrap: int = Field(0, ge=0, description="Bootstrap resamples for confidence intervals (0: none).")
    resample: Literal["cells", "clusters", "models"] = Field(
        "cells", description="Bootstrap resampling unit: single cells, whole pruned models (model, method, r and "
        "seed: a cluster with its D cells), or whole models."
    )
    interval: Literal["cluster", "iid"] = Field(
        "cluster", description="Covariance of the OLS intervals: cluster-robust over pruned models (the D cells of "
        "one pruned model are not independent), or the classical iid one."
    )
    params: dict[str, Any] = Field(default_factory=dict, description="Options of the form (e.g. epsilon).")

    @property
    def key(self) -> str:
        return self.label or f"{self.form}:{self.metric}"


class DatasetEntry(Strict):
    loader: str = Field(description="Dataset plugin that reads it, e.g. text-file or jsonl.")
    params: dict[str, Any] = Field(default_factory=dict, description="The loader's parameters (paths...).")


class Execution(Strict):
    device: str = Field("auto", description="auto (a GPU when there is one), cpu, mps, cuda or cuda:N.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto: bfloat16 on a GPU that supports it, float32 on CPU."
    )
    executor: str = Field("local", description="Executor plugin: local, ray, ...")
    params: dict[str, Any] = Field(default_factory=dict, description="The executor's parameters.")
    keep_artifacts: Literal["all", "needed", "none"] = Field(
        "needed", description="Pruned/recovered models kept on disk: all, only those later cells need, none."
    )
    on_unsupported: Literal["error", "skip"] = Field(
        "error", description="A method that cannot prune an architecture: stop at plan time, or skip its cells."
    )
    offline: Literal["auto", "yes", "no"] = Field(
        "auto",
        description="auto: use the hub when its endpoint (HF_ENDPOINT) answers, else only its cache; yes: the "
        "cache only; no: always the hub. LAWLAB_OFFLINE=1/0 overrides auto.",
    )

    device_memory_gb: float | None = Field(
        None,
        gt=0,
        description="Memory of the GPU the study will run on, in GiB (80 for an A100-80GB): validate refuses a "
        "model whose estimated peak exceeds it. None: the visible GPU's, when there is one.",
    )

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", v):
            raise ValueError(f"unknown device {v!r}; allowed: auto, cpu, mps, cuda, cuda:N")
        return v


class Spec(Strict):
    """A whole study."""

    study: Study
    models: list[ModelEntry] = Field(min_length=1)
    methods: list[MethodEntry] = Field(default_factory=list)
    pipelines: list[PipelineEntry] = Field(
        default_factory=list, description="Hybrid variants: ordered steps of pruning, quantisation and RFT; the "
        "grid is the product of their settings (see lawlab.run.pipelines)."
    )
    rft: list[RFTEntry] = Field(default_factory=list)
    evaluators: list[EvaluatorEntry] = Field(min_length=1)
    laws: list[LawEntry] = Field(default_factory=list)
    datasets: dict[str, DatasetEntry] = Field(default_factory=dict)
    execution: Execution = Field(default_factory=Execution)

    @model_validator(mode="after")
    def _unique_labels(self) -> Spec:
        for what, keys in (
            ("models", [m.name for m in self.models]),
            ("methods", [m.key for m in self.methods]),
            ("pipelines", [p.key for p in self.pipelines]),
            ("rft", [r.key for r in self.rft]),
            ("evaluators", [e.key for e in self.evaluators]),
            ("laws", [law.key for law in self.laws]),
        ):
            seen = set()
            for k in keys:
                if k in seen:
                    raise ValueError(f"{what}: {k!r} appears twice; names/labels must be unique")
                seen.add(k)
        return self

    def output_dir(self) -> Path:
        return Path(self.study.output or f"runs/{self.study.name}")

    def dataset_refs(self) -> dict[str, tuple[str, dict[str, Any]]]:
        return {name: (d.loader, d.params) for name, d in self.datasets.items()}

    def canonical(self) -> dict[str, Any]:
        out = self.model_dump(mode="json")
        if not out["pipelines"]:
            del out["pipelines"]  # a spec without pipelines keeps the hash it had before they existed
        return out

    def spec_hash(self) -> str:
        return content_hash(self.canonical())


def content_hash(obj: Any) -> str:
    """A stable hash of JSON-able content (sorted keys, no whitespace)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


# --------------------------------------------------------------------------- errors


@dataclass(frozen=True)
class SpecIssue:
    path: str  # dotted path of the field: methods[0].ratios[1]
    message: str
    given: Any = None
    allowed: str | None = None

    def render(self) -> str:
        parts = [f"{self.path or '(spec)'}: {self.message}"]
        if self.given is not None:
            parts.append(f"given: {_short(self.given)}")
        if self.allowed:
            parts.append(f"allowed: {self.allowed}")
        return "; ".join(parts)


def _short(v: Any) -> str:
    """A given value as it would be written in the spec (TOML and JSON agree for these)."""
    s = json.dumps(v, default=str, ensure_ascii=False)
    return s if len(s) < 80 else s[:77] + "..."


class SpecError(Exception):
    """A spec that must not reach the run. The CLI prints it and exits with code 2."""

    def __init__(self, file: Path | str, issues: Sequence[SpecIssue]):
        self.file = str(file)
        self.issues = list(issues)
        super().__init__(self.render())

    def render(self) -> str:
        n = len(self.issues)
        head = f"{self.file}: {n} problem{'s' if n != 1 else ''} in the spec"
        return "\n".join([head, *(f"  {self.file}: {i.render()}" for i in self.issues)])


# What stops a valid spec from running on this machine, by kind: the label heads the
# kind's line in "cannot run on this machine". A plugin may raise CannotRunHere with a
# kind of its own; it is then shown under its name.
HERE_KINDS = {
    "hub-model": "models that need the hub",
    "hub-dataset": "datasets that need the hub",
    "network-data": "data that needs the network",
    "device": "a device this machine lacks",
    "pack": "offline packs not installed",
    "memory": "models too large for this machine (no GPU)",
}


@dataclass(frozen=True)
class HereIssue:
    """One reason this machine cannot run a valid spec (see ``CannotRunHere``)."""

    kind: str
    item: str  # what is missing: "Qwen/Qwen2.5-0.5B@main", "wikitext2", "cuda"
    path: str  # the spec field that asks for it
    message: str
    fix: str | None = None


def here_lines(issues: Sequence[HereIssue], spec_path: Path | str = "SPEC") -> list[str]:
    """The "cannot run on this machine" section: one line per kind, each item once, then
    each distinct fix once (``{spec}`` in a fix becomes the spec's path)."""
    by_kind: dict[str, list[str]] = {}
    fixes: list[str] = []
    for i in issues:
        items = by_kind.setdefault(i.kind, [])
        if i.item not in items:
            items.append(i.item)
        for fix in (i.fix or "").replace("{spec}", str(spec_path)).splitlines():  # one line per way out
            if fix and fix not in fixes:
                fixes.append(fix)
    lines = [f"{HERE_KINDS.get(kind, kind)}: {', '.join(items)}" for kind, items in by_kind.items()]
    return lines + [f"{'fix' if n == 0 else 'or'}: {f}" for n, f in enumerate(fixes)]


class MachineError(SpecError):
    """A valid spec this machine cannot run (``validate --here``, ``run``): exit code 2."""

    def __init__(self, file: Path | str, here: Sequence[HereIssue]):
        self.here = list(here)
        super().__init__(file, [SpecIssue(i.path, i.message, None, i.fix) for i in here])

    def render(self) -> str:
        head = f"{self.file}: the spec is valid, but this machine cannot run it"
        return "\n".join([head, *(f"  {line}" for line in here_lines(self.here, self.file))])


def _fmt_loc(loc: Iterable[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _allowed_keys(model: type[BaseModel], loc: Sequence[Any]) -> list[str] | None:
    """The field names allowed where an unknown key was found."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if isinstance(current, type) and issubclass(current, BaseModel) and part in current.model_fields:
            ann = current.model_fields[part].annotation
            current = _inner_model(ann)
        else:
            return None
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return None


def _inner_model(ann: Any) -> Any:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in getattr(ann, "__args__", ()) or ():
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def issues_from_validation(err: ValidationError, model: type[BaseModel], prefix: str = "") -> list[SpecIssue]:
    issues = []
    for e in err.errors():
        loc = list(e["loc"])
        path = _fmt_loc(loc)
        if prefix:
            path = f"{prefix}.{path}" if path and not path.startswith("[") else f"{prefix}{path}"
        kind = e["type"]
        if kind == "extra_forbidden":
            keys = _allowed_keys(model, loc)
            close = difflib.get_close_matches(str(loc[-1]), keys or [], n=1)
            allowed = ", ".join(keys) if keys else None
            msg = f"unknown key {loc[-1]!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
            issues.append(SpecIssue(path, msg, None, allowed))
        elif kind == "missing":
            issues.append(SpecIssue(path, "required field is missing"))
        else:
            msg = e["msg"].removeprefix("Value error, ")
            given = e.get("input")
            if isinstance(given, dict):
                given = None
            allowed = None
            ctx = e.get("ctx") or {}
            if "expected" in ctx:
                allowed = str(ctx["expected"])
            elif "pattern" in ctx:
                allowed = "letters, digits, '.', '_' and '-' (no spaces)" if ctx["pattern"] == SLUG else ctx["pattern"]
            issues.append(SpecIssue(path, msg, given, allowed))
    return issues


# --------------------------------------------------------------------------- loading


def read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(path, [SpecIssue("", "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(path, [SpecIssue("", f"cannot read the file: {exc}")]) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib puts "(at line L, column C)" in the message; keep it, it is what users need.
        raise SpecError(path, [SpecIssue("", f"TOML syntax error: {exc}")]) from None


_SEGMENT = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str], file: Path) -> dict[str, Any]:
    """Apply ``--set dotted.key=value`` overrides; the value is read as a TOML value
    (``0.5``, ``[0.1, 0.3]``, ``"text"``), or as a bare string if it is not one."""
    issues = []
    for item in overrides:
        if "=" not in item:
            issues.append(SpecIssue("--set", "expected dotted.key=value", item, "e.g. study.seed=3"))
            continue
        key, text = item.split("=", 1)
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text
        parts: list[str | int] = []
        for name, idx in _SEGMENT.findall(key.strip()):
            parts.append(int(idx) if idx else (int(name) if name.isdigit() else name))
        if not parts:
            issues.append(SpecIssue("--set", "empty key", item))
            continue
        node: Any = raw
        try:
            for p in parts[:-1]:
                node = node[p] if isinstance(p, int) else node.setdefault(p, {})
            if isinstance(parts[-1], int):
                node[parts[-1]] = value
            else:
                node[parts[-1]] = value
        except (IndexError, KeyError, TypeError):
            issues.append(SpecIssue(_fmt_loc(parts), "--set names a field that does not exist", item))
    if issues:
        raise SpecError(file, issues)
    return raw


def parse_spec(raw: dict[str, Any], file: Path | str) -> Spec:
    """Structural validation only (no plugins)."""
    try:
        return Spec.model_validate(raw)
    except ValidationError as err:
        raise SpecError(file, issues_from_validation(err, Spec)) from None


# --------------------------------------------------------------------------- plugins


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


def resolve_spec(spec: Spec, path: Path, ctx: CheckContext) -> ResolvedSpec:  # noqa: C901 (split pending: the spec's owner is changing it)
    """The second pass: plugin names, plugin params and plugin checks."""
    c = _Checker(spec, ctx)
    model_names = {m.name for m in spec.models}

    for i, m in enumerate(spec.models):
        p = f"models[{i}]"
        src = c.plugin("model_sources", m.source, f"{p}.source")
        if src is not None and (parsed := c.parse_params(src, m.params, f"{p}.params")) is not None:
            c.run_check(f"{p}.params", src.check, parsed, ctx)
        if m.model_type is not None and not c.registry.has("architectures", m.model_type):
            c.plugin("architectures", m.model_type, f"{p}.model_type")

    def known_models(entry: Any, p: str) -> None:
        for j, name in enumerate(entry.models or []):
            if name not in model_names:
                c.issues.append(
                    SpecIssue(f"{p}.models[{j}]", f"no model is named {name!r}", None, ", ".join(sorted(model_names)))
                )

    method_labels = {m.key for m in spec.methods}

    def known_methods(entry: Any, p: str) -> None:
        for j, name in enumerate(getattr(entry, "methods", None) or []):
            if name not in method_labels:
                c.issues.append(SpecIssue(f"{p}.methods[{j}]", f"no method is labelled {name!r}", None,
                                          ", ".join(sorted(method_labels)) or "no method in the spec"))

    for i, meth in enumerate(spec.methods):
        p = f"methods[{i}]"
        pruner = c.plugin("pruners", meth.method, f"{p}.method")
        known_models(meth, p)
        if pruner is not None and (parsed := c.parse_params(pruner, meth.params, f"{p}.params")) is not None:
            c.run_check(f"{p}.params", pruner.check, parsed, meth.ratios, ctx)

    for i, r in enumerate(spec.rft):
        p = f"rft[{i}]"
        recipe = c.plugin("rft_recipes", r.recipe, f"{p}.recipe")
        known_models(r, p)
        for j, ds in enumerate(r.datasets):
            c.dataset(ds, "train", f"{p}.datasets[{j}]")
        if recipe is not None and (parsed := c.parse_params(recipe, r.params, f"{p}.params")) is not None:
            for j, ds in enumerate(r.datasets):
                for d in r.sizes:
                    if d > 0:
                        c.run_check(f"{p}.datasets[{j}]", recipe.check, parsed, ds, d, ctx)

    for i, e in enumerate(spec.evaluators):
        p = f"evaluators[{i}]"
        ev = c.plugin("evaluators", e.evaluator, f"{p}.evaluator")
        known_models(e, p)
        known_methods(e, p)
        if ev is not None and (parsed := c.parse_params(ev, e.params, f"{p}.params")) is not None:
            for ds in ev.datasets(parsed):
                c.dataset(ds, "test", f"{p}.params")
            c.run_check(f"{p}.params", ev.check, parsed, ctx)
            c.params[f"{p}.params"] = ev.resolve(parsed, ctx)

    for i, law in enumerate(spec.laws):
        p = f"laws[{i}]"
        form = c.plugin("law_forms", law.form, f"{p}.form")
        if form is not None:
            c.parse_params(form, law.params, f"{p}.params")
            if law.fit in ("ols", "both") and not form.log_linear:
                c.issues.append(
                    SpecIssue(
                        f"{p}.fit",
                        f"law form {law.form!r} is not linear in log space, so it cannot be fitted by OLS",
                        law.fit,
                        "nls",
                    )
                )
        known = [e for e in spec.evaluators if c.registry.has("evaluators", e.evaluator)]
        kinds = {c.registry.get("evaluators", e.evaluator).kind for e in known}
        if len(known) == len(spec.evaluators) and law.metric not in kinds:
            c.issues.append(
                SpecIssue(
                    f"{p}.metric",
                    f"no evaluator in the spec measures {law.metric!r} metrics",
                    law.metric,
                    ", ".join(sorted(kinds)),
                )
            )

    if spec.pipelines:
        from lawlab.run.pipelines import check_pipelines

        check_pipelines(c, spec, ctx)

    ex = spec.execution
    executor = c.plugin("executors", ex.executor, "execution.executor")
    if executor is not None and (parsed := c.parse_params(executor, ex.params, "execution.params")) is not None:
        c.run_check("execution.params", executor.check, parsed, ctx)
    c.run_check("execution.device", _check_device, ex.device)

    if c.issues:
        raise SpecError(path, c.issues)
    return ResolvedSpec(spec=spec, path=path, params=c.params, offline=ctx.offline, here=tuple(c.here))


def _check_device(device: str) -> None:
    from lawlab import environment

    missing = environment.missing_device(device)
    if missing:
        raise CannotRunHere(missing, kind="device", item=device, fix='device = "auto" (or "cpu"), or a machine with it')


def load_spec(
    path: str | Path,
    overrides: Sequence[str] = (),
    *,
    registry: Any = None,
    offline: bool | None = None,
    cache_dir: Path | None = None,
) -> ResolvedSpec:
    """Read, override, validate and resolve a spec file. Raises ``SpecError``."""
    from lawlab import environment
    from lawlab.registry import get_registry

    path = Path(path)
    raw = apply_overrides(read_toml(path), overrides, path)
    spec = parse_spec(raw, path)
    if offline is None:
        offline = environment.is_offline(spec.execution.offline)
    ctx = CheckContext(
        spec_path=path.resolve(),
        offline=offline,
        registry=registry or get_registry(),
        cache_dir=cache_dir or environment.cache_dir(),
        datasets=spec.dataset_refs(),
    )
    return resolve_spec(spec, path, ctx)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the spec, for editor completion (taplo, VS Code Even Better TOML)."""
    schema = Spec.model_json_schema()
    schema["title"] = "lawlab study spec"
    return schema
