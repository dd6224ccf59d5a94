"""Built-in text datasets."""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar

from lawlab import hookimpl
from lawlab.api import Dataset, RunContext, TextData


def checksum(texts: list[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode())
        h.update(b"\0")
    return h.hexdigest()


class TinyCorpus(Dataset):
    """Synthetic sentences from a 60-word vocabulary: for smoke tests and plumbing checks,
    never for science."""

    name: ClassVar[str] = "tiny-corpus"
    description: ClassVar[str] = "synthetic sentences (lawlab.testing), 200 train / 50 test; for smoke tests"

    def available_offline(self) -> bool:
        return True

    def load(self, params: Any, split: str, ctx: RunContext) -> TextData:
        from lawlab.testing import tiny_corpus

        texts = tiny_corpus(200, seed=0) if split == "train" else tiny_corpus(50, seed=1)
        return TextData(self.name, split, texts, checksum(texts), "lawlab.testing.tiny_corpus")


@hookimpl
def register_datasets(register):
    register(TinyCorpus())
