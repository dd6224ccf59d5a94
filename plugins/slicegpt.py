"""SliceGPT (Ashkboos et al., 2024), exact for RMSNorm models, Gemma 3's sandwich norms included.

Each residual position (a block's attention input, its MLP input, its output) gets the
PCA basis of the residual stream there, computed on calibration data. RMSNorm commutes
with any rotation once its scale is folded into the next linear layer, so the rotated
model computes the same function; deleting the last (1 - r) directions of each basis then
shrinks the hidden dimension. Because neighbouring positions have different bases, each
skip connection carries a d'×d' matrix Qᵢᵀ Qⱼ.

Gemma 3 normalises each sub-block's *output* before the residual add (a post-norm). That
norm needs the full-width output and scales it element-wise, which no rotation commutes
with, so it is carried the way the skip connections are: the block's output projection
keeps its full width, its output is normalised (weight-free), and the norm's scale and
the rotation follow as one d×d' matrix diag(1 + w) Q. The embedding's √d scale is a
constant (it commutes), q/k norms act on head_dim (untouched), and sliding-window layers
and the final logit soft-capping are left to the model's own forward.

Departures from the reference code (microsoft/TransformerCompression): norms are *not*
preceded by subtracting the embedding mean (that is only exact for LayerNorm), the norm
keeps dividing by the original width (so r = 0 gives the original logits), and the
eigendecomposition runs on the CPU in float64 while weights are rotated on the model's
device in float32 (float64 on a CPU) and activations in float32. Calibration windows follow the reference's
sampling: each starts at a document drawn with the seed from the whole train split and
runs over the next unused documents, joined by blank lines, so windows never overlap.

The result is not a stock architecture: it is saved as safetensors plus ``slicegpt.json``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from lawlab import hookimpl
from lawlab.accounting import check_ratios
from lawlab.api import CheckContext, LoadedModel, MemoryTerms, Params, Pruner, RunContext
from lawlab.calibration import calibration_windows, check_calibration
from lawlab.calibration import layer_inputs as _layer_inputs
from lawlab.calibration import layer_types as _layer_types
from lawlab.models.loading import replace_module

SUPPORTED = ("llama", "mistral", "qwen2", "gemma3_text", "gemma3")
FORMAT_VERSION = 1
DESCRIPTION_FILE = "slicegpt.json"
WEIGHTS_FILE = "model.safetensors"
ROW_BLOCK = 4096  # rows of a weight rotated at once (bounds the working-precision copy)


class SliceGPTParams(Params):
    calibration_dataset: str = Field(
        "wikitext2", description="Registered dataset whose train split gives the calibration text."
    )
    calibration_samples: int = Field(64, ge=1, description="Number of calibration windows (the paper: 1024).")
    calibration_seqlen: int = Field(
        256, ge=8, description="Tokens per calibration window, BOS included (the paper: 2048)."
    )
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
        """A decoder layer whose skip connections carry rotations. With post-norms
        (Gemma 3) each sub-block's full-width output is normalised, then mapped into the
        sliced stream by ``attn_post`` / ``mlp_post`` (d → d')."""

        def __init__(self, layer: nn.Module, width: int, eps: float, attn_shortcut: torch.Tensor,
                     mlp_shortcut: torch.Tensor, attn_post: nn.Module | None = None,
                     mlp_post: nn.Module | None = None):
            super().__init__()
            self.self_attn, self.mlp = layer.self_attn, layer.mlp
            self.input_layernorm = RMSN(width, eps)
            self.post_attention_layernorm = RMSN(width, eps)
            self.attn_shortcut = nn.Parameter(attn_shortcut)
            self.mlp_shortcut = nn.Parameter(mlp_shortcut)
            self.attn_post, self.mlp_post = attn_post, mlp_post
            self.post_norm = RMSN(width, eps) if attn_post is not None else None
            if hasattr(layer, "attention_type"):  # older transformers pick masks by it
                self.attention_type = layer.attention_type

        def forward(self, hidden_states: torch.Tensor, **kwargs: Any) -> torch.Tensor:
            # Whatever the model hands its layers (mask, rotary tables, the cache under
            # the name this transformers version uses) goes to attention unchanged, as
            # the stock decoder layer does: no deprecated keyword is ever introduced here.
            attn, _ = self.self_attn(hidden_states=self.input_layernorm(hidden_states), **kwargs)
            if self.attn_post is not None:
                attn = self.attn_post(self.post_norm(attn))
            hidden = _skip(hidden_states, self.attn_shortcut) + attn
            mlp = self.mlp(self.post_attention_layernorm(hidden))
            if self.mlp_post is not None:
                mlp = self.mlp_post(self.post_norm(mlp))
            return _skip(hidden, self.mlp_shortcut) + mlp

    _RMSN, _SlicedLayer = RMSN, SlicedDecoderLayer
    return _RMSN, _SlicedLayer


_RMSN: Any = None
_SlicedLayer: Any = None


def _skip(h: Any, rotation: Any) -> Any:
    """h Qᵢᵀ Qⱼ, one precision wider than the stream (float64 on a CPU, at least float32
    elsewhere), rounded back once. The stream carries a few massive coordinates (|h| up to
    1e5 in Gemma 3, ~100 × its RMS); a product in the stream's own precision would spread
    their rounding over every coordinate. It costs ~1% of a forward pass on a CPU."""
    import torch

    wide = torch.float64 if h.device.type == "cpu" else torch.promote_types(h.dtype, torch.float32)
    return (h.to(wide) @ rotation.to(wide)).to(h.dtype)


def _eps(norm: Any) -> float:
    return float(getattr(norm, "variance_epsilon", getattr(norm, "eps", 1e-6)))


def _linear(weight: Any, bias: Any, like: Any) -> Any:
    """An ``nn.Linear`` around ``weight`` (out × in, already in place) and ``bias``, in
    ``like``'s dtype and device; built on the meta device so no third copy is allocated."""
    import torch

    lin = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
    target = dict(dtype=like.weight.dtype, device=like.weight.device)
    lin.weight = torch.nn.Parameter(weight.detach().to(**target))
    if bias is not None:
        lin.bias = torch.nn.Parameter(bias.detach().to(**target))
    return lin


def _pca(gram: Any) -> Any:
    """Eigenvectors of a Gram matrix as columns, largest eigenvalue first, computed in
    float64 on the CPU (d×d: cheap, and exact-enough everywhere)."""
    import torch

    vals, vecs = torch.linalg.eigh(gram.detach().to("cpu", torch.float64))
    return vecs[:, torch.argsort(vals, descending=True)]


def _post_norms(adapter: Any, layer: Any) -> tuple[Any, Any] | None:
    """A sandwich-norm layer's (post-attention, post-feedforward) norms, else None."""
    roles = adapter.norms(layer)
    if "post_feedforward" not in roles:
        return None
    return roles["post_attention_output"], roles["post_feedforward"]


def _mlp_input_norm(adapter: Any, layer: Any) -> Any:
    roles = adapter.norms(layer)
    return roles.get("pre_feedforward", roles.get("post_attention"))


# --------------------------------------------------------------------------- slicing


class _Slicer:
    """Rotates and slices one model layer by layer: the model stays where it is, and
    besides it only one layer's new weights and the calibration activations are held."""

    def __init__(self, model: Any, adapter: Any, keep: int, slice_head: bool):
        import torch

        self.model, self.adapter, self.keep, self.slice_head = model, adapter, keep, slice_head
        emb = adapter.embeddings(model).weight
        self.d, self.dtype, self.device = emb.shape[1], emb.dtype, emb.device
        # Rotations are applied in float32 on an accelerator (float64 is slow there) and in
        # float64 on a CPU; either way the result is rounded once, to the model's dtype.
        self.work = torch.float64 if self.device.type == "cpu" else torch.float32
        self.act = torch.promote_types(self.dtype, torch.float32)
        self.off = float(adapter.norm_weight_offset)

    def w(self, t: Any) -> Any:
        return t.detach().to(self.device, self.work)

    def a(self, t: Any) -> Any:
        """Activations are rotated in float32 (or the model's dtype, if wider): their
        precision only perturbs the bases, never the exactness of the rotated model."""
        return t.detach().to(self.device, self.act)

    def rotate(self, h: Any, q: Any) -> Any:
        return (self.a(h) @ self.a(q)).to(self.dtype)

    def product(self, left: Any, right: Any, scale: Any = None) -> Any:
        """(left · diag(scale)) @ right in working precision, rounded to the model's dtype,
        a block of rows at a time: only one block is ever held in working precision."""
        import torch

        out = torch.empty(left.shape[0], right.shape[1], dtype=self.dtype, device=self.device)
        for i in range(0, left.shape[0], ROW_BLOCK):
            block = self.w(left[i:i + ROW_BLOCK])
            if scale is not None:
                block = block * scale
            out[i:i + ROW_BLOCK] = (block @ right).to(self.dtype)
        return out

    def gram(self, batches: list) -> Any:
        """Σ XᵀX over the batches, accumulated in float64 (as the reference code does)."""
        import torch

        where = "cpu" if self.device.type == "mps" else self.device  # MPS has no float64
        g = torch.zeros(self.d, self.d, dtype=torch.float64, device=where)
        for b in batches:
            flat = b.reshape(-1, self.d).to(where, torch.float64)
            g += flat.T @ flat
        return g

    def basis(self, batches: list, previous: Any = None) -> Any:
        """The kept PCA directions; each eigenvector's sign (arbitrary) is chosen to agree
        with the previous position's, so a skip matrix Qᵢᵀ Qⱼ is close to the identity and
        a large residual coordinate does not spread rounding error over the others."""
        q = _pca(self.gram(batches))[:, :self.keep].to(self.device, self.work)
        if previous is not None:
            n = min(q.shape[1], previous.shape[1])
            agree = (previous[:, :n] * q[:, :n]).sum(0)
            q[:, :n] *= (agree >= 0).to(q.dtype) * 2 - 1
        return q

    def scale(self, norm: Any) -> Any:
        return self.w(norm.weight) + self.off

    def fold_inputs(self, linears: Sequence[Any], norm: Any, q: Any, owner: Any) -> None:
        # y = (x Q) Qᵀ diag(w) Wᵀ: the new weight is W diag(w) Q, sliced to the kept columns
        s = self.scale(norm)
        for lin in linears:
            replace_module(owner, lin, _linear(self.product(lin.weight, q, s), lin.bias, lin))

    def rotate_output(self, lin: Any, q: Any, owner: Any) -> None:
        # Qᵀ W, computed as (Wᵀ Q)ᵀ so that blocks run over W's input columns.
        bias = None if lin.bias is None else self.w(lin.bias) @ q
        replace_module(owner, lin, _linear(self.product(lin.weight.T, q).T.contiguous(), bias, lin))

    def post_map(self, norm: Any, q: Any) -> Any:
        """The d×d' matrix diag(1 + w) Q that carries a post-norm's scale and the rotation,
        as an ``nn.Linear`` (weight d'×d)."""
        import torch

        lin = torch.nn.Linear(self.d, q.shape[1], bias=False, dtype=self.dtype, device=self.device)
        with torch.no_grad():
            lin.weight.copy_((self.scale(norm)[:, None] * q).T)
        return lin

    def residual(self, h: Any, q: Any, added: Any) -> Any:
        """The stream back in the original coordinates: h Qᵀ + a sub-block's output."""
        return (self.a(h) @ self.a(q).T + self.a(added)).to(self.dtype)

    def run(self, ids: Any, batch_size: int) -> dict[str, Any]:
        import torch

        RMSN, _ = _modules()
        model, adapter = self.model, self.adapter
        layers = list(adapter.layers(model))
        types = _layer_types(model, len(layers))
        x, kwargs = _layer_inputs(model, adapter, ids, batch_size)
        # The embeddings write the residual stream: rotate them into the first basis.
        q_prev = self.basis(x)
        emb, head = adapter.embeddings(model), adapter.head(model)
        # A tied head keeps pointing at the original tensor once the embedding gets a new one.
        emb.weight = torch.nn.Parameter(self.product(emb.weight, q_prev))
        emb.embedding_dim = self.keep
        for owner, name in getattr(adapter, "residual_projections", lambda m: [])(model):
            weight = getattr(owner, name)  # e.g. Gemma 3's image features, written into the stream
            setattr(owner, name, torch.nn.Parameter(self.product(weight, q_prev)))
        x = [self.rotate(b, q_prev) for b in x]
        eps = _eps(adapter.norms(layers[0])["input"])
        for i, layer in enumerate(layers):
            last = i == len(layers) - 1
            x, q_prev = self.layer(layer, x, kwargs[types[i]], q_prev, last, RMSN(self.d, eps))

        # Final norm folds into the head, which gets its own (untied) weight.
        final = adapter.final_norm(model)
        new_head = self.product(head.weight, q_prev, self.scale(final))
        replace_module(model, final, RMSN(self.d, _eps(final)))
        replace_module(model, head, _linear(new_head, head.bias, head))
        model.config.tie_word_embeddings = False
        if hasattr(model.config, "get_text_config"):
            model.config.get_text_config().tie_word_embeddings = False
        return {"hidden_size": self.d, "kept_hidden": self.keep, "final_width": q_prev.shape[1], "eps": eps,
                "post_norms": _post_norms(adapter, layers[0]) is not None}

    def layer(self, layer: Any, x: list, kwargs: list[dict], q_prev: Any, last: bool,
              norm: Any) -> tuple[list, Any]:
        """Rotate and slice one decoder layer; returns the next layer's (sliced) inputs
        and the basis they are in. The signal runs through the already-sliced model."""
        import torch

        _, SlicedLayer = _modules()
        adapter = self.adapter
        post = _post_norms(adapter, layer)
        q, k, v, o = adapter.attention(layer)
        self.fold_inputs((q, k, v), adapter.norms(layer)["input"], q_prev, layer)
        mid = []
        for b, kw in zip(x, kwargs, strict=True):
            attn, _ = layer.self_attn(hidden_states=norm(b), **kw)
            if post is not None:  # the post-norm, with its scale, in the original coordinates
                attn = self.a(norm(attn)) * self.a(self.scale(post[0]))
            mid.append(self.residual(b, q_prev, attn))
        q_mid = self.basis(mid, q_prev)
        attn_shortcut = (q_prev.T @ q_mid).to(self.dtype)
        attn_post = None
        if post is None:
            self.rotate_output(o, q_mid, layer)
        else:  # o_proj keeps its full width; its normalised output is mapped by diag(1 + w) Q
            attn_post = self.post_map(post[0], q_mid)
        mid = [self.rotate(h, q_mid) for h in mid]

        gate, up, down = adapter.mlp(layer)
        self.fold_inputs((gate, up), _mlp_input_norm(adapter, layer), q_mid, layer)
        out = []
        for h in mid:
            m = layer.mlp(norm(h))
            if post is not None:
                m = self.a(norm(m)) * self.a(self.scale(post[1]))
            out.append(self.residual(h, q_mid, m))
        del mid
        # Unless the head is sliced, it reads the stream in the original coordinates.
        if last and not self.slice_head:
            q_out = torch.eye(self.d, dtype=self.work, device=self.device)
        else:
            q_out = self.basis(out, q_mid)
        mlp_shortcut = (q_mid.T @ q_out).to(self.dtype)
        mlp_post = None
        if post is None:
            self.rotate_output(down, q_out, layer)
        else:
            mlp_post = self.post_map(post[1], q_out)
        x = [self.rotate(h, q_out) for h in out]

        eps = _eps(adapter.norms(layer)["input"])
        sliced = SlicedLayer(layer, self.d, eps, attn_shortcut, mlp_shortcut, attn_post, mlp_post)
        replace_module(self.model, layer, sliced)
        return x, q_out


def _skeleton(model: Any, adapter: Any, shape: dict[str, Any]) -> None:
    """Give a freshly built model the shapes of a sliced one (weights loaded afterwards)."""
    import torch

    RMSN, SlicedLayer = _modules()
    d, keep, final_w, eps = shape["hidden_size"], shape["kept_hidden"], shape["final_width"], shape["eps"]
    post = bool(shape.get("post_norms", False))

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
        attn_post = mlp_post = None
        if post:  # output projections keep their width; the post maps carry the rotation
            attn_post = torch.nn.Linear(d, keep, bias=False)
            mlp_post = torch.nn.Linear(d, width_out, bias=False)
        else:
            replace_module(layer, o, resized(o, out_f=keep))
            replace_module(layer, down, resized(down, out_f=width_out))
        sliced = SlicedLayer(layer, d, eps, torch.zeros(keep, keep), torch.zeros(keep, width_out),
                             attn_post, mlp_post)
        replace_module(model, layer, sliced)
    emb = adapter.embeddings(model)
    emb.weight = torch.nn.Parameter(torch.zeros(emb.weight.shape[0], keep, dtype=emb.weight.dtype))
    emb.embedding_dim = keep
    for owner, name in getattr(adapter, "residual_projections", lambda m: [])(model):
        rows = getattr(owner, name).shape[0]
        setattr(owner, name, torch.nn.Parameter(torch.zeros(rows, keep)))
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

    def memory(self, params: SliceGPTParams, shapes: Any, dtype_bytes: int) -> MemoryTerms:
        from lawlab.run.memory import calibration_terms

        return calibration_terms(shapes, dtype_bytes, samples=params.calibration_samples,
                                 length=params.calibration_seqlen, batch=params.batch_size)

    def supports(self, model_type: str) -> str | None:
        if model_type in SUPPORTED:
            return None
        return f"slicegpt supports {', '.join(SUPPORTED)}, not {model_type!r}"

    def check(self, params: Any, ratios: Sequence[float], ctx: CheckContext) -> None:
        check_ratios(ratios)
        check_calibration(ctx, params.calibration_dataset, params.calibration_samples,
                          params.calibration_seqlen)

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
        import torch

        from lawlab.accounting import compression, measure, record, stopwatch

        if (reason := self.supports(model.model_type)) is not None:
            raise ValueError(reason)
        adapter = ctx.registry.get("architectures", model.model_type)
        d = adapter.embeddings(model.model).weight.shape[1]
        keep = self.kept_hidden(d, ratio, params)
        tied = adapter.tied(model.model)
        before = measure(model.model, adapter)
        data = ctx.load_dataset(params.calibration_dataset, "train")
        with stopwatch() as t, torch.no_grad():
            ids, windows = calibration_windows(model.tokenizer, data.texts, params.calibration_samples,
                                               params.calibration_seqlen, ctx.seed, params.calibration_dataset,
                                               ctx.cache_dir)
            model.model.eval()
            shape = _Slicer(model.model, adapter, keep, params.slice_head).run(ids, params.batch_size)
        after = measure(model.model, adapter)
        n_layers = len(adapter.layers(model.model))
        final_w = shape["final_width"]
        skip = n_layers * keep * keep + (n_layers - 1) * keep * keep + keep * final_w
        # Post-norm models (Gemma 3): one d×d' map after each sub-block's full-width output.
        post = (n_layers * d * keep + (n_layers - 1) * d * keep + d * final_w) if shape["post_norms"] else 0
        head_params = adapter.head(model.model).weight.numel()
        details = {
            **shape, "seed": ctx.seed, "tied_before": tied, "untied": tied,
            "calibration": {"dataset": params.calibration_dataset, "checksum": data.checksum,
                            "source": data.source, "samples": params.calibration_samples,
                            "seqlen": params.calibration_seqlen, "tokens": int(ids.numel()), "windows": windows},
            "skip_rotation_params": skip,
            "post_norm_map_params": post,
            "untie_params": head_params if tied else 0,
            # What r = 0 adds to the original: the skip rotations, the post-norm maps (each
            # d×d, replacing a d-vector of norm weights) and an untied head copy.
            "overhead_params": skip + post + (head_params if tied else 0),
            "hidden_fraction_removed": 1 - keep / d,
        }
        model.compression = compression(self.name, ratio, before, after, t["seconds"], details)
        model.format = self.name
        record(model, {"step": "prune", "method": self.name, "ratio": ratio,
                       "params": params.model_dump(mode="json"), **shape, "seed": ctx.seed,
                       "calibration_windows": {k: windows[k] for k in ("count", "seqlen", "seed", "windows_sha256")}})
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
            "shape": {k: shape[k] for k in ("hidden_size", "kept_hidden", "final_width", "eps", "post_norms")
                      if k in shape},
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
