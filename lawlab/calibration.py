"""Calibration data for the pruners that need it: windows drawn from a dataset's whole
train split with the study's seed, and the hidden states and keyword arguments the
decoder layers receive on them, so a method can walk the model layer by layer.

Every calibration-based pruner draws its windows here, so one record (offsets, a hash of
the token ids) lets an independent checker rebuild the exact windows any of them used.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SEPARATOR = "\n\n"  # between documents of a calibration window, as SliceGPT's reference joins them
MAX_RECORDED_OFFSETS = 1024  # window offsets listed in provenance (a hash covers all of them)


def layer_types(model: Any, n_layers: int) -> list[Any]:
    """Each layer's attention type (sliding window or full) when the config says, else None:
    layers of one type receive the same masks and rotary tables."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    types = getattr(config, "layer_types", None)
    return list(types) if types is not None and len(types) == n_layers else [None] * n_layers


# --------------------------------------------------------------------------- calibration


def calibration_windows(tokenizer: Any, texts: Sequence[str], samples: int, seqlen: int, seed: int,
                        dataset: str, cache_dir: Path | None = None) -> tuple[Any, dict[str, Any]]:
    """``samples`` windows of ``seqlen`` tokens (BOS first when the tokenizer has one) and
    a record of which they are, sampled as the reference code samples them: with ``seed``,
    a window starts at a document drawn uniformly from the not-yet-used documents of the
    whole split and runs on over the next unused ones (joined by a blank line) until it is
    full; its documents are then used. The split's tokens are cached by content."""
    import torch

    from lawlab.models.tokens import tokenized_documents

    docs = tokenized_documents(tokenizer, texts, cache_dir, SEPARATOR)
    bos = tokenizer.bos_token_id
    body = seqlen - (1 if bos is not None else 0)
    starts = docs.starts.tolist()
    pool = list(range(len(docs)))
    g = torch.Generator().manual_seed(seed)
    rows: list[list[int]] = []
    offsets: list[int] = []
    while len(rows) < samples and pool:
        first = int(torch.randint(len(pool), (1,), generator=g))
        end, have = first, 0
        while have < body and end < len(pool):
            have += starts[pool[end] + 1] - starts[pool[end]]
            end += 1
        window = [t for j in pool[first:end] for t in docs.ids[starts[j]:starts[j + 1]].tolist()][:body]
        offset = starts[pool[first]]
        del pool[first:end]
        if have >= body:  # a window that runs out of text is dropped (its documents are used)
            rows.append([bos, *window] if bos is not None else window)
            offsets.append(offset)
    if len(rows) < samples:
        raise ValueError(
            f"calibration data too short: the train split of {dataset!r} gives {int(docs.starts[-1])} tokens "
            f"in {len(docs)} documents, {len(rows)} windows of {seqlen}, but calibration_samples = {samples}; "
            f"lower calibration_samples or calibration_seqlen, or use a larger dataset"
        )
    ids = torch.tensor(rows, dtype=torch.long)
    record = {
        "count": samples, "seqlen": seqlen, "seed": seed, "bos": bos is not None,
        "sampling": "document starts drawn uniformly from the unused documents of the whole split",
        "split_tokens": int(docs.starts[-1]), "split_documents": len(docs), "tokens_key": docs.key,
        "windows_sha256": hashlib.sha256(ids.numpy().astype("<i8").tobytes()).hexdigest(),
        "token_offsets": offsets[:MAX_RECORDED_OFFSETS],
    }
    return ids, record


def layer_inputs(model: Any, adapter: Any, ids: Any, batch_size: int) -> tuple[list, dict[Any, list[dict]]]:
    """Hidden states entering layer 0 and, per attention type and batch, the keyword
    arguments the layers receive (masks, rotary tables), captured with forward pre-hooks
    on the first layer of each type; the pass stops once every type has been seen."""
    layers = adapter.layers(model)
    types = layer_types(model, len(layers))
    firsts = {t: i for i, t in reversed(list(enumerate(types)))}
    last = max(firsts.values())
    inputs: list[Any] = []
    kwargs: dict[Any, list[dict]] = {t: [] for t in firsts}

    class Stop(Exception):
        pass

    def hook_for(i: int, layer_type: Any) -> Any:
        def hook(module: Any, args: tuple, kw: dict) -> None:
            if i == 0:
                hs = args[0] if args else kw["hidden_states"]
                inputs.append(hs.detach())
            kwargs[layer_type].append({k: v for k, v in kw.items() if k != "hidden_states"})
            if i == last:
                raise Stop
        return hook

    handles = [layers[i].register_forward_pre_hook(hook_for(i, t), with_kwargs=True) for t, i in firsts.items()]
    try:
        for start in range(0, len(ids), batch_size):
            with contextlib.suppress(Stop):  # the hooks stop the pass once all types are seen
                model(input_ids=ids[start:start + batch_size].to(adapter.embeddings(model).weight.device),
                      use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return inputs, kwargs




def check_calibration(ctx: Any, dataset: str, samples: int, seqlen: int) -> None:
    """Refuse, at validation, a calibration dataset that is not registered or, for data
    that ships with a package, one too short for ``samples`` windows of ``seqlen`` tokens.
    Field names are those every calibration-based built-in uses in its params."""
    from lawlab.api import CheckFailed

    if not ctx.has_dataset(dataset):
        raise CheckFailed(
            f"no dataset named {dataset!r} is registered or declared under [datasets]",
            field="calibration_dataset",
            allowed=", ".join(sorted({*ctx.registry.names("datasets"), *ctx.datasets})),
        )
    plugin, dataset_params = ctx.dataset(dataset)
    plugin.check(dataset_params, "train", ctx)
    if not plugin.available_offline():
        return  # hub data: its own check above said whether this machine can have it
    # No tokenizer splits a UTF-8 byte, so fewer bytes than the tokens asked for can never be enough.
    data = plugin.load(dataset_params, "train", ctx.reading_context())
    n_bytes = sum(len(t.encode()) + len(SEPARATOR) for t in data.texts)
    needed = samples * (seqlen - 1)
    if n_bytes < needed:
        raise CheckFailed(
            f"calibration data too short: the train split of {dataset!r} has {n_bytes} bytes, fewer than "
            f"the {needed} tokens asked for ({samples} × {seqlen})",
            field="calibration_samples", allowed=f"at most {n_bytes // (seqlen - 1)}",
        )


def layer_output(layer: Any, hidden: Any, kwargs: dict) -> Any:
    """A decoder layer's output hidden states (some versions return a tuple)."""
    out = layer(hidden, **kwargs)
    return out[0] if isinstance(out, tuple) else out


def walk_layers(model: Any, adapter: Any, ids: Any, batch_size: int, watch: Any, act: Any) -> None:
    """Walk the decoder layers in order, as Wanda's reference does: layer i sees the
    calibration windows as the already-pruned layers before it turn them out.

    For each layer: a forward pass through the (still unpruned) layer accumulates, for
    every module ``watch(layer)`` lists (by name), the sum over all tokens of its squared
    input features (float64); ``act(i, layer, sums)`` then prunes the layer; finally the
    pruned layer's outputs become the next layer's inputs.
    """
    import torch

    layers = adapter.layers(model)
    types = layer_types(model, len(layers))
    x, kwargs = layer_inputs(model, adapter, ids, batch_size)
    for i in range(len(layers)):
        layer = layers[i]
        modules = watch(layer)
        sums = {name: None for name in modules}

        def hook_for(name: str, sums: dict = sums) -> Any:
            def hook(module: Any, args: tuple, output: Any) -> None:
                a = args[0].detach().reshape(-1, args[0].shape[-1]).to(torch.float64)
                s = a.pow(2).sum(0)
                sums[name] = s if sums[name] is None else sums[name] + s
            return hook

        handles = [m.register_forward_hook(hook_for(n)) for n, m in modules.items()]
        try:
            for b, kw in zip(x, kwargs[types[i]], strict=True):
                layer_output(layer, b, kw)
        finally:
            for h in handles:
                h.remove()
        act(i, layer, sums)
        layer = layers[i]  # act may have replaced it
        x = [layer_output(layer, b, kw) for b, kw in zip(x, kwargs[types[i]], strict=True)]
