"""User-facing errors.

Everything a user can get wrong (a recipe key, a file path, a checkpoint, a data file) raises a
subclass of :class:`DetlabError`. The CLI prints these as one line and exits non-zero; any other
exception is a bug in detlab and keeps its traceback.
"""

from __future__ import annotations


class DetlabError(Exception):
    """Base class for errors caused by user input (recipe, data, checkpoint, command line)."""


class ConfigError(DetlabError, ValueError):
    """A recipe, an override or a component configuration is invalid."""


class DataError(DetlabError, ValueError):
    """A data file or annotation is missing, unreadable or inconsistent."""


class CheckpointError(DetlabError, ValueError):
    """A checkpoint is missing, unreadable or not a detlab checkpoint."""
