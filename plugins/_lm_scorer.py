"""lawlab's ``loglikelihood`` scorer for lm-eval: lm-eval's answers, less compute.

``LawlabLM`` is lm-eval's ``HFLM`` with one method replaced, ``_loglikelihood_tokens``.
Everything before it (prompts, the context/continuation split, whitespace moves, BOS
handling, the empty-context prefix token) is HFLM's own code, so the tokens scored are
HFLM's by construction. ``loglikelihood_rolling`` and ``generate_until`` stay HFLM's.

HFLM runs every (context, continuation) pair as one sequence, then computes the vocabulary
head and a log-softmax at every position. Here, for each request, the input HFLM would
build (``(context + continuation)[-(max_length + 1):][:-1]``) is cut in two:

- the *prefix*: every token before the first scored position, and
- the *suffix*: the positions whose next token is scored (the last context token and the
  continuation minus its last token).

Requests are grouped by prefix. A group whose requests all have the same suffix (MMLU's
one-token answers; a context scored once), or whose prefix is short next to its suffixes
(PIQA), runs as one sequence per suffix. A group whose shared prefix saves more tokens than
its suffixes hold (ARC, HellaSwag) runs its prefix once, left-padded, keeping the KV cache;
each suffix then runs against a copy of its group's cache rows, right-padded, with explicit
position ids and attention mask, so every real token sees exactly the tokens and positions
it would see in HFLM's sequence (left padding keeps cache slots contiguous, so sliding-window
layers see the same window). The head, any final soft-capping and a float32 log-softmax
are applied only to the scored positions, a bounded number of rows at a time, so no
batch × sequence × vocabulary tensor exists.

The model is used through ``get_decoder()`` (hidden states after the final norm) and
``get_output_embeddings()``: stock HF models, PEFT wrappers (which forward both) and
SliceGPT's model (a stock class with replaced layers). A one-sequence probe checks that
head(decoder(x)) equals the model's own logits; a model that fails it is scored by HFLM's
code instead, so an unusual architecture is slow, never wrong.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch
from lm_eval.models.huggingface import HFLM

# Rows of vocabulary logits alive at once: bounds the head's memory (≈64 MB in float32).
LOGIT_ELEMENTS = 1 << 24
# Tokens per forward pass, per unit of the evaluator's batch_size (HFLM's batch_size counts
# whole sequences; these passes carry prefixes or short suffixes, so tokens are the fair unit).
TOKENS_PER_BATCH_ROW = 128


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


class Scorer:
    """Runs a causal LM's decoder and head for :func:`Split` requests (see module doc)."""

    def __init__(self, model: Any, batch_size: int):
        self.model = model
        self.decoder = model.get_decoder()
        self.head = model.get_output_embeddings()
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self.softcap = getattr(config, "final_logit_softcapping", None)
        self.device = self.head.weight.device
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

    def _forward(self, ids: torch.Tensor, **kwargs: Any) -> tuple[torch.Tensor, Any]:
        out = self.decoder(input_ids=ids, **kwargs)
        return out.last_hidden_state, out["cache"] if kwargs.get("use_cache") else None

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

    def _run_whole(self, seqs: list[tuple[tuple[int, ...], int, list[list[tuple[int, int]]]]], scores: _Scores) -> None:
        """Sequences run once, right-padded (causal attention never looks right, so no mask)."""
        for batch in self._batches(seqs, lambda s: len(s[0])):
            width = max(len(s[0]) for s in batch)
            ids = torch.zeros(len(batch), width, dtype=torch.long)
            job = _Job()
            for b, (tokens, n_scored, pairs) in enumerate(batch):
                ids[b, : len(tokens)] = torch.tensor(tokens)
                for j in range(n_scored):
                    job.rows.append(b)
                    job.cols.append(len(tokens) - n_scored + j)
                    job.pairs.append(pairs[j])
            hidden, _ = self._forward(ids.to(self.device), use_cache=False)
            self._score(hidden, job, scores)

    def _run_groups(self, groups: list[tuple[tuple[int, ...], list[tuple[tuple[int, ...], list]]]],
                    scores: _Scores) -> None:
        """Each prefix once (left-padded, cached), then its suffixes against the cache."""
        for batch in self._batches(groups, lambda g: len(g[0]) + max(len(s) for s, _ in g[1])):
            width = max(len(p) for p, _ in batch)
            ids = torch.zeros(len(batch), width, dtype=torch.long)
            mask = torch.zeros(len(batch), width, dtype=torch.long)
            for b, (prefix, _) in enumerate(batch):
                ids[b, width - len(prefix) :] = torch.tensor(prefix)
                mask[b, width - len(prefix) :] = 1
            lengths = mask.sum(1)
            positions = (torch.arange(width).unsqueeze(0) - (width - lengths).unsqueeze(1)).clamp(min=0)
            ids, mask, positions = ids.to(self.device), mask.to(self.device), positions.to(self.device)
            _, cache = self._forward(ids, attention_mask=mask, position_ids=positions, use_cache=True)
            items = [(b, suffix, pairs) for b, (_, suffixes) in enumerate(batch) for suffix, pairs in suffixes]
            for sub in self._batches(items, lambda it, width=width: width + len(it[1])):
                self._run_suffixes(sub, cache, mask, lengths.to(self.device), scores)

    def _run_suffixes(self, sub: list[tuple[int, tuple[int, ...], list]], cache: Any, prefix_mask: torch.Tensor,
                      lengths: torch.Tensor, scores: _Scores) -> None:
        width = max(len(s) for _, s, _ in sub)
        rows = torch.tensor([b for b, _, _ in sub], device=self.device)
        ids = torch.zeros(len(sub), width, dtype=torch.long)
        mask = torch.zeros(len(sub), width, dtype=torch.long)
        job = _Job()
        for i, (_, suffix, pairs) in enumerate(sub):
            ids[i, : len(suffix)] = torch.tensor(suffix)
            mask[i, : len(suffix)] = 1
            for j in range(len(suffix)):
                job.rows.append(i)
                job.cols.append(j)
                job.pairs.append(pairs[j])
        mask = torch.cat([prefix_mask[rows], mask.to(self.device)], dim=1)
        positions = lengths[rows].unsqueeze(1) + torch.arange(width, device=self.device).unsqueeze(0)
        hidden, _ = self._forward(ids.to(self.device), attention_mask=mask, position_ids=positions,
                                  cache=_select(cache, rows), use_cache=True)
        self._score(hidden, job, scores)

    # ------------------------------------------------------------------ entry

    def score(self, splits: list[Split]) -> list[tuple[float, bool]]:
        """(log-likelihood, is_greedy) per request, in order."""
        # prefix -> suffix -> per suffix position, the (request, target) pairs scored there
        tree: dict[tuple[int, ...], dict[tuple[int, ...], list[list[tuple[int, int]]]]] = defaultdict(dict)
        for r, s in enumerate(splits):
            slots = tree[s.prefix].setdefault(s.suffix, [[] for _ in s.suffix])
            for j, target in enumerate(s.targets):
                slots[j].append((r, target))
        whole, groups = [], []
        for prefix, suffixes in tree.items():
            # Sharing pays when the prefix tokens it saves outnumber the suffix tokens (ARC,
            # HellaSwag); a short prefix (PIQA) costs more in a second pass and padding than it saves.
            saved = (len(suffixes) - 1) * len(prefix)
            if saved < sum(len(s) for s in suffixes):  # one sequence per suffix
                whole += [(prefix + suffix, len(suffix), pairs) for suffix, pairs in suffixes.items()]
            else:
                groups.append((prefix, list(suffixes.items())))
        scores = _Scores.empty(len(splits))
        with torch.inference_mode():
            self._run_whole(whole, scores)
            self._run_groups(groups, scores)
        return scores.answers()


def _select(cache: Any, rows: torch.Tensor) -> Any:
    """A new cache holding ``rows`` of ``cache`` (which stays untouched for the next suffixes)."""
    new = copy.copy(cache)
    new.layers = [copy.copy(layer) for layer in cache.layers]
    for layer in new.layers:
        layer.batch_select_indices(rows)
    return new


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
