"""Errors a user can act on.

Every problem with the user's input (a file, a flag, a model path) raises a subclass of
:class:`DataplanError`. The CLI turns it into a one-line message and exit code 2; the Python API
lets it propagate so callers can catch it.
"""

from __future__ import annotations

from pathlib import Path


class DataplanError(Exception):
    """Base class for errors caused by the user's input or environment, not by a bug."""

    exit_code = 2


class InputError(DataplanError):
    """Bad content in an input file, located by file, line (1-based) and field.

    >>> str(InputError("empty answer", path="task.jsonl", line=7, field="answer"))
    'task.jsonl:7: field "answer": empty answer'
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message
        self.path = None if path is None else str(path)
        self.line = line
        self.field = field
        super().__init__(self._format())

    def _format(self) -> str:
        where = ""
        if self.path is not None:
            where = self.path
            if self.line is not None:
                where += f":{self.line}"
            where += ": "
        if self.field is not None:
            where += f'field "{self.field}": '
        return where + self.message


class ConfigError(DataplanError):
    """An invalid option value or combination of options."""


class ModelLoadError(DataplanError):
    """A model or adapter that cannot be found or loaded."""


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (library messages can span many lines)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
