"""Exceptions raised by LOREAL. Each also derives from the built-in a caller would expect."""
from __future__ import annotations


class LorealError(Exception):
    """Base class of every error LOREAL raises on purpose."""


class ConfigError(LorealError, ValueError):
    """A setting or an argument has a value LOREAL cannot use."""


class CheckpointError(LorealError, ValueError):
    """A checkpoint file is unreadable, of another kind, or does not fit the model."""


class MissingFileError(LorealError, FileNotFoundError):
    """A file LOREAL needs (weights, split, bank, stage checkpoint) is not where it was told."""


class RunLockedError(LorealError, RuntimeError):
    """Another run holds an output folder. ``live`` is True when that run is known to be alive, None when this
    host cannot tell (its owner runs on another host)."""

    def __init__(self, message: str, live: bool | None = True):
        super().__init__(message)
        self.live = live
