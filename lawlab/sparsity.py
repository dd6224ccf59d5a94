"""Weights set to zero in place: which linear layers a sparse method prunes, how sparse
they are, and keeping their zeros through recovery fine-tuning.

A sparse (unstructured or n:m) method keeps every tensor's shape and zeroes entries of the
decoder layers' attention and MLP projections. Its :class:`lawlab.api.Compression` says so
with ``details[SPARSE]``; the accounting then counts non-zeros (:func:`lawlab.accounting.measure`
with ``nonzero=True``), and an RFT recipe that merges an adapter (which makes a weight dense
again) re-applies the zeros with :func:`reapply` after the merge.
"""

from __future__ import annotations

from typing import Any

from lawlab.api import LoadedModel

SPARSE = "sparse_weights"  # key in Compression.details of a model whose weights carry zeros


def projections(model: Any, adapter: Any) -> list[tuple[str, Any]]:
    """Every decoder layer's linear projections in forward order, named
    ``"{layer}.{q,k,v,o,gate,up,down}"``: the layers the reference sparse methods prune
    (all ``nn.Linear`` of a decoder layer; never the embeddings or the head)."""
    out: list[tuple[str, Any]] = []
    for i, layer in enumerate(adapter.layers(model)):
        names = ("q", "k", "v", "o", "gate", "up", "down")
        out.extend((f"{i}.{n}", lin) for n, lin in zip(names, (*adapter.attention(layer), *adapter.mlp(layer)), strict=True))
    return out


def sparsity(model: Any, adapter: Any) -> dict[str, Any]:
    """Zeros among the projections' weights: ``{"zeros", "total", "fraction"}``."""
    zeros = total = 0
    for _, lin in projections(model, adapter):
        w = lin.weight
        zeros += int((w == 0).sum())
        total += w.numel()
    return {"zeros": zeros, "total": total, "fraction": zeros / total if total else 0.0}


def is_sparse(model: LoadedModel) -> bool:
    """Whether ``model`` was made by a method that declared its zeros."""
    return model.compression is not None and SPARSE in (model.compression.details or {})


def zero_masks(model: LoadedModel, adapter: Any) -> dict[str, Any]:
    """Boolean masks of the zero weights of every projection (by name), to re-apply later."""
    return {name: (lin.weight == 0).detach().clone() for name, lin in projections(model.model, adapter)}


def reapply(model: LoadedModel, adapter: Any, masks: dict[str, Any]) -> None:
    """Zero again what ``masks`` marks (after a merge made the weights dense)."""
    import torch

    with torch.no_grad():
        for name, lin in projections(model.model, adapter):
            mask = masks[name]
            lin.weight.masked_fill_(mask.to(lin.weight.device), 0.0)
