"""The results store: one SQLite file in the study's output folder, and its artifacts.

Every finished cell is written in one transaction together with all the numbers it
measured, so a kill at any moment leaves either the whole cell or nothing. Artifacts
(pruned and recovered models) are written under a temporary name and renamed into place
when complete; only a renamed folder is ever trusted.

Layout of an output folder::

    lawlab.sqlite     cells, results (one row per measured value), runs, the plan
    spec.json         the validated spec of the latest run
    artifacts/KEY/    models kept for later cells (safetensors + JSON)
    results.csv       the tidy export, fits.json, report/
    records/KEY/      files a cell keeps beside its numbers (per-question records, one
                      gzipped JSON-lines file per task: lawlab.questions)
    lawlab.log        what the libraries wrote during each run (warnings, stderr)
"""

from __future__ import annotations

import contextlib
import csv
import json
import shutil
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lawlab.api import Attachment, Measurement
from lawlab.errors import UsageError
from lawlab.files import atomic_folder, atomic_path

if TYPE_CHECKING:  # pragma: no cover - types only
    from lawlab.questions import CellQuestions

DB_NAME = "lawlab.sqlite"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started REAL NOT NULL, ended REAL, spec_hash TEXT NOT NULL, argv TEXT, status TEXT
);
-- the cells of the latest plan, in run order: what `status` and `export` describe
CREATE TABLE IF NOT EXISTS plan (
    position INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, kind TEXT NOT NULL,
    parent TEXT, label TEXT NOT NULL, cell TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS cells (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL, status TEXT NOT NULL CHECK (status IN ('done', 'failed')),
    model TEXT, method TEXT, ratio REAL, rft TEXT, rft_dataset TEXT, size INTEGER,
    evaluator TEXT, evaluator_kind TEXT, plugin TEXT, parent TEXT,
    run_id INTEGER, started REAL, ended REAL, seconds REAL,
    error TEXT, provenance TEXT NOT NULL, compression TEXT
);
-- every time a cell was started: proves that no finished cell is computed twice
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, run_id INTEGER, started REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS results (
    cell_key TEXT NOT NULL REFERENCES cells(key) ON DELETE CASCADE,
    metric TEXT NOT NULL, dataset TEXT NOT NULL, value REAL,
    law_input INTEGER NOT NULL, details TEXT NOT NULL,
    PRIMARY KEY (cell_key, metric, dataset)
);
"""


@dataclass(frozen=True)
class CellRecord:
    key: str
    kind: str
    status: str
    seconds: float | None
    error: str | None
    provenance: dict[str, Any]
    compression: dict[str, Any] | None


class Store:
    """A study's SQLite store. Open it with ``Store(output_dir)``; the folder must exist
    or ``create=True`` must be given (``lawlab run`` creates it only after validation)."""

    def __init__(self, output_dir: str | Path, *, create: bool = False):
        self.root = Path(output_dir)
        db = self.root / DB_NAME
        if not db.exists() and not create:
            raise UsageError(f"{self.root} is not a lawlab study output folder (no {DB_NAME} in it)")
        self.root.mkdir(parents=True, exist_ok=True)
        # autocommit mode; transactions are explicit (see `transaction`)
        self.db = sqlite3.connect(db, isolation_level=None, timeout=60)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL survives a killed process
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.executescript(_SCHEMA)
        if self.meta("schema_version") is None:
            self.set_meta("schema_version", SCHEMA_VERSION)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # ----------------------------------------------------------------- metadata

    def meta(self, key: str) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row["value"]) if row else None

    def set_meta(self, key: str, value: Any) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value, default=str)))

    def start_run(self, spec_hash: str, argv: Sequence[str]) -> int:
        cur = self.db.execute(
            "INSERT INTO runs (started, spec_hash, argv, status) VALUES (?, ?, ?, 'running')",
            (time.time(), spec_hash, json.dumps(list(argv))),
        )
        return int(cur.lastrowid or 0)

    def end_run(self, run_id: int, status: str) -> None:
        self.db.execute("UPDATE runs SET ended = ?, status = ? WHERE id = ?", (time.time(), status, run_id))

    def save_plan(self, cells: Sequence[dict[str, Any]]) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM plan")
            db.executemany(
                "INSERT INTO plan (position, key, kind, parent, label, cell) VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (i, c["key"], c["kind"], c["parent"], c["label"], json.dumps(c, default=str))
                    for i, c in enumerate(cells)
                ],
            )

    # ----------------------------------------------------------------- cells

    def status_of(self) -> dict[str, str]:
        return {r["key"]: r["status"] for r in self.db.execute("SELECT key, status FROM cells")}

    def record_attempt(self, key: str, run_id: int) -> None:
        self.db.execute("INSERT INTO attempts (key, run_id, started) VALUES (?, ?, ?)", (key, run_id, time.time()))

    def attempts(self) -> dict[str, int]:
        rows = self.db.execute("SELECT key, COUNT(*) AS n FROM attempts GROUP BY key")
        return {r["key"]: r["n"] for r in rows}

    def record_cell(
        self,
        cell: dict[str, Any],
        *,
        status: str,
        run_id: int,
        started: float,
        ended: float,
        provenance: dict[str, Any],
        measurements: Sequence[Measurement] = (),
        compression: dict[str, Any] | None = None,
        error: str | None = None,
        attachments: Sequence[Attachment] = (),
    ) -> None:
        """Write one finished (or failed) cell and all its numbers atomically. Its
        attachments are written first, each whole or not at all, and listed in the
        provenance; a kill before the transaction leaves files no cell names, which the
        cell's rerun overwrites."""
        if attachments:
            provenance = {**provenance, "attachments": self._write_attachments(cell["key"], attachments)}
        with self.transaction() as db:
            db.execute("DELETE FROM results WHERE cell_key = ?", (cell["key"],))
            db.execute(
                """INSERT OR REPLACE INTO cells (key, kind, status, model, method, ratio, rft, rft_dataset,
                   size, evaluator, evaluator_kind, plugin, parent, run_id, started, ended, seconds, error,
                   provenance, compression) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)""",
                (
                    cell["key"], cell["kind"], status, cell["model"], cell["method"], cell["ratio"],
                    cell["rft"], cell["rft_dataset"], cell["size"], cell["evaluator"], cell["evaluator_kind"],
                    cell["plugin"], cell["parent"], run_id, started, ended, ended - started, error,
                    json.dumps(provenance, default=str), json.dumps(compression) if compression else None,
                ),
            )
            db.executemany(
                "INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (cell["key"], m.metric, m.dataset, _finite_or_none(m.value), int(m.law_input),
                     json.dumps(m.details, default=str))
                    for m in measurements
                ],
            )

    def forget(self, keys: Sequence[str]) -> int:
        """Drop finished cells and their numbers so that the next run measures them again;
        returns how many were finished. Their records are overwritten when they run."""
        with self.transaction() as db:
            done = sum(db.execute("SELECT COUNT(*) FROM cells WHERE key = ? AND status = 'done'", (k,)).fetchone()[0]
                       for k in keys)
            db.executemany("DELETE FROM results WHERE cell_key = ?", [(k,) for k in keys])
            db.executemany("DELETE FROM cells WHERE key = ?", [(k,) for k in keys])
        return int(done)

    def records_dir(self, key: str) -> Path:
        return self.root / "records" / key

    def _write_attachments(self, key: str, attachments: Sequence[Attachment]) -> list[dict[str, Any]]:
        from lawlab.files import write_bytes
        from lawlab.questions import sha256

        listed = []
        for a in attachments:
            write_bytes(self.records_dir(key) / a.name, a.data)
            listed.append({"file": f"records/{key}/{a.name}", "kind": a.kind, "sha256": sha256(a.data),
                           "bytes": len(a.data), "count": a.count})
        return listed

    def question_records(self, key: str) -> CellQuestions:
        """The per-question records of a cell, by task; ``missing`` says why there are
        none (a cell recorded before records existed, an evaluator that keeps none, a file
        removed or changed since) instead of failing."""
        from lawlab.questions import QUESTIONS, CellQuestions, QuestionTable, sha256

        rec = self.cell(key)
        if rec is None or rec.status != "done":
            return CellQuestions(key, {}, f"cell {key} is not a finished cell of this store")
        listed = [a for a in rec.provenance.get("attachments", []) if a.get("kind") == QUESTIONS]
        if not listed:
            return CellQuestions(key, {}, f"cell {key} has no per-question records (recorded by an older lawlab, "
                                          "or its evaluator keeps none)")
        tables: dict[str, QuestionTable] = {}
        for a in listed:
            path = self.root / a["file"]
            if not path.is_file():
                return CellQuestions(key, {}, f"{path} is missing")
            data = path.read_bytes()
            if sha256(data) != a["sha256"]:
                return CellQuestions(key, {}, f"{path} changed since it was recorded (sha256 differs)")
            table = QuestionTable.decode(data)
            tables[table.task] = table
        return CellQuestions(key, tables)

    def cell(self, key: str) -> CellRecord | None:
        r = self.db.execute("SELECT * FROM cells WHERE key = ?", (key,)).fetchone()
        if r is None:
            return None
        return CellRecord(
            r["key"], r["kind"], r["status"], r["seconds"], r["error"], json.loads(r["provenance"]),
            json.loads(r["compression"]) if r["compression"] else None,
        )

    def cell_rows(self) -> list[dict[str, Any]]:
        """Every stored cell as a dict, its provenance and compression parsed from JSON."""
        cells = []
        for r in self.db.execute("SELECT * FROM cells"):
            cell = dict(r)
            cell["provenance"] = json.loads(cell["provenance"] or "{}")
            cell["compression"] = json.loads(cell["compression"]) if cell["compression"] else None
            cells.append(cell)
        return cells

    def plan_rows(self) -> list[sqlite3.Row]:
        return list(self.db.execute("SELECT * FROM plan ORDER BY position"))

    # ----------------------------------------------------------------- artifacts

    def artifact_dir(self, key: str) -> Path:
        return self.root / "artifacts" / key

    def has_artifact(self, key: str) -> bool:
        return (self.artifact_dir(key) / "lawlab-artifact.json").is_file()

    @contextlib.contextmanager
    def writing_artifact(self, key: str) -> Iterator[Path]:
        """Yield a temporary folder; on success it is renamed to the artifact's place."""
        with atomic_folder(self.artifact_dir(key)) as tmp:
            yield tmp

    def remove_artifact(self, key: str) -> None:
        shutil.rmtree(self.artifact_dir(key), ignore_errors=True)

    def clean_partial_artifacts(self) -> int:
        """Remove temporary folders left by a killed run (never trusted, never reused)."""
        root = self.root / "artifacts"
        removed = 0
        if root.is_dir():
            for p in root.glob(".tmp-*"):
                shutil.rmtree(p, ignore_errors=True)
                removed += 1
        return removed


def _finite_or_none(v: float) -> float | None:
    import math

    return v if v is not None and math.isfinite(v) else None


# --------------------------------------------------------------------------- the tidy table

TABLE_COLUMNS = (
    "model", "family", "method", "method_plugin", "calibration", "ratio", "ratio_effective",
    "params_kept", "params_kept_no_embed", "params_original", "fraction_removed_no_embed", "flops_speedup",
    "rft", "rft_dataset", "D", "evaluator", "kind", "metric", "dataset", "value", "L0", "law_input",
    "cell_key", "spec_hash", "seed", "device", "dtype", "details",
    "quant", "quant_ratio", "bits_per_weight", "storage_ratio", "bytes_in_memory",
)


def load_table(output_dir: str | Path, *, plan_only: bool = True) -> list[dict[str, Any]]:
    """One tidy row per measured value of the latest plan, with the variant's ratio
    accounting and the unpruned model's value (``L0``) for the same evaluator, metric
    and dataset. This is what fits, exports and reports read."""
    with Store(output_dir) as store:
        cells = {r["key"]: r for r in store.db.execute("SELECT * FROM cells WHERE status = 'done'")}
        in_plan = {r["key"] for r in store.plan_rows()}
        spec = store.meta("spec") or {}
        families = store.meta("families") or {}
        calibration = store.meta("calibration") or {}
        results = list(store.db.execute("SELECT * FROM results ORDER BY rowid"))

    def ancestor(key: str | None, kind: str) -> sqlite3.Row | None:
        while key is not None and key in cells:
            if cells[key]["kind"] == kind:
                return cells[key]
            key = cells[key]["parent"]
        return None

    paired = _paired_metrics({c["plugin"] for c in cells.values() if c["kind"] == "eval"})
    rows: list[dict[str, Any]] = []
    for res in results:
        cell = cells.get(res["cell_key"])
        if cell is None or (plan_only and in_plan and cell["key"] not in in_plan):
            continue
        prov = json.loads(cell["provenance"])
        prune = ancestor(cell["key"], "prune")
        comp = json.loads(prune["compression"]) if prune is not None and prune["compression"] else None
        pruned_prov = json.loads(prune["provenance"]) if prune is not None else {}
        # a hybrid variant's storage: its quantise cell's record, else its pruning record's
        quant = ancestor(cell["key"], "quantize")
        qcomp = json.loads(quant["compression"]) if quant is not None and quant["compression"] else None
        storage = (qcomp or comp or {}).get("storage") or {}
        method = cell["method"] or ""
        rows.append(
            {
                "model": cell["model"],
                "family": families.get(cell["model"], cell["model"]),
                "method": method,
                "method_plugin": prune["plugin"] if prune is not None else "",
                "calibration": calibration.get(method, "") if method else "",
                "ratio": cell["ratio"] or 0.0,
                "ratio_effective": comp["fraction_removed"] if comp else 0.0,
                "params_kept": comp["params_kept"] if comp else None,
                "params_kept_no_embed": comp["params_kept_no_embed"] if comp else None,
                "params_original": comp["params_original"] if comp else None,
                "fraction_removed_no_embed": comp["fraction_removed_no_embed"] if comp else 0.0,
                "flops_speedup": comp["flops_speedup"] if comp else 1.0,
                "rft": cell["rft"] or "",
                "rft_dataset": cell["rft_dataset"] or "",
                "D": cell["size"] or 0,
                "evaluator": cell["evaluator"] or "",
                "kind": cell["evaluator_kind"] or ("rft" if cell["kind"] == "rft" else cell["kind"]),
                "metric": res["metric"],
                "dataset": res["dataset"],
                "value": res["value"],
                "L0": None,
                "law_input": bool(res["law_input"]),
                "cell_key": cell["key"],
                "spec_hash": prov.get("spec_hash"),
                # the pruned model's seed (a method's replicate seeds): a coordinate of its cluster
                "seed": pruned_prov.get("seed", prov.get("seed", spec.get("study", {}).get("seed"))),
                "device": prov.get("device"),
                "dtype": prov.get("dtype"),
                "details": {**json.loads(res["details"]),
                            **({"paired": True} if res["metric"] in paired.get(cell["plugin"], ()) else {})},
                "quant": (qcomp or {}).get("quantization", {}).get("label", ""),
                # the quantisation axis' declared ratio q, which the cross-axis law forms read
                "quant_ratio": (storage.get("ratios") or {}).get("quantization"),
                "bits_per_weight": storage.get("bits_per_weight"),
                "storage_ratio": (storage.get("ratios") or {}).get("storage"),
                "bytes_in_memory": storage.get("bytes_in_memory"),
            }
        )
    base = {
        (r["model"], r["evaluator"], r["metric"], r["dataset"]): r["value"]
        for r in rows
        if not r["method"] and r["D"] == 0 and r["evaluator"]
    }
    for r in rows:
        r["L0"] = base.get((r["model"], r["evaluator"], r["metric"], r["dataset"]))
    return rows


def _paired_metrics(evaluators: set[str]) -> dict[str, frozenset[str]]:
    """The metrics each evaluator declares paired (``Evaluator.paired_metrics``), asked when
    the table is read, so a store written before the declaration reads the same."""
    from lawlab.registry import get_registry

    registry = get_registry()
    return {name: registry.get("evaluators", name).paired_metrics for name in evaluators
            if registry.has("evaluators", name)}


EXPORT_FORMATS = ("csv", "jsonl", "parquet")


def export(output_dir: str | Path, fmt: str = "csv", out: str | Path | None = None) -> Path:
    """Write the tidy table as csv, jsonl or parquet. ``details`` is a nested object in
    JSONL and a JSON string in the flat formats (csv, parquet)."""
    if fmt not in EXPORT_FORMATS:
        raise UsageError(f"unknown export format {fmt!r}; allowed: {', '.join(EXPORT_FORMATS)}")
    rows = load_table(output_dir)
    path = Path(out) if out else Path(output_dir) / f"results.{fmt}"
    flat = [{**r, "details": json.dumps(r["details"], sort_keys=True, default=str)} for r in rows]
    with atomic_path(path) as tmp:
        if fmt == "csv":
            with tmp.open("w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(TABLE_COLUMNS))
                w.writeheader()
                w.writerows(flat)
        elif fmt == "jsonl":
            with tmp.open("w") as f:
                for r in rows:
                    f.write(json.dumps(r, default=str) + "\n")
        else:
            try:
                import pyarrow as pa
                import pyarrow.parquet as pq
            except ImportError as exc:  # pragma: no cover
                raise UsageError("parquet export needs pyarrow: pip install pyarrow") from exc
            table = pa.Table.from_pylist(flat) if flat else pa.table({c: [] for c in TABLE_COLUMNS})
            pq.write_table(table, tmp)
    return path


@dataclass(frozen=True)
class QuestionRows:
    """Every question of a study's finished evaluation cells, one row each
    (``lawlab.questions.EXPORT_COLUMNS``), and which cells have none."""

    rows: list[dict[str, Any]]
    # cell key -> why it has no records: cells of an evaluator that keeps them elsewhere in
    # the study, or every evaluation cell when none has any (a store older than records)
    missing: dict[str, str]

    @property
    def cells(self) -> int:
        return len({r["cell_key"] for r in self.rows})


def load_questions(output_dir: str | Path) -> QuestionRows:
    """One row per question of every finished evaluation cell of the latest plan, with its
    variant (model, method, ratio, rft, D, seed) so that rows of two cells pair by
    (task, subtask, doc_id)."""
    from lawlab.questions import export_row

    rows: list[dict[str, Any]] = []
    lacking: dict[str, tuple[str, str]] = {}  # key -> (evaluator, why)
    keeping: set[str] = set()  # evaluators with records
    with Store(output_dir) as store:
        seed = (store.meta("spec") or {}).get("study", {}).get("seed")
        cells = {r["key"]: r for r in store.db.execute("SELECT * FROM cells WHERE status = 'done' AND kind = 'eval'")}
        for key in (r["key"] for r in store.plan_rows() if r["key"] in cells):
            c = cells[key]
            found = store.question_records(key)
            if found.missing:
                lacking[key] = (c["evaluator"], found.missing)
                continue
            keeping.add(c["evaluator"])
            variant = {"model": c["model"], "method": c["method"] or "", "ratio": c["ratio"] or 0.0,
                       "rft": c["rft"] or "", "rft_dataset": c["rft_dataset"] or "", "D": c["size"] or 0,
                       "seed": json.loads(c["provenance"]).get("seed", seed), "evaluator": c["evaluator"],
                       "cell_key": key}
            for task, table in found.tables.items():
                rows += [export_row(variant, task, q) for q in table]
    return QuestionRows(rows, {k: why for k, (ev, why) in lacking.items() if not keeping or ev in keeping})


def export_questions(output_dir: str | Path, fmt: str = "csv", out: str | Path | None = None) -> tuple[Path, QuestionRows]:
    """Write :func:`load_questions` as csv or parquet (default: OUTPUT/questions.FORMAT)."""
    from lawlab.questions import EXPORT_COLUMNS

    if fmt not in ("csv", "parquet"):
        raise UsageError(f"unknown question export format {fmt!r}; allowed: csv, parquet")
    path = Path(out) if out else Path(output_dir) / f"questions.{fmt}"
    found = load_questions(output_dir)
    with atomic_path(path) as tmp:
        if fmt == "csv":
            with tmp.open("w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(EXPORT_COLUMNS))
                w.writeheader()
                w.writerows(found.rows)
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pylist(found.rows) if found.rows else pa.table({c: [] for c in EXPORT_COLUMNS})
            pq.write_table(table, tmp)
    return path, found


# --------------------------------------------------------------------------- status


def study_status(output_dir: str | Path) -> dict[str, Any]:
    with Store(output_dir) as store:
        plan = store.plan_rows()
        status = store.status_of()
        rows = []
        for p in plan:
            rows.append({"key": p["key"], "kind": p["kind"], "label": p["label"], "status": status.get(p["key"], "left")})
        failed = {
            r["key"]: r["error"] for r in store.db.execute("SELECT key, error FROM cells WHERE status = 'failed'")
        }
        runs = [dict(r) for r in store.db.execute("SELECT * FROM runs ORDER BY id")]
    counts = {s: sum(1 for r in rows if r["status"] == s) for s in ("done", "failed", "left")}
    return {"cells": rows, "counts": counts, "failed": failed, "runs": runs}


def print_status(output_dir: str | Path, console: Any) -> int:
    from rich.table import Table

    st = study_status(output_dir)
    c = st["counts"]
    console.print(
        f"{output_dir}: [green]{c['done']} done[/green], [red]{c['failed']} failed[/red], {c['left']} left "
        f"of {len(st['cells'])} cells; {len(st['runs'])} run(s)"
    )
    t = Table(show_header=True, header_style="bold")
    t.add_column("stage")
    t.add_column("done", justify="right")
    t.add_column("failed", justify="right")
    t.add_column("left", justify="right")
    for kind in ("base", "prune", "quantize", "rft", "eval"):
        mine = [r for r in st["cells"] if r["kind"] == kind]
        t.add_row(kind, *(str(sum(1 for r in mine if r["status"] == s)) for s in ("done", "failed", "left")))
    console.print(t)
    for r in st["cells"]:
        if r["status"] == "failed":
            last = (st["failed"].get(r["key"]) or "").strip().splitlines()[-1:] or [""]
            console.print(f"[red]failed[/red] {r['label']}: {last[0]}", highlight=False)
    return 0
