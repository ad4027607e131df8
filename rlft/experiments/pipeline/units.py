"""The pipeline's unit of resumption: a JSON record computed once under a fingerprint.

A unit (SFT of one task and seed, a reward model, an arm, ...) is a directory. Before it
computes anything it writes `unit.json` with the fingerprint of everything that determines its
result (its settings and its inputs' fingerprints); when done it writes `record.json`. A rerun
with the same fingerprint reads the record (or resumes the unit's checkpoints); a rerun whose
settings changed finds a different fingerprint and stops with `WorkdirMismatch`, naming the
unit and the changed fields, so a workdir never mixes results of two configs.
"""

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from typing import Any

from rlft.errors import ConfigError
from rlft.train.workdir import code_version, flatten


class WorkdirMismatch(ConfigError):
    """A unit on disk was computed under other settings than the ones asked for now."""


def fingerprint(settings: Mapping[str, Any]) -> str:
    """A short stable hash of JSON-able settings (key order does not matter)."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def write_json(path: str, value) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(value, f)
    os.replace(path + ".tmp", path)


def _read_json(path: str):
    with open(path) as f:
        return json.load(f)


def claim(unit_dir: str, settings: Mapping[str, Any]) -> str:
    """Check (or write) the unit's fingerprint before any work; returns the fingerprint.

    The settings are taken together with the library's code version (`code_version`), so a
    unit computed by other rlft code is never reused. Raises WorkdirMismatch if `unit_dir` holds
    a unit made under different settings or code.
    """
    settings = {**settings, "code": code_version()}
    fp = fingerprint(settings)
    meta = os.path.join(unit_dir, "unit.json")
    if os.path.exists(meta):
        old = _read_json(meta)
        if old["fingerprint"] != fp:
            new = flatten(json.loads(json.dumps(settings, default=str)))
            was = flatten(old["settings"])
            changed = sorted(k for k in set(new) | set(was) if new.get(k) != was.get(k))
            what = "code" if all(k.startswith("code.") for k in changed) else "settings"
            raise WorkdirMismatch(
                f"{unit_dir} was computed with other {what} (changed: {changed[:8]}); a "
                "workdir is a record of one config and one rlft version: use a new --workdir "
                "(or delete that unit to recompute it)"
            )
    else:
        write_json(
            meta, {"fingerprint": fp, "settings": json.loads(json.dumps(settings, default=str))}
        )
    return fp


def cached(unit_dir: str, settings: Mapping[str, Any], compute: Callable[[], dict]) -> dict:
    """`unit_dir/record.json`, computed once under `settings` (see `claim`)."""
    claim(unit_dir, settings)
    path = os.path.join(unit_dir, "record.json")
    if os.path.exists(path):
        return _read_json(path)
    value = compute()
    write_json(path, value)
    return value
