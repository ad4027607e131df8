"""The one log-probability helper, shared by every objective and by the sampler.

Log-probs are float32 log softmax(logits / temperature), aligned to tokens: logp_BxT[t] is
log p(tokens[t] | tokens[<t]), so position 0 (no prediction) is 0.
"""

import jax
import jax.numpy as jnp

from rlft.models import ModelConfig, lm_logits


def logprobs_from_logits(
    logits_NxV: jax.Array, targets_N: jax.Array, temperature: float = 1.0
) -> jax.Array:
    """log softmax(logits / temperature)[target] in float32, over any leading shape."""
    logp_NxV = jax.nn.log_softmax(logits_NxV.astype(jnp.float32) / temperature, axis=-1)
    return jnp.take_along_axis(logp_NxV, targets_N[..., None], axis=-1)[..., 0]


def token_logprobs(
    logits_BxTxV: jax.Array, tokens_BxT: jax.Array, temperature: float = 1.0
) -> jax.Array:
    """logp_BxT[t] = log p(tokens[t] | tokens[<t]); position 0 has no prediction and is 0."""
    logp_Bx_T1 = logprobs_from_logits(logits_BxTxV[:, :-1], tokens_BxT[:, 1:], temperature)
    return jnp.pad(logp_Bx_T1, ((0, 0), (1, 0)))


def entropy_from_logits(logits_BxTxV: jax.Array, temperature: float = 1.0) -> jax.Array:
    """Entropy of softmax(logits / temperature) at each position, float32."""
    logp_BxTxV = jax.nn.log_softmax(logits_BxTxV.astype(jnp.float32) / temperature, axis=-1)
    return -jnp.sum(jnp.exp(logp_BxTxV) * logp_BxTxV, axis=-1)


def shifted_entropy(logits_BxTxV: jax.Array, temperature: float = 1.0) -> jax.Array:
    """entropy_BxT[t]: entropy of the distribution that predicted token t (0 at t = 0)."""
    return jnp.pad(entropy_from_logits(logits_BxTxV[:, :-1], temperature), ((0, 0), (1, 0)))


def sequence_logprobs(
    cfg: ModelConfig,
    params,
    tokens_BxT: jax.Array,
    mask_BxT: jax.Array,
    loss_mask_BxT: jax.Array,
    temperature: float = 1.0,
) -> jax.Array:
    """log pi(y | x) [B]: the language model's token log-probs summed over loss_mask (the
    response tokens), one full forward."""
    logits_BxTxV = lm_logits(cfg, params, tokens_BxT, mask_BxT)
    logp_BxT = token_logprobs(logits_BxTxV, tokens_BxT, temperature)
    return jnp.sum(jnp.where(loss_mask_BxT.astype(bool), logp_BxT, 0.0), axis=-1)
