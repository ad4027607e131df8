"""What every objective shares: the model roles it sees and the (sum, denominator) result."""

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rlft.models import ModelConfig


@dataclasses.dataclass(frozen=True)
class Models:
    """Model configs by role; params arrive as a dict with the same keys."""

    policy: ModelConfig | None = None  # language model ("lm")
    reward: ModelConfig | None = None  # reward model, read as reward.model_class says
    critic: ModelConfig | None = None  # scalar model read at every position (PPO value)
    # Leading columns that every pair's chosen and rejected rows share (their prompt), which
    # the reward and DPO losses run through the backbone once per pair (issue 9); a stage sets
    # it from its data (rlft.data.arrays.shared_prefix_len). 0: every row runs whole.
    pair_prefix_len: int = 0


class LossOut(NamedTuple):
    """A loss as (sum, denominator); metric values are sums over the same denominator.

    The train step adds these across micro-batches and devices and divides once, so masked
    tokens and gradient accumulation stay exact.
    """

    loss_sum: jax.Array
    denom: jax.Array
    metrics: dict[str, jax.Array]


def pair_rows(batch: dict, key: str) -> jax.Array:
    """chosen_<key> and rejected_<key> [B, ...] as one [2B, ...] array with each pair's rows
    adjacent (row 2b chosen, 2b + 1 rejected): one forward for both sides, the layout in
    which `rlft.models.backbone_hidden` runs a pair's shared prompt once (copies = 2), and
    one that keeps a pair on one device when a mesh splits the rows into blocks."""
    chosen, rejected = batch[f"chosen_{key}"], batch[f"rejected_{key}"]
    return jnp.stack([chosen, rejected], axis=1).reshape(-1, *chosen.shape[1:])


def split_pair_rows(x_2B: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(chosen_B, rejected_B) of an array in `pair_rows`' layout."""
    return x_2B[0::2], x_2B[1::2]
