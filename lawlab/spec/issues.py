"""What is wrong with a spec: one issue per field (file, dotted path, what was given, what is
allowed), every one reported at once; and what stops a valid spec from running here.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from lawlab.spec.models import SLUG


@dataclass(frozen=True)
class SpecIssue:
    path: str  # dotted path of the field: methods[0].ratios[1]
    message: str
    given: Any = None
    allowed: str | None = None

    def render(self) -> str:
        parts = [f"{self.path or '(spec)'}: {self.message}"]
        if self.given is not None:
            parts.append(f"given: {_short(self.given)}")
        if self.allowed:
            parts.append(f"allowed: {self.allowed}")
        return "; ".join(parts)


def _short(v: Any) -> str:
    """A given value as it would be written in the spec (TOML and JSON agree for these)."""
    s = json.dumps(v, default=str, ensure_ascii=False)
    return s if len(s) < 80 else s[:77] + "..."


class SpecError(Exception):
    """A spec that must not reach the run. The CLI prints it and exits with code 2."""

    def __init__(self, file: Path | str, issues: Sequence[SpecIssue]):
        self.file = str(file)
        self.issues = list(issues)
        super().__init__(self.render())

    def render(self) -> str:
        n = len(self.issues)
        head = f"{self.file}: {n} problem{'s' if n != 1 else ''} in the spec"
        return "\n".join([head, *(f"  {self.file}: {i.render()}" for i in self.issues)])


# What stops a valid spec from running on this machine, by kind: the label heads the
# kind's line in "cannot run on this machine". A plugin may raise CannotRunHere with a
# kind of its own; it is then shown under its name.
HERE_KINDS = {
    "hub-model": "models that need the hub",
    "hub-dataset": "datasets that need the hub",
    "network-data": "data that needs the network",
    "device": "a device this machine lacks",
    "pack": "offline packs not installed",
    "memory": "models too large for this machine (no GPU)",
}


@dataclass(frozen=True)
class HereIssue:
    """One reason this machine cannot run a valid spec (see ``CannotRunHere``)."""

    kind: str
    item: str  # what is missing: "Qwen/Qwen2.5-0.5B@main", "wikitext2", "cuda"
    path: str  # the spec field that asks for it
    message: str
    fix: str | None = None


def here_lines(issues: Sequence[HereIssue], spec_path: Path | str = "SPEC") -> list[str]:
    """The "cannot run on this machine" section: one line per kind, each item once, then
    each distinct fix once (``{spec}`` in a fix becomes the spec's path)."""
    by_kind: dict[str, list[str]] = {}
    fixes: list[str] = []
    for i in issues:
        items = by_kind.setdefault(i.kind, [])
        if i.item not in items:
            items.append(i.item)
        for fix in (i.fix or "").replace("{spec}", str(spec_path)).splitlines():  # one line per way out
            if fix and fix not in fixes:
                fixes.append(fix)
    lines = [f"{HERE_KINDS.get(kind, kind)}: {', '.join(items)}" for kind, items in by_kind.items()]
    return lines + [f"{'fix' if n == 0 else 'or'}: {f}" for n, f in enumerate(fixes)]


class MachineError(SpecError):
    """A valid spec this machine cannot run (``validate --here``, ``run``): exit code 2."""

    def __init__(self, file: Path | str, here: Sequence[HereIssue]):
        self.here = list(here)
        super().__init__(file, [SpecIssue(i.path, i.message, None, i.fix) for i in here])

    def render(self) -> str:
        head = f"{self.file}: the spec is valid, but this machine cannot run it"
        return "\n".join([head, *(f"  {line}" for line in here_lines(self.here, self.file))])


def fmt_loc(loc: Iterable[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _allowed_keys(model: type[BaseModel], loc: Sequence[Any]) -> list[str] | None:
    """The field names allowed where an unknown key was found."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if isinstance(current, type) and issubclass(current, BaseModel) and part in current.model_fields:
            ann = current.model_fields[part].annotation
            current = _inner_model(ann)
        else:
            return None
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return None


def _inner_model(ann: Any) -> Any:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in getattr(ann, "__args__", ()) or ():
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def issues_from_validation(err: ValidationError, model: type[BaseModel], prefix: str = "") -> list[SpecIssue]:
    issues = []
    for e in err.errors():
        loc = list(e["loc"])
        path = fmt_loc(loc)
        if prefix:
            path = f"{prefix}.{path}" if path and not path.startswith("[") else f"{prefix}{path}"
        kind = e["type"]
        if kind == "extra_forbidden":
            keys = _allowed_keys(model, loc)
            close = difflib.get_close_matches(str(loc[-1]), keys or [], n=1)
            allowed = ", ".join(keys) if keys else None
            msg = f"unknown key {loc[-1]!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
            issues.append(SpecIssue(path, msg, None, allowed))
        elif kind == "missing":
            issues.append(SpecIssue(path, "required field is missing"))
        else:
            msg = e["msg"].removeprefix("Value error, ")
            given = e.get("input")
            if isinstance(given, dict):
                given = None
            allowed = None
            ctx = e.get("ctx") or {}
            if "expected" in ctx:
                allowed = str(ctx["expected"])
            elif "pattern" in ctx:
                allowed = "letters, digits, '.', '_' and '-' (no spaces)" if ctx["pattern"] == SLUG else ctx["pattern"]
            issues.append(SpecIssue(path, msg, given, allowed))
    return issues
