"""Bradley–Terry reward models of four classes, `reward.model_class` (PROTOTYPE-NOTES lesson 2).

Three classes read a ScalarModel (SFT backbone + head v_t = w.h_t + b at every position) and
one has no transformer:
  last      r = v_T at the last real token: the paper's head;
  mean      r = (1/|y|) sum_{t in y} v_t, pooled over the response tokens y (`loss_mask`);
  sum       r = b + sum_{t in y} (v_t - b): additive per-token rewards w.h_t plus one offset;
  bilinear  r = b + sum_{t in y} (mean_{i in x} W[x_i, y_t] + u[y_t]): the simple feature model,
            a prompt-token x response-token table (`rlft.models.bilinear`, V <= 4096).
In every class the offset b (`scalar_head/bias`) enters r exactly once, so the normalisation
after training (`rlft.rollout.scoring.normalize_reward_model`) shifts every score by the same
constant, and Bradley-Terry never moves it. For `sum` that means b is not summed |y| times; the
class is unchanged (a constant per token is still w.h_t's job) and b = 0 at init, where
sum = |y| x mean. Every reader of a reward model goes through `sequence_reward` and loads params
of kind `model_kind(model_class)` (rlft.rollout.scoring.load_reward_model, which reads the class
from the checkpoint).
"""

import dataclasses

import jax
import jax.numpy as jnp

from rlft.errors import ConfigError
from rlft.models import ModelConfig, bilinear_reward, last_index, scalar_values
from rlft.objectives.base import LossOut, Models, pair_rows, split_pair_rows

MODEL_CLASSES = ("last", "mean", "sum", "bilinear")
# [B, T] each: the preferred (chosen) and the other (rejected) response of a pair.
BATCH_KEYS = tuple(
    f"{side}_{k}" for side in ("chosen", "rejected") for k in ("tokens", "mask", "loss_mask")
)


@dataclasses.dataclass(frozen=True)
class RewardHparams:
    model_class: str = "last"  # last (the paper's head) | mean | sum (over response) | bilinear

    def __post_init__(self):
        """Raises ConfigError for a model_class not in MODEL_CLASSES."""
        if self.model_class not in MODEL_CLASSES:
            raise ConfigError(
                f"reward.model_class={self.model_class!r}; choose one of {MODEL_CLASSES}"
            )


def model_kind(model_class: str) -> str:
    """The model kind (`rlft.models.MODEL_KINDS`) whose params a reward class reads."""
    return "bilinear" if model_class == "bilinear" else "scalar"


def sequence_reward(
    cfg: ModelConfig,
    params,
    tokens_BxT: jax.Array,
    mask_BxT: jax.Array,
    loss_mask_BxT: jax.Array | None = None,
    model_class: str = "last",
    *,
    prefix_len: int = 0,
    copies: int = 1,
) -> jax.Array:
    """r(x, y) [B] of the reward class `model_class` (module docstring); all but "last" need
    `loss_mask_BxT`, the response tokens. `prefix_len`, `copies`: a prefix the rows share, run
    through the backbone once (`rlft.models.backbone_hidden`; the bilinear class has none)."""
    if model_class not in MODEL_CLASSES or (model_class != "last" and loss_mask_BxT is None):
        raise ValueError(
            f"model_class={model_class!r} needs one of {MODEL_CLASSES} (all but last: loss_mask)"
        )
    if model_class == "bilinear":
        return bilinear_reward(cfg, params, tokens_BxT, mask_BxT, loss_mask_BxT)
    values_BxT = scalar_values(
        cfg, params, tokens_BxT, mask_BxT, prefix_len=prefix_len, copies=copies
    )
    if model_class == "last":
        return jnp.take_along_axis(values_BxT, last_index(mask_BxT)[:, None], axis=-1)[:, 0]
    m_BxT = loss_mask_BxT.astype(values_BxT.dtype)
    if model_class == "mean":
        return jnp.sum(values_BxT * m_BxT, -1) / jnp.maximum(jnp.sum(m_BxT, -1), 1.0)
    b = params["scalar_head"]["bias"][0]  # counted once (module docstring)
    return jnp.sum((values_BxT - b) * m_BxT, -1) + b


def bradley_terry(chosen_reward_B: jax.Array, rejected_reward_B: jax.Array) -> jax.Array:
    """Per-pair loss -log sigmoid(r_chosen - r_rejected)."""
    return -jax.nn.log_sigmoid(chosen_reward_B - rejected_reward_B)


def loss_fn(params: dict, batch: dict, models: Models, hp: RewardHparams) -> LossOut:
    """Sum of Bradley–Terry losses over pairs; chosen and rejected share one [2B, T] forward
    (`pair_rows`), their first `models.pair_prefix_len` columns (the prompt) run once per pair."""
    b = batch["chosen_tokens"].shape[0]

    reward_2B = sequence_reward(
        models.reward,
        params["reward"],
        pair_rows(batch, "tokens"),
        pair_rows(batch, "mask"),
        pair_rows(batch, "loss_mask"),
        hp.model_class,
        prefix_len=models.pair_prefix_len,
        copies=2,
    )
    chosen_B, rejected_B = split_pair_rows(reward_2B)
    metrics = {
        "accuracy": jnp.sum(chosen_B > rejected_B).astype(jnp.float32),
        "margin": jnp.sum(chosen_B - rejected_B),
        "chosen_reward": jnp.sum(chosen_B),
        "rejected_reward": jnp.sum(rejected_B),
    }
    loss_sum = jnp.sum(bradley_terry(chosen_B, rejected_B))
    return LossOut(loss_sum, jnp.asarray(b, jnp.float32), metrics)
