"""Orbax checkpoints of a train state in a run's workdir: params, optimizer, step, RNG and meta.

Layout: DIR/checkpoints/<step>/{params, train, meta}. `params` is saved on its own so a later
stage can load one model without knowing the optimizer that trained it (that reading, and the
meta, are the model layer's: rlft.models.params_io); `meta` (JSON) holds the model configs by
role, the objective and the data position.
"""

from typing import Any

import orbax.checkpoint as ocp

from rlft.models.params_io import CHECKPOINT_ITEMS, checkpoint_dir
from rlft.train.state import TrainState


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
