"""The errors rlft raises on purpose; each message names the field or file and the fix.

This module imports nothing from rlft, so every layer can raise these, and the CLI catches them
to print one line instead of a traceback.
"""

import math
import numbers
from collections.abc import Mapping


class UsageError(Exception):
    """A bad command line (a flag, an input row): the CLI prints it as one line, exit status 2."""


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


def check_ranges(section: str, values: Mapping, rules: dict[str, tuple[str, str]]) -> None:
    """Raise ConfigError for the first of `values` (a dataclass's `vars`) outside its rule:
    "dpo.beta = -1.0: must be > 0 (the KL coefficient; the paper uses 0.05)".

    rules: field name -> (range, why). A range is "finite", "> a", ">= a", or an interval
    "[a, b]", "(a, b]", "[a, b)", "(a, b)", all over finite numbers (bools are not numbers
    here); the prefix "int " ("int >= 1") also requires an integer.
    """
    for name, (rule, why) in rules.items():
        value = values[name]
        if not _within(value, rule):
            integer = rule.startswith("int ")
            kind = "an integer" if integer else "a finite number"
            shown = rule.removeprefix("int ")
            shown = f"in {shown}" if shown[0] in "[(" else shown
            if shown == "finite":
                must = kind
            elif _is_number(value, integer) and math.isfinite(value):
                must = shown
            else:
                must = f"{kind} {shown}"
            raise ConfigError(f"{section}.{name} = {value!r}: must be {must} ({why})")


def _is_number(value: object, integer: bool) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, numbers.Integral if integer else numbers.Real)


def _within(value: object, rule: str) -> bool:
    integer = rule.startswith("int ")
    rule = rule.removeprefix("int ")
    if not _is_number(value, integer) or not math.isfinite(value):
        return False
    if rule == "finite":
        return True
    if rule[0] in "[(":
        lo, hi = (float(x) for x in rule[1:-1].split(","))
        above = lo <= value if rule[0] == "[" else lo < value
        below = value <= hi if rule[-1] == "]" else value < hi
        return above and below
    op, bound = rule.split()
    if op not in (">", ">="):
        raise ValueError(f"range {rule!r}: use '> a', '>= a' or an interval like '[a, b)'")
    return value >= float(bound) if op == ">=" else value > float(bound)


class WorkdirLocked(OSError):
    """Another live rlft process holds the workdir; the message names it and the fix."""
