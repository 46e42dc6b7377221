"""Typed errors. The CLI turns these into one-line messages; nothing here prints."""

from __future__ import annotations

__all__ = [
    "SteeruncError",
    "InputError",
    "ModelError",
    "VectorsError",
]


class SteeruncError(Exception):
    """Base class of every error steerunc raises on purpose."""


class InputError(SteeruncError, ValueError):
    """A user file or record is malformed; says which file and line when known."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None) -> None:
        self.message = message
        self.path = path
        self.line = line
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        elif line is not None:
            where = f"line {line}: "
        super().__init__(where + message)


class ModelError(SteeruncError):
    """A model cannot be loaded or does not fit what was asked of it."""


class VectorsError(SteeruncError):
    """A steering-vector file is missing, malformed, or made for another model."""
