"""Orbax checkpoints of a train state in a run's workdir: params, optimizer, step, RNG and meta.

Layout: DIR/checkpoints/<step>/{params, train, meta}. `params` is saved on its own so a later
stage can load one model without knowing the optimizer that trained it (that reading, and the
meta, are the model layer's: rlft.models.params_io); `meta` (JSON) holds the model configs by
role, the objective and the data position.
"""

import logging
import sys
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import jax
import orbax.checkpoint as ocp
from etils import epath

from rlft.errors import CheckpointError
from rlft.models.params_io import CHECKPOINT_ITEMS, checkpoint_dir
from rlft.train.state import TrainState

T = TypeVar("T")
SET_ASIDE = ".unreadable"  # suffix of a step directory that failed to restore (kept, not deleted)


def make_manager(workdir: str, max_to_keep: int = 2) -> ocp.CheckpointManager:
    """The run's checkpoint manager; it creates WORKDIR/checkpoints on the first save."""
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    return ocp.CheckpointManager(
        checkpoint_dir(workdir), options=options, item_names=CHECKPOINT_ITEMS
    )


def save(
    manager: ocp.CheckpointManager, step: int, state: TrainState, meta: dict[str, Any]
) -> None:
    """Save at `step` (the driver's loop step; for PPO an iteration, not an update)."""
    train = {"step": state.step, "opt_state": state.opt_state, "rng": state.rng}
    manager.save(
        step,
        args=ocp.args.Composite(
            params=ocp.args.StandardSave(state.params),
            train=ocp.args.StandardSave(train),
            meta=ocp.args.JsonSave(meta),
        ),
        force=True,
    )


def restore(manager: ocp.CheckpointManager, abstract_state: TrainState, step: int | None = None):
    """(state, meta) from the latest (or given) step, placed like `abstract_state`."""
    step = manager.latest_step() if step is None else step
    abstract_train = {
        "step": abstract_state.step,
        "opt_state": abstract_state.opt_state,
        "rng": abstract_state.rng,
    }
    out = manager.restore(
        step,
        args=ocp.args.Composite(
            params=ocp.args.StandardRestore(abstract_state.params),
            train=ocp.args.StandardRestore(abstract_train),
            meta=ocp.args.JsonRestore(),
        ),
    )
    train = out["train"]
    state = TrainState(
        step=train["step"], params=out["params"], opt_state=train["opt_state"], rng=train["rng"]
    )
    return state, out["meta"]


def restore_newest_good(manager: ocp.CheckpointManager, abstract_state: TrainState, workdir: str):
    """(state, meta) from the newest step that restores, or None if there is no checkpoint.

    A run resumes: an unreadable step is set aside (`newest_good`) so it can save that step
    again. Raises CheckpointError as `newest_good` does.
    """
    return newest_good(
        manager, workdir, lambda step: restore(manager, abstract_state, step), set_aside=True
    )


def newest_good(
    manager: ocp.CheckpointManager,
    workdir: str,
    restore_step: Callable[[int], T],
    *,
    set_aside: bool,
) -> T | None:
    """`restore_step(step)` of the newest step it restores, or None if there is no checkpoint.

    A step whose restore raises (corrupt or truncated files) is reported on stderr and skipped:
    with `set_aside` (a resuming run) it is moved aside to `<step>.unreadable` (never deleted);
    without (sampling, evaluating: they only read the workdir) it is left in place. A
    CheckpointError from `restore_step` (a checkpoint that does not fit) is raised at once.
    Raises CheckpointError naming the directories if none restores, or, on a multi-process
    run (either policy), at the first unreadable step (move it aside by hand).
    """
    quiet_abandoned_reads()  # before any restore: a failed one's stray reads land at once
    failed = []
    for step in sorted(manager.all_steps(), reverse=True):
        where = epath.Path(checkpoint_dir(workdir)) / str(step)
        _restoring[0] += 1
        try:
            return restore_step(step)
        except CheckpointError:
            raise
        except Exception as e:  # noqa: BLE001 (Orbax/TensorStore raise many kinds)
            _abandoned_dirs.add(str(where).rstrip("/") + "/")  # as the read errors name it
            reason = f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"
            if jax.process_count() > 1:  # every process must agree on the step it uses, and
                # a restore that failed in one may leave the others inside its collectives
                then = "resume from" if set_aside else "use"
                raise CheckpointError(
                    f"checkpoint {where} does not restore ({reason}); move it aside (e.g. to "
                    f"{where}{SET_ASIDE}) and rerun to {then} the one before"
                ) from e
            note = "left in place at"
            if set_aside:
                aside = epath.Path(f"{where}{SET_ASIDE}")
                where.rename(aside)
                where, note = aside, "kept as"
            failed.append(str(where))
            print(
                f"rlft: warning: checkpoint step {step} does not restore ({reason}); "
                f"{note} {where}; trying the one before",
                file=sys.stderr,
            )
        finally:
            _restoring[0] -= 1
    if not failed:
        return None
    if set_aside:
        manager.reload()
    fix = "restore them from a copy" + (", or start afresh in a new --workdir" if set_aside else "")
    state = "kept" if set_aside else "left in place"
    raise CheckpointError(
        f"no checkpoint of {workdir} restores (unreadable, {state}: {', '.join(failed)}); {fix}"
    )


# Step directories (absolute, a trailing "/") whose restore failed in this process, and the
# restores under way: what the filters of `quiet_abandoned_reads` recognise.
_abandoned_dirs: set[str] = set()
_restoring = [0]


def _is_abandoned_read(unraisable) -> bool:
    """Whether an unraisable exception (`sys.unraisablehook`'s argument) is a read of a failed
    restore posting its result to Orbax's closed event loop: RuntimeError('Event loop is
    closed') raised in asyncio's `call_soon_threadsafe`, while a restore runs or after one
    failed."""
    if not (_restoring[0] or _abandoned_dirs) or unraisable.exc_type is not RuntimeError:
        return False
    if str(unraisable.exc_value) != "Event loop is closed":
        return False
    frames = traceback.extract_tb(unraisable.exc_traceback)
    return any(f.name == "call_soon_threadsafe" for f in frames)


class _AbandonedReadFilter(logging.Filter):
    """Drops asyncio's "exception was never retrieved" records of reads of a step directory
    whose restore failed (the path is in the read's error)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "exception was never retrieved" not in record.getMessage() or not record.exc_info:
            return True
        error = str(record.exc_info[1])
        return not any(d in error for d in _abandoned_dirs)


def quiet_abandoned_reads() -> None:
    """Install (once per process) a `sys.unraisablehook` and a filter on the `asyncio` logger
    that drop the noise a failed restore leaves behind; every other unraisable exception goes
    to the hook before it, every other record through.

    Why: Orbax runs a restore on an event loop of its own and closes it when the first read
    fails (a corrupt step). The TensorStore reads still in flight then finish in their own
    threads: each posts its result to the closed loop and Python prints a "RuntimeError: Event
    loop is closed" traceback, or, finished before the close but never awaited, asyncio logs
    "Future exception was never retrieved" with the read's error (64 tracebacks, or 23
    records, around `newest_good`'s one-line warning for a corrupt tiny-model step, varying
    with timing; orbax-checkpoint 0.12.8, tensorstore 0.1.86). Those reads belong to the
    restore that was given up.
    """
    previous = sys.unraisablehook
    if not getattr(previous, "rlft_quiet_abandoned_reads", False):

        def hook(unraisable) -> None:
            if not _is_abandoned_read(unraisable):
                previous(unraisable)

        hook.rlft_quiet_abandoned_reads = True
        sys.unraisablehook = hook
    logger = logging.getLogger("asyncio")
    if not any(isinstance(f, _AbandonedReadFilter) for f in logger.filters):
        logger.addFilter(_AbandonedReadFilter())
