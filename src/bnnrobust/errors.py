"""The exception every user-facing error of bnnrobust derives from.

Each error message says what was wrong, what was expected, and what to do about it.
"""

from __future__ import annotations


class BnnRobustError(Exception):
    """Base class of every error bnnrobust raises on bad input."""


class DatasetError(BnnRobustError):
    """A dataset is missing, corrupt, or cannot be read."""


class ModelError(BnnRobustError):
    """An unknown model name or a bad model parameter."""


class CheckpointError(BnnRobustError):
    """A file that is not a valid bnnrobust checkpoint for the requested use."""


class TrainingError(BnnRobustError):
    """Bad training options."""
