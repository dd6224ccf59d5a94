"""Files and folders written whole or not at all.

A file (or a folder, :func:`atomic_folder`) is written under a temporary name in its own folder and renamed into place when
complete (a rename within one file system is atomic), so a reader or a killed run never
sees half a file. Every writer of results, fits and reports should go through here.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; when the block ends without an error it
    replaces ``path``, otherwise it is removed and ``path`` is left as it was."""
    final = Path(path)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")  # the pid: two writers never share it
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


@contextlib.contextmanager
def atomic_folder(path: str | Path, *, replace: bool = True) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; when the block ends without an error
    it is renamed to ``path``, otherwise removed. Only a renamed folder is ever trusted.

    ``replace``: an existing ``path`` is replaced; else it is kept when another writer made
    it first (the rename fails and this copy is dropped). The temporary name starts with
    ``.tmp-`` so that a cleaner can sweep what a killed writer left.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    # pid and a random part: two writers (processes, or Ray workers on one node) never share it
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        if replace and final.exists():
            shutil.rmtree(final)
        try:
            os.replace(tmp, final)
        except OSError:
            if replace or not final.exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_bytes(path: str | Path, data: bytes | str) -> Path:
    """``data`` (text as UTF-8), creating the folder if needed."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text)


def write_json(path: str | Path, payload: Any, *, indent: int | None = 2, sort_keys: bool = False) -> Path:
    """``payload`` as JSON; what JSON cannot hold (paths, dates) is written as text."""
    return write_text(path, json.dumps(payload, indent=indent, sort_keys=sort_keys, default=str))


def jsonable(v: Any) -> Any:
    """``v`` as plain JSON values: numpy and torch scalars and arrays become numbers and
    lists, keys become strings, and a NaN or infinity becomes ``null`` (JSON has neither)."""
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if hasattr(v, "tolist"):
        return jsonable(v.tolist())
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def slug(text: str) -> str:
    """``text`` as a file name: letters, digits, ``-`` and ``_`` kept, anything else ``_``."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)
