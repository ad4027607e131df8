"""Bradley–Terry reward model: a scalar head read at the last real token, or mean-pooled.

The pooling is the reward-model class knob (PROTOTYPE-NOTES lesson 2): "last" is the paper's
head; "mean" averages the per-token scores over the response tokens.
"""

import dataclasses

import jax
import jax.numpy as jnp

from rlft.models import ModelConfig, last_index, scalar_values
from rlft.objectives.base import LossOut, Models

POOLINGS = ("last", "mean")


@dataclasses.dataclass(frozen=True)
class RewardHparams:
    pooling: str = "last"  # last (the paper's head) | mean (over response tokens)

    def __post_init__(self):
        if self.pooling not in POOLINGS:
            raise ValueError(f"reward.pooling={self.pooling!r}; choose one of {POOLINGS}")


def sequence_reward(
    cfg: ModelConfig,
    params,
    tokens_BxT: jax.Array,
    mask_BxT: jax.Array,
    loss_mask_BxT: jax.Array | None = None,
    pooling: str = "last",
) -> jax.Array:
    """r(x, y): the scalar model's output at the last real token of each row ("last"), or the
    mean of its outputs over the response tokens `loss_mask_BxT` ("mean")."""
    values_BxT = scalar_values(cfg, params, tokens_BxT, mask_BxT)
    if pooling == "last":
        return jnp.take_along_axis(values_BxT, last_index(mask_BxT)[:, None], axis=-1)[:, 0]
    if pooling != "mean" or loss_mask_BxT is None:
        raise ValueError(f"pooling={pooling!r} needs one of {POOLINGS} (mean needs loss_mask)")
    m_BxT = loss_mask_BxT.astype(values_BxT.dtype)
    return jnp.sum(values_BxT * m_BxT, -1) / jnp.maximum(jnp.sum(m_BxT, -1), 1.0)


def bradley_terry(chosen_reward_B: jax.Array, rejected_reward_B: jax.Array) -> jax.Array:
    """Per-pair loss -log sigmoid(r_chosen - r_rejected)."""
    return -jax.nn.log_sigmoid(chosen_reward_B - rejected_reward_B)


def loss_fn(params: dict, batch: dict, models: Models, hp: RewardHparams) -> LossOut:
    """Sum of Bradley–Terry losses over pairs; chosen and rejected share one [2B, T] forward."""
    b = batch["chosen_tokens"].shape[0]

    def both(key):
        return jnp.concatenate([batch[f"chosen_{key}"], batch[f"rejected_{key}"]])

    reward_2B = sequence_reward(
        models.reward,
        params["reward"],
        both("tokens"),
        both("mask"),
        both("loss_mask"),
        hp.pooling,
    )
    chosen_B, rejected_B = reward_2B[:b], reward_2B[b:]
    metrics = {
        "accuracy": jnp.sum(chosen_B > rejected_B).astype(jnp.float32),
        "margin": jnp.sum(chosen_B - rejected_B),
        "chosen_reward": jnp.sum(chosen_B),
        "rejected_reward": jnp.sum(rejected_B),
    }
    loss_sum = jnp.sum(bradley_terry(chosen_B, rejected_B))
    return LossOut(loss_sum, jnp.asarray(b, jnp.float32), metrics)
