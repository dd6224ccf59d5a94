"""The study commands: validate, plan, run, status, export, report, schema and plugins.

A bad spec is reported with the file, the field, what was given and what is allowed, and
exits 2 before anything is written (:func:`lawlab.cli.main.main` turns the error into that line).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.table import Table

from lawlab import terminal
from lawlab.cli.main import EXIT_OK, console, subcommand


def add_commands(sub: Any) -> None:
    p = subcommand(sub, "validate",
                   "Check a spec (types, plugins, files, offline availability) without running it.",
                   "lawlab validate specs/quickstart.toml")
    _spec_args(p)
    p.add_argument("--here", action="store_true",
                   help="also fail (exit 2) when this machine cannot run the study: hub models or data it can "
                        "neither reach nor find cached, a device it lacks")
    p.set_defaults(func=cmd_validate)

    p = subcommand(sub, "plan", "Show the cells a spec resolves to and the paper-style experiment count.",
                   "lawlab plan specs/compression-laws-paper.toml")
    _spec_args(p)
    p.add_argument("--cells", action="store_true", help="list every cell, not only the counts")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(func=cmd_plan)

    p = subcommand(sub, "run",
                   "Run a study: prune, recover, evaluate, store, fit and report; resumes where it stopped.",
                   "lawlab run specs/quickstart.toml")
    _spec_args(p)
    p.add_argument("--fail-fast", action="store_true", help="stop at the first failed cell")
    p.add_argument("--retry-failed", action="store_true", help="run again the cells that failed before")
    p.add_argument("--rerun", action="append", default=[], metavar="EVALUATOR",
                   help="measure again the finished cells of this evaluator label (repeatable), e.g. after its "
                        "plugin learnt a new measurement; the variants they need are rebuilt where not kept")
    p.add_argument("--no-report", action="store_true", help="skip the fits and the report at the end")
    p.add_argument("--allow-revision-change", action="store_true",
                   help="resume even when a hub revision now resolves to another commit than the stored cells used")
    p.set_defaults(func=cmd_run)

    p = subcommand(sub, "status", "Show what is done, failed and left in a study's output folder.",
                   "lawlab status runs/quickstart")
    p.add_argument("output", type=Path, help="the study's output folder")
    p.set_defaults(func=cmd_status)

    p = subcommand(sub, "export", "Export the results as one tidy row per measured value.",
                   "lawlab export runs/quickstart --format csv")
    p.add_argument("output", type=Path, help="the study's output folder")
    p.add_argument("--format", choices=["csv", "jsonl", "parquet"], default="csv")
    p.add_argument("-o", "--out", type=Path, help="file to write (default: OUTPUT/results.FORMAT)")
    p.add_argument("--questions", action="store_true",
                   help="one row per question of each lm-eval cell instead (csv or parquet; "
                        "default: OUTPUT/questions.FORMAT)")
    p.set_defaults(func=cmd_export)

    p = subcommand(sub, "report",
                   "Write the study's report (HTML, Markdown, figures, tables) from its store; on a "
                   "published folder (results.csv + analysis.json), re-read its findings under today's rules.",
                   "lawlab report runs/quickstart")
    p.add_argument("output", type=Path, help="the study's output folder, or a published study's folder")
    p.set_defaults(func=cmd_report)

    p = subcommand(sub, "schema",
                   "Print the JSON Schema of the spec (for editor completion), or its Markdown reference.",
                   "lawlab schema > lawlab-spec.schema.json")
    p.add_argument("--markdown", action="store_true", help="print the spec reference with every plugin's params")
    p.set_defaults(func=cmd_schema)

    p = subcommand(sub, "plugins", "List every plugin, its version and what it registers.", "lawlab plugins")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=cmd_plugins)


def _spec_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", type=Path, help="the study spec (TOML)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a spec field, e.g. --set study.seed=3 --set 'methods[0].ratios=[0.1,0.5]'",
    )


# --------------------------------------------------------------------------- helpers


def _registry(args: argparse.Namespace) -> Any:
    from lawlab.registry import get_registry

    return get_registry(args.plugin)


def _load(args: argparse.Namespace, offline: bool | None = None) -> Any:
    from lawlab.spec.load import load_spec

    return load_spec(args.spec, args.overrides, registry=_registry(args), offline=offline)


def _check_context(resolved: Any, registry: Any) -> Any:
    from lawlab import environment
    from lawlab.api import CheckContext

    return CheckContext(
        spec_path=resolved.path.resolve(),
        offline=resolved.offline,
        registry=registry,
        cache_dir=environment.cache_dir(),
    )


def _make_plan(args: argparse.Namespace) -> Any:
    from lawlab.run.plan import make_plan

    resolved = _load(args)
    return make_plan(resolved, _check_context(resolved, _registry(args)))


# --------------------------------------------------------------------------- commands


def cmd_validate(args: argparse.Namespace) -> int:
    plan = _make_plan(args)  # planning is part of validation: unsupported pairs are spec errors
    spec = plan.spec.spec
    if args.here:
        _require_here(plan, args.spec)  # exit 2 with the reasons, and no "ok" first
    console.print(
        f"[green]ok[/green] {args.spec}: study [bold]{spec.study.name}[/bold], {len(spec.models)} model(s), "
        f"{len(plan)} cells"
    )
    if plan.spec.offline:  # a property of this machine, not of the spec
        console.print("this machine is offline: models and data come from the cache and offline packs")
    print_here(plan, args.spec)
    return EXIT_OK


def _here(plan: Any) -> list[Any]:
    """Every reason this machine cannot run the plan: the checks' and the machine's limits."""
    from lawlab.machine import machine_limits

    return [*plan.spec.here, *machine_limits(plan)]


def _require_here(plan: Any, spec_path: Path) -> None:
    from lawlab.spec.issues import MachineError

    here = _here(plan)
    if here:
        raise MachineError(spec_path, here)


def print_here(plan: Any, spec_path: Path) -> None:
    """The "cannot run on this machine" section: each reason once, with its fix."""
    from lawlab.spec.issues import here_lines

    here = _here(plan)
    if not here:
        return
    console.print(f"[yellow]cannot run on this machine[/yellow] (`lawlab validate --here {spec_path}` and "
                  "`lawlab run` refuse it):")
    for line in here_lines(here, spec_path):
        console.print(f"  {line}", markup=False, highlight=False)


def cmd_plan(args: argparse.Namespace) -> int:
    # Planning a study for a connected GPU server works on an offline laptop too: what
    # stops it from running here is said after the plan, not instead of it.
    plan = _make_plan(args)
    if args.json:
        print(json.dumps(plan_as_json(plan, _registry(args)), indent=2))
        return EXIT_OK
    print_plan(plan, cells=args.cells)
    from lawlab.run.sizing import size_plan

    console.print(size_plan(plan, _registry(args)).summary(), markup=False, highlight=False)
    print_here(plan, args.spec)
    return EXIT_OK


def plan_as_json(plan: Any, registry: Any) -> dict[str, Any]:
    from lawlab.run.sizing import size_plan

    return {
        "study": plan.spec.spec.study.name,
        "spec_hash": plan.spec_hash,
        "experiments": plan.experiment_count(),
        "per_model": plan.summary_rows(),
        "skipped": [s.__dict__ for s in plan.skipped],
        "memory": {name: m.to_dict() for name, m in plan.memory.items()},
        "sizing": size_plan(plan, registry).to_dict(),
        "cells": [
            {"key": c.key, "kind": c.kind, "parent": c.parent, "plugin": c.plugin, "label": c.label()}
            for c in plan.cells
        ],
    }


def print_plan(plan: Any, *, cells: bool = False) -> None:
    spec = plan.spec.spec
    t = Table(title=f"Study plan: {spec.study.name}", title_justify="left")
    hybrid = bool(plan.of_kind("quantize"))  # the column only where a pipeline quantises
    for col, just in (("model", "left"), ("family", "left"), ("prune", "right"), *([("quantize", "right")] * hybrid),
                      ("RFT", "right"), ("evaluations", "right"), ("experiments", "right")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for row in plan.summary_rows():
        t.add_row(row["model"], row["family"], str(row["prune"]), *([str(row["quantize"])] * hybrid), str(row["rft"]),
                  str(row["eval"]), str(row["experiments"]))
    console.print(t)
    counts = plan.experiment_count()
    total = sum(counts.values())
    by_family = ", ".join(f"{n} {fam}" for fam, n in counts.items())
    console.print(
        f"[bold]{total}[/bold] experiments as the paper's Table 5 counts them "
        f"(intrinsic and extrinsic evaluations of compressed variants){': ' + by_family if by_family else ''}"
    )
    base_evals = sum(1 for c in plan.cells if c.kind == "eval" and not c.variant.label)
    console.print(f"{len(plan)} cells in all, including {base_evals} evaluations of the unpruned models.")
    for s in plan.skipped:
        console.print(f"[yellow]skipped[/yellow] {s.method} on {s.model}: {s.reason}")
    print_memory(plan)
    if cells:
        t = Table(title="Cells", title_justify="left")
        t.add_column("key")
        t.add_column("cell")
        for c in plan.cells:
            t.add_row(c.key, c.label())
        console.print(t)


def print_memory(plan: Any) -> None:
    """Each model's estimated peak memory (lawlab.run.memory), where its sizes are known."""
    from lawlab.machine import dtype_here
    from lawlab.run.memory import GIB

    if plan.memory:
        t = Table(title="Peak memory (estimated from the config)", title_justify="left")
        for col in ("model", "parameters", "dtype", "device peak", "stage at the peak", "host peak"):
            t.add_column(col, justify="left" if col in ("model", "dtype", "stage at the peak") else "right")
        here = dtype_here(plan)
        for name, m in plan.memory.items():
            dtype = m.dtype if m.dtype == here else f"{m.dtype} on the GPU ({here} here)"
            t.add_row(name, f"{m.params / 1e9:.2f}B", dtype, f"{m.peak_device / GIB:.1f} GiB", m.peak.stage,
                      f"{m.peak_host / GIB:.1f} GiB")
        console.print(t)
        if shaped := [name for name, m in plan.memory.items() if not m.exact]:
            console.print(f"parameters of {', '.join(shaped)} counted from the layer shapes (a dense decoder's "
                          "formula): transformers does not know the model_type to build the model")
        if any(m.dtype != here for m in plan.memory.values()):
            console.print(f"the estimates are for the GPU the spec declares (execution.device_memory_gb); this "
                          f"machine has none and would load the models in {here}")
    unknown = [m.name for m in plan.spec.spec.models if m.name not in plan.memory]
    if unknown:
        console.print(f"no memory estimate for {', '.join(unknown)}: sizes are known only after loading")


def cmd_run(args: argparse.Namespace) -> int:
    from lawlab.run.study import run_study

    plan = _make_plan(args)
    _require_here(plan, args.spec)
    _check_pins(plan, args)
    return run_study(
        plan,
        fail_fast=args.fail_fast,
        retry_failed=args.retry_failed,
        rerun=args.rerun,
        report=not args.no_report,
        quiet=args.quiet,
        verbose=args.verbose,
        console=console,
    )


def _check_pins(plan: Any, args: argparse.Namespace) -> None:
    """Refuse to resume with hub revisions that moved since the stored cells ran."""
    from lawlab.run.pins import check_pins
    from lawlab.run.store import Store

    with Store(plan.spec.spec.output_dir(), create=True) as store:
        changed = check_pins(plan.spec, _check_context(plan.spec, _registry(args)), store,
                             allow=args.allow_revision_change)
    for item, (old, new) in changed.items():
        console.print(f"[yellow]{item}[/yellow]: stored cells used commit {old[:12]}, new cells use {new[:12]} "
                      "(--allow-revision-change)", highlight=False)


def cmd_status(args: argparse.Namespace) -> int:
    from lawlab.run.store import print_status

    return print_status(args.output, console)


def cmd_export(args: argparse.Namespace) -> int:
    from lawlab.run.store import export, export_questions

    if not args.questions:
        console.print(f"wrote {export(args.output, args.format, args.out)}")
        return EXIT_OK
    path, done = export_questions(args.output, args.format, args.out)
    console.print(f"wrote {path}: {len(done.rows):,} questions from {done.cells} evaluation cells")
    if done.missing:
        console.print(f"{len(done.missing)} evaluation cells have no per-question records, e.g. "
                      f"{next(iter(done.missing.values()))}", highlight=False)
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    import contextlib

    from lawlab.analysis import is_published
    from lawlab.report.render import refresh_published, write_report
    from lawlab.run.store import DB_NAME

    if is_published(args.output):  # results.csv and analysis.json: the findings re-read, the rest kept
        refresh_published(args.output, registry=_registry(args), console=console)
        return EXIT_OK
    # the fitters' and matplotlib's warnings go to the study's log, as in `lawlab run`
    is_study = (args.output / DB_NAME).is_file()
    with terminal.capture(args.output / terminal.LOG_NAME, verbose=args.verbose) if is_study else (
        contextlib.nullcontext()
    ):
        path = write_report(args.output, registry=_registry(args))
    console.print(f"report: {path}")
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    if args.markdown:
        from lawlab.spec.reference import spec_reference

        print(spec_reference(_registry(args)), end="")
        return EXIT_OK
    from lawlab.spec.reference import editor_schema

    print(json.dumps(editor_schema(_registry(args)), indent=2))
    return EXIT_OK


def cmd_plugins(args: argparse.Namespace) -> int:
    registry = _registry(args)
    rows = []
    for p in registry.plugins:
        rows.append(
            {
                "plugin": p.name,
                "distribution": p.distribution,
                "version": p.version,
                "builtin": p.builtin,
                "module": p.module,
                "registers": registry.provides(p),
            }
        )
    if args.json:
        print(json.dumps({"plugins": rows, "broken": registry.broken}, indent=2))
        return EXIT_OK
    t = Table(title="lawlab plugins", title_justify="left")
    for col in ("plugin", "from", "registers"):
        t.add_column(col)
    for r in rows:
        origin = f"{r['distribution']} {r['version']}" if r["distribution"] else "--plugin"
        regs = "; ".join(f"{k.replace('_', ' ')}: {', '.join(v)}" for k, v in r["registers"].items())
        t.add_row(r["plugin"], origin + (" (built-in)" if r["builtin"] else ""), regs or "(nothing)")
    console.print(t)
    for name, why in registry.broken.items():
        console.print(f"[red]failed to load[/red] {name}: {why}", highlight=False)
    return EXIT_OK


