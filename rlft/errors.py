"""The errors rlft raises on purpose; each message names the field or file and the fix.

This module imports nothing from rlft, so every layer can raise these, and the CLI catches them
to print one line instead of a traceback.
"""


class ConfigError(ValueError):
    """A config that cannot run; the message names the field and the fix."""


class CheckpointError(FileNotFoundError):
    """A checkpoint that is missing or does not fit the config; the message says the fix."""


class ModelClassError(CheckpointError):
    """A reward-model checkpoint whose meta does not say its class (`reward.model_class`)."""


class BatchError(ValueError):
    """A batch that lacks a key its objective reads; the message names the key and objective."""


class NonFiniteLossError(FloatingPointError):
    """Loss became NaN/inf; the message names the step and the last good checkpoint."""


class RunStopped(Exception):
    """A signal (SIGTERM, Ctrl-C) stopped training after a checkpoint was saved; rerunning the
    same command resumes. Raised by `rlft reproduce`, whose units must not go on with a
    half-trained model."""
