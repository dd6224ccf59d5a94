"""Magnitude pruning and Wanda (Sun et al., 2023, *A Simple and Effective Pruning Approach
for Large Language Models*): unstructured and n:m sparsity of every decoder layer's linear
projections (q, k, v, o, gate, up, down; never the embeddings or the head).

- ``magnitude`` zeroes the fraction r of each matrix's weights with the smallest |W_ij|,
  compared over the whole matrix (as the reference's ``prune_magnitude`` does).
- ``wanda`` scores each weight |W_ij| · ‖X_j‖₂, X_j the j-th input feature over every
  calibration token, and zeroes the fraction r of each *output row*. Layers are pruned in
  order, each calibrated on what the already-pruned layers before it produce; inside a
  layer every projection is calibrated on the unpruned layer, then all seven are pruned
  (the reference's ``prune_wanda``).
- ``structure = "N:M"`` (both methods) zeroes the N smallest of every M consecutive inputs
  of each output row, and r must be N/M (2:4 is r = 0.5).

Shapes never change: the zeros are stored (dense safetensors) and buy no speed with dense
kernels; the accounting counts non-zeros and keeps dense FLOPs.

Departures from the reference code (locuslab/wanda ``lib/prune.py``): magnitude zeroes
exactly ⌊r·numel⌋ weights per matrix (the reference's ``|W| <= sorted[k]`` zeroes one more,
so at r = 0 it removes each matrix's smallest weight); ‖X_j‖² is summed in float64 over
batches of windows instead of a float32 running mean over single windows (the same ranking
up to rounding); calibration windows are lawlab's (drawn with the seed from the whole train
split of a registered dataset, recorded with offsets and a hash), not C4's.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, ClassVar

from pydantic import Field

from lawlab import hookimpl
from lawlab.accounting import check_ratios
from lawlab.api import CheckContext, CheckFailed, LoadedModel, Params, Pruner, RunContext

STRUCTURE = r"^(unstructured|[0-9]+:[0-9]+)$"


class MagnitudeParams(Params):
    structure: str = Field(
        "unstructured", pattern=STRUCTURE,
        description="'unstructured', or 'N:M' for N zeros in every M consecutive inputs of a row (the paper: 2:4, 4:8).",
    )


class WandaParams(MagnitudeParams):
    calibration_dataset: str = Field(
        "wikitext2", description="Registered dataset whose train split gives the calibration text (the paper: C4)."
    )
    calibration_samples: int = Field(64, ge=1, description="Number of calibration windows (the paper: 128).")
    calibration_seqlen: int = Field(
        256, ge=8, description="Tokens per calibration window, BOS included (the paper: the model's context, 2048)."
    )
    batch_size: int = Field(8, ge=1, description="Windows per forward pass through a layer.")


def n_m(structure: str) -> tuple[int, int] | None:
    """(N, M) of an 'N:M' structure, or None for 'unstructured'."""
    match = re.fullmatch(r"([0-9]+):([0-9]+)", structure)
    return (int(match[1]), int(match[2])) if match else None


def check_structure(structure: str, ratios: Sequence[float]) -> None:
    """Refuse an impossible N:M, or ratios that are not N/M (or 0, the unpruned model)."""
    check_ratios(ratios)
    nm = n_m(structure)
    if nm is None:
        return
    n, m = nm
    if not 0 < n < m:
        raise CheckFailed(f"structure {structure!r} needs 0 < N < M", field="structure", allowed="e.g. 2:4 or 4:8")
    bad = [r for r in ratios if r not in (0.0, n / m)]
    if bad:
        raise CheckFailed(f"structure {structure} zeroes {n}/{m} = {n / m:g} of the weights, but ratios {bad} were asked",
                          allowed=f"ratios = [{n / m:g}] (or 0 for the unpruned model)")


def nm_mask(score: Any, n: int, m: int) -> Any:
    """True where a weight is zeroed: the ``n`` lowest scores of every ``m`` consecutive
    columns of each row (columns beyond the last whole group are kept)."""
    import torch

    rows, cols = score.shape
    whole = cols - cols % m
    mask = torch.zeros_like(score, dtype=torch.bool)
    groups = score[:, :whole].reshape(rows, whole // m, m)
    low = torch.topk(groups, n, dim=-1, largest=False).indices
    mask[:, :whole] = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, low, True).reshape(rows, whole)
    return mask


def row_mask(score: Any, ratio: float) -> Any:
    """True for the ⌊ratio · columns⌋ lowest scores of each row (stable order for ties)."""
    import torch

    k = int(score.shape[1] * ratio)
    mask = torch.zeros_like(score, dtype=torch.bool)
    if k:
        mask.scatter_(1, torch.sort(score, dim=1, stable=True).indices[:, :k], True)
    return mask


def matrix_mask(score: Any, ratio: float) -> Any:
    """True for the ⌊ratio · numel⌋ lowest scores of the whole matrix (stable order)."""
    import torch

    k = int(score.numel() * ratio)
    flat = torch.zeros(score.numel(), dtype=torch.bool, device=score.device)
    if k:
        flat[torch.sort(score.flatten(), stable=True).indices[:k]] = True
    return flat.reshape(score.shape)


def _none(score: Any) -> Any:
    import torch

    return torch.zeros_like(score, dtype=torch.bool)


class Magnitude(Pruner):
    name: ClassVar[str] = "magnitude"
    description: ClassVar[str] = (
        "zero the fraction r of each decoder projection's smallest |W| (per matrix), or N:M; calibration-free, "
        "sparse (shapes unchanged)"
    )
    Params: ClassVar[type[Params]] = MagnitudeParams
    group: ClassVar[str] = "matrix"  # where scores are compared, unstructured

    def check(self, params: Any, ratios: Sequence[float], ctx: CheckContext) -> None:
        check_structure(params.structure, ratios)

    def mask(self, score: Any, ratio: float, params: Any) -> Any:
        nm = n_m(params.structure)
        if nm is not None:
            return nm_mask(score, *nm) if ratio > 0 else _none(score)
        return matrix_mask(score, ratio) if self.group == "matrix" else row_mask(score, ratio)

    def score(self, linear: Any, sq_norms: Any) -> Any:
        return linear.weight.detach().abs()

    def sparsify(self, model: LoadedModel, adapter: Any, ratio: float, params: Any, ctx: RunContext) -> dict:
        """Zero the weights; returns details to record. Magnitude needs no data."""
        import torch

        from lawlab.sparsity import projections

        with torch.no_grad():
            for _, lin in projections(model.model, adapter):
                lin.weight.masked_fill_(self.mask(self.score(lin, None), ratio, params), 0.0)
        return {}

    def prune(self, model: LoadedModel, ratio: float, params: Any, ctx: RunContext) -> LoadedModel:
        import torch

        from lawlab.accounting import compression, measure, record, stopwatch
        from lawlab.sparsity import SPARSE, sparsity

        check_structure(params.structure, [ratio])
        adapter = ctx.registry.get("architectures", model.model_type)
        before = measure(model.model, adapter)
        model.model.eval()
        with stopwatch() as t, torch.no_grad():
            details = self.sparsify(model, adapter, ratio, params, ctx)
        after = measure(model.model, adapter, nonzero=True)
        zeros = sparsity(model.model, adapter)
        details = {
            **details, "seed": ctx.seed, "structure": params.structure, "compared_within": self.group,
            SPARSE: {"pattern": params.structure, **zeros},
            "effective_ratio": zeros["fraction"],
            "ratio_meaning": "fraction of the decoder projections' weights set to zero",
            "stored_as": "dense safetensors: the zeros are stored, so the bytes on disk do not fall",
            "flops_per_token_sparse_kernels": after.flops_per_token - 2.0 * zeros["zeros"],
        }
        model.compression = compression(self.name, ratio, before, after, t["seconds"], details)
        record(model, {"step": "prune", "method": self.name, "ratio": ratio,
                       "params": params.model_dump(mode="json"), "seed": ctx.seed,
                       "sparsity": zeros["fraction"],
                       **({"calibration_windows": {k: details["calibration"]["windows"][k]
                                                   for k in ("count", "seqlen", "seed", "windows_sha256")}}
                          if "calibration" in details else {})})
        return model


class Wanda(Magnitude):
    name: ClassVar[str] = "wanda"
    description: ClassVar[str] = (
        "zero, in each output row of every decoder projection, the fraction r of weights with the smallest "
        "|W|·‖X‖ (calibration data, layers in sequence), or N:M; sparse (shapes unchanged)"
    )
    calibration: ClassVar[bool] = True
    Params: ClassVar[type[Params]] = WandaParams
    group: ClassVar[str] = "row"

    def check(self, params: Any, ratios: Sequence[float], ctx: CheckContext) -> None:
        from lawlab.calibration import check_calibration

        super().check(params, ratios, ctx)
        check_calibration(ctx, params.calibration_dataset, params.calibration_samples, params.calibration_seqlen)

    def score(self, linear: Any, sq_norms: Any) -> Any:
        """|W_ij| · ‖X_j‖₂, in float64 (the reference: float32)."""
        return linear.weight.detach().abs().to(sq_norms.dtype) * sq_norms.sqrt().reshape(1, -1)

    def sparsify(self, model: LoadedModel, adapter: Any, ratio: float, params: Any, ctx: RunContext) -> dict:
        from lawlab.calibration import calibration_windows, walk_layers

        data = ctx.load_dataset(params.calibration_dataset, "train")
        ids, windows = calibration_windows(model.tokenizer, data.texts, params.calibration_samples,
                                           params.calibration_seqlen, ctx.seed, params.calibration_dataset,
                                           ctx.cache_dir)

        def watch(layer: Any) -> dict[str, Any]:
            names = ("q", "k", "v", "o", "gate", "up", "down")
            return dict(zip(names, (*adapter.attention(layer), *adapter.mlp(layer)), strict=True))

        def act(i: int, layer: Any, sums: dict[str, Any]) -> None:
            for name, lin in watch(layer).items():
                mask = self.mask(self.score(lin, sums[name]), ratio, params)
                lin.weight.masked_fill_(mask.to(lin.weight.device), 0.0)

        if ratio > 0:  # r = 0 changes nothing: skip the passes
            walk_layers(model.model, adapter, ids, params.batch_size, watch, act)
        return {"calibration": {"dataset": params.calibration_dataset, "checksum": data.checksum,
                                "source": data.source, "samples": params.calibration_samples,
                                "seqlen": params.calibration_seqlen, "tokens": int(ids.numel()),
                                "windows": windows}}


@hookimpl
def register_pruners(register):
    register(Magnitude())
    register(Wanda())
