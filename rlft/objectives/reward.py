"""Bradley–Terry reward model: a scalar head read at the last real token."""

import dataclasses

import jax
import jax.numpy as jnp

from rlft.models import ModelConfig, last_index, scalar_values
from rlft.objectives.base import LossOut, Models


@dataclasses.dataclass(frozen=True)
class RewardHparams:
    """The Bradley–Terry loss has no hyperparameters; kept so every objective has one."""


def sequence_reward(
    cfg: ModelConfig, params, tokens_BxT: jax.Array, mask_BxT: jax.Array
) -> jax.Array:
    """r(x, y): the scalar model's output at the last real token of each row."""
    values_BxT = scalar_values(cfg, params, tokens_BxT, mask_BxT)
    return jnp.take_along_axis(values_BxT, last_index(mask_BxT)[:, None], axis=-1)[:, 0]


def bradley_terry(chosen_reward_B: jax.Array, rejected_reward_B: jax.Array) -> jax.Array:
    """Per-pair loss -log sigmoid(r_chosen - r_rejected)."""
    return -jax.nn.log_sigmoid(chosen_reward_B - rejected_reward_B)


def loss_fn(params: dict, batch: dict, models: Models, hp: RewardHparams) -> LossOut:
    """Sum of Bradley–Terry losses over pairs; chosen and rejected share one [2B, T] forward."""
    del hp
    b = batch["chosen_tokens"].shape[0]
    tokens_2BxT = jnp.concatenate([batch["chosen_tokens"], batch["rejected_tokens"]])
    mask_2BxT = jnp.concatenate([batch["chosen_mask"], batch["rejected_mask"]])
    reward_2B = sequence_reward(models.reward, params["reward"], tokens_2BxT, mask_2BxT)
    chosen_B, rejected_B = reward_2B[:b], reward_2B[b:]
    metrics = {
        "accuracy": jnp.sum(chosen_B > rejected_B).astype(jnp.float32),
        "margin": jnp.sum(chosen_B - rejected_B),
        "chosen_reward": jnp.sum(chosen_B),
        "rejected_reward": jnp.sum(rejected_B),
    }
    loss_sum = jnp.sum(bradley_terry(chosen_B, rejected_B))
    return LossOut(loss_sum, jnp.asarray(b, jnp.float32), metrics)
