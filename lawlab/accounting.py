"""Ratio accounting: how much a pruned model was actually compressed.

A nominal ratio r says what a method was asked to remove; what it removed depends on the
method (FFN channels only, or the hidden dimension plus added skip rotations) and on
rounding. Every pruner records the numbers below in :class:`lawlab.api.Compression`.

Definitions (recorded with every result, in ``details["accounting"]``):

- parameters: every parameter tensor counted once (a tied head is the embedding matrix,
  so it counts once; after untying it counts twice), plus the floating-point buffers a
  method adds that take part in the forward pass (SliceGPT's skip rotations).
- parameters without embeddings: the above minus the input embedding matrix and the
  output head (both, when untied).
- FLOPs per token: 2 × the multiply-accumulates of every matrix product one token goes
  through (all 2-D weights except the embedding lookup, the head included even when
  tied), plus the attention scores and weighted sum at a fixed context length.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lawlab.api import CheckFailed, Compression, LoadedModel

DEFAULT_CONTEXT = 512  # tokens of context assumed by the attention term of the FLOPs estimate


def check_ratios(ratios: Sequence[float]) -> None:
    """Refuse a nominal ratio outside [0, 1): the check every pruner's ``check()`` shares."""
    for r in ratios:
        if not 0.0 <= r < 1.0:
            raise CheckFailed(f"ratio {r} is outside [0, 1)", allowed="0 <= r < 1")


@dataclass(frozen=True)
class Size:
    """Parameter counts and FLOPs of one model."""

    params: int
    params_no_embed: int
    flops_per_token: float


def _tensors(model: Any) -> Iterator[tuple[str, Any]]:
    """Parameters and float buffers, each distinct storage once (tied weights count once)."""
    seen: set[int] = set()
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        if not t.is_floating_point() or t.ndim < 1:
            continue
        if name.endswith("inv_freq") or "rotary" in name:  # position tables, not weights
            continue
        key = t.data_ptr()
        if key in seen:
            continue
        seen.add(key)
        yield name, t


def measure(model: Any, adapter: Any, context: int = DEFAULT_CONTEXT, nonzero: bool = False) -> Size:
    """Count ``model``'s parameters (with and without embeddings) and FLOPs per token.

    ``nonzero``: a sparse model's 2-D weights (embeddings aside) count their non-zero
    entries only; FLOPs stay those of dense kernels, which multiply the zeros too."""
    emb, head = adapter.embeddings(model).weight, adapter.head(model).weight
    embed_ptrs = {emb.data_ptr(), head.data_ptr()}
    total = no_embed = 0
    matmul = head.numel()  # the head is a product even when its weight is the embedding
    for _name, t in _tensors(model):
        if t.data_ptr() in embed_ptrs:
            total += t.numel()
            continue
        count = int(t.count_nonzero()) if nonzero and t.ndim == 2 else t.numel()
        total += count
        no_embed += count
        if t.ndim == 2:
            matmul += t.numel()
    return Size(total, no_embed, 2.0 * matmul + _attention_flops(model, adapter, context))


def _attention_flops(model: Any, adapter: Any, context: int) -> float:
    """QKᵀ and the weighted sum over ``context`` positions: 2 products × 2 FLOPs each."""
    total = 0.0
    for layer in adapter.layers(model):
        q = adapter.attention(layer)[0]
        total += 4.0 * context * q.weight.shape[0]  # q's output width = heads × head_dim
    return total


def bytes_on_disk(path: str | Path) -> int:
    """Total size of the files under ``path`` (a saved model folder or one file)."""
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


@contextmanager
def stopwatch() -> Iterator[dict[str, float]]:
    """``with stopwatch() as t: ...`` then ``t["seconds"]``."""
    out = {"seconds": 0.0}
    start = time.perf_counter()
    try:
        yield out
    finally:
        out["seconds"] = time.perf_counter() - start


def compression(
    method: str,
    ratio: float,
    before: Size,
    after: Size,
    seconds: float,
    details: dict[str, Any] | None = None,
    context: int = DEFAULT_CONTEXT,
) -> Compression:
    """The :class:`Compression` record of one pruning step."""
    info = dict(details or {})
    info["accounting"] = {
        "params": "each tensor once (tied counts once), plus float buffers used in the forward pass",
        "params_no_embed": "minus the input embedding and the output head",
        "flops_per_token": f"2 x matmul MACs incl. head + attention at context {context}",
        "context": context,
    }
    return Compression(
        method=method,
        nominal_ratio=float(ratio),
        params_original=before.params,
        params_kept=after.params,
        params_original_no_embed=before.params_no_embed,
        params_kept_no_embed=after.params_no_embed,
        flops_per_token_original=before.flops_per_token,
        flops_per_token=after.flops_per_token,
        prune_seconds=seconds,
        details=info,
    )


def kept_count(n: int, ratio: float, multiple_of: int = 8, rounding: str = "nearest") -> int:
    """How many of ``n`` units (channels, hidden dimensions) survive pruning a fraction
    ``ratio``: (1 - ratio)·n rounded to a multiple of ``multiple_of`` ("nearest", ties
    down, or "down"), never more than ``n``; r = 0 keeps all ``n``. May return 0: callers
    turn that into a clear error."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"ratio {ratio} is outside [0, 1)")
    if ratio == 0.0:
        return n
    exact = (1.0 - ratio) * n / multiple_of
    units = int(exact) if rounding == "down" else _round_half_down(exact)
    return min(n, units * multiple_of)


def _round_half_down(x: float) -> int:
    fl = int(x)
    return fl + 1 if x - fl > 0.5 else fl


def record(model: LoadedModel, entry: dict[str, Any]) -> None:
    """Append a step to the model's history (what was done, with which settings)."""
    model.history.append(entry)
