"""Objectives by name: each entry is (loss_fn, hyperparameter class, roles it trains).

Every loss_fn is `loss_fn(params, batch, models, hp) -> LossOut`, with params a dict keyed by
role holding unboxed param trees. The train step picks one entry at trace time. Each objective
module declares the batch keys its loss reads (`BATCH_KEYS`); the driver checks a batch against
them before the jitted step sees it (`check_batch`).
"""

from collections.abc import Mapping

from rlft.errors import BatchError
from rlft.objectives import dpo, ppo, reward, sft
from rlft.objectives.base import LossOut, Models

OBJECTIVES = {
    "sft": (sft.loss_fn, sft.SftHparams, ("policy",)),
    "reward": (reward.loss_fn, reward.RewardHparams, ("reward",)),
    "dpo": (dpo.loss_fn, dpo.DpoHparams, ("policy",)),
    "ppo": (ppo.loss_fn, ppo.PpoHparams, ("policy", "critic")),
}

BATCH_KEYS = {
    "sft": sft.BATCH_KEYS,
    "reward": reward.BATCH_KEYS,
    "dpo": dpo.BATCH_KEYS,
    "ppo": ppo.BATCH_KEYS,
}

# Other names a config may give an objective: `mle` is the name `sft` had first.
ALIASES = {"mle": "sft"}


def objective_name(name: str) -> str:
    """The OBJECTIVES key of `name` (an alias resolves to its objective); unknown names pass."""
    return ALIASES.get(name, name)


def check_batch(objective: str, batch: Mapping) -> None:
    """Raise BatchError naming the objective and every key of BATCH_KEYS the batch lacks."""
    missing = [k for k in BATCH_KEYS[objective] if k not in batch]
    if missing:
        raise BatchError(
            f"objective {objective!r} reads batch key(s) {missing}, which this batch lacks "
            f"(it has {sorted(batch)}); the stage's data must provide "
            f"{list(BATCH_KEYS[objective])}"
        )


__all__ = [
    "ALIASES",
    "BATCH_KEYS",
    "OBJECTIVES",
    "LossOut",
    "Models",
    "check_batch",
    "dpo",
    "objective_name",
    "ppo",
    "reward",
    "sft",
]
