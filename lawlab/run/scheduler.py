"""Executing a plan: the scheduler, the local executor, and the end-of-run steps.

The local scheduler walks the plan depth first per model (``plan.stage_order``): the base
model is loaded once; each pruned model is made once, evaluated, then recovered with
every RFT setting, and dropped before the next is made. Only the chain base → pruned →
recovered is held in memory, and of it only the working model is on the device: the
others wait on the host, and a stage that changes a model gets a copy written from the
host straight to the device (:class:`lawlab.models.loading.Residency`), so a stage needs about one
model's memory on the device (``lawlab plan`` prints the estimates). A model that later
cells still need is also written to the store as an artifact, so a killed study resumes
without pruning or training again.

What a cell *does* lives in :class:`CellWorker` and does not depend on where it runs,
so a distributed executor reuses it unchanged.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import json
import random
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lawlab import environment
from lawlab.api import Attachment, LoadedModel, Measurement, RunContext
from lawlab.files import write_json
from lawlab.models.loading import HOST, Residency, to_host
from lawlab.run.plan import Cell, Plan, stage_order, thaw
from lawlab.run.progress import StudyProgress
from lawlab.run.store import Store

ARTIFACT_FILE = "lawlab-artifact.json"


# --------------------------------------------------------------------------- one cell


@dataclass
class CellOutcome:
    model: LoadedModel | None
    measurements: list[Measurement]
    compression: dict[str, Any] | None
    provenance: dict[str, Any]
    attachments: list[Attachment] = field(default_factory=list)  # files kept beside the numbers


class CellWorker:
    """Runs single cells given their parent's model; knows nothing of scheduling."""

    def __init__(self, plan: Plan, *, device: str, dtype: str, progress: Any = None):
        spec = plan.spec.spec
        self.plan = plan
        self.registry = plan_registry(plan)
        self.device = device
        self.dtype = dtype
        self.seed = spec.study.seed
        self.offline = plan.spec.offline
        self.progress = progress
        self.residency = Residency(device)  # the one working model on the device
        self.evaluating = False  # a base model loaded now is borrowed, beside the model under test
        # base cell key -> its model, for evaluators that compare against it; an executor
        # that holds models sets it, otherwise the worker loads the base itself.
        self.base_provider: Any = None

    def base_for(self, cell: Cell) -> LoadedModel:
        """The unpruned model the cell's variant was made from (read-only)."""
        base = next(c for c in [cell, *self.plan.ancestors(cell.key)] if c.kind == "base")
        if self.base_provider is not None:
            return self.base_provider(base.key)
        model = self.run(base, None).model
        assert model is not None
        return model

    def seed_of(self, cell: Cell) -> int:
        """A prune or RFT cell's own seed (a method's replicate seeds), else the study's."""
        return int(cell.inputs.get("seed", self.seed))

    def context(self, work_dir: Path, seed: int | None = None) -> RunContext:
        from lawlab.api import Progress

        return RunContext(
            seed=self.seed if seed is None else seed,
            device=self.device,
            dtype=self.dtype,
            cache_dir=environment.cache_dir(),
            work_dir=work_dir,
            offline=self.offline,
            registry=self.registry,
            progress=self.progress or Progress(),
            spec_path=self.plan.spec.path.resolve(),
            datasets=self.plan.spec.spec.dataset_refs(),
        )

    def provenance(self, cell: Cell, plugin_kind: str) -> dict[str, Any]:
        return {
            "spec_hash": self.plan.spec_hash,
            "cell": thaw(cell.inputs),
            "plugin": self.registry.version_of(plugin_kind, cell.plugin),  # type: ignore[arg-type]
            "libraries": environment.library_versions(),
            "seed": self.seed_of(cell),
            "device": self.device,
            "device_name": environment.device_name(self.device),
            "dtype": self.dtype,
            "machine": environment.machine(),
            "offline": self.offline,
        }

    def run(self, cell: Cell, parent: LoadedModel | None) -> CellOutcome:
        seed_everything(self.seed_of(cell))
        with tempfile.TemporaryDirectory(prefix="lawlab-cell-") as tmp:
            ctx = self.context(Path(tmp), self.seed_of(cell))
            if cell.kind == "base":
                return self._base(cell, ctx)
            assert parent is not None, f"cell {cell.key} needs its parent's model"
            if cell.kind == "prune":
                return self._prune(cell, parent, ctx)
            if cell.kind == "rft":
                return self._rft(cell, parent, ctx)
            return self._eval(cell, parent, ctx)

    def _base(self, cell: Cell, ctx: RunContext) -> CellOutcome:
        source = self.registry.get("model_sources", cell.plugin)
        if not self.evaluating:
            self.residency.evict()  # sources load onto the device: make room first
        loaded = source.load(source.Params.model_validate(cell.params_dict()), ctx)
        if self.evaluating:
            self.residency.borrow(loaded)
        else:
            self.residency.adopt(loaded)
        loaded.model.eval()
        prov = self.provenance(cell, "model_sources") | {"model": loaded.provenance}
        return CellOutcome(loaded, [], None, prov)

    def _prune(self, cell: Cell, parent: LoadedModel, ctx: RunContext) -> CellOutcome:
        pruner = self.registry.get("pruners", cell.plugin)
        model = self.residency.working_copy(parent)
        pruned = pruner.prune(model, cell.variant.ratio, pruner.Params.model_validate(cell.params_dict()), ctx)
        self.residency.adopt(pruned)
        pruned.model.eval()
        comp = pruned.compression.as_dict() if pruned.compression else None
        return CellOutcome(pruned, [], comp, self.provenance(cell, "pruners"))

    def _rft(self, cell: Cell, parent: LoadedModel, ctx: RunContext) -> CellOutcome:
        recipe = self.registry.get("rft_recipes", cell.plugin)
        assert cell.dataset is not None
        ds_plugin, ds_params = cell.dataset
        dataset = self.registry.get("datasets", ds_plugin)
        data = dataset.load(dataset.Params.model_validate(thaw(ds_params)), "train", ctx)
        data = replace(data, name=cell.variant.rft_dataset)  # as the spec names it ([datasets.alpaca6])
        model = self.residency.working_copy(parent)
        params = recipe.Params.model_validate(cell.params_dict())
        recovered, measurements = recipe.train(model, data, cell.variant.size, params, ctx)
        self.residency.adopt(recovered)
        recovered.model.eval()
        prov = self.provenance(cell, "rft_recipes") | {
            "dataset": {"name": data.name, "split": data.split, "checksum": data.checksum, "source": data.source}
        }
        return CellOutcome(recovered, list(measurements), None, prov)

    def _eval(self, cell: Cell, parent: LoadedModel, ctx: RunContext) -> CellOutcome:
        evaluator = self.registry.get("evaluators", cell.plugin)
        params = evaluator.Params.model_validate(cell.params_dict())
        ctx.base = lambda: self.base_for(cell)
        self.residency.working(parent)
        get_base = getattr(ctx, "base", None)
        if get_base is not None:  # the base model an evaluator compares against joins for this stage
            ctx.base = lambda: self.residency.borrow(get_base())
        self.evaluating = True
        try:
            measurements = evaluator.evaluate(parent, params, ctx)
        finally:
            self.evaluating = False
            self.residency.end_stage()  # a model the evaluator borrowed goes back to the host
        return CellOutcome(None, list(measurements), None, self.provenance(cell, "evaluators"), ctx.attachments)


def plan_registry(plan: Plan) -> Any:
    from lawlab.registry import get_registry

    return get_registry()


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def release(*models: LoadedModel | None) -> None:
    """Give memory back between stages (the GPU's caching allocator keeps it otherwise)."""
    del models
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------- artifacts


def save_model(model: LoadedModel, path: Path, registry: Any) -> None:
    """A model as safetensors + JSON: stock models with ``save_pretrained``, others
    through the pruner that made them."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress display says what is happening
    if model.format == "hf":
        model.model.save_pretrained(path, safe_serialization=True)
        model.tokenizer.save_pretrained(path)
    else:
        registry.get("pruners", model.format).save_model(model, path)
    description = {
        "format": model.format,
        "model_type": model.model_type,
        "provenance": model.provenance,
        "compression": model.compression.as_dict() if model.compression else None,
        "history": model.history,
    }
    # written last: a folder without it was never finished
    (path / ARTIFACT_FILE).write_text(json.dumps(description, indent=2, default=str))


def load_model(path: Path, ctx: RunContext) -> LoadedModel:
    """An artifact, loaded on the host in ``ctx.dtype``; the stage that needs it on the
    device puts it there (:class:`Residency`)."""
    from dataclasses import replace

    from lawlab.api import Compression

    ctx = replace(ctx, device=HOST)
    desc = json.loads((path / ARTIFACT_FILE).read_text())
    if desc["format"] == "hf":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(path, dtype=ctx.torch_dtype(), trust_remote_code=False)
        loaded = LoadedModel(model, AutoTokenizer.from_pretrained(path), desc["model_type"])
    else:
        loaded = ctx.registry.get("pruners", desc["format"]).load_model(path, ctx)
    comp = desc.get("compression")
    if comp:
        derived = {"fraction_removed", "fraction_removed_no_embed", "flops_speedup"}
        loaded.compression = Compression(**{k: v for k, v in comp.items() if k not in derived})
    loaded.provenance = desc.get("provenance", {})
    loaded.history = desc.get("history", [])
    to_host(loaded.model)
    loaded.model.eval()
    return loaded


# --------------------------------------------------------------------------- the scheduler


@dataclass
class ExecutionSummary:
    done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # key -> last line of the error
    failed_before: list[str] = field(default_factory=list)  # failed in an earlier run, not retried
    blocked: list[str] = field(default_factory=list)  # not run: an ancestor failed
    skipped_done: int = 0
    stopped_early: bool = False

    @property
    def ok(self) -> bool:
        return not self.failed and not self.failed_before and not self.blocked and not self.stopped_early

    def counts(self, total: int) -> str:
        """What happened to each of the plan's ``total`` cells, in words that add up to it."""
        blocked = set(self.blocked) - set(self.failed_before)
        parts = [f"{len(self.done)} run", f"{self.skipped_done} already done", f"{len(self.failed)} failed"]
        if self.failed_before:
            parts.append(f"{len(self.failed_before)} failed in an earlier run (not retried)")
        if blocked:
            parts.append(f"{len(blocked)} not run (a cell they depend on failed)")
        left = total - len(self.done) - self.skipped_done - len(self.failed) - len(self.failed_before) - len(blocked)
        if left:
            parts.append(f"{left} left" + (" (stopped at the first failure)" if self.stopped_early else ""))
        return f"{total} cells: " + ", ".join(parts)


def cell_row(cell: Cell) -> dict[str, Any]:
    v = cell.variant
    return {
        "key": cell.key, "kind": cell.kind, "model": v.model, "method": v.method, "ratio": v.ratio,
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
                provenance=self.worker.provenance(cell, _plugin_kind(cell)), error=traceback.format_exc(),
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
                    outcome.compression["bytes_on_disk"] = _folder_bytes(self.store.artifact_dir(cell.key))
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


def _plugin_kind(cell: Cell) -> str:
    return {"base": "model_sources", "prune": "pruners", "rft": "rft_recipes", "eval": "evaluators"}[cell.kind]


def _folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# --------------------------------------------------------------------------- a study


@contextlib.contextmanager
def study_lock(output: Path) -> Iterator[None]:
    """One `lawlab run` per output folder at a time (two would compute the same cells)."""
    output.mkdir(parents=True, exist_ok=True)
    with open(output / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            from lawlab.errors import UsageError

            raise UsageError(f"another `lawlab run` is using {output}; wait for it or stop it") from None
        yield


def prepare_store(plan: Plan, store: Store) -> None:
    """Record what this run is about: the spec, the plan, and what later stages need."""
    spec = plan.spec.spec
    registry = plan_registry(plan)
    store.set_meta("spec", spec.canonical())
    store.set_meta("spec_hash", plan.spec_hash)
    store.set_meta("families", dict(plan.families))
    store.set_meta(
        "calibration",
        {m.key: ("based" if registry.get("pruners", m.method).calibration else "free") for m in spec.methods},
    )
    store.set_meta("experiments", plan.experiment_count())
    store.set_meta("skipped", [s.__dict__ for s in plan.skipped])
    store.save_plan([cell_row(c) for c in stage_order(plan)])
    write_json(store.root / "spec.json", spec.canonical())


def run_study(
    plan: Plan,
    *,
    fail_fast: bool = False,
    retry_failed: bool = False,
    report: bool = True,
    quiet: bool = False,
    verbose: bool = False,
    console: Any = None,
) -> int:
    """Run (or resume) a study; returns the exit code: 0 all done, 1 some cells failed."""
    from lawlab import terminal

    spec = plan.spec.spec
    if plan.spec.offline:
        environment.enter_offline_mode()
    console = console or terminal.console()
    output = spec.output_dir()
    # libraries' warnings and stray stderr go to the study's log (-v: the terminal too)
    with study_lock(output), terminal.capture(output / terminal.LOG_NAME, verbose=verbose) as log:
        with Store(output, create=True) as store:
            store.clean_partial_artifacts()
            prepare_store(plan, store)
            run_id = store.start_run(plan.spec_hash, sys.argv)
            registry = plan_registry(plan)
            executor = registry.get("executors", spec.execution.executor)
            params = executor.Params.model_validate(plan.spec.params_json("execution.params"))
            progress = StudyProgress(console, quiet=quiet, verbose=verbose, record=log.write)
            started = time.time()
            try:
                summary = executor.execute(
                    plan, store, params, run_id=run_id, progress=progress, fail_fast=fail_fast,
                    retry_failed=retry_failed,
                )
            except KeyboardInterrupt:
                store.end_run(run_id, "interrupted")
                raise
            store.end_run(run_id, "ok" if summary.ok else "failed")
            store.set_meta("last_run_seconds", time.time() - started)
        finish(plan, output, summary, console, report=report, quiet=quiet)
    return 0 if summary.ok else 1


def finish(plan: Plan, output: Path, summary: ExecutionSummary, console: Any, *, report: bool, quiet: bool) -> None:
    """Export, fits and report (whatever exists), then the terminal summary."""
    from rich.table import Table

    from lawlab.run.store import export

    export(output, "csv")
    fits_path = None
    if report and plan.spec.spec.laws:
        fits_path = write_fits(plan, output, console)
    report_path = None
    if report:
        # A report that cannot be written is an error with its cause, never a missing file.
        from lawlab.report.render import print_summary, write_report

        report_path = write_report(output, registry=plan_registry(plan), console=None if quiet else console)
        if not quiet:
            print_summary(output, console)
    if summary.failed or summary.blocked or summary.failed_before:
        t = Table(title="Failed cells", title_justify="left", header_style="bold red")
        t.add_column("cell")
        t.add_column("error")
        for key, err in summary.failed.items():
            t.add_row(plan.cell(key).label(), err)
        for key in summary.failed_before:
            t.add_row(plan.cell(key).label(), "failed in an earlier run (lawlab status shows the error)")
        console.print(t)
        if summary.blocked:
            console.print(f"{len(summary.blocked)} cell(s) not run because a cell they depend on failed.")
        console.print("Run again with --retry-failed to retry them.")
    for s in plan.skipped:
        console.print(f"not planned: {s.method} on {s.model}: {s.reason}", highlight=False)
    console.print(
        f"[bold]{plan.spec.spec.study.name}[/bold]: {summary.counts(len(plan))}. Results: {output / 'results.csv'}"
        + (f"; fits: {fits_path}" if fits_path else "")
        + (f"; report: {report_path}" if report_path else "")
        + f"; log: {output / 'lawlab.log'}"
    )


def write_fits(plan: Plan, output: Path, console: Any) -> Path:
    """Fit the spec's laws to what is stored and write fits.json (and show the main ones)."""
    from lawlab.laws.fit import fit_study
    from lawlab.run.store import load_table

    rows = load_table(output)
    fits = fit_study(rows, plan.spec.spec.laws, plan_registry(plan), seed=plan.spec.spec.study.seed)
    return write_json(output / "fits.json", [f.to_dict() for f in fits])


def remove_study(output: Path) -> None:
    shutil.rmtree(output, ignore_errors=True)
