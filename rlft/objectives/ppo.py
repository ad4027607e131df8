"""PPO: clipped policy surrogate plus clipped value loss, per response token.

All per-token arrays are aligned to tokens: x_BxT[t] belongs to the action "emit token t".
logp[t] = log pi(tokens[t] | tokens[<t]) and values[t] = V(state before token t), which is the
critic's output at position t - 1 (see `token_values`). With ratio = exp(logp - old_logp):

    pg  = max(-A * ratio, -A * clip(ratio, 1 - clip_eps, 1 + clip_eps))
    vf  = 0.5 * max((v - R)^2, (old_v + clip(v - old_v, -vf_clip, vf_clip) - R)^2)
    loss = pg + vf_coef * vf - ent_coef * entropy

summed over loss_mask tokens; the denominator is their count.
"""

import dataclasses

import jax
import jax.numpy as jnp

from rlft.errors import check_ranges
from rlft.models import ModelConfig, scalar_values
from rlft.objectives.base import LossOut, Models
from rlft.objectives.logprobs import scored_token_stats

# A rollout batch (rlft.rollout.ppo), all [B, T] and aligned to tokens.
BATCH_KEYS = (
    "tokens",
    "mask",
    "loss_mask",
    "old_logp",
    "old_values",
    "advantages",
    "returns",
)


@dataclasses.dataclass(frozen=True)
class PpoHparams:
    clip_eps: float = 0.2  # policy ratio clip
    vf_clip: float = 0.2  # value clip around the rollout-time value
    vf_coef: float = 0.1  # weight of the value loss
    ent_coef: float = 0.0  # entropy bonus
    temperature: float = 0.7  # sampling temperature; log-probs from logits / temperature

    def __post_init__(self):
        """Raises ConfigError naming the field and its range (ppo.clip_eps = 0: must be > 0)."""
        check_ranges(
            "ppo",
            vars(self),
            {
                "clip_eps": ("> 0", "the policy ratio clip; the paper uses 0.2"),
                "vf_clip": ("> 0", "the value clip; the paper uses 0.2"),
                "vf_coef": (">= 0", "the value-loss weight; the paper uses 0.1"),
                "ent_coef": (">= 0", "the entropy bonus; 0 turns it off"),
                "temperature": ("> 0", "the sampling temperature; the paper uses 0.7"),
            },
        )


def token_values(cfg: ModelConfig, params, tokens_BxT: jax.Array, mask_BxT: jax.Array) -> jax.Array:
    """values_BxT[t] = V(state before token t): critic output at t - 1, shifted; 0 at t = 0."""
    out_BxT = scalar_values(cfg, params, tokens_BxT, mask_BxT)
    return jnp.pad(out_BxT[:, :-1], ((0, 0), (1, 0)))


def ppo_token_terms(
    logp_BxT: jax.Array,
    old_logp_BxT: jax.Array,
    advantages_BxT: jax.Array,
    values_BxT: jax.Array,
    old_values_BxT: jax.Array,
    returns_BxT: jax.Array,
    entropy_BxT: jax.Array,
    loss_mask_BxT: jax.Array,
    *,
    clip_eps: float,
    vf_clip: float,
    vf_coef: float,
    ent_coef: float,
) -> dict[str, jax.Array]:
    """Per-token loss and diagnostics (see the module doc), zero outside loss_mask.

    The KL estimators are of KL(old || new), the samples being drawn from the old policy:
    k1 = old_logp - logp (unbiased, can be negative) and, with r = exp(logp - old_logp),
    k3 = (r - 1) - log r (unbiased since E_old[r] = 1, and never negative).
    """
    mask_BxT = loss_mask_BxT.astype(bool)
    # Mask the log-ratio before exp so padding cannot overflow into NaN gradients.
    log_ratio_BxT = jnp.where(mask_BxT, logp_BxT - old_logp_BxT, 0.0)
    ratio_BxT = jnp.exp(log_ratio_BxT)
    pg_unclipped_BxT = -advantages_BxT * ratio_BxT
    pg_clipped_BxT = -advantages_BxT * jnp.clip(ratio_BxT, 1.0 - clip_eps, 1.0 + clip_eps)
    pg_BxT = jnp.maximum(pg_unclipped_BxT, pg_clipped_BxT)
    # = old_v + clip(v - old_v, -vf_clip, vf_clip), but exactly v inside the range, so that
    # rounding cannot count as clipping in vf_clipfrac.
    v_clipped_BxT = jnp.clip(values_BxT, old_values_BxT - vf_clip, old_values_BxT + vf_clip)
    vf_unclipped_BxT = (values_BxT - returns_BxT) ** 2
    vf_clipped_BxT = (v_clipped_BxT - returns_BxT) ** 2
    vf_BxT = 0.5 * jnp.maximum(vf_unclipped_BxT, vf_clipped_BxT)
    terms = {
        "loss": pg_BxT + vf_coef * vf_BxT - ent_coef * entropy_BxT,
        "pg_loss": pg_BxT,
        "vf_loss": vf_BxT,  # before vf_coef
        "entropy": entropy_BxT,
        "approx_kl_k1": -log_ratio_BxT,
        "approx_kl_k3": (ratio_BxT - 1.0) - log_ratio_BxT,
        "clipfrac": (pg_clipped_BxT > pg_unclipped_BxT).astype(jnp.float32),
        "vf_clipfrac": (vf_clipped_BxT > vf_unclipped_BxT).astype(jnp.float32),
        "ratio": ratio_BxT,
    }
    return {k: jnp.where(mask_BxT, v, 0.0) for k, v in terms.items()}


def loss_fn(params: dict, batch: dict, models: Models, hp: PpoHparams) -> LossOut:
    """PPO on a rollout batch: policy and critic forwards, per-token terms summed over tokens.

    The policy's log-probs and entropy come from `scored_token_stats` (the head only where
    tokens are scored); off loss_mask every term is zeroed anyway.
    """
    tokens_BxT, mask_BxT = batch["tokens"], batch["mask"]
    policy = scored_token_stats(
        models.policy,
        params["policy"],
        tokens_BxT,
        mask_BxT,
        batch["loss_mask"],
        hp.temperature,
        entropy=True,
    )
    terms = ppo_token_terms(
        policy["logp"],
        batch["old_logp"],
        batch["advantages"],
        token_values(models.critic, params["critic"], tokens_BxT, mask_BxT),
        batch["old_values"],
        batch["returns"],
        policy["entropy"],
        batch["loss_mask"],
        clip_eps=hp.clip_eps,
        vf_clip=hp.vf_clip,
        vf_coef=hp.vf_coef,
        ent_coef=hp.ent_coef,
    )
    sums = {k: jnp.sum(v) for k, v in terms.items()}
    denom = jnp.sum(batch["loss_mask"].astype(bool)).astype(jnp.float32)
    return LossOut(sums.pop("loss"), denom, sums)
