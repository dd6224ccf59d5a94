"""Finding plugins and what they register.

Plugins are modules exposed through entry points of group ``lawlab``. The built-ins in
``plugins/`` are found exactly the same way as a third-party package's. Which external
plugins load is chosen with two environment variables (comma-separated entry-point or
distribution names):

- ``LAWLAB_PLUGINS``: an allow-list; when set, only these (plus the built-ins) load.
- ``LAWLAB_DISABLE_PLUGINS``: a deny-list; these never load (built-ins included).

``--plugin some.module`` on the command line loads one more module for a single call.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata as md
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from lawlab import hookspecs
from lawlab.api import PluginKind

ENTRY_POINT_GROUP = "lawlab"
BUILTIN_DISTRIBUTION = "lawlab"

KINDS: dict[PluginKind, str] = {
    "pruners": "register_pruners",
    "rft_recipes": "register_rft_recipes",
    "evaluators": "register_evaluators",
    "law_forms": "register_law_forms",
    "model_sources": "register_model_sources",
    "datasets": "register_datasets",
    "architectures": "register_architectures",
    "executors": "register_executors",
    "packs": "register_packs",
    "quantizers": "register_quantizers",
}

# What a registered object is called by: its model_type for adapters, its name otherwise.
_KEY_ATTR = {"architectures": "model_type"}


class PluginError(Exception):
    """A plugin could not be loaded, or two plugins claim the same name."""


@dataclass(frozen=True)
class PluginInfo:
    name: str  # entry-point name, or the module name for --plugin
    module: str
    distribution: str | None
    version: str | None
    builtin: bool


@dataclass(frozen=True)
class Registration:
    kind: PluginKind
    name: str
    obj: Any
    plugin: PluginInfo


@dataclass
class Registry:
    """Everything the loaded plugins registered, by kind and name."""

    plugins: list[PluginInfo] = field(default_factory=list)
    broken: dict[str, str] = field(default_factory=dict)  # plugin name -> why it did not load
    entries: dict[PluginKind, dict[str, Registration]] = field(
        default_factory=lambda: {k: {} for k in KINDS}
    )

    def names(self, kind: PluginKind) -> list[str]:
        return sorted(self.entries[kind])

    def has(self, kind: PluginKind, name: str) -> bool:
        return name in self.entries[kind]

    def get(self, kind: PluginKind, name: str) -> Any:
        try:
            return self.entries[kind][name].obj
        except KeyError:
            raise KeyError(self.unknown(kind, name)) from None

    def unknown(self, kind: PluginKind, name: str) -> str:
        msg = unknown_name_message(kind, name, self.names(kind))
        if self.broken:
            msg += ". Plugins that failed to load: " + "; ".join(f"{n} ({e})" for n, e in self.broken.items())
        return msg

    def registration(self, kind: PluginKind, name: str) -> Registration:
        return self.entries[kind][name]

    def add(self, kind: PluginKind, obj: Any, plugin: PluginInfo) -> None:
        name = getattr(obj, _KEY_ATTR.get(kind, "name"), None)
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin {plugin.name!r} registered a {kind[:-1]} without a name: {obj!r}")
        if name in self.entries[kind]:
            other = self.entries[kind][name].plugin
            raise PluginError(
                f"two plugins register the {kind[:-1].replace('_', ' ')} {name!r}: "
                f"{_describe(other)} and {_describe(plugin)}. Uninstall one, or keep one out "
                f"with LAWLAB_DISABLE_PLUGINS={plugin.name}"
            )
        self.entries[kind][name] = Registration(kind, name, obj, plugin)

    def provides(self, plugin: PluginInfo) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for kind, regs in self.entries.items():
            names = [n for n, r in regs.items() if r.plugin == plugin]
            if names:
                out[kind] = sorted(names)
        return out

    def version_of(self, kind: PluginKind, name: str) -> dict[str, Any]:
        """Provenance of one registered thing: its plugin, distribution and version."""
        p = self.entries[kind][name].plugin
        return {"name": name, "plugin": p.name, "distribution": p.distribution, "version": p.version}


def _describe(p: PluginInfo) -> str:
    where = f"{p.distribution} {p.version}" if p.distribution else "loaded with --plugin"
    return f"{p.name!r} ({p.module}, {where})"


def unknown_name_message(kind: str, name: str, known: Iterable[str]) -> str:
    known = sorted(known)
    what = kind[:-1].replace("_", " ")
    msg = f"unknown {what} {name!r}; registered: {', '.join(known) or '(none)'}"
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        msg += f". Did you mean {close[0]!r}?"
    return msg


def _split_env(var: str) -> set[str]:
    return {s.strip() for s in os.environ.get(var, "").split(",") if s.strip()}


def _entry_points() -> list[md.EntryPoint]:
    return sorted(md.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)


def load_registry(extra_modules: Iterable[str] = ()) -> Registry:
    """Load the entry-point plugins (filtered by the environment) and ``extra_modules``,
    call their hooks, and collect what they register."""
    allow = _split_env("LAWLAB_PLUGINS")
    deny = _split_env("LAWLAB_DISABLE_PLUGINS")
    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    infos: dict[str, PluginInfo] = {}
    broken: dict[str, str] = {}

    for ep in _entry_points():
        dist = ep.dist.name if ep.dist else None
        builtin = dist == BUILTIN_DISTRIBUTION
        if ep.name in deny or (dist and dist in deny):
            continue
        if allow and not builtin and ep.name not in allow and dist not in allow:
            continue
        info = PluginInfo(ep.name, ep.value, dist, ep.dist.version if ep.dist else None, builtin)
        try:
            module = ep.load()
        except Exception as exc:
            # One broken package must not take every study down; it is listed by
            # `lawlab plugins` and named whenever a name it might provide is missing.
            broken[ep.name] = f"{ep.value} from {dist}: {type(exc).__name__}: {exc}"
            continue
        _register(pm, module, info, infos)

    for modname in extra_modules:
        try:
            module = importlib.import_module(modname)
        except Exception as exc:
            raise PluginError(f"--plugin {modname!r} could not be imported: {exc}") from exc
        _register(pm, module, PluginInfo(modname, modname, None, None, False), infos)

    registry = Registry(plugins=list(infos.values()), broken=broken)
    for kind, hook_name in KINDS.items():
        hook = getattr(pm.hook, hook_name)
        for impl in hook.get_hookimpls():
            info = infos[impl.plugin_name]
            impl.function(register=lambda obj, kind=kind, info=info: registry.add(kind, obj, info))
    return registry


def _register(pm: pluggy.PluginManager, module: Any, info: PluginInfo, infos: dict[str, PluginInfo]) -> None:
    if info.name in infos:
        raise PluginError(f"two plugins are named {info.name!r}: {_describe(infos[info.name])} and {_describe(info)}")
    pm.register(module, name=info.name)
    infos[info.name] = info


_cached: Registry | None = None


def get_registry(extra_modules: Iterable[str] = ()) -> Registry:
    """The registry for this process, loaded on first use (``extra_modules`` forces a reload)."""
    global _cached
    extra = tuple(extra_modules)
    if _cached is None or extra:
        _cached = load_registry(extra)
    return _cached


def reset_registry() -> None:
    """Forget the loaded registry, so the next get_registry() loads the installed plugins
    afresh (a test that loaded --plugin modules puts the process back as it was)."""
    global _cached
    _cached = None
