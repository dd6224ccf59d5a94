"""Tools for testing lawlab and its plugins: tiny real models of each supported
architecture, and the conformance kit every pruner plugin should pass.

Tiny models are ordinary transformers models built from a config (a few hundred KB),
with a byte-level BPE tokenizer trained here on a fixed text, so tests exercise the
same code paths as a real model without any download.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lawlab.api import LoadedModel

TINY_TYPES = ("llama", "qwen2", "mistral", "gemma3_text")
# Every structural feature present, small enough to build in milliseconds.
TINY_SIZES = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
}

# A small fixed corpus: enough structure for a BPE to learn merges, and for tests that
# need a dataset to have train and test splits.
_WORDS = (
    "the model prunes channels of every layer and recovers with a short fine tuning run "
    "while the loss rises with the ratio and falls with more data the law predicts the "
    "accuracy of a compressed network from its ratio its size and the tokens of recovery "
    "a researcher fits the law to many cells and compares forms on held out models"
).split()


def tiny_corpus(n_docs: int = 200, seed: int = 0) -> list[str]:
    """Deterministic pseudo-sentences built from a fixed vocabulary."""
    import random

    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        n = rng.randint(8, 40)
        docs.append(" ".join(rng.choice(_WORDS) for _ in range(n)).capitalize() + ".")
    return docs


@functools.cache
def tiny_tokenizer(vocab_size: int = 384) -> Any:
    """A byte-level BPE tokenizer trained on :func:`tiny_corpus`, with BOS/EOS/PAD."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(tiny_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", model_max_length=256
    )


def tiny_config(model_type: str = "llama", *, tied: bool = True, vocab_size: int | None = None, **overrides: Any) -> Any:
    """A transformers config for a 2-layer model of ``model_type``: hidden 64, MLP 128,
    4 heads over 2 KV heads (GQA), so every structural feature is present."""
    from transformers import AutoConfig

    tok = tiny_tokenizer()
    common: dict[str, Any] = dict(
        vocab_size=vocab_size or len(tok),
        **TINY_SIZES,
        tie_word_embeddings=tied,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    if model_type == "gemma3_text":
        common.update(head_dim=16, sliding_window=64, query_pre_attn_scalar=16, layer_types=None)
    common.update(overrides)
    return AutoConfig.for_model(model_type, **common)


def tiny_model(model_type: str = "llama", *, tied: bool = True, seed: int = 0, **overrides: Any) -> LoadedModel:
    """A freshly initialised tiny causal LM (float32, eval mode) with its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    config = tiny_config(model_type, tied=tied, **overrides)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    scale_norms(model)
    model.eval()
    return LoadedModel(
        model=model,
        tokenizer=tiny_tokenizer(),
        model_type=config.model_type,
        provenance={"source": "lawlab.testing.tiny_model", "model_type": model_type, "seed": seed, "tied": tied},
    )


def scale_norms(model: Any) -> None:
    """Give norms non-trivial weights: with all-ones weights a bug that forgets to fold a
    norm into the next layer would go unnoticed."""
    import torch

    g = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and p.ndim == 1:
                p.copy_(p + 0.3 * torch.randn(p.shape, generator=g))


def save_tiny(model: LoadedModel, path: Path) -> Path:
    """Save a tiny model as an ordinary HF folder (safetensors + tokenizer)."""
    path = Path(path)
    model.model.save_pretrained(path, safe_serialization=True)
    model.tokenizer.save_pretrained(path)
    return path


# --------------------------------------------------------------------------- conformance kit
#
# Every pruner plugin, built-in or third-party, should pass ``check_pruner`` on the tiny
# models of each architecture it supports. In a test:
#
#     from lawlab.testing import assert_conforms
#     def test_my_pruner():
#         assert_conforms(MyPruner(), params={"multiple_of": 1})


@dataclass
class ConformanceResult:
    model_type: str
    check: str
    passed: bool
    message: str = ""
    skipped: bool = False


@dataclass
class ConformanceReport:
    pruner: str
    results: list[ConformanceResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    def failures(self) -> list[ConformanceResult]:
        return [r for r in self.results if not r.passed]

    def __str__(self) -> str:
        lines = [f"conformance of pruner {self.pruner!r}: {'PASSED' if self.passed else 'FAILED'}"]
        for r in self.results:
            mark = "skip" if r.skipped else ("ok" if r.passed else "FAIL")
            lines.append(f"  [{mark:4}] {r.model_type:12} {r.check:16} {r.message}")
        return "\n".join(lines)


def write_rows_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    """Rows (simulated, or the export's) as the results CSV a law command reads; a nested
    value (``details``) is written as JSON, as ``lawlab export`` writes it."""
    import csv
    import json

    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows({k: json.dumps(v) if isinstance(v, dict) else v for k, v in r.items()} for r in rows)
    return path


def spec_toml(output: str | Path | None = None, *, study: dict[str, Any] | None = None,
              execution: dict[str, Any] | None = None, **sections: Any) -> str:
    """A study spec as TOML text, for tests that write one. ``[study]`` is named "tiny" with
    seed 1 (and ``output`` where given) and ``[execution]`` runs on the CPU; ``study`` and
    ``execution`` are merged into those. Each of ``sections`` follows in the order given: a
    list of dicts as an array of tables (``models=[{...}]`` → ``[[models]]``), a dict as a
    table, None left out. Nested values are written inline, as a person writes a spec."""
    head = {"name": "tiny", "seed": 1, **({"output": Path(output).as_posix()} if output else {}), **(study or {})}
    tables = {"study": head, **sections, "execution": {"device": "cpu", **(execution or {})}}
    blocks = []
    for key, value in tables.items():
        if isinstance(value, dict):
            blocks.append(_toml_table(f"[{key}]", value))
        elif value is not None:
            blocks += [_toml_table(f"[[{key}]]", v) for v in value]
    return "\n".join(blocks)


def _toml_table(header: str, table: dict[str, Any]) -> str:
    return "\n".join([header, *(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items())]) + "\n"


def _toml_key(key: str) -> str:
    import json

    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def _toml_value(value: Any) -> str:
    import json

    if isinstance(value, bool):  # before int: a bool is an int to Python
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }" if value else "{}"
    return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a TOML basic string


# A tiny registry loads the entry points named after these kinds (lawlab's own declare them):
# the architectures every model needs, and the datasets.
TINY_REGISTRY_KINDS = ("architectures", "datasets")


def tiny_registry(*plugin_modules: Any) -> Any:
    """A registry with the built-in architectures and datasets plus ``plugin_modules``
    (modules or objects with ``register_*`` hooks), without loading every installed plugin."""
    from importlib import metadata

    from lawlab.registry import ENTRY_POINT_GROUP, KINDS, PluginInfo, Registry

    registry = Registry()
    builtins = [ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name in TINY_REGISTRY_KINDS]
    modules = [ep.load() for ep in sorted(builtins, key=lambda ep: TINY_REGISTRY_KINDS.index(ep.name))]
    for module in [*modules, *plugin_modules]:
        name = getattr(module, "__name__", type(module).__name__)
        info = PluginInfo(name, name, None, None, any(module is m for m in modules))
        registry.plugins.append(info)
        for kind, hook in KINDS.items():
            fn = getattr(module, hook, None)
            if fn is not None:
                fn(register=lambda obj, kind=kind, info=info: registry.add(kind, obj, info))
    return registry


def tiny_run_context(work_dir: Path, registry: Any = None, seed: int = 0) -> Any:
    """A CPU float32 :class:`RunContext` whose cache and scratch live under ``work_dir``."""
    from lawlab.api import RunContext

    work_dir = Path(work_dir)
    (work_dir / "cache").mkdir(parents=True, exist_ok=True)
    (work_dir / "work").mkdir(parents=True, exist_ok=True)
    return RunContext(seed=seed, device="cpu", dtype="float32", cache_dir=work_dir / "cache",
                      work_dir=work_dir / "work", offline=True, registry=registry or tiny_registry())


def _probe_ids() -> Any:
    import torch

    tok = tiny_tokenizer()
    ids = tok("the model prunes channels of every layer and the law predicts", add_special_tokens=False)["input_ids"]
    return torch.tensor([[tok.bos_token_id, *ids]])


def _logits(model: LoadedModel, ids: Any) -> Any:
    import torch

    with torch.no_grad():
        return model.model(input_ids=ids).logits.float()


def _save_and_reload(pruner: Any, model: LoadedModel, path: Path, ctx: Any) -> LoadedModel:
    if model.format == "hf":
        from transformers import AutoModelForCausalLM

        save_tiny(model, path)
        reloaded = AutoModelForCausalLM.from_pretrained(path).eval()
        return LoadedModel(reloaded, model.tokenizer, model.model_type)
    pruner.save_model(model, path)
    return pruner.load_model(path, ctx)


def check_pruner(  # noqa: C901 (one assertion after another; each branch is one check of the kit)
    pruner: Any,
    params: Any = None,
    model_types: tuple[str, ...] = TINY_TYPES,
    ratios: tuple[float, ...] = (0.0, 0.3, 0.6),
    work_dir: Path | None = None,
    registry: Any = None,
    seed: int = 0,
    atol: float = 1e-4,
) -> ConformanceReport:
    """Run the conformance checks on tiny tied-embedding models of ``model_types``.

    Checks, per supported architecture: r = 0 returns the original logits (within ``atol``
    relative to the logits' scale); the compression record and history are set and match a
    recount; parameters never grow as r grows, and at r = 0 exceed the original by at most
    the overhead the method declares in ``details["overhead_params"]``; save then reload
    gives identical logits; the same seed gives the same weights; the pruned model generates.
    """
    import tempfile

    import torch

    from lawlab.accounting import measure
    from lawlab.sparsity import SPARSE

    if 0.0 not in ratios:
        ratios = (0.0, *ratios)
    ratios = tuple(sorted(ratios))
    registry = registry or tiny_registry(_as_plugin(pruner))
    work_dir = Path(work_dir or tempfile.mkdtemp(prefix="lawlab-conformance-"))
    if params is None or isinstance(params, dict):
        params = pruner.Params(**(params or {}))
    report = ConformanceReport(pruner.name)
    ids = _probe_ids()

    for mt in model_types:
        def result(check: str, ok: bool, message: str = "", mt: str = mt) -> None:
            report.results.append(ConformanceResult(mt, check, bool(ok), message))

        reason = pruner.supports(mt)
        if reason is not None:
            report.results.append(ConformanceResult(mt, "supports", True, reason, skipped=True))
            continue
        ctx = tiny_run_context(work_dir / mt, registry, seed)
        adapter = registry.get("architectures", mt)
        original = tiny_model(mt)
        reference = _logits(original, ids)
        original_params = measure(original.model, adapter).params
        pruned: dict[float, LoadedModel] = {}
        for r in ratios:
            try:
                pruned[r] = pruner.prune(tiny_model(mt), r, params, ctx)
            except Exception as exc:  # one broken ratio must not hide the other checks
                result(f"prune r={r}", False, f"{type(exc).__name__}: {exc}")
        if 0.0 in pruned:
            diff = float((_logits(pruned[0.0], ids) - reference).abs().max())
            tol = atol * max(1.0, float(reference.abs().max()))
            result("r0-logits", diff <= tol, f"max |Δlogit| = {diff:.2e} (tolerance {tol:.1e})")

        for r, m in pruned.items():
            c = m.compression
            if c is None:
                result("accounting", False, f"r={r}: compression not set")
                continue
            # A sparse method declares its zeros; its parameters kept are the non-zeros.
            recount = measure(m.model, adapter, nonzero=SPARSE in (c.details or {})).params
            problems = []
            if c.method != pruner.name:
                problems.append(f"method {c.method!r} is not the pruner's name")
            if c.nominal_ratio != r:
                problems.append(f"nominal_ratio {c.nominal_ratio} != {r}")
            if c.params_kept != recount:
                problems.append(f"params_kept {c.params_kept} but the model has {recount}")
            if c.params_original != original_params:
                problems.append(f"params_original {c.params_original} but the original has {original_params}")
            if not m.history or m.history[-1].get("step") != "prune":
                problems.append("no prune entry appended to history")
            result("accounting", not problems, f"r={r}: " + ("; ".join(problems) or "consistent"))

        if len(pruned) == len(ratios):
            kept = [c.params_kept for r in ratios if (c := pruned[r].compression)]
            at_zero = pruned[0.0].compression  # unset is an accounting failure, reported above
            overhead = int((at_zero.details or {}).get("overhead_params", 0)) if at_zero else 0
            monotone = all(a >= b for a, b in itertools.pairwise(kept))
            bounded = kept[0] <= original_params + overhead
            result("params-monotone", monotone and bounded,
                   f"kept {kept} over r {list(ratios)}; original {original_params}, declared overhead {overhead}")

        top = ratios[-1]
        if top in pruned:
            m = pruned[top]
            try:
                before = _logits(m, ids)
                reloaded = _save_and_reload(pruner, m, work_dir / mt / f"saved-{top}", ctx)
                diff = float((_logits(reloaded, ids) - before).abs().max())
                result("save-load", diff <= 1e-5, f"r={top}: max |Δlogit| = {diff:.2e} after reload")
            except Exception as exc:
                result("save-load", False, f"{type(exc).__name__}: {exc}")
            try:
                again = pruner.prune(tiny_model(mt), top, params, tiny_run_context(work_dir / mt / "again", registry, seed))
                a, b = m.model.state_dict(), again.model.state_dict()
                same = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
                result("same-seed", same, f"r={top}: seed {seed} twice gives {'identical' if same else 'different'} weights")
            except Exception as exc:
                result("same-seed", False, f"{type(exc).__name__}: {exc}")
            try:
                with torch.no_grad():
                    out = m.model.generate(ids, max_new_tokens=4, do_sample=False,
                                           pad_token_id=tiny_tokenizer().pad_token_id)
                finite = bool(torch.isfinite(_logits(m, ids)).all())
                ok = out.shape[1] == ids.shape[1] + 4 and finite
                result("generates", ok, f"r={top}: {out.shape[1] - ids.shape[1]} new tokens, finite logits: {finite}")
            except Exception as exc:
                result("generates", False, f"{type(exc).__name__}: {exc}")
    return report


def assert_conforms(pruner: Any, params: Any = None, **options: Any) -> ConformanceReport:
    """:func:`check_pruner`, raising ``AssertionError`` with the full report on any failure."""
    report = check_pruner(pruner, params, **options)
    if not report.passed:
        raise AssertionError(str(report))
    return report


class _as_plugin:
    """Wrap a pruner object as a plugin that registers it."""

    def __init__(self, pruner: Any):
        self.__name__ = f"conformance:{pruner.name}"
        self._pruner = pruner

    def register_pruners(self, register: Any) -> None:
        register(self._pruner)
