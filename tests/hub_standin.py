"""A stand-in for the Hugging Face Hub on 127.0.0.1, for tests of the real clients.

It answers the requests huggingface_hub, transformers and datasets send (repository info
at a revision, file tree listings, ``resolve`` downloads with the ``ETag`` and
``X-Repo-Commit`` headers, the ``X-Error-Code`` of a missing repository or revision), so
tests point ``HF_ENDPOINT`` at it and run the clients' own code. Repositories are kept
in memory as commits of whole file sets; a branch is a name for a commit.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

WIKITEXT = ("Salesforce/wikitext", "wikitext-2-raw-v1")
ALPACA = "tatsu-lab/alpaca"
TINY_MODEL = "lawlab-test/tiny-llama"


@dataclass
class Repo:
    type: str  # "model" or "dataset"
    id: str
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)

    def commit_of(self, revision: str) -> str | None:
        if revision in self.branches:
            return self.branches[revision]
        return revision if revision in self.commits else None


class StandInHub:
    """``with StandInHub() as hub: hub.url`` serves until the block ends; ``stop()`` ends
    it early (the warm-cache case)."""

    def __init__(self) -> None:
        self.repos: dict[tuple[str, str], Repo] = {}
        self.cards: dict[tuple[str, str], dict[str, Any]] = {}  # cardData of a repository's info
        self.requests: list[str] = []
        self._server: ThreadingHTTPServer | None = None
        # A file download takes at least this long, so overlapping downloads show in most_at_once.
        self.download_delay = 0.0
        self.most_at_once = 0
        self._at_once = 0
        self._lock = threading.Lock()

    def downloading(self, delta: int) -> None:
        with self._lock:
            self._at_once += delta
            self.most_at_once = max(self.most_at_once, self._at_once)

    # ----------------------------------------------------------------- content

    def commit(self, repo_type: str, repo_id: str, files: dict[str, bytes], branch: str = "main") -> str:
        """A new commit on ``branch``: the branch's files with ``files`` added or replaced."""
        repo = self.repos.setdefault((repo_type, repo_id), Repo(repo_type, repo_id))
        base = dict(repo.commits.get(repo.branches.get(branch, ""), {}))
        if branch not in repo.branches and repo.branches.get("main"):
            base = dict(repo.commits[repo.branches["main"]])
        base.update(files)
        sha = hashlib.sha1(json.dumps(sorted((k, hashlib.sha1(v).hexdigest()) for k, v in base.items())).encode()
                           + str(len(repo.commits)).encode()).hexdigest()
        repo.commits[sha] = base
        repo.branches[branch] = sha
        return sha

    # ----------------------------------------------------------------- serving

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the stand-in first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> StandInHub:
        hub = self

        class Handler(_Handler):
            standin = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> StandInHub:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _etag(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    standin: StandInHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    def do_HEAD(self) -> None:
        self._route(head=True)

    def do_GET(self) -> None:
        self._route(head=False)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self._route(head=False, body=body)

    # ----------------------------------------------------------------- replies

    def _send(self, status: int, data: bytes = b"", headers: dict[str, str] | None = None, head: bool = False,
              content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(data)

    def _json(self, obj: Any, head: bool = False, headers: dict[str, str] | None = None) -> None:
        self._send(200, json.dumps(obj).encode(), headers, head)

    def _error(self, code: str, head: bool = False) -> None:
        status = 404 if code != "GatedRepo" else 401
        self._send(status, json.dumps({"error": code}).encode(), {"X-Error-Code": code}, head)

    # ----------------------------------------------------------------- routing

    def _route(self, head: bool, body: bytes = b"") -> None:
        parts = urlsplit(self.path)
        self.standin.requests.append(f"{self.command} {parts.path}")
        segs = [unquote(s) for s in parts.path.strip("/").split("/")]
        if segs[:1] == ["api"] and len(segs) == 2 and segs[1] in ("models", "datasets"):
            return self._json([], head)  # listing: the reachability probe asks this
        if segs[:1] == ["api"] and len(segs) >= 4 and segs[1] in ("models", "datasets"):
            return self._api(segs[1][:-1], f"{segs[2]}/{segs[3]}", segs[4:], head, body)
        repo_type = "model"
        if segs[:1] == ["datasets"]:
            repo_type, segs = "dataset", segs[1:]
        if len(segs) >= 5 and segs[2] == "resolve":
            return self._resolve(repo_type, f"{segs[0]}/{segs[1]}", segs[3], "/".join(segs[4:]), head)
        self._error("EntryNotFound", head)

    def _repo(self, repo_type: str, repo_id: str, revision: str, head: bool) -> tuple[Repo, str] | None:
        repo = self.standin.repos.get((repo_type, repo_id))
        if repo is None:
            self._error("RepoNotFound", head)
            return None
        sha = repo.commit_of(revision)
        if sha is None:
            self._error("RevisionNotFound", head)
            return None
        return repo, sha

    def _api(self, repo_type: str, repo_id: str, rest: list[str], head: bool, body: bytes) -> None:
        revision = "main"
        if rest[:1] in (["revision"], ["tree"], ["paths-info"]) and len(rest) >= 2:
            revision = rest[1]
        found = self._repo(repo_type, repo_id, revision, head)
        if found is None:
            return
        repo, sha = found
        files = repo.commits[sha]
        if not rest or rest[0] == "revision":
            info = {
                "_id": repo_id, "id": repo_id, "sha": sha, "private": False, "disabled": False, "gated": False,
                "downloads": 0, "likes": 0, "tags": [], "lastModified": "2026-01-01T00:00:00.000Z",
                "siblings": [{"rfilename": name, "size": len(data)} for name, data in sorted(files.items())],
            }
            if repo_type == "model":
                info["config"] = json.loads(files.get("config.json", b"{}"))
            if (repo_type, repo_id) in self.standin.cards:
                info["cardData"] = self.standin.cards[(repo_type, repo_id)]
            return self._json(info, head)
        if rest[0] == "tree":
            prefix = "/".join(rest[2:]).strip("/")
            return self._json(_tree(files, prefix, recursive="recursive=true" in self.path.lower()), head)
        if rest[0] == "paths-info":
            wanted = _paths_from(body)
            entries = [e for e in _tree(files, "", recursive=True) if e["path"] in wanted]
            return self._json(entries, head)
        self._error("EntryNotFound", head)

    def _resolve(self, repo_type: str, repo_id: str, revision: str, path: str, head: bool) -> None:
        found = self._repo(repo_type, repo_id, revision, head)
        if found is None:
            return
        repo, sha = found
        data = repo.commits[sha].get(path)
        if data is None:
            return self._error("EntryNotFound", head)
        headers = {"ETag": f'"{_etag(data)}"', "X-Repo-Commit": sha, "Accept-Ranges": "bytes"}
        if head or not self.standin.download_delay:
            return self._send(200, data, headers, head, content_type="application/octet-stream")
        self.standin.downloading(+1)
        try:
            time.sleep(self.standin.download_delay)
            self._send(200, data, headers, head, content_type="application/octet-stream")
        finally:
            self.standin.downloading(-1)


def _tree(files: dict[str, bytes], prefix: str, recursive: bool) -> list[dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, data in sorted(files.items()):
        if prefix and not name.startswith(prefix + "/"):
            continue
        rest = name[len(prefix) + 1:] if prefix else name
        parts = rest.split("/")
        for depth in range(1, len(parts)):
            folder = "/".join(([prefix] if prefix else []) + parts[:depth])
            if recursive or depth == 1:
                out.setdefault(folder, {"type": "directory", "oid": hashlib.sha1(folder.encode()).hexdigest(),
                                        "size": 0, "path": folder})
        if recursive or len(parts) == 1:
            out[name] = {"type": "file", "oid": hashlib.sha1(data).hexdigest(), "size": len(data), "path": name,
                         "lfs": {"oid": _etag(data), "size": len(data), "pointerSize": 130}}
    return list(out.values())


def _paths_from(body: bytes) -> set[str]:
    text = body.decode()
    try:
        return set(json.loads(text).get("paths", []))
    except ValueError:
        from urllib.parse import parse_qs

        return set(parse_qs(text).get("paths", []))


# --------------------------------------------------------------------------- content


def parquet(rows: list[dict[str, Any]]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf)
    return buf.getvalue()


WIKITEXT_ROWS = {
    "train": [
        "", " = Valkyria Chronicles = \n", "", " The game began development in 2010 . \n",
        " It was released in January 2011 . \n", " = = Gameplay = = \n",
        " As with previous games , the player controls a squad . \n", "", " = Tower Building = \n",
        " The tower is a tall building in the city centre . \n", " It has forty floors . \n",
    ],
    "validation": ["", " = Homarus = \n", " Homarus is a genus of lobsters . \n"],
    "test": ["", " = Robert Boulter = \n", "", " Robert Boulter is an English actor . \n",
             " He had a guest role in 2000 . \n", " = = Career = = \n", " He appeared in plays . \n"],
}

WIKITEXT_README = """---
configs:
- config_name: wikitext-2-raw-v1
  data_files:
  - split: train
    path: wikitext-2-raw-v1/train-*
  - split: validation
    path: wikitext-2-raw-v1/validation-*
  - split: test
    path: wikitext-2-raw-v1/test-*
---
# WikiText (stand-in)
"""

ALPACA_README = """---
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*
---
# Alpaca (stand-in)
"""


def alpaca_rows(n: int = 40) -> list[dict[str, str]]:
    rows = []
    for i in range(n):
        instruction = f"Give the number after {i}."
        extra = f"Count in steps of {i % 3 + 1}." if i % 2 else ""
        rows.append({"instruction": instruction, "input": extra, "output": f"{i + 1}", "text": ""})
    return rows


def wikitext_files(rows: dict[str, list[str]] = WIKITEXT_ROWS) -> dict[str, bytes]:
    config = WIKITEXT[1]
    files = {f"{config}/{split}-00000-of-00001.parquet": parquet([{"text": t} for t in texts])
             for split, texts in rows.items()}
    return {"README.md": WIKITEXT_README.encode(), **files}


def alpaca_files(n: int = 40) -> dict[str, bytes]:
    return {"README.md": ALPACA_README.encode(),
            "data/train-00000-of-00001-a09b74b3ef9c3b56.parquet": parquet(alpaca_rows(n))}


def model_files(folder: Path) -> dict[str, bytes]:
    """A saved HF folder as a repository's files."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def populated(tmp: Path) -> StandInHub:
    """A stand-in with a tiny llama (save_pretrained + tokenizer), WikiText-2 and Alpaca."""
    from lawlab.testing import save_tiny, tiny_model

    hub = StandInHub()
    folder = save_tiny(tiny_model("llama"), tmp / "tiny-llama")
    hub.commit("model", TINY_MODEL, model_files(folder))
    hub.commit("dataset", WIKITEXT[0], wikitext_files())
    hub.commit("dataset", ALPACA, alpaca_files())
    hub.cards[("dataset", ALPACA)] = {"dataset_info": {"splits": [{"name": "train", "num_examples": 40}]}}
    return hub


PIQA = "baber/piqa"  # lm-eval's piqa task reads this repository
PIQA_README = """---
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*
  - split: validation
    path: data/validation-*
---
# PIQA (stand-in)
"""


def piqa_files(n: int = 6) -> dict[str, bytes]:
    rows = [{"goal": f"To open jar {i}", "sol1": "twist the lid", "sol2": "hit it", "label": 0} for i in range(n)]
    return {"README.md": PIQA_README.encode(), "data/train-00000-of-00001.parquet": parquet(rows),
            "data/validation-00000-of-00001.parquet": parquet(rows)}
