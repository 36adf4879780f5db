"""Errors a user can fix. The CLI turns any `LungsegError` into one line on stderr and exit 2."""

from __future__ import annotations

from pathlib import Path


class LungsegError(Exception):
    """A problem with the user's input or usage (not a bug in lungseg)."""

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = Path(path) if path is not None else None
        super().__init__(f"{self.path}: {message}" if path is not None else message)


class InputError(LungsegError):
    """An input file or folder that cannot be read or used as it is."""


class GeometryError(LungsegError):
    """Shapes, affines or spacings that do not fit together."""


class LabelError(LungsegError):
    """A label map whose values or content cannot be used."""


class OutputError(LungsegError):
    """An output that would overwrite an input or an existing file."""


class LungsegWarning(UserWarning):
    """Something lungseg changed or guessed about the input (resampled, chose a series)."""
