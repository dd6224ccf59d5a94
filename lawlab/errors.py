"""Errors the command line turns into a message and exit code 2 (no traceback)."""


class UsageError(Exception):
    """Bad input that is not a spec: a folder that is not a study, a missing results file."""
