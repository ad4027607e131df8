"""Per-token rewards, GAE and whitening for PPO, computed outside the gradient step.

Arrays are aligned to tokens as in `rlft.objectives.ppo`: x_BxT[t] belongs to the action
"emit token t", values_BxT[t] = V(state before token t), and loss_mask marks the response
tokens (up to and including EOS). Everything here is jittable.
"""

import jax
import jax.numpy as jnp

from rlft.models import last_index

KL_ESTIMATORS = ("k1", "k3")


def kl_penalty(logp_BxT: jax.Array, ref_logp_BxT: jax.Array, estimator: str) -> jax.Array:
    """Per-token estimate of KL(pi || ref) from tokens sampled from pi.

    k1 = log pi - log ref (unbiased, can be negative);
    k3 = ref/pi - 1 - log(ref/pi) = exp(ref - logp) - 1 - (ref - logp) (unbiased, >= 0).
    """
    if estimator == "k1":
        return logp_BxT - ref_logp_BxT
    if estimator == "k3":
        log_r_BxT = ref_logp_BxT - logp_BxT
        return jnp.expm1(log_r_BxT) - log_r_BxT
    raise ValueError(f"kl estimator={estimator!r} is unknown; choose one of {KL_ESTIMATORS}.")


def ppo_rewards(
    score_B: jax.Array,
    logp_BxT: jax.Array,
    ref_logp_BxT: jax.Array,
    loss_mask_BxT: jax.Array,
    kl_coef: float,
    estimator: str = "k1",
) -> jax.Array:
    """rewards_BxT = -kl_coef * kl on response tokens, plus the score on the last one.

    The sequence score lands ON the last response token (the EOS token when the response has
    one, since loss_mask includes EOS), i.e. on the action that ended the episode, not one
    slot after it. With values_BxT[t] = V(state before token t) this makes the final TD error
    score - kl_coef * kl_last - V(state before EOS). Rows with no response token get zeros.
    """
    mask_BxT = loss_mask_BxT.astype(bool)
    kl_BxT = kl_penalty(logp_BxT, ref_logp_BxT, estimator)
    t = mask_BxT.shape[-1]
    is_last_BxT = (jnp.arange(t) == last_index(mask_BxT)[:, None]) & mask_BxT
    rewards_BxT = jnp.where(mask_BxT, -kl_coef * kl_BxT, 0.0)
    return rewards_BxT + jnp.where(is_last_BxT, score_B[:, None], 0.0)


def gae(
    rewards_BxT: jax.Array,
    values_BxT: jax.Array,
    loss_mask_BxT: jax.Array,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[jax.Array, jax.Array]:
    """Generalised advantage estimation over the response span; (advantages, returns).

        delta_t = r_t + gamma * V_{t+1} - V_t,    A_t = delta_t + gamma * lam * A_{t+1}

    with V_{t+1} = A_{t+1} = 0 after the last response token (the episode ends there) and
    returns = A + V. Both are zero outside loss_mask. A reverse `lax.scan` over time.
    """
    mask_TxB = loss_mask_BxT.astype(bool).T
    rewards_TxB = jnp.where(mask_TxB, rewards_BxT.T.astype(jnp.float32), 0.0)
    values_TxB = jnp.where(mask_TxB, values_BxT.T.astype(jnp.float32), 0.0)

    def step(carry, xs):
        next_value_B, next_adv_B = carry
        reward_B, value_B, mask_B = xs
        delta_B = reward_B + gamma * next_value_B - value_B
        adv_B = jnp.where(mask_B, delta_B + gamma * lam * next_adv_B, 0.0)
        return (value_B, adv_B), adv_B  # value_B and adv_B are 0 off the mask: a fresh start

    zeros_B = jnp.zeros(mask_TxB.shape[1], jnp.float32)
    _, adv_TxB = jax.lax.scan(
        step, (zeros_B, zeros_B), (rewards_TxB, values_TxB, mask_TxB), reverse=True
    )
    return adv_TxB.T, jnp.where(mask_TxB, adv_TxB + values_TxB, 0.0).T


def masked_whiten(x_BxT: jax.Array, mask_BxT: jax.Array, shift_mean: bool = True) -> jax.Array:
    """(x - mean) / sqrt(var + 1e-8) over the masked entries of the whole batch; 0 elsewhere.

    var is the population (biased) variance; with shift_mean=False the mean is added back, so
    only the scale changes (used to whiten rewards).
    """
    mask_BxT = mask_BxT.astype(bool)
    n = jnp.maximum(jnp.sum(mask_BxT), 1).astype(jnp.float32)
    mean = jnp.sum(jnp.where(mask_BxT, x_BxT, 0.0)) / n
    var = jnp.sum(jnp.where(mask_BxT, (x_BxT - mean) ** 2, 0.0)) / n
    white_BxT = (x_BxT - mean) * jax.lax.rsqrt(var + 1e-8)
    if not shift_mean:
        white_BxT += mean
    return jnp.where(mask_BxT, white_BxT, 0.0)
