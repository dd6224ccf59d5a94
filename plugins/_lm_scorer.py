"""lawlab's ``loglikelihood`` scorer for lm-eval: lm-eval's answers, less compute.

``LawlabLM`` is lm-eval's ``HFLM`` with one method replaced, ``_loglikelihood_tokens``.
Everything before it (prompts, the context/continuation split, whitespace moves, BOS
handling, the empty-context prefix token) is HFLM's own code, so the tokens scored are
HFLM's by construction. ``loglikelihood_rolling`` and ``generate_until`` stay HFLM's.

HFLM runs every (context, continuation) pair as one sequence, then computes the vocabulary
head and a log-softmax at every position. Here each request is the input HFLM would build
(``(context + continuation)[-(max_length + 1):][:-1]``), whose last ``len(continuation)``
positions are scored, and requests are run as a *prefix tree*:

- Requests are sorted by their tokens, so requests sharing a start (a question and its
  choices; a task's instruction header; WinoGrande's sentence up to the blank) are adjacent.
- They are packed into rows of about ``ROW_TOKENS`` tokens. A request adds to its row only
  the tokens after its longest common prefix with the row's previous request, so every
  shared token runs once per row. Each token gets its depth in its own sequence as
  position id and a 4-D attention mask row that lets it see exactly its own sequence's
  earlier tokens: what it sees in HFLM's sequence, at the same positions. No padding inside
  a row, no KV cache to copy.
- The head, any final soft-capping and a float32 log-softmax are applied only to the
  scored positions, a bounded number of rows at a time, so no batch × sequence × vocabulary
  tensor exists. Requests scored at the same position (MMLU's four one-token answers)
  share its logits.

A token may only see its own sequence, so a sliding-window layer agrees with the full mask
as long as the sequence fits in the window; a longer sequence (or one over ``PACK_AT_MOST``
tokens, which bounds the mask), and every sequence of a model whose attention takes no 4-D
additive mask, runs on its own, right-padded, with the model's own masks. The model is used through ``get_decoder()`` (hidden states after the final norm)
and ``get_output_embeddings()``: stock HF models, PEFT wrappers (which forward both) and
SliceGPT's model (a stock class with replaced layers). A one-sequence probe checks that
head(decoder(x)) equals the model's own logits; a model that fails it is scored by HFLM's
code instead, so an unusual architecture is slow, never wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

# the two sizes the memory plan reads too, in a module without torch
from lawlab_plugins._lm_sizes import LOGIT_ELEMENTS, TOKENS_PER_BATCH_ROW
from lm_eval.models.huggingface import HFLM

# Tokens per packed row. Attention spans the whole row (masked), so a longer row wastes
# attention FLOPs on pairs the mask drops; a shorter one shares a common header less often.
ROW_TOKENS = 256
# Attention implementations that take a ready 4-D additive mask as it is.
MASKABLE = ("sdpa", "eager")
# Longer sequences run alone: a row's mask is row² elements, and a long sequence (a rolling
# perplexity window) rarely shares a start with another request anyway.
PACK_AT_MOST = 1024


@dataclass(frozen=True)
class Split:
    """One request as HFLM would run it, cut where scoring starts."""

    prefix: tuple[int, ...]  # context tokens before the first scored position (may be empty)
    suffix: tuple[int, ...]  # positions whose next token is scored
    targets: tuple[int, ...]  # the scored tokens (the continuation), len == len(suffix)


def split_request(context: list[int], continuation: list[int], max_length: int) -> Split:
    """HFLM's input ``(context + continuation)[-(max_length + 1):][:-1]``, cut before the
    last ``len(continuation)`` positions, which are the scored ones."""
    k = len(continuation)
    if not context or not continuation or k > max_length:
        raise ValueError("a request needs a context, a continuation, and a continuation <= max_length")
    whole = (list(context) + list(continuation))[-(max_length + 1) :]
    cut = len(whole) - k - 1
    return Split(tuple(whole[:cut]), tuple(whole[cut:-1]), tuple(whole[-k:]))


@dataclass
class _Scores:
    """Per request: the log-probs of its scored tokens, and whether each was the argmax."""

    logprobs: list[list[float]]
    greedy: list[bool]

    @classmethod
    def empty(cls, n: int) -> _Scores:
        return cls([[] for _ in range(n)], [True] * n)

    def answers(self) -> list[tuple[float, bool]]:
        # summed as HFLM sums them: one float32 tensor per request
        sums = [float(torch.tensor(lp, dtype=torch.float32).sum()) for lp in self.logprobs]
        return list(zip(sums, self.greedy, strict=True))


@dataclass
class _Job:
    """Positions of one forward pass to score: hidden row -> [(request, target)]."""

    rows: list[int] = field(default_factory=list)  # batch row of each scored position
    cols: list[int] = field(default_factory=list)  # sequence index of each scored position
    pairs: list[list[tuple[int, int]]] = field(default_factory=list)  # per position


@dataclass
class _Row:
    """Requests packed as a prefix tree: each token once, seeing only its own sequence."""

    tokens: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)  # depth in its sequence = HFLM's position
    # (ancestors, start, end): tokens[start:end] see the ancestors and each other causally
    blocks: list[tuple[list[int], int, int]] = field(default_factory=list)
    scored: dict[int, list[tuple[int, int]]] = field(default_factory=dict)  # index -> [(request, target)]
    path: list[int] = field(default_factory=list)  # row index at each depth of the last sequence
    last: tuple[int, ...] = ()

    def shared(self, tokens: tuple[int, ...]) -> int:
        """Length of the common prefix with the row's last sequence (sorted order makes it the
        longest with any sequence in the row)."""
        n = 0
        for x, y in zip(self.last, tokens, strict=False):
            if x != y:
                break
            n += 1
        return min(n, len(self.path))

    def add(self, tokens: tuple[int, ...], targets: tuple[int, ...], request: int, shared: int) -> None:
        start = len(self.tokens)
        self.tokens += tokens[shared:]
        self.positions += range(shared, len(tokens))
        if len(tokens) > shared:
            self.blocks.append((self.path[:shared], start, len(self.tokens)))
        self.path = self.path[:shared] + list(range(start, len(self.tokens)))
        self.last = tokens
        first = len(tokens) - len(targets)
        for j, target in enumerate(targets):
            self.scored.setdefault(self.path[first + j], []).append((request, target))


class Scorer:
    """Runs a causal LM's decoder and head for :func:`Split` requests (see module doc)."""

    def __init__(self, model: Any, batch_size: int):
        self.model = model
        self.decoder = model.get_decoder()
        self.head = model.get_output_embeddings()
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self.softcap = getattr(config, "final_logit_softcapping", None)
        window = getattr(config, "sliding_window", None)
        self.window = window if isinstance(window, int) and window > 0 else None
        self.packs = getattr(config, "_attn_implementation", None) in MASKABLE
        self.device = self.head.weight.device
        self.dtype = self.head.weight.dtype
        self.tokens = max(1, batch_size) * TOKENS_PER_BATCH_ROW
        self.max_rows = max(1, batch_size) * 4

    # ------------------------------------------------------------------ model calls

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        out = self.head(hidden).float()
        if self.softcap:
            out = torch.tanh(out / self.softcap) * self.softcap
        return out

    def exact(self) -> bool:
        """Does head(decoder(x)) reproduce the model's own logits? (the probe)"""
        vocab = self.head.weight.shape[0]
        ids = (torch.arange(1, 9, device=self.device) * 7919 % vocab).unsqueeze(0)
        with torch.inference_mode():
            want = self.model(input_ids=ids).logits.float()
            got = self.logits(self.decoder(input_ids=ids).last_hidden_state)
        return got.shape == want.shape and bool(torch.allclose(got, want, rtol=1e-3, atol=1e-3))

    def _score(self, hidden: torch.Tensor, job: _Job, scores: _Scores) -> None:
        """Head + log-softmax on the job's positions only, a bounded chunk at a time."""
        if not job.rows:
            return
        picked = hidden[torch.tensor(job.rows, device=hidden.device), torch.tensor(job.cols, device=hidden.device)]
        step = max(1, LOGIT_ELEMENTS // self.head.weight.shape[0])
        for start in range(0, picked.shape[0], step):
            # log_softmax, as HFLM: logits - logsumexp differs from it by ~1e-5 per token in float32
            logits = torch.log_softmax(self.logits(picked[start : start + step]), dim=-1)
            chunk = job.pairs[start : start + step]
            at = [i for i, pairs in enumerate(chunk) for _ in pairs]
            requests = [r for pairs in chunk for r, _ in pairs]
            targets = torch.tensor([t for pairs in chunk for _, t in pairs], device=logits.device)
            rows = torch.tensor(at, device=logits.device)
            logprob = logits[rows, targets]
            greedy = logits.argmax(dim=-1)[rows] == targets
            for request, lp, g in zip(requests, logprob.tolist(), greedy.tolist(), strict=True):
                scores.logprobs[request].append(lp)
                scores.greedy[request] &= g

    # ------------------------------------------------------------------ batching

    def _batches(self, items: list[Any], length: Any) -> list[list[Any]]:
        """Consecutive items (sorted by length) whose padded size fits the token budget."""
        out: list[list[Any]] = []
        for item in sorted(items, key=length):
            if out and (len(out[-1]) + 1) * length(item) <= self.tokens and len(out[-1]) < self.max_rows:
                out[-1].append(item)
            else:
                out.append([item])
        return out

    def _pack(self, splits: list[Split], which: list[int]) -> list[_Row]:
        """Requests in token order, each row filled until the next request's new tokens
        would pass ``ROW_TOKENS`` (a longer request gets a row of its own)."""
        rows: list[_Row] = []
        for r in sorted(which, key=lambda i: splits[i].prefix + splits[i].suffix):
            tokens = splits[r].prefix + splits[r].suffix
            shared = rows[-1].shared(tokens) if rows else 0
            if not rows or (len(rows[-1].tokens) + len(tokens) - shared > ROW_TOKENS and rows[-1].tokens):
                rows.append(_Row())
                shared = 0
            rows[-1].add(tokens, splits[r].targets, r, shared)
        return rows

    def _run_packed(self, rows: list[_Row], scores: _Scores) -> None:
        low = torch.finfo(self.dtype).min
        for batch in self._batches(rows, lambda row: len(row.tokens)):
            width = max(len(row.tokens) for row in batch)
            ids = torch.zeros(len(batch), width, dtype=torch.long)
            positions = torch.zeros(len(batch), width, dtype=torch.long)
            # padding sees only itself (a row with nothing to see would be NaN in some kernels)
            see = torch.eye(width, dtype=torch.bool).repeat(len(batch), 1, 1)
            job = _Job()
            for b, row in enumerate(batch):
                n = len(row.tokens)
                ids[b, :n] = torch.tensor(row.tokens)
                positions[b, :n] = torch.tensor(row.positions)
                for ancestors, start, end in row.blocks:
                    see[b, start:end, ancestors] = True
                    see[b, start:end, start:end] = torch.ones(end - start, end - start, dtype=torch.bool).tril()
                for col, pairs in row.scored.items():
                    job.rows.append(b)
                    job.cols.append(col)
                    job.pairs.append(pairs)
            mask = torch.zeros(see.shape, dtype=self.dtype).masked_fill_(~see, low).unsqueeze(1)
            hidden = self.decoder(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                  position_ids=positions.to(self.device), use_cache=False).last_hidden_state
            self._score(hidden, job, scores)

    def _run_alone(self, splits: list[Split], which: list[int], scores: _Scores) -> None:
        """One sequence per request, right-padded, with the model's own causal (and sliding)
        masks: causal attention never looks right, so padding changes nothing."""
        for batch in self._batches(which, lambda r: len(splits[r].prefix) + len(splits[r].suffix)):
            seqs = [splits[r].prefix + splits[r].suffix for r in batch]
            ids = torch.zeros(len(batch), max(len(s) for s in seqs), dtype=torch.long)
            job = _Job()
            for b, (r, tokens) in enumerate(zip(batch, seqs, strict=True)):
                ids[b, : len(tokens)] = torch.tensor(tokens)
                first = len(tokens) - len(splits[r].targets)
                for j, target in enumerate(splits[r].targets):
                    job.rows.append(b)
                    job.cols.append(first + j)
                    job.pairs.append([(r, target)])
            hidden = self.decoder(input_ids=ids.to(self.device), use_cache=False).last_hidden_state
            self._score(hidden, job, scores)

    # ------------------------------------------------------------------ entry

    def score(self, splits: list[Split]) -> list[tuple[float, bool]]:
        """(log-likelihood, is_greedy) per request, in order."""
        limit = min(self.window or PACK_AT_MOST, PACK_AT_MOST)
        packed, alone = [], []
        for r, s in enumerate(splits):
            fits = self.packs and len(s.prefix) + len(s.suffix) <= limit
            (packed if fits else alone).append(r)
        scores = _Scores.empty(len(splits))
        with torch.inference_mode():
            self._run_packed(self._pack(splits, packed), scores)
            self._run_alone(splits, alone, scores)
        return scores.answers()


class LawlabLM(HFLM):
    """lm-eval's HFLM whose ``loglikelihood`` requests are scored by :class:`Scorer`."""

    def __init__(self, pretrained: Any, tokenizer: Any, batch_size: int, max_length: int | None = None):
        kwargs: dict[str, Any] = {"pretrained": pretrained, "tokenizer": tokenizer, "batch_size": batch_size}
        if max_length is not None:
            kwargs["max_length"] = max_length
        super().__init__(**kwargs)
        scorer = Scorer(self.model, int(batch_size)) if self.backend == "causal" else None
        self.scorer = scorer if scorer is not None and scorer.exact() else None

    def _loglikelihood_tokens(self, requests: list, disable_tqdm: bool = False, override_bs: int | None = None
                              ) -> list[tuple[float, bool]]:
        if self.scorer is None:
            return super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)
        splits = [split_request(ctx, cont, self.max_length) for _, ctx, cont in requests]
        answers = self.scorer.score(splits)
        for (request, _, _), answer in zip(requests, answers, strict=True):
            if request is not None:  # rolling windows carry no request string
                self.cache_hook.add_partial("loglikelihood", request, answer)
        return answers
