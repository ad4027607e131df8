"""Orbax checkpoints of a train state in a run's workdir: params, optimizer, step, RNG and meta.

Layout: DIR/checkpoints/<step>/{params, train, meta}. `params` is saved on its own so a later
stage can load one model without knowing the optimizer that trained it (that reading, and the
meta, are the model layer's: rlft.models.params_io); `meta` (JSON) holds the model configs by
role, the objective and the data position.
"""

import sys
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

from rlft.errors import CheckpointError
from rlft.models.params_io import CHECKPOINT_ITEMS, checkpoint_dir
from rlft.train.state import TrainState

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

    A step that fails to restore (corrupt or truncated files) is reported on stderr and moved
    aside to `<step>.unreadable` (never deleted), so the run resumes from the step before and
    can save that step again. Raises CheckpointError naming the directories if none restores,
    or, on a multi-process run, at the first unreadable step (move it aside by hand).
    """
    failed = []
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            return restore(manager, abstract_state, step)
        except Exception as e:  # noqa: BLE001 (Orbax/TensorStore raise many kinds)
            where = epath.Path(checkpoint_dir(workdir)) / str(step)
            reason = " ".join(str(e).split())[:200]
            if jax.process_count() > 1:
                raise CheckpointError(
                    f"checkpoint {where} does not restore ({type(e).__name__}: {reason}); move "
                    f"it aside (e.g. to {where}{SET_ASIDE}) and rerun to resume from the one before"
                ) from e
            aside = epath.Path(f"{where}{SET_ASIDE}")
            where.rename(aside)
            failed.append(str(aside))
            print(
                f"rlft: warning: checkpoint step {step} does not restore ({type(e).__name__}: "
                f"{reason}); kept as {aside}; trying the one before",
                file=sys.stderr,
            )
    if failed:
        manager.reload()
        raise CheckpointError(
            f"no checkpoint of {workdir} restores (unreadable, kept: {', '.join(failed)}); "
            "restore them from a copy, or start afresh in a new --workdir"
        )
    return None
