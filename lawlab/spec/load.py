"""Reading a spec file: TOML, ``--set`` overrides, the structural pass, then the plugin pass."""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from lawlab.api import CheckContext
from lawlab.spec.issues import SpecError, SpecIssue, fmt_loc, issues_from_validation
from lawlab.spec.models import Spec
from lawlab.spec.resolve import ResolvedSpec, resolve_spec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(path, [SpecIssue("", "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(path, [SpecIssue("", f"cannot read the file: {exc}")]) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib puts "(at line L, column C)" in the message; keep it, it is what users need.
        raise SpecError(path, [SpecIssue("", f"TOML syntax error: {exc}")]) from None


_SEGMENT = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str], file: Path) -> dict[str, Any]:
    """Apply ``--set dotted.key=value`` overrides; the value is read as a TOML value
    (``0.5``, ``[0.1, 0.3]``, ``"text"``), or as a bare string if it is not one."""
    issues = []
    for item in overrides:
        if "=" not in item:
            issues.append(SpecIssue("--set", "expected dotted.key=value", item, "e.g. study.seed=3"))
            continue
        key, text = item.split("=", 1)
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text
        parts: list[str | int] = []
        for name, idx in _SEGMENT.findall(key.strip()):
            parts.append(int(idx) if idx else (int(name) if name.isdigit() else name))
        if not parts:
            issues.append(SpecIssue("--set", "empty key", item))
            continue
        node: Any = raw
        try:
            for p in parts[:-1]:
                node = node[p] if isinstance(p, int) else node.setdefault(p, {})
            if isinstance(parts[-1], int):
                node[parts[-1]] = value
            else:
                node[parts[-1]] = value
        except (IndexError, KeyError, TypeError):
            issues.append(SpecIssue(fmt_loc(parts), "--set names a field that does not exist", item))
    if issues:
        raise SpecError(file, issues)
    return raw


def parse_spec(raw: dict[str, Any], file: Path | str) -> Spec:
    """Structural validation only (no plugins)."""
    try:
        return Spec.model_validate(raw)
    except ValidationError as err:
        raise SpecError(file, issues_from_validation(err, Spec)) from None


def load_spec(
    path: str | Path,
    overrides: Sequence[str] = (),
    *,
    registry: Any = None,
    offline: bool | None = None,
    cache_dir: Path | None = None,
) -> ResolvedSpec:
    """Read, override, validate and resolve a spec file. Raises ``SpecError``."""
    from lawlab import environment
    from lawlab.registry import get_registry

    path = Path(path)
    raw = apply_overrides(read_toml(path), overrides, path)
    spec = parse_spec(raw, path)
    if offline is None:
        offline = environment.is_offline(spec.execution.offline)
    ctx = CheckContext(
        spec_path=path.resolve(),
        offline=offline,
        registry=registry or get_registry(),
        cache_dir=cache_dir or environment.cache_dir(),
        datasets=spec.dataset_refs(),
    )
    return resolve_spec(spec, path, ctx)
