"""One small error hierarchy, so the CLI can turn any expected failure into one clear line.

Every message says what was given, what is allowed, and how to fix it. Anything that is not an
``UnbottleError`` is a bug in unbottle and is allowed to surface as a traceback.
"""

from __future__ import annotations


class UnbottleError(Exception):
    """Base class for every error unbottle raises on purpose."""


class ConfigError(UnbottleError, ValueError):
    """A configuration value or command-line option is invalid."""


class ModelLoadError(UnbottleError):
    """A model spec could not be resolved or its files could not be loaded."""


class BenchError(UnbottleError):
    """A benchmark scenario could not run with the given model and settings."""


class StoreError(UnbottleError):
    """The experiment store could not be opened, read or written."""


class EvalError(UnbottleError):
    """An evaluation could not run with the given model, text, task or settings."""


class PassError(UnbottleError):
    """An optimisation pass cannot run here, or failed on this model."""


class TrainError(UnbottleError):
    """A training run could not go on: its checkpoint could not be written or read, its data ran out."""
