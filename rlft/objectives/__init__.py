"""Objectives by name: each entry is (loss_fn, hyperparameter class, roles it trains).

Every loss_fn is `loss_fn(params, batch, models, hp) -> LossOut`, with params a dict keyed by
role holding unboxed param trees. The train step picks one entry at trace time.
"""

from rlft.objectives import dpo, ppo, reward, sft
from rlft.objectives.base import LossOut, Models

OBJECTIVES = {
    "sft": (sft.loss_fn, sft.SftHparams, ("policy",)),
    "reward": (reward.loss_fn, reward.RewardHparams, ("reward",)),
    "dpo": (dpo.loss_fn, dpo.DpoHparams, ("policy",)),
    "ppo": (ppo.loss_fn, ppo.PpoHparams, ("policy", "critic")),
}

# Other names a config may give an objective: `mle` is the name `sft` had first.
ALIASES = {"mle": "sft"}


def objective_name(name: str) -> str:
    """The OBJECTIVES key of `name` (an alias resolves to its objective); unknown names pass."""
    return ALIASES.get(name, name)


__all__ = [
    "ALIASES",
    "OBJECTIVES",
    "LossOut",
    "Models",
    "dpo",
    "objective_name",
    "ppo",
    "reward",
    "sft",
]
