"""The Ray executor: a study's cells as Ray tasks across a cluster (``pip install 'lawlab[ray]'``).

The driver (``lawlab run``) plans, schedules and alone writes the SQLite store; each cell
runs as a Ray task that loads its parent's model from shared storage, runs
:class:`lawlab.run.worker.CellWorker` on it, writes its own model back when later cells
need it, and returns plain JSON-able data. A cell is submitted as soon as its parent's
model is on shared storage, so independent branches run in parallel.

Models pass between cells only as artifacts (safetensors + JSON, written under a
temporary name and renamed), the base model included: it is loaded from its source once
and every worker reads the shared copy. The resume, failure and ``keep_artifacts`` rules
are the local executor's (see :class:`lawlab.run.scheduler.LocalScheduler`).
"""

from __future__ import annotations

import logging
import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from lawlab import hookimpl
from lawlab.api import (
    ARTIFACT_FILE,
    STAGE_PLUGIN_KINDS,
    CheckContext,
    CheckFailed,
    ExecutionSummary,
    Executor,
    Params,
)
from lawlab.run.scheduler import ResumeRules  # cheap: torch and ray are imported only when cells run

INSTALL_HINT = "the ray executor needs Ray: pip install 'lawlab[ray]'"


class StageResources(Params):
    num_gpus: float | Literal["auto"] = Field(
        "auto",
        description="GPUs per cell: auto = 1 when the spec's device is not cpu and the cluster has GPUs, else 0; "
        "a fraction (0.25) packs several small-model cells on one GPU.",
    )
    num_cpus: float = Field(1.0, gt=0, description="CPUs per cell (Ray also sets OMP_NUM_THREADS to this).")
    memory_gb: float | None = Field(
        None, gt=0, description="Memory per cell in GiB, for Ray's scheduling (reserved, not enforced); none: no reservation."
    )


class RayParams(Params):
    address: str = Field(
        "auto",
        description="auto: the running cluster (RAY_ADDRESS, or the last `ray start` on this machine), else a new "
        "local one; local: always a new local one; or an address such as 10.0.0.1:6379 or ray://head:10001.",
    )
    load: StageResources = Field(default_factory=StageResources, description="Resources to load a base model.")
    prune: StageResources = Field(default_factory=StageResources, description="Resources per pruning cell.")
    rft: StageResources = Field(default_factory=StageResources, description="Resources per recovery fine-tuning cell.")
    eval: StageResources = Field(default_factory=StageResources, description="Resources per evaluation cell.")
    max_retries: int = Field(
        2, ge=0, description="Times a cell is run again when its worker process or node dies (a cell that raises is not retried)."
    )
    shared_dir: str | None = Field(
        None,
        description="Folder every node can read and write, for the models passed between cells (artifacts go in "
        "SHARED_DIR/<study name>/artifacts); relative to the spec file. none: the study's output folder.",
    )


class RayExecutor(Executor):
    name: ClassVar[str] = "ray"
    Params: ClassVar[type[Params]] = RayParams
    description: ClassVar[str] = "run the cells as Ray tasks on a Ray cluster (or a local Ray instance)"

    def check(self, params: Any, ctx: CheckContext) -> None:
        import importlib.util

        if importlib.util.find_spec("ray") is None:  # find_spec does not import: validation stays fast
            raise CheckFailed(INSTALL_HINT, allowed="install the extra, or executor = \"local\"")

    def execute(self, plan: Any, store: Any, params: Any, **options: Any) -> Any:
        import ray

        started_here = not ray.is_initialized()
        if started_here:
            address = None if params.address == "auto" else params.address
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING, runtime_env=job_runtime_env())
        try:
            return RayScheduler(plan, store, params, shipped=started_here, **options).run()
        finally:
            if started_here:
                ray.shutdown()


# --------------------------------------------------------------------------- the worker side


@dataclass(frozen=True)
class WorkerSetup:
    """What a worker process needs before it can read the plan: the ``--plugin`` modules to
    import and the plan itself, pickled by Ray's cloudpickle. The driver's LAWLAB_*
    variables reach the worker through the task's ``runtime_env`` (:func:`task_runtime_env`),
    the modules' files through the job's (:func:`job_runtime_env`), so no node needs the
    driver's file system. Ray uploads local files only for a job's runtime_env, set when
    the job starts: where the caller started Ray itself (a notebook, a test), ``paths`` are
    the driver's folders of those modules instead, which the nodes must share."""

    token: str
    plan_blob: bytes
    modules: tuple[str, ...]
    paths: tuple[str, ...] = ()


_workers: dict[str, Any] = {}  # token -> CellWorker, so a worker process sets up once per run


def _cell_worker(setup: WorkerSetup) -> Any:
    if setup.token in _workers:
        return _workers[setup.token]
    import ray
    from ray import cloudpickle

    from lawlab import environment
    from lawlab.registry import get_registry
    from lawlab.run.worker import CellWorker

    # runtime_env sets variables but cannot unset one: a LAWLAB_* variable this worker
    # inherited from its node (`ray start`'s shell) and the driver lacks is removed here.
    sent = ray.get_runtime_context().runtime_env.env_vars()
    for k in [k for k in os.environ if _forwarded(k) and k not in sent]:
        del os.environ[k]
    for path in setup.paths:
        if path not in sys.path:
            sys.path.insert(0, path)
    get_registry(setup.modules)  # CellWorker reads the process-wide registry
    plan = cloudpickle.loads(setup.plan_blob)
    if plan.spec.offline:
        environment.enter_offline_mode()
    device = _worker_device(plan.spec.spec.execution.device)
    worker = CellWorker(plan, device=device, dtype=environment.resolve_dtype(plan.spec.spec.execution.dtype, device))
    _workers.clear()
    _workers[setup.token] = worker
    return worker


def _forwarded(var: str) -> bool:
    """The driver's LAWLAB_* settings (plugin lists...) hold on every worker; the cache
    folder is each machine's own."""
    return var.startswith("LAWLAB_") and var != "LAWLAB_CACHE"


def task_runtime_env() -> dict[str, Any]:
    """Ray's ``runtime_env`` of every cell task: the driver's LAWLAB_* variables."""
    return {"env_vars": {k: v for k, v in os.environ.items() if _forwarded(k)}}


def job_runtime_env() -> dict[str, Any] | None:
    """Ray's ``runtime_env`` of a job lawlab starts: the files of the ``--plugin`` modules
    (``py_modules``: Ray uploads them to the cluster and puts them on each worker's path)."""
    files = sorted({f for f in map(_module_file, _plugin_modules()) if f is not None})
    return {"py_modules": files} if files else None


def _plugin_modules() -> list[str]:
    """The ``--plugin`` modules of this run: imported by name, not installed (entry-point
    plugins are installed on every node like lawlab itself)."""
    from lawlab.registry import get_registry

    return [info.module for info in get_registry().plugins if info.distribution is None and info.module in sys.modules]


def _module_file(module: str) -> str | None:
    """The file or package folder that ``py_modules`` ships for ``module``: its top-level
    package, so ``import a.b`` works on the worker as it does here. None for a package
    installed from a distribution: nodes install those as they install lawlab."""
    from importlib.metadata import packages_distributions

    name = module.split(".", 1)[0]
    top = sys.modules.get(name)
    if top is None or name in packages_distributions():
        return None
    folders = list(getattr(top, "__path__", []))
    if folders:
        return folders[0] if len(folders) == 1 else None  # a namespace package over several folders: not shippable
    return getattr(top, "__file__", None)


def _worker_device(setting: str) -> str:
    """A task given no GPU runs on the CPU even on a GPU node; one given a GPU sees only it."""
    import ray

    from lawlab import environment

    if setting == "auto" and not ray.get_gpu_ids():
        return "cpu"
    return environment.resolve_device(setting)


def run_cell_task(
    setup: WorkerSetup, key: str, parent_dir: str | None, save_dir: str | None, attempt: int
) -> dict[str, Any]:
    """One cell on a Ray worker. Returns JSON-able data; a cell that raises comes back
    as ``error`` (Ray's exceptions are kept for workers that die)."""
    import base64
    import json
    import tempfile
    import traceback

    import ray

    from lawlab.accounting import bytes_on_disk
    from lawlab.files import atomic_folder
    from lawlab.run.worker import load_model, save_model

    started = time.time()
    worker = _cell_worker(setup)
    cell = worker.plan.cell(key)
    ray_info = {
        "executor": "ray", "node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid(),
        "attempt": attempt, "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
        "setup_seconds": time.time() - started,  # once per worker process and run: plugins, plan
    }
    loading = time.time()
    try:
        parent = None
        if parent_dir is not None:
            with tempfile.TemporaryDirectory(prefix="lawlab-load-") as tmp:
                parent = load_model(Path(parent_dir), worker.context(Path(tmp)))
        ray_info["load_seconds"] = time.time() - loading
        outcome = worker.run(cell, parent)
        compression = outcome.compression
        if save_dir is not None and outcome.model is not None:
            saving = time.time()
            with atomic_folder(Path(save_dir)) as tmp_dir:
                save_model(outcome.model, tmp_dir, worker.registry)
            ray_info["save_seconds"] = time.time() - saving
            if compression is not None:
                compression["bytes_on_disk"] = bytes_on_disk(Path(save_dir))
        result = {
            "measurements": [m.__dict__ for m in outcome.measurements],
            "compression": compression,
            "provenance": outcome.provenance | {"execution": ray_info},
            # files kept beside the numbers, as base64 text: the result is plain JSON
            "attachments": [a.__dict__ | {"data": base64.b64encode(a.data).decode()} for a in outcome.attachments],
        }
    except Exception as exc:
        result = {
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(),
            "provenance": worker.provenance(cell, STAGE_PLUGIN_KINDS[cell.kind]) | {"execution": ray_info},
        }
    result |= {"started": started, "ended": time.time()}
    # plain data only: no tensors or numpy scalars travel back to the driver
    return json.loads(json.dumps(result, default=str))


# --------------------------------------------------------------------------- the driver side


@dataclass
class Job:
    cell: Any
    rebuild: bool  # True: only materialise the model of a done cell; nothing is recorded
    attempt: int = 0
    submitted: float = field(default_factory=time.time)


class RayScheduler(ResumeRules):
    """Submits each cell once its parent's model is on shared storage; one store writer."""

    def __init__(
        self, plan: Any, store: Any, params: RayParams, *, run_id: int, progress: Any,
        fail_fast: bool = False, retry_failed: bool = False, shipped: bool = True,
    ):
        super().__init__(plan, store, retry_failed=retry_failed)
        spec = plan.spec.spec
        self.store, self.params, self.run_id = store, params, run_id
        self.shipped = shipped  # the --plugin modules travel in the job's runtime_env (lawlab started the job)
        self.progress = progress
        self.fail_fast = fail_fast
        self.keep = spec.execution.keep_artifacts
        self.plan_keys = {c.key for c in plan.cells}
        self.artifacts = artifact_root(plan, params, store)

    def has_model(self, key: str) -> bool:
        return (self.artifacts / key / ARTIFACT_FILE).is_file()

    # ----------------------------------------------------------------- the loop

    def run(self) -> Any:
        import ray

        summary = ExecutionSummary()
        # our loop retries, and records each try
        self.remote = ray.remote(max_retries=0, runtime_env=task_runtime_env())(run_cell_task)
        self.resources = {kind: self.stage_resources(kind) for kind in ("base", "prune", "rft", "eval")}
        self.resources["quantize"] = self.resources["prune"]  # a hybrid pipeline's step: a pruner's resources
        self.setup = ray.put(self.worker_setup())
        self.clean_partial()
        waiting = self.start(summary, self.progress)
        self.running: dict[Any, Job] = {}
        failed_keys: set[str] = set(summary.failed_before)
        try:
            while waiting or self.running:
                waiting = self.submit_ready(waiting, failed_keys, summary)
                if not self.running:
                    break  # everything left waits on a model that will not come (guarded in submit_ready)
                [ref], _ = ray.wait(list(self.running), num_returns=1)
                job = self.running.pop(ref)
                if not self.finish(job, ref, failed_keys, summary) and self.fail_fast:
                    summary.stopped_early = True
                    break
        finally:
            for ref in self.running:  # fail-fast, Ctrl-C: what still runs is left for the next run
                ray.cancel(ref, force=True)
            self.running.clear()
            self.remove_unneeded(final=True)
            self.progress.finish_study()
        return summary

    def submit_ready(self, waiting: list[Any], failed_keys: set[str], summary: Any) -> list[Any]:
        busy = {job.cell.key for job in self.running.values()}
        still = []
        for cell in waiting:
            if cell.parent in failed_keys:  # blocked cells join failed_keys: it propagates down
                failed_keys.add(cell.key)
                summary.blocked.append(cell.key)
            elif cell.parent is not None and (cell.parent in busy or not self.has_model(cell.parent)):
                still.append(cell)
            elif self.needs_running(cell):
                self.submit(Job(cell, rebuild=False))
            elif not self.has_model(cell.key):
                self.progress.log(f"rebuilding {cell.label()} (no artifact kept)")
                self.submit(Job(cell, rebuild=True))
        if still and not self.running:
            for cell in still:  # cannot happen by construction; never wait forever
                failed_keys.add(cell.key)
                summary.failed[cell.key] = "its parent's model is not on shared storage"
            return []
        return still

    def submit(self, job: Job) -> None:
        cell = job.cell
        save = job.rebuild or self.keep == "all" or self.subtree_pending(cell.key)
        parent_dir = str(self.artifacts / cell.parent) if cell.parent else None
        save_dir = str(self.artifacts / cell.key) if save else None
        ref = self.remote.options(**self.resources[cell.kind]).remote(
            self.setup, cell.key, parent_dir, save_dir, job.attempt
        )
        self.running[ref] = job
        if not job.rebuild:
            self.store.record_attempt(cell.key, self.run_id)
            if job.attempt == 0:
                self.progress.cell_started(cell)

    def finish(self, job: Job, ref: Any, failed_keys: set[str], summary: Any) -> bool:
        """Record what came back; False when the cell failed."""
        import base64

        import ray
        from ray.exceptions import RayError, RayTaskError

        from lawlab.api import Attachment, Measurement
        from lawlab.run.scheduler import cell_row

        cell = job.cell
        try:
            result = ray.get(ref)
        except RayTaskError as exc:  # raised outside the cell's own code (a worker without a plugin)
            now = time.time()
            result = {
                "error": f"{type(exc.cause or exc).__name__}: {exc.cause or exc}", "traceback": str(exc),
                "provenance": self.driver_provenance(cell), "started": now, "ended": now,
            }
        except RayError as exc:  # the worker process or its node died: the cell itself may be fine
            first = f"{type(exc).__name__}: {exc}".splitlines()[0]
            if job.attempt < self.params.max_retries:
                self.progress.log(f"worker died running {cell.label()}; retry {job.attempt + 1}/{self.params.max_retries}")
                self.submit(Job(cell, job.rebuild, job.attempt + 1))
                return True
            now = time.time()
            result = {
                "error": f"worker died {job.attempt + 1} time(s): {first}", "traceback": str(exc),
                "provenance": self.driver_provenance(cell), "started": now, "ended": now,
            }
        started, ended = result["started"], result["ended"]
        # the cluster's share of the cell's time: waiting for a worker, and the trip back
        result["provenance"].setdefault("execution", {}).update(
            submitted=job.submitted, received=time.time(), resources=self.resources[cell.kind]
        )
        if "error" in result:
            failed_keys.add(cell.key)
            summary.failed[cell.key] = result["error"].splitlines()[0]
            if not job.rebuild:
                self.store.record_cell(
                    cell_row(cell), status="failed", run_id=self.run_id, started=started, ended=ended,
                    provenance=result["provenance"], error=result["traceback"],
                )
                self.status[cell.key] = "failed"
                self.progress.cell_finished(cell, "failed", ended - started, error=result["error"])
            return False
        if not job.rebuild:
            self.store.record_cell(
                cell_row(cell), status="done", run_id=self.run_id, started=started, ended=ended,
                provenance=result["provenance"], measurements=[Measurement(**m) for m in result["measurements"]],
                compression=result["compression"],
                attachments=[Attachment(**a | {"data": base64.b64decode(a["data"])})
                             for a in result.get("attachments", [])],
            )
            self.status[cell.key] = "done"
            summary.done.append(cell.key)
            self.progress.cell_finished(cell, "done", ended - started)
        self.remove_unneeded(cell)
        return True

    # ----------------------------------------------------------------- artifacts and resources

    def remove_unneeded(self, cell: Any = None, *, final: bool = False) -> None:
        """Delete models no pending cell needs: the local rules for "needed"; with "none"
        every model goes at the end (workers still pass them on during the run)."""
        if self.keep == "all":
            return
        if final:
            keys = [p.name for p in self.artifacts.iterdir()] if self.artifacts.is_dir() else []
        else:
            keys = [cell.key, *(a.key for a in self.plan.ancestors(cell.key))]
        for k in keys:
            if k not in self.plan_keys:  # temporary folders, and other studies' models on shared storage
                continue
            in_use = any(j.cell.key == k or j.cell.parent == k for j in self.running.values())
            if not in_use and ((self.keep == "none" and final) or not self.subtree_pending(k)):
                _remove(self.artifacts / k)

    def clean_partial(self) -> None:
        """Temporary folders left by killed workers are never trusted."""
        if self.artifacts.is_dir():
            for p in self.artifacts.glob(".tmp-*"):
                _remove(p)

    def stage_resources(self, kind: str) -> dict[str, Any]:
        import ray

        stage: StageResources = getattr(self.params, "load" if kind == "base" else kind)
        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        gpus = stage.num_gpus
        if gpus == "auto":
            has_gpus = any(n.get("GPU", 0) for n in nodes)
            gpus = 1.0 if has_gpus and self.plan.spec.spec.execution.device != "cpu" else 0.0
        out: dict[str, Any] = {"num_cpus": stage.num_cpus, "num_gpus": gpus}
        if stage.memory_gb:
            out["memory"] = int(stage.memory_gb * 2**30)
        # Ray waits forever, silently, for a task no node can take: refuse it here
        wanted = {"CPU": stage.num_cpus, "GPU": gpus, "memory": out.get("memory", 0)}
        if not any(all(n.get(r, 0) >= v for r, v in wanted.items()) for n in nodes):
            from lawlab.errors import UsageError

            largest = {r: max((n.get(r, 0) for n in nodes), default=0) for r in wanted}
            largest["memory"] = round(largest["memory"] / 2**30, 1)
            asked = {"num_cpus": stage.num_cpus, "num_gpus": gpus, "memory_gb": stage.memory_gb}
            raise UsageError(
                f"no node of the Ray cluster can run a {kind} cell: it asks for {asked}; the largest node has "
                f"{largest['CPU']:g} CPUs, {largest['GPU']:g} GPUs, {largest['memory']:g} GiB. "
                f"Change execution.params.{'load' if kind == 'base' else kind}"
            )
        return out

    def worker_setup(self) -> WorkerSetup:
        from ray import cloudpickle

        modules = tuple(_plugin_modules())
        paths: tuple[str, ...] = ()
        if not self.shipped:  # the caller's Ray job: its runtime_env is fixed, the folders must be shared
            files = {f for f in map(_module_file, modules) if f is not None}
            paths = tuple(sorted({str(Path(f).resolve().parent) for f in files}))
        return WorkerSetup(uuid.uuid4().hex, cloudpickle.dumps(self.plan), modules, paths)

    def driver_provenance(self, cell: Any) -> dict[str, Any]:
        from lawlab import environment
        from lawlab.registry import get_registry

        return {
            "spec_hash": self.plan.spec_hash,
            "cell": dict(cell.inputs),
            "plugin": get_registry().version_of(STAGE_PLUGIN_KINDS[cell.kind], cell.plugin),
            "libraries": environment.library_versions(),
            "seed": self.plan.spec.spec.study.seed,
            "execution": {"executor": "ray", "recorded_by": "driver"},
        }


def artifact_root(plan: Any, params: RayParams, store: Any) -> Path:
    if params.shared_dir is None:
        return store.root / "artifacts"
    shared = Path(params.shared_dir).expanduser()
    if not shared.is_absolute():
        shared = plan.spec.path.resolve().parent / shared
    return shared / plan.spec.spec.study.name / "artifacts"


def _remove(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


@hookimpl
def register_executors(register):
    register(RayExecutor())
