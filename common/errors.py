"""Errors a person can act on: each renders as one line, with an exit code."""

from __future__ import annotations


class BatchfleetError(Exception):
    """Base for every error shown to a user as one line (no traceback)."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def line(self) -> str:
        """The single line printed for this error."""
        text = " ".join(self.message.split())
        if self.hint:
            text = f"{text}; {self.hint}"
        return text


class UsageError(BatchfleetError):
    """A bad flag, spec or setting: refused before anything runs."""

    exit_code = 2


class SpecError(UsageError):
    """The component or job YAML is malformed or names unknown fields."""


class EntryScriptError(BatchfleetError):
    """The entry script cannot be loaded or does not fit the contract."""

    exit_code = 2


class InputError(BatchfleetError):
    """An input location is missing, empty or unreadable."""

    exit_code = 2


class StorageError(BatchfleetError):
    """A store, input or output location cannot be read or written."""


class BrokerError(BatchfleetError):
    """The message broker cannot be reached or refused us."""


class JobFailed(BatchfleetError):
    """The job ran and failed: a threshold was exceeded, init failed, or it stalled."""


class BadDataError(BatchfleetError):
    """An input file cannot be parsed; the batch's items count as failed, the worker goes on."""
