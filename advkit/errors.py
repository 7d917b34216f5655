"""Errors a user can cause. The CLI prints them as one line (exit 1); anything else is a bug."""

from __future__ import annotations


class AdvkitError(Exception):
    """A mistake in the user's input, files or settings, explained in one line."""


class CheckpointError(AdvkitError):
    """A checkpoint is missing, corrupt, unsafe to load or does not match its architecture."""


class DatasetError(AdvkitError):
    """A dataset name, path or file cannot be read as the format it claims."""


class ReportError(AdvkitError):
    """A report file is unreadable, or conflicts with the run being written."""


class ConfigError(AdvkitError):
    """A config file or option value is invalid."""


class QueryBudgetExceeded(AdvkitError):
    """A sample was queried beyond its budget: the attack must stop querying it first."""


class SettingsError(AdvkitError, ValueError):
    """An attack or method setting is unknown or out of range (a ValueError for library callers)."""


class DetectorError(AdvkitError):
    """A detector file is unreadable, was fitted for another model, or its inputs (layers, reports) are unusable."""


def one_line(exc: AdvkitError | OSError) -> str:
    """The one line the CLI prints for a mistake: an AdvkitError's message, or an OSError's reason and file, with
    any line breaks (a third-party reason quoted in the message) folded into spaces.

        >>> one_line(AdvkitError("not a readable pickle (UnpicklingError: A load persistent id instruction,\\nbut no ...)"))
        'not a readable pickle (UnpicklingError: A load persistent id instruction, but no ...)'
    """
    text = str(exc) if isinstance(exc, AdvkitError) else f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")
    return " ".join(text.split())
