"""Orbax checkpoints of a train state in a run's workdir: params, optimizer, step, RNG and meta.

Layout: DIR/checkpoints/<step>/{params, train, meta}. `params` is saved on its own so a later
stage can load one model without knowing the optimizer that trained it (that reading, and the
meta, are the model layer's: rlft.models.params_io); `meta` (JSON) holds the model configs by
role, the objective and the data position.
"""

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import jax
import orbax.checkpoint as ocp
from etils import epath

from rlft.errors import CheckpointError
from rlft.models.params_io import CHECKPOINT_ITEMS, checkpoint_dir
from rlft.models.quiet_restore import quiet_failed_restore
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
    out = manager.restore(  # only through newest_good, which quiets a failure's stray reads
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
    failed = []
    for step in sorted(manager.all_steps(), reverse=True):
        where = epath.Path(checkpoint_dir(workdir)) / str(step)
        try:
            with quiet_failed_restore(str(where)):  # its stray reads print nothing
                return restore_step(step)
        except CheckpointError:
            raise
        except Exception as e:  # noqa: BLE001 (Orbax/TensorStore raise many kinds)
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
    if not failed:
        return None
    if set_aside:
        manager.reload()
    fix = "restore them from a copy" + (", or start afresh in a new --workdir" if set_aside else "")
    state = "kept" if set_aside else "left in place"
    raise CheckpointError(
        f"no checkpoint of {workdir} restores (unreadable, {state}: {', '.join(failed)}); {fix}"
    )
