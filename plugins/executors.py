"""Placeholder: being written (see the issue that owns it)."""
