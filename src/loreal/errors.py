"""Exceptions raised by LOREAL. Each also derives from the built-in a caller would expect."""


class LorealError(Exception):
    """Base class of every error LOREAL raises on purpose."""


class ConfigError(LorealError, ValueError):
    """A setting or an argument has a value LOREAL cannot use."""


class CheckpointError(LorealError, ValueError):
    """A checkpoint file is unreadable, of another kind, or does not fit the model."""


class MissingFileError(LorealError, FileNotFoundError):
    """A file LOREAL needs (weights, split, bank, stage checkpoint) is not where it was told."""
