"""The one error type for bad user input: it names the file and the field."""

from __future__ import annotations

from pathlib import Path


class InputError(Exception):
    """Bad input from the user: a file, the field inside it, and what is wrong.

    The CLI prints it as one line and exits non-zero; library callers can catch it.
    """

    def __init__(self, source: str | Path, field: str, problem: str):
        self.source = str(source)
        self.field = field
        self.problem = problem
        super().__init__(f"{self.source}: {field}: {problem}" if field else f"{self.source}: {problem}")
