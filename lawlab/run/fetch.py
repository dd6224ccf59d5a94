"""``lawlab fetch SPEC``: download everything a study needs from the hub into the local
caches, so that it then runs with ``HF_HUB_OFFLINE=1`` on a machine with no network.

The usual cluster workflow: fetch on a login node, run on compute nodes that share its
``HF_HOME``. Each model source, dataset and evaluator downloads its own files (its
``fetch``); this module only walks the spec and shows the progress.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lawlab.api import Progress, RunContext


@dataclass
class Fetched:
    """What ``fetch_spec`` did: (what, result) per item, and what needed nothing."""

    items: list[tuple[str, str]] = field(default_factory=list)
    nothing: list[str] = field(default_factory=list)


class RichProgress(Progress):
    """One bar per item, in bytes when the size is known."""

    def __init__(self, progress: Any):
        self.progress = progress
        self.task: Any = None

    def start(self, description: str, total: int | None = None) -> None:
        self.task = self.progress.add_task(description, total=total)

    def advance(self, n: int = 1) -> None:
        if self.task is not None:
            self.progress.advance(self.task, n)

    def done(self) -> None:
        if self.task is not None:
            total = self.progress.tasks[self.task].total
            if total is not None:
                self.progress.update(self.task, completed=total)

    def log(self, message: str) -> None:
        self.progress.console.print(message, markup=False, highlight=False)


def _items(resolved: Any, registry: Any) -> list[tuple[str, Any, Any]]:
    """(label, plugin, params) of every model, dataset and evaluator of the spec."""
    spec = resolved.spec
    out = [(f"model {m.name}", registry.get("model_sources", m.source), resolved.params[f"models[{i}].params"])
           for i, m in enumerate(spec.models)]
    for path, params in resolved.params.items():
        if path.startswith("datasets.") and path.endswith(".params"):
            name = path[len("datasets."):-len(".params")]
            plugin_name = spec.datasets[name].loader if name in spec.datasets else name
            out.append((f"dataset {name}", registry.get("datasets", plugin_name), params))
    for i, e in enumerate(spec.evaluators):
        out.append((f"evaluator {e.key}", registry.get("evaluators", e.evaluator), resolved.params[f"evaluators[{i}].params"]))
    return out


def fetch_spec(resolved: Any, registry: Any, progress: Progress | None = None) -> Fetched:
    """Call every plugin's ``fetch`` with a connected run context."""
    result = Fetched()
    with tempfile.TemporaryDirectory(prefix="lawlab-fetch-") as tmp:
        from lawlab import environment

        ctx = RunContext(
            seed=resolved.spec.study.seed, device="cpu", dtype="float32", cache_dir=environment.cache_dir(),
            work_dir=Path(tmp), offline=False, registry=registry, progress=progress or Progress(),
            spec_path=resolved.path.resolve(), datasets=resolved.spec.dataset_refs(),
        )
        for label, plugin, params in _items(resolved, registry):
            got = plugin.fetch(params, ctx)
            if got is None:
                result.nothing.append(label)
            else:
                result.items.append((label, got))
    return result


def cmd_fetch(args: Any) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
    from rich.table import Table

    from lawlab import environment
    from lawlab.errors import UsageError
    from lawlab.registry import get_registry
    from lawlab.spec.load import load_spec

    console = Console(soft_wrap=True)
    if environment.is_offline("auto"):
        from lawlab.models.hub import offline_reason

        raise UsageError(f"lawlab fetch needs the hub, and {offline_reason()}: run it where the hub answers, "
                         "with the HF_HOME the study will read (LAWLAB_OFFLINE=0 skips the reachability test)")
    registry = get_registry(args.plugin)
    resolved = load_spec(args.spec, args.overrides, registry=registry, offline=False)
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False, disable=args.quiet) as bars:
        fetched = fetch_spec(resolved, registry, RichProgress(bars))
    from lawlab.models.hub import cache_root

    t = Table(title=f"Fetched into {cache_root()}", title_justify="left")
    t.add_column("item")
    t.add_column("commit / what")
    for label, got in fetched.items:
        t.add_row(label, got)
    console.print(t)
    if fetched.nothing:
        console.print("Needs no download: " + ", ".join(fetched.nothing), highlight=False)
    console.print(f"The study can now run without a network: HF_HUB_OFFLINE=1 lawlab run {args.spec}", highlight=False)
    return 0


def add_commands(sub: Any) -> None:
    from lawlab.cli.main import subcommand

    p = subcommand(sub, "fetch", "Download the hub models and data a spec needs, so it then runs with HF_HUB_OFFLINE=1.",
                   "lawlab fetch specs/my-study.toml && HF_HUB_OFFLINE=1 lawlab run specs/my-study.toml")
    p.add_argument("spec", type=Path, help="the study spec (TOML)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a spec field, as for lawlab run")
    p.set_defaults(func=cmd_fetch)
