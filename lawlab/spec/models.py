"""The study spec's structure: the pydantic models of a TOML study file.

Validation has two passes. The first is structural (types, ranges, unknown keys; these
models) and needs no plugins. The second resolves every plugin name against the registry,
validates each entry's ``params`` against that plugin's own ``Params`` model, and runs the
plugins' ``check`` (:mod:`lawlab.spec.resolve`). Every problem found is reported at once,
each with the file, the dotted path of the field, what was given and what is allowed
(:mod:`lawlab.spec.issues`). :func:`lawlab.spec.load.load_spec` runs both passes on a file.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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
    recipe: str | None = Field(
        None, description="RFT recipe plugin; left out: the installed recipe that declares itself the default."
    )
    label: str | None = Field(None, pattern=SLUG, description="Unique label; default: the recipe name.")
    datasets: list[str] = Field(default_factory=list, description="Training datasets.")
    sizes: list[int] = Field(description="Sample counts D; 0 means no RFT (planned once).")
    models: list[str] | None = Field(None, description="Only these models (default: all).")
    ratios: list[float] | None = Field(
        None, description="Only the variants pruned at these ratios (default: every ratio); r = 0 means the "
        "unpruned model."
    )
    seeds: list[int] | None = Field(
        None, description="Only the variants pruned with these seeds (methods[].seeds; a method without seeds, "
        "and the unpruned model, has the study's seed; default: all)."
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
    def plugin(self) -> str:
        """The recipe's name; resolving the spec fills in a left-out one (``with_default_plugins``)."""
        assert self.recipe is not None, "the rft recipe is read before the spec was resolved"
        return self.recipe

    @property
    def key(self) -> str:
        return self.label or self.plugin


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
MetricKind = Literal["intrinsic", "extrinsic", "runtime"]


def _pooled() -> list[GroupBy]:  # named and typed: mypy reads a lambda's ["pooled"] as list[str]
    return ["pooled"]


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
    metric: MetricKind = Field(
        description="Which measurements the law describes."
    )
    group_by: list[GroupBy] = Field(
        default_factory=_pooled,
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
    executor: str | None = Field(
        None, description="Executor plugin: local, ray, ...; left out: the installed executor that declares itself "
        "the default."
    )
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
            # not yet resolved: a left-out recipe is None, and two such entries get the same default
            ("rft", [r.label or r.recipe for r in self.rft]),
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
        for r in out["rft"]:
            if r["seeds"] is None:
                del r["seeds"]  # likewise an RFT entry without a seed filter
        return out

    def spec_hash(self) -> str:
        return content_hash(self.canonical())


def content_hash(obj: Any) -> str:
    """A stable hash of JSON-able content (sorted keys, no whitespace)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the spec, for editor completion (taplo, VS Code Even Better TOML)."""
    schema = Spec.model_json_schema()
    schema["title"] = "lawlab study spec"
    return schema
