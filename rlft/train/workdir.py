"""A stage workdir is a record of one run: the config that made it, readable in config.json, and
a rerun that would change what its train state means stops before touching anything.

Fields that may change between runs of one workdir (RESUMABLE): the run's length and the logging
and checkpoint cadence (`rlft train` with more total_steps continues a run), the mesh (a resumed
run may be resharded) and `init` (read only at the first start). Everything else (objective,
model, optimizer, the objective's hyperparameters, batch size, seed, data) fixes the state's
shapes or meaning and is compared with the latest checkpoint's record (its meta's `resolved`).
"""

import contextlib
import datetime
import fcntl
import functools
import hashlib
import json
import os
import socket
import sys
from collections.abc import Mapping

from etils import epath

from rlft import __version__
from rlft.config import RunConfig, resolved
from rlft.errors import ConfigError, WorkdirLocked
from rlft.models.params_io import read_meta
from rlft.train.files import replace_file

LOCK_FILE = ".rlft.lock"
CONFIG_FILE = "run_config.json"  # not config.json: that name marks an HF checkpoint directory
RESUMABLE = ("total_steps", "checkpoint_every", "log_every", "mesh", "init")


def source_hash(root: str) -> str:
    """16 hex digits of sha256 over every `*.py` file under `root`: its path relative to `root`
    and its bytes, in sorted path order. Other files (docs, data) do not enter it."""
    paths = []
    for folder, _, files in os.walk(root):
        paths += [os.path.relpath(os.path.join(folder, f), root) for f in files if f[-3:] == ".py"]
    digest = hashlib.sha256()
    for rel in sorted(p.replace(os.sep, "/") for p in paths):
        with open(os.path.join(root, rel), "rb") as f:
            digest.update(rel.encode() + b"\0" + f.read() + b"\0")
    return digest.hexdigest()[:16]


@functools.cache
def code_version() -> dict:
    """{"rlft": the package version, "source_sha256": `source_hash` of the rlft package}.

    Any edit to the library's code changes it; edits to docs, tests or configs do not. Recorded
    in every workdir's run_config.json and, through `rlft.experiments.pipeline.units.claim`, in
    every reproduce unit's fingerprint.
    """
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the rlft package
    return {"rlft": __version__, "source_sha256": source_hash(root)}


def flatten(tree: Mapping, prefix: str = "") -> dict:
    """{"a.b": leaf} of nested mappings (also the reproduce units' settings diff)."""
    out = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out |= flatten(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def differences(saved: dict, current: dict, section: str) -> list[str]:
    """`config.a.b: saved -> current` for every compared field that differs; the objective's
    hyperparameters (`hparams` in the record) are shown under their section name."""
    keep = {k: v for k, v in saved.items() if k not in RESUMABLE}
    now = {k: v for k, v in current.items() if k not in RESUMABLE}
    a, b = flatten(keep), flatten(now)
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
    if saved.get("objective") != run.objective:  # the rest differs as a consequence
        diffs = [f"config.objective: {saved.get('objective')!r} -> {run.objective!r}"]
    else:
        diffs = differences(saved, resolved(run), run.raw.get("objective", run.objective))
    if diffs:
        raise ConfigError(
            f"{workdir} holds a {saved.get('objective')} run (checkpoint step {step}) made with "
            f"another config: {'; '.join(diffs)}. Use a new --workdir, or the recorded values "
            f"(in {workdir}/{CONFIG_FILE})"
        )


def write_config(run: RunConfig, workdir: str) -> None:
    """run_config.json: the resolved typed config, the config as given and the code version
    (`code_version`), for a person to read. A resumed run may run newer code; the file then
    names the code of the latest start."""
    path = epath.Path(workdir)
    path.mkdir(parents=True, exist_ok=True)
    record = {"resolved": resolved(run), "as_given": run.raw, "code": code_version()}
    text = json.dumps(record, indent=2, sort_keys=True, default=str)
    replace_file(path / CONFIG_FILE, text + "\n")


@contextlib.contextmanager
def workdir_lock(workdir: str):
    """Hold an exclusive lock on a local workdir (fcntl.flock on WORKDIR/.rlft.lock) while the
    block runs; the file names the holder (pid, host, command, start time).

    The kernel releases the lock when its process dies (even by SIGKILL), so a lock file left by
    a dead process never blocks: only a live holder does. Raises WorkdirLocked naming it.
    Remote workdirs (gs://...) and processes other than 0 of a multi-process run take no lock.
    """
    import jax  # noqa: PLC0415 (process_index; the caller has jax up already)

    if "://" in str(workdir) or jax.process_index() != 0:
        yield
        return
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "unknown"
            raise WorkdirLocked(
                f"{workdir} is in use by another rlft process ({holder}); wait for it to end, "
                "or stop it (kill -TERM <pid> saves a checkpoint) and rerun"
            ) from None
        holder = (
            f"pid {os.getpid()} on {socket.gethostname()}, since "
            f"{datetime.datetime.now().isoformat(timespec='seconds')}: {' '.join(sys.argv)[:300]}"
        )
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder.encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
