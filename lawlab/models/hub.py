"""The Hugging Face Hub as plugins meet it: one repository at one revision, resolved to
its commit, downloaded into the hub cache, or found there when the hub cannot be reached.

Everything goes through huggingface_hub, so ``HF_ENDPOINT`` (a mirror), the proxy
variables, ``HF_TOKEN`` and ``HF_HOME`` work as they do for every other hub client, and
the files land in the one cache that ``transformers``, ``datasets`` and a later
``HF_HUB_OFFLINE=1`` run read. Errors become ``CheckFailed`` for what the spec names
wrongly (no such repository or revision) and ``CannotRunHere`` for what this machine
lacks (a network, a cached file), so ``lawlab validate`` can tell the two apart.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lawlab import environment
from lawlab.api import CannotRunHere, CheckFailed, Progress

RepoType = Literal["model", "dataset"]
COMMIT = re.compile(r"[0-9a-f]{40}")
API_TIMEOUT = 10.0  # seconds per metadata request (after one failure lawlab stops asking: _network_failure)
DOWNLOAD_WORKERS = 8  # files downloaded at once (huggingface_hub's own default for a snapshot)

# What a causal LM needs from its repository: configs, safetensors weights, tokenizer files.
# Top level only, so "original/consolidated.00.pth" and other formats never download.
MODEL_FILES = ("*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken", "*.jinja")


@dataclass(frozen=True)
class Repo:
    """A hub repository at a revision, and the files of it a plugin needs."""

    id: str
    revision: str = "main"
    type: RepoType = "model"
    patterns: tuple[str, ...] = MODEL_FILES
    top_level: bool = True
    id_field: str = "id"
    revision_field: str = "revision"

    @property
    def label(self) -> str:
        return f"{self.id}@{self.revision}"

    def wants(self, filename: str) -> bool:
        if self.top_level and "/" in filename:
            return False
        return any(fnmatch.fnmatch(filename, p) for p in self.patterns)

    def fetch_hint(self, why: str) -> str:
        return f"{why}: where the hub answers, run `lawlab fetch {{spec}}` with the same HF_HOME (or copy its hub cache here)"


def _kind(repo: Repo) -> str:
    return "hub-model" if repo.type == "model" else "hub-dataset"


# --------------------------------------------------------------------------- the cache


def cache_root() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def cached_snapshot(repo: Repo) -> Path | None:
    """The cached snapshot folder the revision points at (``snapshots/<commit>``), or None
    when the revision was never resolved on this machine. Asked of huggingface_hub
    (``snapshot_download(local_files_only=True)``: no request leaves the machine), so the
    cache's layout is the library's business. A snapshot the library knows is incomplete is
    still returned: the plugin's ``needed`` check names what it lacks."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo.id, revision=repo.revision, repo_type=repo.type, local_files_only=True))
    except LocalEntryNotFoundError as exc:
        partial = getattr(exc, "snapshot_path", None)  # IncompleteSnapshotError (huggingface_hub >= 1.x)
        return Path(partial) if partial else None


def cached_file(repo: Repo, filename: str) -> Path | None:
    """One file of the revision from the cache, whether or not the rest of the snapshot is
    there (asked of huggingface_hub, no request leaves the machine), or None."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo.id, filename, cache_dir=cache_root(), revision=repo.revision, repo_type=repo.type)
    return Path(found) if isinstance(found, str) else None  # not a str: never fetched, or known absent


def missing_model_files(folder: Path) -> list[str]:
    """What a cached model snapshot lacks to load: config, every weight shard, a tokenizer."""
    import json

    missing = [] if (folder / "config.json").is_file() else ["config.json"]
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text()).get("weight_map", {}).values()))
        missing += [s for s in shards if not (folder / s).is_file()]
    elif not any(folder.glob("*.safetensors")):
        missing.append("*.safetensors")
    tokenizers = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")
    if not any((folder / t).is_file() for t in tokenizers):
        missing.append("tokenizer files")
    return missing


def require_cached(repo: Repo, needed: Callable[[Path], list[str]], why: str, item: str | None = None) -> Path:
    """The cached snapshot with everything ``needed`` says it must hold, or CannotRunHere
    naming the repository (or ``item``) and the command that fetches it."""
    snapshot = cached_snapshot(repo)
    if snapshot is None:
        lacks = "is not in the hub cache"
    else:
        missing = needed(snapshot)
        if not missing:
            return snapshot
        lacks = f"is only partly in the hub cache (missing {', '.join(missing[:3])})"
    raise CannotRunHere(
        f"{repo.type} {repo.label} {lacks} ({cache_root()}), and {why}",
        kind=_kind(repo),
        item=item or repo.label,
        fix=repo.fetch_hint(why),
        field=repo.id_field,
    )


def offline_reason() -> str:
    if environment.hub_cache_only():
        return "HF_HUB_OFFLINE is set (read the cache only)"
    return f"the hub ({environment.hub_endpoint()}) cannot be reached"


# --------------------------------------------------------------------------- the network


def _api() -> object:
    environment.bound_hub_timeouts()
    from huggingface_hub import HfApi

    return HfApi()


_resolved: dict[tuple[str, str, str], tuple[str, list[tuple[str, int | None]]]] = {}
_cards: dict[tuple[str, str, str], dict] = {}  # the repository card's metadata, as the hub parsed it


def resolve(repo: Repo) -> tuple[str, list[tuple[str, int | None]]]:
    """(commit, [(file, size)]) of the revision, asked of the hub once per process. A
    repository or revision that does not exist is the spec's error; a network that fails
    is the machine's."""
    key = (repo.type, repo.id, repo.revision)
    if key not in _resolved:
        _resolved[key] = _ask(repo)
    return _resolved[key]


_network_failure: list[str] = []  # the first failure; later requests fail at once, not after more timeouts


def _ask(repo: Repo) -> tuple[str, list[tuple[str, int | None]]]:
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    if _network_failure:
        raise _unreachable(repo, _network_failure[0])
    try:
        info = _api().repo_info(  # type: ignore[attr-defined]
            repo.id, revision=repo.revision, repo_type=repo.type, timeout=API_TIMEOUT, files_metadata=True
        )
    except GatedRepoError:
        raise CheckFailed(
            f"the {repo.type} {repo.id!r} is gated: accept its terms on its hub page, then log in",
            field=repo.id_field,
            allowed="`hf auth login`, or HF_TOKEN set to a token of an account with access",
        ) from None
    except RevisionNotFoundError:
        raise CheckFailed(
            f"revision {repo.revision!r} does not exist in the {repo.type} {repo.id!r}",
            field=repo.revision_field,
            allowed="a branch, tag or commit of the repository (default: main)",
        ) from None
    except RepositoryNotFoundError:
        raise CheckFailed(
            f"no {repo.type} repository {repo.id!r} on {environment.hub_endpoint()}",
            field=repo.id_field,
            allowed="an existing repository id (a private one needs `hf auth login` or HF_TOKEN)",
        ) from None
    except Exception as exc:  # the network, a proxy or the mirror failed: this machine's problem
        _network_failure.append(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        raise _unreachable(repo, _network_failure[0]) from None
    card = getattr(info, "card_data", None)
    _cards[(repo.type, repo.id, repo.revision)] = card.to_dict() if card is not None else {}
    files = [(s.rfilename, getattr(s, "size", None)) for s in (info.siblings or [])]
    return str(info.sha), files


def card_rows(repo: Repo, split: str) -> int | None:
    """The rows of a dataset split as its card states them (``dataset_info.splits``),
    asked of the hub; None when the card does not say."""
    resolve(repo)
    info = _cards.get((repo.type, repo.id, repo.revision), {}).get("dataset_info")
    for config in info if isinstance(info, list) else [info] if isinstance(info, dict) else []:
        for entry in config.get("splits") or []:
            if entry.get("name") == split and isinstance(entry.get("num_examples"), int):
                return entry["num_examples"]
    return None


def _unreachable(repo: Repo, why: str) -> CannotRunHere:
    return CannotRunHere(
        f"the hub ({environment.hub_endpoint()}) did not answer for {repo.type} {repo.label}: {why}",
        kind=_kind(repo),
        item=repo.label,
        fix="check HF_ENDPOINT and the proxy settings, or fetch where the hub answers: `lawlab fetch {spec}`",
        field=repo.id_field,
    )


def download(repo: Repo, progress: Progress | None = None) -> Path:
    """Download the files the repo wants at its revision (cached ones are not fetched
    again), ``DOWNLOAD_WORKERS`` at a time, and return the snapshot folder, named by its
    commit. ``progress`` counts files."""
    import glob

    from huggingface_hub import snapshot_download

    _, listing = resolve(repo)
    wanted = [name for name, _ in listing if repo.wants(name)]
    if not wanted:
        raise CheckFailed(
            f"the {repo.type} {repo.label} has no file matching {', '.join(repo.patterns)}",
            field=repo.id_field,
        )
    if progress is not None:
        progress.start(f"{repo.type} {repo.label}", total=len(wanted))
    folder = snapshot_download(
        repo.id,
        revision=repo.revision,
        repo_type=repo.type,
        allow_patterns=[glob.escape(name) for name in wanted],  # exactly these files, even with [ or * in a name
        max_workers=DOWNLOAD_WORKERS,
        etag_timeout=API_TIMEOUT,
        tqdm_class=_files_counter(progress) if progress is not None else None,
    )
    if progress is not None:
        progress.done()
    return Path(folder)


def _files_counter(progress: Progress) -> type:
    """A tqdm class for ``snapshot_download`` that passes its count of finished files on to
    ``progress`` (the byte bars some versions also draw with it are left alone)."""
    from huggingface_hub.utils import tqdm

    class FilesDone(tqdm):  # type: ignore[misc, valid-type]
        def __init__(self, *args: object, **kwargs: object):
            self.counts_files = kwargs.get("unit", "it") == "it"  # tqdm's default unit; bytes are "B"
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            if self.counts_files and n:
                progress.advance(int(n))
            return super().update(n)

    return FilesDone


def snapshot(repo: Repo, offline: bool, needed: Callable[[Path], list[str]], item: str | None = None) -> Path:
    """The snapshot folder to read: from the cache when offline (CannotRunHere if it is
    not complete there), else downloaded (only what is missing)."""
    if offline:
        return require_cached(repo, needed, offline_reason(), item)
    return download(repo)


def commit_now(repo: Repo, offline: bool) -> str | None:
    """The commit the revision resolves to now: asked of the hub, or read from the cache
    offline (None when it is not cached)."""
    if COMMIT.fullmatch(repo.revision):
        return repo.revision
    if offline:
        cached = cached_snapshot(repo)
        return cached.name if cached is not None else None
    return resolve(repo)[0]
