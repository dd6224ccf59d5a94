"""SliceGPT (Ashkboos et al., 2024), exact for RMSNorm models.

Each residual position (a block's attention input, its MLP input, its output) gets the
PCA basis of the residual stream there, computed on calibration data. RMSNorm commutes
with any rotation once its scale is folded into the next linear layer, so the rotated
model computes the same function; deleting the last (1 - r) directions of each basis then
shrinks the hidden dimension. Because neighbouring positions have different bases, each
skip connection carries a d'×d' matrix Qᵢᵀ Qⱼ.

Unlike the reference code, norms are *not* preceded by subtracting the embedding mean
(that is only exact for LayerNorm), and the norm keeps dividing by the original width,
so r = 0 gives the original logits.

The result is not a stock architecture: it is saved as safetensors plus ``slicegpt.json``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

from lawlab_plugins.random_prunenet import check_ratios, replace_module
from pydantic import Field

from lawlab import hookimpl
from lawlab.api import CheckContext, CheckFailed, LoadedModel, Params, Pruner, RunContext

SUPPORTED = ("llama", "mistral", "qwen2")
FORMAT_VERSION = 1
DESCRIPTION_FILE = "slicegpt.json"
WEIGHTS_FILE = "model.safetensors"


class SliceGPTParams(Params):
    calibration_dataset: str = Field(
        "wikitext2", description="Registered dataset whose train split gives the calibration text."
    )
    calibration_samples: int = Field(64, ge=1, description="Number of calibration windows.")
    calibration_seqlen: int = Field(256, ge=8, description="Tokens per calibration window (BOS included).")
    batch_size: int = Field(8, ge=1, description="Windows per forward pass while collecting activations.")
    multiple_of: int = Field(8, ge=1, description="The kept hidden dimension is a multiple of this.")
    rounding: Literal["down", "nearest"] = Field(
        "down", description="Round (1 - r)·d down (as the reference code) or to the nearest multiple."
    )
    slice_head: bool = Field(
        False,
        description="Also slice the head's input (the last block's output); the reference code does not.",
    )


# --------------------------------------------------------------------------- modules


def _modules() -> tuple[type, type]:
    """The two module classes, defined on first use so importing this file stays cheap."""
    global _RMSN, _SlicedLayer
    if _RMSN is not None:
        return _RMSN, _SlicedLayer
    import torch
    from torch import nn

    class RMSN(nn.Module):
        """Weight-free RMSNorm that divides by the *original* width, so a sliced vector
        is normalised as if its deleted coordinates were zero."""

        def __init__(self, width: int, eps: float):
            super().__init__()
            self.width, self.eps = width, eps

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x32 = x.float()
            var = x32.pow(2).sum(-1, keepdim=True) / self.width
            return (x32 * torch.rsqrt(var + self.eps)).to(x.dtype)

    class SlicedDecoderLayer(nn.Module):
        """A LLaMA-layout decoder layer whose skip connections carry rotations."""

        def __init__(self, layer: nn.Module, width: int, eps: float, attn_shortcut: torch.Tensor,
                     mlp_shortcut: torch.Tensor):
            super().__init__()
            self.self_attn, self.mlp = layer.self_attn, layer.mlp
            self.input_layernorm = RMSN(width, eps)
            self.post_attention_layernorm = RMSN(width, eps)
            self.attn_shortcut = nn.Parameter(attn_shortcut)
            self.mlp_shortcut = nn.Parameter(mlp_shortcut)
            if hasattr(layer, "attention_type"):  # sliding-window models pick masks by it
                self.attention_type = layer.attention_type

        def forward(self, hidden_states: torch.Tensor, attention_mask: Any = None, position_ids: Any = None,
                    past_key_values: Any = None, use_cache: bool | None = False,
                    position_embeddings: Any = None, **kwargs: Any) -> torch.Tensor:
            attn, _ = self.self_attn(
                hidden_states=self.input_layernorm(hidden_states), attention_mask=attention_mask,
                position_ids=position_ids, past_key_values=past_key_values, use_cache=use_cache,
                position_embeddings=position_embeddings, **kwargs,
            )
            hidden = hidden_states @ self.attn_shortcut + attn
            return hidden @ self.mlp_shortcut + self.mlp(self.post_attention_layernorm(hidden))

    _RMSN, _SlicedLayer = RMSN, SlicedDecoderLayer
    return _RMSN, _SlicedLayer


_RMSN: Any = None
_SlicedLayer: Any = None


def _eps(norm: Any) -> float:
    return float(getattr(norm, "variance_epsilon", getattr(norm, "eps", 1e-6)))


def _linear(weight: Any, bias: Any, like: Any) -> Any:
    """An ``nn.Linear`` holding ``weight`` (out × in) and ``bias``, in ``like``'s dtype/device."""
    import torch

    lin = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None,
                          dtype=like.weight.dtype, device=like.weight.device)
    with torch.no_grad():
        lin.weight.copy_(weight)
        if bias is not None:
            lin.bias.copy_(bias)
    return lin


def _pca(gram: Any) -> Any:
    """Eigenvectors of a (float64) Gram matrix as columns, largest eigenvalue first."""
    import torch

    vals, vecs = torch.linalg.eigh(gram)
    return vecs[:, torch.argsort(vals, descending=True)]


# --------------------------------------------------------------------------- calibration


def calibration_windows(tokenizer: Any, texts: Sequence[str], samples: int, seqlen: int, seed: int,
                        dataset: str) -> Any:
    """``samples`` non-overlapping windows of ``seqlen`` tokens (BOS first when the
    tokenizer has one), drawn at random with ``seed`` from the concatenated text."""
    import torch

    bos = tokenizer.bos_token_id
    body = seqlen - (1 if bos is not None else 0)
    stream: list[int] = []
    for text in texts:  # stop tokenising once there is plenty to choose from
        stream.extend(tokenizer(text + "\n\n", add_special_tokens=False)["input_ids"])
        if len(stream) >= 4 * samples * body:
            break
    slots = len(stream) // body
    if slots < samples:
        raise ValueError(
            f"calibration data too short: the train split of {dataset!r} gives {len(stream)} tokens, "
            f"{slots} windows of {seqlen}, but calibration_samples = {samples}; lower "
            f"calibration_samples or calibration_seqlen, or use a larger dataset"
        )
    g = torch.Generator().manual_seed(seed)
    picked = torch.randperm(slots, generator=g)[:samples].sort().values.tolist()
    rows = [stream[i * body:(i + 1) * body] for i in picked]
    if bos is not None:
        rows = [[bos, *r] for r in rows]
    return torch.tensor(rows, dtype=torch.long)


def _layer_inputs(model: Any, adapter: Any, ids: Any, batch_size: int) -> tuple[list, list[dict]]:
    """Hidden states entering layer 0 and, per batch, the keyword arguments the layers
    receive (masks, rotary tables), captured with a forward pre-hook."""
    layers = adapter.layers(model)
    inputs: list[Any] = []
    kwargs: list[dict] = []

    class Stop(Exception):
        pass

    def hook(module: Any, args: tuple, kw: dict) -> None:
        hs = args[0] if args else kw["hidden_states"]
        inputs.append(hs.detach())
        kwargs.append({k: v for k, v in kw.items() if k != "hidden_states"})
        raise Stop

    handle = layers[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for start in range(0, len(ids), batch_size):
            with contextlib.suppress(Stop):  # the hook stops the pass after layer 0's input
                model(input_ids=ids[start:start + batch_size].to(model.device), use_cache=False)
    finally:
        handle.remove()
    if getattr(layers[0], "attention_type", None) is not None:
        types = {getattr(layer, "attention_type", None) for layer in layers}
        if len(types) > 1:
            raise NotImplementedError("slicegpt: models mixing sliding-window and full-attention layers")
    return inputs, kwargs


# --------------------------------------------------------------------------- slicing


def _rotate_and_slice(model: Any, adapter: Any, ids: Any, keep: int, slice_head: bool,
                      batch_size: int) -> dict[str, Any]:
    import torch

    RMSN, SlicedLayer = _modules()
    layers = list(adapter.layers(model))
    d = adapter.embeddings(model).weight.shape[1]
    off = float(adapter.norm_weight_offset)
    dev = adapter.embeddings(model).weight.device
    f64 = dict(dtype=torch.float64, device=dev)

    def dt(x: Any) -> Any:
        return x.to(adapter.embeddings(model).weight.dtype)

    def gram(batches: list) -> Any:
        g = torch.zeros(d, d, **f64)
        for b in batches:
            flat = b.reshape(-1, d).to(torch.float64)
            g += flat.T @ flat
        return g

    def fold_inputs(linears: Sequence[Any], norm: Any, basis: Any, owner: Any) -> None:
        # y = (x Q) Qᵀ diag(w) Wᵀ: the new weight is W diag(w) Q, sliced to the kept columns
        scale = norm.weight.detach().to(torch.float64) + off
        for lin in linears:
            w = lin.weight.detach().to(torch.float64) * scale
            replace_module(owner, lin, _linear(w @ basis, lin.bias, lin))

    def rotate_output(lin: Any, basis: Any, owner: Any) -> None:
        w = basis.T @ lin.weight.detach().to(torch.float64)
        b = None if lin.bias is None else lin.bias.detach().to(torch.float64) @ basis
        replace_module(owner, lin, _linear(w, b, lin))

    with torch.no_grad():
        x, kwargs = _layer_inputs(model, adapter, ids, batch_size)
        # The embeddings write the residual stream: rotate them into the first basis.
        q_prev = _pca(gram(x))[:, :keep]
        emb, head = adapter.embeddings(model), adapter.head(model)
        head_weight = head.weight.detach().clone()  # before the embedding changes (tied)
        emb.weight = torch.nn.Parameter(dt(emb.weight.detach().to(torch.float64) @ q_prev))
        emb.embedding_dim = keep
        x = [dt(b.to(torch.float64) @ q_prev) for b in x]

        for i, layer in enumerate(layers):
            last = i == len(layers) - 1
            norms = adapter.norms(layer)
            eps = _eps(norms["input"])
            q, k, v, o = adapter.attention(layer)
            fold_inputs((q, k, v), norms["input"], q_prev, layer)
            norm = RMSN(d, eps)
            # Residual after attention, back in the original coordinates, for its PCA.
            mid = []
            for b, kw in zip(x, kwargs, strict=True):
                attn, _ = layer.self_attn(hidden_states=norm(b), **kw)
                mid.append(dt(b.to(torch.float64) @ q_prev.T + attn.to(torch.float64)))
            q_mid = _pca(gram(mid))[:, :keep]
            attn_shortcut = q_prev.T @ q_mid
            rotate_output(o, q_mid, layer)
            mid = [dt(h.to(torch.float64) @ q_mid) for h in mid]

            gate, up, _ = adapter.mlp(layer)
            fold_inputs((gate, up), norms["post_attention"], q_mid, layer)
            out = []
            for h in mid:
                m = layer.mlp(norm(h))
                out.append(dt(h.to(torch.float64) @ q_mid.T + m.to(torch.float64)))
            # Unless the head is sliced, it reads the stream in the original coordinates.
            q_out = torch.eye(d, **f64) if last and not slice_head else _pca(gram(out))[:, :keep]
            mlp_shortcut = q_mid.T @ q_out
            rotate_output(adapter.mlp(layer)[2], q_out, layer)
            x = [dt(h.to(torch.float64) @ q_out) for h in out]

            sliced = SlicedLayer(layer, d, eps, dt(attn_shortcut), dt(mlp_shortcut))
            replace_module(model, layer, sliced)
            q_prev = q_out

        # Final norm folds into the head, which gets its own (untied) weight.
        final = adapter.final_norm(model)
        scale = final.weight.detach().to(torch.float64) + off
        new_head = (head_weight.to(torch.float64) * scale) @ q_prev
        replace_module(model, final, RMSN(d, _eps(final)))
        replace_module(model, head, _linear(new_head, head.bias, head))
        model.config.tie_word_embeddings = False
        if hasattr(model.config, "get_text_config"):
            model.config.get_text_config().tie_word_embeddings = False
    return {"hidden_size": d, "kept_hidden": keep, "final_width": q_prev.shape[1], "eps": eps}


def _skeleton(model: Any, adapter: Any, shape: dict[str, Any]) -> None:
    """Give a freshly built model the shapes of a sliced one (weights loaded afterwards)."""
    import torch

    RMSN, SlicedLayer = _modules()
    d, keep, final_w, eps = shape["hidden_size"], shape["kept_hidden"], shape["final_width"], shape["eps"]

    def resized(lin: Any, out_f: int | None = None, in_f: int | None = None) -> Any:
        out_f = out_f or lin.out_features
        in_f = in_f or lin.in_features
        return torch.nn.Linear(in_f, out_f, bias=lin.bias is not None, dtype=lin.weight.dtype)

    layers = list(adapter.layers(model))
    for i, layer in enumerate(layers):
        width_out = final_w if i == len(layers) - 1 else keep
        q, k, v, o = adapter.attention(layer)
        gate, up, down = adapter.mlp(layer)
        for lin in (q, k, v, gate, up):
            replace_module(layer, lin, resized(lin, in_f=keep))
        replace_module(layer, o, resized(o, out_f=keep))
        replace_module(layer, down, resized(down, out_f=width_out))
        sliced = SlicedLayer(layer, d, eps, torch.zeros(keep, keep), torch.zeros(keep, width_out))
        replace_module(model, layer, sliced)
    emb = adapter.embeddings(model)
    emb.weight = torch.nn.Parameter(torch.zeros(emb.weight.shape[0], keep, dtype=emb.weight.dtype))
    emb.embedding_dim = keep
    replace_module(model, adapter.final_norm(model), RMSN(d, eps))
    head = adapter.head(model)
    replace_module(model, head, torch.nn.Linear(final_w, head.out_features, bias=head.bias is not None))


class SliceGPT(Pruner):
    name: ClassVar[str] = "slicegpt"
    description: ClassVar[str] = (
        "rotate the residual stream into its PCA basis (calibration data) and delete the fraction r "
        "of the hidden dimension; exact for RMSNorm (no mean subtraction)"
    )
    calibration: ClassVar[bool] = True
    Params: ClassVar[type[Params]] = SliceGPTParams

    def supports(self, model_type: str) -> str | None:
        if model_type in SUPPORTED:
            return None
        if model_type.startswith("gemma3"):
            return (
                "slicegpt cannot slice gemma3 exactly: its post-attention and post-feedforward RMSNorms "
                "scale each sub-block's output element-wise before the residual add, which does not "
                "commute with a rotation of the residual stream, and their RMS needs the full-width "
                "output; an extra dense d×d matrix per sub-block would be needed"
            )
        return f"slicegpt supports {', '.join(SUPPORTED)}, not {model_type!r}"

    def check(self, params: Any, ratios: Sequence[float], ctx: CheckContext) -> None:
        check_ratios(ratios)
        name = params.calibration_dataset
        if not ctx.has_dataset(name):
            raise CheckFailed(
                f"no dataset named {name!r} is registered or declared under [datasets]",
                field="calibration_dataset",
                allowed=", ".join(sorted({*ctx.registry.names("datasets"), *ctx.datasets})),
            )
        dataset, dataset_params = ctx.dataset(name)
        dataset.check(dataset_params, "train", ctx)
        if not dataset.available_offline():
            if ctx.offline:
                offline = [n for n in ctx.registry.names("datasets")
                           if ctx.registry.get("datasets", n).available_offline()]
                raise CheckFailed(f"dataset {name!r} is not available offline", field="calibration_dataset",
                                  allowed=", ".join(offline))
            return
        # Data that ships with a package is cheap to read now. No tokenizer splits a UTF-8
        # byte, so fewer bytes than the tokens asked for can never be enough.
        data = dataset.load(dataset_params, "train", ctx.reading_context())
        n_bytes = sum(len(t.encode()) + 2 for t in data.texts)
        needed = params.calibration_samples * (params.calibration_seqlen - 1)
        if n_bytes < needed:
            raise CheckFailed(
                f"calibration data too short: the train split of {name!r} has {n_bytes} bytes, fewer than "
                f"the {needed} tokens asked for ({params.calibration_samples} × {params.calibration_seqlen})",
                field="calibration_samples", allowed=f"at most {n_bytes // (params.calibration_seqlen - 1)}",
            )

    def check_model(self, config: dict[str, Any], ratio: float, params: Any) -> str | None:
        d = config.get("hidden_size")
        if not isinstance(d, int):
            return None
        try:
            self.kept_hidden(d, ratio, params)
        except ValueError as exc:
            return str(exc)
        return None

    def kept_hidden(self, d: int, ratio: float, params: Any) -> int:
        from lawlab.accounting import kept_count

        keep = kept_count(d, ratio, params.multiple_of, params.rounding)
        if keep < 1:
            raise ValueError(
                f"ratio {ratio} leaves no hidden dimension of {d} (rounded to a multiple of "
                f"{params.multiple_of}, {params.rounding}); use a smaller ratio or multiple_of"
            )
        return keep

    def prune(self, model: LoadedModel, ratio: float, params: Any, ctx: RunContext) -> LoadedModel:
        from lawlab.accounting import compression, measure, record, stopwatch

        if (reason := self.supports(model.model_type)) is not None:
            raise ValueError(reason)
        adapter = ctx.registry.get("architectures", model.model_type)
        d = adapter.embeddings(model.model).weight.shape[1]
        keep = self.kept_hidden(d, ratio, params)
        tied = adapter.tied(model.model)
        before = measure(model.model, adapter)
        data = ctx.load_dataset(params.calibration_dataset, "train")
        with stopwatch() as t:
            ids = calibration_windows(model.tokenizer, data.texts, params.calibration_samples,
                                      params.calibration_seqlen, ctx.seed, params.calibration_dataset)
            model.model.eval()
            shape = _rotate_and_slice(model.model, adapter, ids, keep, params.slice_head, params.batch_size)
        after = measure(model.model, adapter)
        n_layers = len(adapter.layers(model.model))
        skip = n_layers * keep * keep + (n_layers - 1) * keep * keep + keep * shape["final_width"]
        head_params = adapter.head(model.model).weight.numel()
        details = {
            **shape, "seed": ctx.seed, "tied_before": tied, "untied": tied,
            "calibration": {"dataset": params.calibration_dataset, "checksum": data.checksum,
                            "source": data.source, "samples": params.calibration_samples,
                            "seqlen": params.calibration_seqlen, "tokens": int(ids.numel())},
            "skip_rotation_params": skip,
            "untie_params": head_params if tied else 0,
            # What r = 0 adds to the original: the skip rotations and an untied head copy.
            "overhead_params": skip + (head_params if tied else 0),
            "hidden_fraction_removed": 1 - keep / d,
        }
        model.compression = compression(self.name, ratio, before, after, t["seconds"], details)
        model.format = self.name
        record(model, {"step": "prune", "method": self.name, "ratio": ratio,
                       "params": params.model_dump(mode="json"), **shape, "seed": ctx.seed})
        return model

    # ------------------------------------------------------------------ storage

    def save_model(self, model: LoadedModel, path: Path) -> None:
        from safetensors.torch import save_file

        from lawlab.accounting import bytes_on_disk

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in model.model.state_dict().items()}
        save_file(state, path / WEIGHTS_FILE, metadata={"format": self.name})
        shape = next(h for h in reversed(model.history) if h.get("method") == self.name)
        description = {
            "format": self.name, "format_version": FORMAT_VERSION, "model_type": model.model_type,
            "shape": {k: shape[k] for k in ("hidden_size", "kept_hidden", "final_width", "eps")},
            "config": model.model.config.to_dict(),
            "provenance": model.provenance, "history": model.history,
            "compression": model.compression.as_dict() if model.compression else None,
        }
        (path / DESCRIPTION_FILE).write_text(json.dumps(description, indent=1, default=str))
        if model.tokenizer is not None:
            model.tokenizer.save_pretrained(path / "tokenizer")
        if model.compression is not None:
            model.compression.bytes_on_disk = bytes_on_disk(path)

    def load_model(self, path: Path, ctx: RunContext) -> LoadedModel:
        import torch
        from safetensors.torch import load_file
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING

        from lawlab.api import Compression

        path = Path(path)
        desc = json.loads((path / DESCRIPTION_FILE).read_text())
        if desc.get("format") != self.name or desc.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path} is not a slicegpt model of format version {FORMAT_VERSION}")
        config = CONFIG_MAPPING[desc["model_type"]].from_dict(desc["config"])
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        adapter = ctx.registry.get("architectures", desc["model_type"])
        _skeleton(model, adapter, desc["shape"])
        state = load_file(path / WEIGHTS_FILE)
        model.load_state_dict(state, strict=True)
        model.to(dtype=state[next(iter(state))].dtype).eval()
        tok_dir = path / "tokenizer"
        tokenizer = AutoTokenizer.from_pretrained(tok_dir) if tok_dir.exists() else None
        comp = desc.get("compression")
        compression = None
        if comp:
            fields = {k: comp[k] for k in Compression.__dataclass_fields__ if k in comp}
            compression = Compression(**fields)
        return LoadedModel(model=model, tokenizer=tokenizer, model_type=desc["model_type"],
                           provenance=desc["provenance"], compression=compression, format=self.name,
                           history=desc["history"])


@hookimpl
def register_pruners(register):
    register(SliceGPT())
