"""Objectives by name: each entry is (loss_fn, hyperparameter class, roles it trains).

Every loss_fn is `loss_fn(params, batch, models, hp) -> LossOut`, with params a dict keyed by
role holding unboxed param trees. The train step picks one entry at trace time.
"""

from rlft.objectives import dpo, mle, ppo, reward
from rlft.objectives.base import LossOut, Models

OBJECTIVES = {
    "mle": (mle.loss_fn, mle.MleHparams, ("policy",)),
    "reward": (reward.loss_fn, reward.RewardHparams, ("reward",)),
    "dpo": (dpo.loss_fn, dpo.DpoHparams, ("policy",)),
    "ppo": (ppo.loss_fn, ppo.PpoHparams, ("policy", "critic")),
}

__all__ = ["OBJECTIVES", "LossOut", "Models", "dpo", "mle", "ppo", "reward"]
