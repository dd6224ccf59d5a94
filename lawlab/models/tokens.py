"""Token ids of a whole text split, computed once per tokenizer and content and kept on disk.

Calibration-based methods sample windows from anywhere in a train split, so the whole split
has to be tokenised; for a large split that is the slow part. :func:`tokenized_documents`
caches the result under ``<cache>/tokens/<key>.safetensors`` (no pickle), the key hashing the
tokenizer's identity (its serialised vocabulary and rules) and the documents' text, so the
second time costs one file read.

For the evaluators and recipes that read a split as one text (cross-entropy, LoRA's chunked
samples): :func:`text_of`, :func:`tokenize_split` (memoised in memory) and :func:`make_windows`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lawlab.files import atomic_path

if TYPE_CHECKING:  # pragma: no cover
    from lawlab.api import TextData

FORMAT_VERSION = 1


@dataclass(frozen=True)
class TokenizedDocuments:
    """Every non-empty document's token ids, concatenated (no special tokens).

    ``starts[i]`` is where document ``i`` begins in ``ids`` and ``starts[-1] == len(ids)``;
    ``separator`` (its ids are appended to every document but the last) is what joins them.
    """

    ids: Any  # numpy int64 array
    starts: Any  # numpy int64 array, one longer than the number of documents
    key: str
    separator: str

    def __len__(self) -> int:
        return len(self.starts) - 1


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """sha256 of what fixes a tokenizer's output: its class, its serialised rules (fast
    tokenizers) or vocabulary (slow ones), and its special tokens."""
    h = hashlib.sha256(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        h.update(backend.to_str().encode())
    else:
        h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    h.update(json.dumps(getattr(tokenizer, "special_tokens_map", {}), sort_keys=True, default=str).encode())
    return h.hexdigest()


def _content_key(tokenizer: Any, texts: Sequence[str], separator: str) -> str:
    h = hashlib.sha256(f"lawlab-tokens-v{FORMAT_VERSION}\0{tokenizer_fingerprint(tokenizer)}\0".encode())
    h.update(json.dumps(separator).encode())
    for t in texts:
        h.update(len(t).to_bytes(8, "little"))
        h.update(t.encode())
    return h.hexdigest()[:32]


def tokenized_documents(tokenizer: Any, texts: Sequence[str], cache_dir: Path | None,
                        separator: str = "\n\n") -> TokenizedDocuments:
    """Token ids of the non-empty ``texts``, each followed by ``separator`` (except the
    last), read from ``cache_dir`` when this tokenizer has seen this content before."""
    import numpy as np

    docs = [t for t in texts if t]
    key = _content_key(tokenizer, docs, separator)
    path = Path(cache_dir) / "tokens" / f"{key}.safetensors" if cache_dir is not None else None
    if path is not None and path.is_file():
        from safetensors.numpy import load_file

        try:
            arrays = load_file(str(path))
            return TokenizedDocuments(arrays["ids"], arrays["starts"], key, separator)
        except Exception:  # a damaged file is rebuilt below
            pass

    # Documents are tokenised one by one (batched), so a window can start exactly where a
    # document starts; the separator's ids follow every document but the last.
    sep = tokenizer(separator, add_special_tokens=False)["input_ids"] if separator else []
    encoded = tokenizer(docs, add_special_tokens=False, verbose=False)["input_ids"] if docs else []
    lengths = np.array([len(e) + (len(sep) if i < len(encoded) - 1 else 0) for i, e in enumerate(encoded)],
                       dtype=np.int64)
    starts = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    ids = np.empty(int(starts[-1]), dtype=np.int64)
    for i, e in enumerate(encoded):
        a = int(starts[i])
        ids[a:a + len(e)] = e
        if i < len(encoded) - 1:
            ids[a + len(e):int(starts[i + 1])] = sep
    result = TokenizedDocuments(ids, starts, key, separator)
    if path is not None:
        _save(path, result)
    return result


def _save(path: Path, docs: TokenizedDocuments) -> None:
    from safetensors.numpy import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:  # a concurrent reader never sees half a file
        save_file({"ids": docs.ids, "starts": docs.starts}, str(tmp),
                  metadata={"format_version": str(FORMAT_VERSION), "separator": docs.separator})


# --------------------------------------------------------------------------- a split as one text


def text_of(data: TextData, separator: str | None) -> str:
    """A split as one text: documents joined by ``separator``; with None, the split as published
    when it has one file, else documents joined by blank lines."""
    if separator is None:
        return data.raw if data.raw is not None else "\n\n".join(t for t in data.texts if t)
    return separator.join(t for t in data.texts if t)


_token_cache: dict[tuple[str, str, int, str | None], list[int]] = {}


def tokenize_split(tokenizer: Any, data: TextData, separator: str | None) -> list[int]:
    """Token ids of the whole split, without special tokens; memoised per tokenizer and
    content, since every cell of a study scores the same test sets."""
    key = (data.checksum, str(getattr(tokenizer, "name_or_path", "")), len(tokenizer), separator)
    if key not in _token_cache:
        _token_cache.clear()  # keep one split's tokens only: memory stays bounded
        _token_cache[key] = tokenizer(text_of(data, separator), add_special_tokens=False, verbose=False)[
            "input_ids"
        ]
    return _token_cache[key]


def make_windows(ids: list[int], window: int, bos: int | None) -> list[list[int]]:
    """Consecutive windows over ``ids``; with a BOS each is BOS + (window - 1) tokens.
    The last window may be shorter."""
    step = window - 1 if bos is not None else window
    prefix = [bos] if bos is not None else []
    return [prefix + ids[i : i + step] for i in range(0, len(ids), step)]
