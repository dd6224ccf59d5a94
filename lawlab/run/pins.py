"""The commits a study's hub revisions resolve to, kept in its store and compared when it
resumes.

A spec names a revision (``main``); cell keys hold that name, not the commit, so a study
can be resumed offline. When ``main`` has moved since the stored cells ran, the new cells
would come from other weights or data than the old ones. ``lawlab run`` then stops and
says which, unless the user allows the mix (``--allow-revision-change``).
"""

from __future__ import annotations

from typing import Any

from lawlab.api import CannotRunHere, CheckContext, CheckFailed

META_KEY = "hub_commits"


def current_pins(resolved: Any, ctx: CheckContext) -> dict[str, str]:
    """``{"models.NAME" | "datasets.NAME": commit}`` for every hub model and dataset the
    spec uses whose commit can be known here."""
    spec, registry = resolved.spec, ctx.registry
    pins: dict[str, str | None] = {}
    for i, m in enumerate(spec.models):
        source, params = registry.get("model_sources", m.source), resolved.params.get(f"models[{i}].params")
        if params is not None:
            pins[f"models.{m.name}"] = _pin(source, params, ctx)
    for path, params in resolved.params.items():
        if path.startswith("datasets.") and path.endswith(".params"):
            name = path[len("datasets."):-len(".params")]
            plugin = registry.get("datasets", spec.datasets[name].loader if name in spec.datasets else name)
            pins[f"datasets.{name}"] = _pin(plugin, params, ctx)
    return {k: v for k, v in pins.items() if v}


def _pin(plugin: Any, params: Any, ctx: CheckContext) -> str | None:
    try:
        return plugin.pin(params, ctx)
    except (CannotRunHere, CheckFailed):  # validation already said why
        return None


def changed_pins(stored: dict[str, str], now: dict[str, str]) -> dict[str, tuple[str, str]]:
    """What resolves to another commit now: ``{item: (stored, now)}``."""
    return {k: (stored[k], c) for k, c in now.items() if k in stored and stored[k] != c}


def check_pins(resolved: Any, ctx: CheckContext, store: Any, *, allow: bool) -> dict[str, tuple[str, str]]:
    """Compare today's commits with those the stored cells used, refuse a mix unless
    ``allow``, and record today's. Returns what changed (allowed)."""
    from lawlab.errors import UsageError

    stored = store.meta(META_KEY) or {}
    now = current_pins(resolved, ctx)
    changed = changed_pins(stored, now)
    done = any(status == "done" for status in store.status_of().values())
    if changed and done and not allow:
        lines = [f"  {item}: stored cells used {old[:12]}, the revision now resolves to {new[:12]}"
                 for item, (old, new) in changed.items()]
        raise UsageError(
            "a hub revision resolves to another commit than the stored cells used:\n" + "\n".join(lines)
            + "\nRun with --allow-revision-change to go on (the results then mix the two), or give the study a "
            "new output folder; revision = \"<commit>\" in a spec pins one commit for good."
        )
    store.set_meta(META_KEY, {**stored, **now})
    return changed if done else {}
