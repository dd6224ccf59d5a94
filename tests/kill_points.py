"""Deterministic kill points for the resume tests: loaded into a `lawlab run` subprocess
with ``--plugin kill_points``, it makes the process SIGKILL itself at the moment
``LAWLAB_TEST_KILL`` names, instead of a test polling the store from outside and racing
a write that lasts milliseconds.

    done:N      right after the store has committed its N-th done cell (counting earlier runs)
    artifact:N  inside the N-th artifact this process writes: files saved, not yet renamed
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lawlab.run.store import Store

_point, _, _n = os.environ.get("LAWLAB_TEST_KILL", "").partition(":")
_artifacts = 0


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


if _point == "done":
    _record_cell = Store.record_cell

    def record_cell(self: Store, cell: dict[str, Any], **kw: Any) -> None:
        _record_cell(self, cell, **kw)
        done = self.db.execute("SELECT COUNT(*) FROM cells WHERE status = 'done'").fetchone()[0]
        if done >= int(_n):
            _die()

    Store.record_cell = record_cell  # type: ignore[method-assign]

elif _point == "artifact":
    _writing_artifact = Store.writing_artifact

    @contextlib.contextmanager
    def writing_artifact(self: Store, key: str) -> Iterator[Path]:
        global _artifacts
        with _writing_artifact(self, key) as tmp:
            yield tmp
            _artifacts += 1
            if _artifacts >= int(_n) and any(tmp.iterdir()):
                _die()

    Store.writing_artifact = writing_artifact  # type: ignore[method-assign]
