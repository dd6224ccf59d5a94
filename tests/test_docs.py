"""The generated spec reference is the committed one (so docs cannot drift)."""

from __future__ import annotations

from pathlib import Path

from lawlab.registry import load_registry
from lawlab.spec.reference import spec_reference

ROOT = Path(__file__).parent.parent


def test_spec_reference_is_up_to_date():
    committed = (ROOT / "docs/spec-reference.md").read_text()
    generated = spec_reference(load_registry())
    assert committed == generated, "regenerate it: lawlab schema --markdown > docs/spec-reference.md"


def test_reference_lists_every_builtin_plugin():
    text = spec_reference(load_registry())
    for name in ("random-prunenet", "slicegpt", "prunenet", "lora", "cross-entropy", "lm-eval", "runtime",
                 "compression-law", "hub", "pack", "ptb", "local"):
        assert f"### `{name}`" in text
