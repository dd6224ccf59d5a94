"""Executing a plan locally: the resume rules and the local scheduler.

The local scheduler walks the plan depth first per model (``plan.stage_order``): the base
model is loaded once; each pruned model is made once, evaluated, then recovered with
every RFT setting, and dropped before the next is made. Only the chain base → pruned →
recovered is held in memory, and of it only the working model is on the device: the
others wait on the host, and a stage that changes a model gets a copy written from the
host straight to the device (:class:`lawlab.models.loading.Residency`), so a stage needs about one
model's memory on the device (``lawlab plan`` prints the estimates). A model that later
cells still need is also written to the store as an artifact, so a killed study resumes
without pruning or training again.

What a cell *does* lives in :class:`lawlab.run.worker.CellWorker` and does not depend on where it runs,
so a distributed executor reuses it unchanged.
"""

from __future__ import annotations

import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from lawlab import environment
from lawlab.accounting import bytes_on_disk
from lawlab.api import STAGE_PLUGIN_KINDS, ExecutionSummary, LoadedModel
from lawlab.models.loading import to_host
from lawlab.run.plan import Cell, Plan, stage_order
from lawlab.run.progress import StudyProgress
from lawlab.run.store import Store
from lawlab.run.worker import CellWorker, load_model, release, save_model

# --------------------------------------------------------------------------- the scheduler


def cell_row(cell: Cell) -> dict[str, Any]:
    v = cell.variant
    return {
        "key": cell.key, "kind": cell.kind, "model": v.model, "method": v.label, "ratio": v.ratio,
        "rft": v.rft, "rft_dataset": v.rft_dataset, "size": v.size, "evaluator": cell.evaluator,
        "evaluator_kind": cell.evaluator_kind, "plugin": cell.plugin, "parent": cell.parent,
        "label": cell.label(),
    }


class ResumeRules:
    """What a run has left to do, given what the store holds; shared by every executor.

    A finished cell is never run again; a failed one only with ``--retry-failed``, and until
    then its subtree stays blocked. A base model is "done" once loaded, but is loaded again
    whenever a pending cell below it needs it.
    """

    def __init__(self, plan: Plan, store: Store, *, retry_failed: bool = False):
        self.plan, self.retry_failed = plan, retry_failed
        self.status = store.status_of()
        self.order = stage_order(plan)
        self.children: dict[str, list[Cell]] = {}
        for c in plan.cells:
            if c.parent is not None:
                self.children.setdefault(c.parent, []).append(c)

    def needs_running(self, cell: Cell) -> bool:
        st = self.status.get(cell.key)
        if cell.kind == "base":
            return st != "done"
        return st is None or (st == "failed" and self.retry_failed)

    def subtree_pending(self, key: str) -> bool:
        return any(self.needs_running(c) or self.subtree_pending(c.key) for c in self.children.get(key, []))

    def start(self, summary: ExecutionSummary, progress: StudyProgress) -> list[Cell]:
        """Record what earlier runs left in ``summary``, announce the run, and return the
        cells to visit in order (those to run, and finished ones with work below them)."""
        summary.failed_before = [c.key for c in self.order if self.status.get(c.key) == "failed" and not self.retry_failed]
        # a finished base model counts as done like any other cell: it is only reloaded
        summary.skipped_done = sum(1 for c in self.order if self.status.get(c.key) == "done")
        todo = [c for c in self.order if self.needs_running(c) or self.subtree_pending(c.key)]
        work = sum(1 for c in todo if self.needs_running(c))
        progress.start_study(self.plan.spec.spec.study.name, total=work, already=summary.skipped_done)
        return todo


class LocalScheduler(ResumeRules):
    """Runs every unfinished cell of a plan in this process, depth first."""

    def __init__(
        self,
        plan: Plan,
        store: Store,
        *,
        run_id: int,
        progress: StudyProgress,
        fail_fast: bool = False,
        retry_failed: bool = False,
    ):
        super().__init__(plan, store, retry_failed=retry_failed)
        spec = plan.spec.spec
        self.store, self.run_id = store, run_id
        self.progress = progress
        self.fail_fast = fail_fast
        self.keep = spec.execution.keep_artifacts
        device = environment.resolve_device(spec.execution.device)
        self.worker = CellWorker(
            plan, device=device, dtype=environment.resolve_dtype(spec.execution.dtype, device), progress=progress
        )
        self.models: dict[str, LoadedModel] = {}  # the chain in memory, by cell key
        self.worker.base_provider = self.base_model

    def run(self) -> ExecutionSummary:
        summary = ExecutionSummary()
        todo = self.start(summary, self.progress)
        failed_keys: set[str] = set(summary.failed_before)
        for cell in todo:
            if cell.parent in failed_keys:  # blocked cells join failed_keys: it propagates down
                failed_keys.add(cell.key)
                summary.blocked.append(cell.key)
                continue
            if not self.needs_running(cell):
                continue  # done already; its subtree has work, which obtains it below
            try:
                self.run_cell(cell)
                summary.done.append(cell.key)
            except Exception as exc:  # isolation: a failing cell takes only its subtree down
                failed_keys.add(cell.key)
                summary.failed[cell.key] = f"{type(exc).__name__}: {exc}".splitlines()[0]
                if self.fail_fast:
                    summary.stopped_early = True
                    break
            self.prune_memory(cell)
            self.settle()
        self.drop_all()
        self.progress.finish_study()
        return summary

    def obtain(self, key: str) -> LoadedModel:
        """The model a cell produced: in memory, from its artifact, or made again."""
        if key in self.models:
            return self.models[key]
        cell = self.plan.cell(key)
        model: LoadedModel | None  # an eval cell's outcome carries none; the cells obtained here make one
        if self.store.has_artifact(key):
            with tempfile.TemporaryDirectory(prefix="lawlab-load-") as tmp:
                model = load_model(self.store.artifact_dir(key), self.worker.context(Path(tmp)))
        else:
            # not kept (keep_artifacts = "none", or the base model): rebuild it; its
            # results are already stored and are not written again
            parent = self.obtain(cell.parent) if cell.parent else None
            if cell.kind != "base":
                self.progress.log(f"rebuilding {cell.label()} (no artifact kept)")
            model = self.worker.run(cell, parent).model
        assert model is not None
        self.hold(cell, model)
        return model

    def hold(self, cell: Cell, model: LoadedModel) -> None:
        self.drop_off_path(cell)
        self.models[cell.key] = model

    def drop_off_path(self, cell: Cell) -> None:
        """Only one branch is held: entering a sibling drops the previous one (before the
        sibling runs, so its memory is free for it)."""
        path = {cell.key, *(a.key for a in self.plan.ancestors(cell.key))}
        for k in list(self.models):
            if k not in path:
                model = self.models.pop(k)
                self.worker.residency.forget(model)
                release(model)

    def run_cell(self, cell: Cell) -> None:
        self.drop_off_path(cell)
        parent = self.obtain(cell.parent) if cell.parent else None
        self.store.record_attempt(cell.key, self.run_id)
        self.progress.cell_started(cell)
        started = time.time()
        try:
            outcome = self.worker.run(cell, parent)
        except Exception as exc:
            ended = time.time()
            self.store.record_cell(
                cell_row(cell), status="failed", run_id=self.run_id, started=started, ended=ended,
                provenance=self.worker.provenance(cell, STAGE_PLUGIN_KINDS[cell.kind]), error=traceback.format_exc(),
            )
            self.status[cell.key] = "failed"
            self.progress.cell_finished(cell, "failed", ended - started, error=f"{type(exc).__name__}: {exc}")
            raise
        if outcome.model is not None:
            self.hold(cell, outcome.model)
            if self.keep == "all" or (self.keep == "needed" and cell.kind != "base" and self.subtree_pending(cell.key)):
                with self.store.writing_artifact(cell.key) as tmp:
                    save_model(outcome.model, tmp, self.worker.registry)
                if outcome.compression is not None:
                    outcome.compression["bytes_on_disk"] = bytes_on_disk(self.store.artifact_dir(cell.key))
        ended = time.time()
        self.store.record_cell(
            cell_row(cell), status="done", run_id=self.run_id, started=started, ended=ended,
            provenance=outcome.provenance, measurements=outcome.measurements, compression=outcome.compression,
            attachments=outcome.attachments,
        )
        self.status[cell.key] = "done"
        self.progress.cell_finished(cell, "done", ended - started)

    def prune_memory(self, cell: Cell) -> None:
        """Delete artifacts nothing pending needs any more (keep_artifacts = "needed")."""
        if self.keep != "needed":
            return
        for k in [cell.key, *(a.key for a in self.plan.ancestors(cell.key))]:
            if self.store.has_artifact(k) and not self.subtree_pending(k):
                self.store.remove_artifact(k)

    def settle(self) -> None:
        """After a stage, every held model but the working one is on the host, whatever a
        plugin moved meanwhile."""
        resident = self.worker.residency.resident
        for model in self.models.values():
            if model is not resident:
                to_host(model.model)

    def drop_all(self) -> None:
        models = list(self.models.values())
        self.models.clear()
        for model in models:
            self.worker.residency.forget(model)
        release(*models)

    def base_model(self, key: str) -> LoadedModel:
        """A base model an evaluator compares against: the one held, or loaded and held
        with the chain (never through ``hold``, which would drop the model under test)."""
        if key not in self.models:
            model = self.worker.run(self.plan.cell(key), None).model
            assert model is not None
            self.models[key] = model
        return self.models[key]
