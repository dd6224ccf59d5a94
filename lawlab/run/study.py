"""A study from start to end: one run per output folder, the store prepared, the executor
called, then the export, the fits, the report and the terminal summary.
"""

from __future__ import annotations

import contextlib
import fcntl
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from lawlab import environment
from lawlab.api import ExecutionSummary
from lawlab.files import write_json
from lawlab.run.plan import Plan, stage_order
from lawlab.run.progress import StudyProgress
from lawlab.run.scheduler import cell_row
from lawlab.run.store import Store
from lawlab.run.worker import plan_registry

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


def rerun_cells(plan: Plan, labels: Sequence[str]) -> list[str]:
    """The evaluation cells of ``labels`` (evaluator labels of the spec), or a UsageError
    naming the labels there are."""
    if not labels:
        return []
    known = sorted({c.evaluator for c in plan.cells if c.kind == "eval"})
    unknown = [label for label in labels if label not in known]
    if unknown:
        from lawlab.errors import UsageError

        raise UsageError(f"--rerun {', '.join(unknown)}: not an evaluator of this spec; its evaluators are "
                         f"{', '.join(known) or 'none'}")
    return [c.key for c in plan.cells if c.kind == "eval" and c.evaluator in labels]


def run_study(
    plan: Plan,
    *,
    fail_fast: bool = False,
    retry_failed: bool = False,
    rerun: Sequence[str] = (),
    report: bool = True,
    quiet: bool = False,
    verbose: bool = False,
    console: Any = None,
) -> int:
    """Run (or resume) a study; returns the exit code: 0 all done, 1 some cells failed.
    ``rerun``: evaluator labels whose finished cells are measured again."""
    from lawlab import terminal

    spec = plan.spec.spec
    if plan.spec.offline:
        environment.enter_offline_mode()
    console = console or terminal.console()
    output = spec.output_dir()
    stale = rerun_cells(plan, rerun)
    # libraries' warnings and stray stderr go to the study's log (-v: the terminal too)
    with study_lock(output), terminal.capture(output / terminal.LOG_NAME, verbose=verbose) as log:
        with Store(output, create=True) as store:
            store.clean_partial_artifacts()
            prepare_store(plan, store)
            if stale:
                forgotten = store.forget(stale)
                console.print(f"measuring again {forgotten} finished cell(s) of {', '.join(rerun)}")
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
    analysis_path = None
    if report:
        # the one analysis (fits, form comparison, findings) that the report and every law command read
        from lawlab.analysis import ANALYSIS_FILE, study_analysis

        study_analysis(output, plan_registry(plan))
        analysis_path = output / ANALYSIS_FILE
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
        + (f"; analysis: {analysis_path}" if analysis_path else "")
        + (f"; report: {report_path}" if report_path else "")
        + f"; log: {output / 'lawlab.log'}"
    )
