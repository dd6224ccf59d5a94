"""Evaluator ``cross-entropy``: token-weighted mean test cross-entropy (the paper's
intrinsic measure) over non-overlapping windows of a test split.

The test split is joined into one text (documents separated by ``separator``), tokenized
once without special tokens and cut into consecutive windows. Where the tokenizer has a
BOS token every window is ``BOS + (window - 1)`` text tokens and the BOS position is not
scored: models trained with a BOS at position 0 are badly calibrated without one (Gemma 3
scores 5.81 instead of 4.61 on PTB). Without a BOS a window holds ``window`` text tokens
and its first token is not scored. Every text token is scored at most once, so the mean
over all scored tokens is the test cross-entropy in nats.
"""

from __future__ import annotations

import math
import time
from typing import Any, ClassVar

from pydantic import Field

from lawlab import hookimpl
from lawlab.api import (
    CheckContext,
    CheckFailed,
    Evaluator,
    LoadedModel,
    Measurement,
    MemoryTerms,
    Params,
    RunContext,
)
from lawlab.models.tokens import make_windows, text_of, tokenize_split


class CrossEntropyParams(Params):
    datasets: list[str] = Field(
        default_factory=lambda: ["ptb"], min_length=1, description="Test sets (registered dataset names)."
    )
    window: int = Field(
        1024, ge=2, description="Tokens per window, BOS included; at most the model's context length."
    )
    batch_size: int = Field(4, ge=1, description="Windows per forward pass.")
    token_limit: int | None = Field(
        None,
        ge=1,
        description="Score only the first N text tokens of each test set (quick studies); None: all.",
    )
    separator: str | None = Field(
        None,
        description="Text placed between documents before tokenizing. None: the split as published when the "
        "dataset has one file (PTB), else documents joined by blank lines.",
    )


def context_length(model: Any) -> int | None:
    config = getattr(model, "config", None)
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def windowed_cross_entropy(
    model: Any, windows: list[list[int]], batch_size: int, device: str, progress: Any = None
) -> tuple[float, int]:
    """(sum of token NLL in nats, number of scored tokens). Position 0 of each window is
    context only. Windows of one batch share a length (only the last may be shorter,
    and it runs alone), so no padding is needed."""
    import torch

    total, count = 0.0, 0
    batches: list[list[list[int]]] = []
    for w in windows:
        if batches and len(batches[-1]) < batch_size and len(batches[-1][0]) == len(w):
            batches[-1].append(w)
        else:
            batches.append([w])
    with torch.inference_mode():
        for batch in batches:
            if len(batch[0]) < 2:
                continue  # a single leftover token has nothing before it to predict it
            ids = torch.tensor(batch, device=device)
            logits = model(input_ids=ids).logits[:, :-1].float()
            nll = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="sum"
            )
            total += nll.item()
            count += ids[:, 1:].numel()
            if progress is not None:
                progress.advance(1)
    return total, count


class CrossEntropy(Evaluator):
    name: ClassVar[str] = "cross-entropy"
    kind: ClassVar[str] = "intrinsic"
    Params: ClassVar[type[Params]] = CrossEntropyParams
    description: ClassVar[str] = (
        "token-weighted mean test cross-entropy over non-overlapping windows, BOS prepended"
    )

    def datasets(self, params: CrossEntropyParams) -> list[str]:
        return list(params.datasets)

    def memory(self, params: CrossEntropyParams, shapes: Any, dtype_bytes: int) -> MemoryTerms:
        from lawlab.run.memory import forward_terms

        tokens = params.batch_size * min(params.window, shapes.max_positions)
        return MemoryTerms(forward_terms(shapes, dtype_bytes, tokens=tokens))

    def check(self, params: CrossEntropyParams, ctx: CheckContext) -> None:
        if len(set(params.datasets)) != len(params.datasets):
            raise CheckFailed("a test set is listed twice", field="datasets")
        if params.token_limit is None:
            return
        for name in params.datasets:
            data = ctx.split_if_cheap(name, "test")
            if data is None:
                continue
            # No tokenizer splits a UTF-8 byte, so a split has at most as many tokens as bytes.
            n_bytes = len(text_of(data, params.separator).encode())
            if params.token_limit > n_bytes:
                raise CheckFailed(
                    f"token_limit {params.token_limit} is more than the test split of {name!r} can hold "
                    f"({n_bytes} bytes, so at most {n_bytes} tokens)",
                    field="token_limit",
                    allowed=f"at most {n_bytes}, or None for the whole split",
                )

    def check_model(self, config: dict[str, Any], params: CrossEntropyParams) -> str | None:
        limit = config.get("max_position_embeddings")
        if isinstance(limit, int) and params.window > limit:
            return f"window {params.window} is longer than the model's context ({limit} tokens)"
        return None

    def evaluate(self, model: LoadedModel, params: CrossEntropyParams, ctx: RunContext) -> list[Measurement]:
        limit = context_length(model.model)
        if limit is not None and params.window > limit:
            raise ValueError(
                f"cross-entropy window {params.window} is longer than the model's context ({limit} tokens); "
                f"set evaluators.params.window to {limit} or less"
            )
        tokenizer = model.tokenizer
        bos = tokenizer.bos_token_id
        out: list[Measurement] = []
        model.model.eval()
        for name in params.datasets:
            data = ctx.load_dataset(name, "test")
            ids = tokenize_split(tokenizer, data, params.separator)
            if params.token_limit is not None:
                if len(ids) < params.token_limit:
                    raise ValueError(
                        f"test split of {name!r} has {len(ids)} tokens with this tokenizer, "
                        f"fewer than token_limit {params.token_limit}"
                    )
                ids = ids[: params.token_limit]
            windows = make_windows(ids, params.window, bos)
            ctx.progress.start(f"cross-entropy {name}", total=math.ceil(len(windows) / params.batch_size))
            start = time.perf_counter()
            nll, count = windowed_cross_entropy(
                model.model, windows, params.batch_size, ctx.device, ctx.progress
            )
            seconds = time.perf_counter() - start
            ctx.progress.done()
            ce = nll / count
            details = {
                "window": params.window,
                "batch_size": params.batch_size,
                "bos": bos is not None,
                "windows": len(windows),
                "text_tokens": len(ids),
                "scored_tokens": count,
                "token_limit": params.token_limit,
                "separator": params.separator,
                "layout": "published" if params.separator is None and data.raw is not None else "joined",
                "dataset_checksum": data.checksum,
                "dataset_source": data.source,
                "seconds": seconds,
                "device": ctx.device,
                "dtype": ctx.dtype,
            }
            out += [
                Measurement("cross_entropy", ce, dataset=name, details=details, law_input=True),
                Measurement("perplexity", math.exp(ce), dataset=name),
                Measurement("tokens", float(count), dataset=name),
            ]
        return out


@hookimpl
def register_evaluators(register):
    register(CrossEntropy())
