"""RFT recipe ``lora``: recovery fine-tuning with LoRA, merged into the weights afterwards.

Defaults are the paper's: rank 16, one epoch, sequences of at most 1024 tokens.

What a *sample* is (D counts samples, as the paper does). With ``samples = "chunk"``
(default) the training split is joined into one text, tokenized, and cut into
non-overlapping sequences of ``max_length`` tokens (BOS first where the tokenizer has one);
a sample is one such sequence, as in the SliceGPT / PruneNet fine-tuning code the paper
builds on, which is why D = 1k–25k samples is ≈ 1M–25M tokens. With ``samples =
"document"`` a sample is one non-empty text of the split (an Alpaca example), truncated to
``max_length``. Either way the D samples are the first D of a shuffle seeded with the
study seed, so a larger D trains on a superset of a smaller one.
"""

from __future__ import annotations

import random
import time
from typing import Any, ClassVar, Literal

from pydantic import Field

from lawlab import hookimpl
from lawlab.api import (
    CheckContext,
    CheckFailed,
    LoadedModel,
    Measurement,
    MemoryTerms,
    Params,
    RFTRecipe,
    RunContext,
    TextData,
)
from lawlab.sparsity import is_sparse, reapply, sparsity, zero_masks

# Projection names of attention and MLP in the transformers decoder families; used when
# the architecture adapter cannot place them (a non-stock model).
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LoraParams(Params):
    rank: int = Field(16, ge=1, description="LoRA rank r (paper: 16).")
    alpha: float = Field(
        32.0, gt=0, description="LoRA scaling numerator: updates are scaled by alpha / rank."
    )
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: list[str] | None = Field(
        None,
        description="Module name suffixes to adapt (e.g. ['q_proj', 'v_proj']); None: every attention "
        "and MLP projection, found through the architecture adapter.",
    )
    epochs: int = Field(1, ge=1, description="Passes over the D samples (paper: 1).")
    max_length: int = Field(
        1024, ge=2, description="Tokens per training sequence, BOS included (paper: 1024)."
    )
    samples: Literal["chunk", "document"] = Field(
        "chunk",
        description="What one of the D samples is: a max_length-token chunk of the joined split, or one text.",
    )
    separator: str = Field(
        "\n\n", description="Text placed between documents when they are joined (chunk mode)."
    )
    learning_rate: float = Field(2e-4, gt=0, description="Peak learning rate of AdamW.")
    schedule: Literal["linear", "cosine", "constant"] = Field(
        "linear", description="Learning-rate schedule after warm-up."
    )
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="Fraction of optimizer steps spent warming up.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay on the LoRA weights.")
    batch_size: int = Field(4, ge=1, description="Sequences per forward pass.")
    grad_accumulation: int = Field(1, ge=1, description="Forward passes per optimizer step.")
    max_grad_norm: float | None = Field(1.0, gt=0, description="Gradient clipping norm; None: no clipping.")
    bf16: bool | None = Field(
        None, description="bfloat16 autocast; None: on when the device is a GPU that supports it."
    )
    cap_to_available: bool = Field(
        False,
        description="If D exceeds the samples the split holds, train on all of them (recorded) instead of failing.",
    )


def chunk_samples(tokenizer: Any, data: TextData, params: LoraParams) -> list[list[int]]:
    from lawlab.models.tokens import make_windows, tokenize_split

    ids = tokenize_split(tokenizer, data, params.separator)
    windows = make_windows(ids, params.max_length, tokenizer.bos_token_id)
    return [w for w in windows if len(w) == params.max_length]  # the short tail is not a sample


def document_samples(tokenizer: Any, data: TextData, params: LoraParams) -> list[list[int]]:
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    texts = [t for t in data.texts if t.strip()]
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [(bos + ids)[: params.max_length] for ids in encoded if ids]


def choose_samples(samples: list[list[int]], size: int, seed: int) -> list[list[int]]:
    order = list(range(len(samples)))
    random.Random(seed).shuffle(order)
    return [samples[i] for i in order[:size]]


def default_targets(model: LoadedModel, registry: Any) -> list[str]:
    """Full module names of every attention and MLP projection."""
    inner = model.model
    names = {id(m): n for n, m in inner.named_modules()}
    if registry is not None and registry.has("architectures", model.model_type):
        adapter = registry.get("architectures", model.model_type)
        try:
            found = [
                names[id(m)]
                for layer in adapter.layers(inner)
                for m in (*adapter.attention(layer), *adapter.mlp(layer))
                if id(m) in names
            ]
            if found:
                return found
        except AttributeError:  # a model whose layout the adapter does not know
            pass
    found = [
        n for n, m in inner.named_modules() if n.rsplit(".", 1)[-1] in PROJECTIONS and hasattr(m, "weight")
    ]
    if not found:
        raise ValueError("no attention or MLP projections found to adapt; set rft.params.target_modules")
    return found


def batches(samples: list[list[int]], batch_size: int, pad_id: int) -> list[tuple[Any, Any, Any]]:
    """(input_ids, attention_mask, labels) per batch; padding is masked out of the loss."""
    import torch

    out = []
    for i in range(0, len(samples), batch_size):
        chunk = samples[i : i + batch_size]
        width = max(len(s) for s in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, s in enumerate(chunk):
            ids[row, : len(s)] = torch.tensor(s)
            mask[row, : len(s)] = 1
        labels = ids.masked_fill(mask == 0, -100)
        out.append((ids, mask, labels))
    return out


def attach_adapters(net: Any, config: Any) -> Any:
    """``net`` wrapped with LoRA adapters in float32 whatever the base's dtype.

    peft upcasts bf16/fp16 adapters to fp32 only when a ``PeftModel`` is built
    (``get_peft_model(..., autocast_adapter_dtype=True)``); a bare ``LoraModel`` keeps them
    in the base's dtype, so on a GPU (dtype "auto" = bf16) AdamW would update bf16 adapter
    weights. peft's warnings here (a deprecation it triggers in transformers) go to the
    ``peft`` logger, which a run's capture sends to the study's log."""
    import logging
    import warnings

    from peft import get_peft_model

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        wrapped = get_peft_model(net, config, autocast_adapter_dtype=True)
    for w in caught:
        logging.getLogger("peft").warning("%s: %s", w.category.__name__, w.message)
    return wrapped


def keep_dtypes(net: Any, dtypes: dict[str, Any]) -> None:
    """Cast back any parameter whose dtype the merge changed (an fp32 delta added to a
    bf16 weight must leave a bf16 weight), so the merged model is the base's dtype."""
    for name, p in net.named_parameters():
        want = dtypes.get(name)
        if want is not None and p.dtype != want:
            p.data = p.data.to(want)


class LoRA(RFTRecipe):
    name: ClassVar[str] = "lora"
    Params: ClassVar[type[Params]] = LoraParams
    description: ClassVar[str] = "LoRA (peft) on D samples of a training split, merged into the weights"
    default: ClassVar[bool] = True  # the paper's RFT: what an [[rft]] entry without a recipe gets

    def memory(self, params: LoraParams, shapes: Any, dtype_bytes: int) -> MemoryTerms:
        """16 bytes per LoRA parameter (fp32 weights, gradients, two AdamW moments), then one
        training pass of ``T`` = batch × length tokens: the activations saved for backward,
        ``T · layers`` × :func:`saved_bytes_per_token`, and the logits, ``T · V · (b + 12)``
        (the logits, their fp32 copy, log-softmax and its gradient)."""
        tokens = params.batch_size * params.max_length
        return MemoryTerms({"LoRA state": 16 * lora_params(shapes, params.rank),
                            "activations": tokens * shapes.layers * saved_bytes_per_token(shapes, dtype_bytes),
                            "logits": tokens * shapes.vocab * (dtype_bytes + 12)})

    def check(self, params: LoraParams, dataset: str, size: int, ctx: CheckContext) -> None:
        if params.cap_to_available:
            return
        from lawlab.models.tokens import text_of

        data = ctx.split_if_cheap(dataset, "train")
        if data is None:
            return  # hub-only data: counted at train time
        if params.samples == "document":
            available = sum(1 for t in data.texts if t.strip())
            how = "non-empty texts"
        else:
            # Each token covers at least one UTF-8 byte: an upper bound on the chunks any tokenizer gives.
            available = len(text_of(data, params.separator).encode()) // params.max_length
            how = f"chunks of {params.max_length} tokens at most"
        if size > available:
            raise CheckFailed(
                f"D = {size} samples, but the train split of {dataset!r} holds {available} {how}",
                field="",
                allowed=f"sizes up to {available}, or params.cap_to_available = true",
            )

    def train(
        self, model: LoadedModel, data: TextData, size: int, params: LoraParams, ctx: RunContext
    ) -> tuple[LoadedModel, list[Measurement]]:
        import torch
        from peft import LoraConfig
        from transformers import get_scheduler

        tok = model.tokenizer
        make = chunk_samples if params.samples == "chunk" else document_samples
        pool = make(tok, data, params)
        if size > len(pool) and not params.cap_to_available:
            raise ValueError(
                f"D = {size} samples, but the train split of {data.name!r} gives {len(pool)} "
                f"({params.samples} samples of at most {params.max_length} tokens with this tokenizer); "
                "lower D or set cap_to_available = true"
            )
        chosen = choose_samples(pool, size, ctx.seed)
        tokens = sum(len(s) for s in chosen)

        torch.manual_seed(ctx.seed)  # LoRA's A matrices and dropout draw from the global RNG
        targets = params.target_modules or default_targets(model, ctx.registry)
        config = LoraConfig(
            r=params.rank,
            lora_alpha=params.alpha,
            lora_dropout=params.dropout,
            target_modules=targets,
            bias="none",
        )
        net = model.model
        for p in net.parameters():
            p.requires_grad_(False)
        base_dtypes = {name: p.dtype for name, p in net.named_parameters()}
        # A merged adapter makes a sparse weight dense: keep its zeros to re-apply after the merge.
        adapter = ctx.registry.get("architectures", model.model_type) if is_sparse(model) else None
        masks = zero_masks(model, adapter) if adapter is not None else None
        sparse_before = sparsity(net, adapter)["fraction"] if adapter is not None else None
        lora = attach_adapters(net, config)
        trainable = [p for p in lora.parameters() if p.requires_grad]

        use_bf16 = params.bf16
        if use_bf16 is None:
            use_bf16 = ctx.device.startswith("cuda") and torch.cuda.is_bf16_supported()
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
        data_batches = batches(chosen, params.batch_size, pad_id)
        steps_per_epoch = -(-len(data_batches) // params.grad_accumulation)
        total_steps = steps_per_epoch * params.epochs
        optimizer = torch.optim.AdamW(trainable, lr=params.learning_rate, weight_decay=params.weight_decay)
        scheduler = get_scheduler(
            params.schedule,
            optimizer,
            num_warmup_steps=round(params.warmup_ratio * total_steps),
            num_training_steps=total_steps,
        )

        curve: list[list[float]] = []  # [optimizer step, tokens seen, mean loss of the step]
        seen = 0
        net.train()
        ctx.progress.start(f"LoRA RFT on {data.name} (D={len(chosen)})", total=total_steps)
        start = time.perf_counter()
        for _epoch in range(params.epochs):
            for first in range(0, len(data_batches), params.grad_accumulation):
                group = data_batches[first : first + params.grad_accumulation]
                # Weight each forward pass by its share of the step's predicted tokens.
                n_pred = sum(int((lab[:, 1:] != -100).sum()) for _, _, lab in group)
                step_loss = 0.0
                for ids, mask, labels in group:
                    ids, mask, labels = ids.to(ctx.device), mask.to(ctx.device), labels.to(ctx.device)
                    share = int((labels[:, 1:] != -100).sum()) / n_pred
                    with torch.autocast(
                        device_type=ctx.device.split(":")[0], dtype=torch.bfloat16, enabled=use_bf16
                    ):
                        loss = net(input_ids=ids, attention_mask=mask, labels=labels).loss
                    (loss * share).backward()
                    step_loss += loss.item() * share
                    seen += int(mask.sum())
                if params.max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(trainable, params.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                curve.append([len(curve) + 1, seen, step_loss])
                ctx.progress.advance(1)
        seconds = time.perf_counter() - start
        ctx.progress.done()

        merged = lora.merge_and_unload()
        keep_dtypes(merged, base_dtypes)
        merged.eval()
        for p in merged.parameters():
            p.requires_grad_(False)
        model.model = merged
        kept_sparse = {}
        if masks is not None:
            before = sparsity(merged, adapter)["fraction"]
            reapply(model, adapter, masks)
            kept_sparse = {"sparsity_before": sparse_before, "sparsity_merged": before,
                           "sparsity_after": sparsity(merged, adapter)["fraction"]}
        record = {
            "recipe": self.name,
            "dataset": data.name,
            "dataset_checksum": data.checksum,
            "dataset_source": data.source,
            "size_requested": size,
            "size": len(chosen),
            "available": len(pool),
            "tokens": tokens,
            "seed": ctx.seed,
            "targets": len(targets),
            "trainable_params": sum(p.numel() for p in trainable),
            "bf16": use_bf16,
            "adapter_dtype": str(trainable[0].dtype).removeprefix("torch."),
            "params": params.model_dump(mode="json"),
            **kept_sparse,
        }
        model.history.append({"step": "rft", **record})
        details = {**record, "seconds": seconds, "device": ctx.device, "optimizer_steps": total_steps}
        return model, [
            Measurement("rft_loss", curve[-1][2], dataset=data.name, details={**details, "curve": curve}),
            Measurement("rft_loss_first", curve[0][2], dataset=data.name),
            Measurement("rft_tokens", float(tokens), dataset=data.name),
            Measurement("rft_samples", float(len(chosen)), dataset=data.name),
            Measurement("rft_seconds", seconds, dataset=data.name),
            Measurement("rft_tokens_per_s", tokens * params.epochs / seconds, dataset=data.name),
        ]


def lora_params(shapes: Any, rank: int) -> int:
    """LoRA on every attention and MLP projection: rank · (in + out) each."""
    q = shapes.heads * shapes.head_dim
    per_layer = (shapes.hidden + q) * 2 + (shapes.hidden + shapes.kv_dim) * 2 + 3 * (shapes.hidden + shapes.intermediate)
    return shapes.layers * rank * per_layer


def saved_bytes_per_token(shapes: Any, b: int) -> int:
    """Bytes saved for backward per token and layer in LoRA training with compute dtype of
    ``b`` bytes: ``(16·hidden + 5·intermediate + 2·kv_dim)·b + 2·hidden·(4 − b)``, measured on
    CPU with autograd's saved-tensor hooks, LoRA on every projection, dropout on."""
    return (16 * shapes.hidden + 5 * shapes.intermediate + 2 * shapes.kv_dim) * b + 2 * shapes.hidden * (4 - b) + 256


@hookimpl
def register_rft_recipes(register):
    register(LoRA())
