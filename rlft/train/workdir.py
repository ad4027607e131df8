"""A stage workdir is a record of one run: the config that made it, readable in config.json, and
a rerun that would change what its train state means stops before touching anything.

Fields that may change between runs of one workdir (RESUMABLE): the run's length and the logging
and checkpoint cadence (`rlft train` with more total_steps continues a run), the mesh (a resumed
run may be resharded) and `init` (read only at the first start). Everything else (objective,
model, optimizer, the objective's hyperparameters, batch size, seed, data) fixes the state's
shapes or meaning and is compared with the latest checkpoint's record (its meta's `resolved`).
"""

import json

from etils import epath

from rlft.config import RunConfig, resolved
from rlft.errors import ConfigError
from rlft.models.params_io import read_meta
from rlft.train.files import replace_file

CONFIG_FILE = "run_config.json"  # not config.json: that name marks an HF checkpoint directory
RESUMABLE = ("total_steps", "checkpoint_every", "log_every", "mesh", "init")


def _flat(tree, prefix: str = "") -> dict:
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out |= _flat(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    return {prefix: tree}


def differences(saved: dict, current: dict, section: str) -> list[str]:
    """`config.a.b: saved -> current` for every compared field that differs; the objective's
    hyperparameters (`hparams` in the record) are shown under their section name."""
    keep = {k: v for k, v in saved.items() if k not in RESUMABLE}
    now = {k: v for k, v in current.items() if k not in RESUMABLE}
    a, b = _flat(keep), _flat(now)
    shown = []
    for key in sorted(set(a) | set(b)):
        if a.get(key, "(absent)") != b.get(key, "(absent)"):
            name = section + key[len("hparams") :] if key.startswith("hparams") else key
            shown.append(f"config.{name}: {a.get(key, '(absent)')!r} -> {b.get(key, '(absent)')!r}")
    return shown


def check_same_run(run: RunConfig, workdir: str) -> None:
    """Raise ConfigError, listing the differing fields and the fix, if `workdir` holds a
    checkpoint of a run whose recorded config differs from `run` outside RESUMABLE. A
    workdir without checkpoints, or one written before configs were recorded, passes."""
    try:
        step, meta = read_meta(workdir)
    except FileNotFoundError:
        return
    except Exception:  # noqa: BLE001 (an unreadable latest step: the restore reports it)
        return
    saved = meta.get("resolved")
    if saved is None:
        return
    diffs = differences(saved, resolved(run), run.raw.get("objective", run.objective))
    if diffs:
        raise ConfigError(
            f"{workdir} holds a {saved.get('objective')} run (checkpoint step {step}) made with "
            f"another config: {'; '.join(diffs)}. Use a new --workdir, or the recorded values "
            f"(in {workdir}/{CONFIG_FILE})"
        )


def write_config(run: RunConfig, workdir: str) -> None:
    """config.json: the resolved typed config and the config as given, for a person to read."""
    path = epath.Path(workdir)
    path.mkdir(parents=True, exist_ok=True)
    record = {"resolved": resolved(run), "as_given": run.raw}
    text = json.dumps(record, indent=2, sort_keys=True, default=str)
    replace_file(path / CONFIG_FILE, text + "\n")
