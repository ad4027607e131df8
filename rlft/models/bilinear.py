"""The simple feature reward model: a prompt-token x response-token linear table, no transformer.

r(x, y) = b + sum_{t in y} ( mean_{i in x} W[x_i, y_t] + u[y_t] ), with W [V, V], u [V] and the
offset b, all zero at init. The prompt x is the real tokens (`mask`) that are not response
tokens (`loss_mask`). It is additive over response tokens, so it cannot see order, repeats or
grammar: a generic superset of a topic x token table (PROTOTYPE-NOTES, round 2).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from rlft.models.config import ModelConfig

MAX_VOCAB = 4096  # W has V x V entries: 16.8M (67 MB in float32) at this size


def check_vocab(cfg: ModelConfig) -> None:
    """Refuse vocabularies whose V x V table would not fit (TL;DR's 50k tokens: 2.5e9 entries)."""
    v = cfg.vocab_size
    if v > MAX_VOCAB:
        raise ValueError(
            f"reward.model_class=bilinear keeps a V x V table over the vocabulary, and "
            f"model.vocab_size={v} would make it {v * v:.2e} parameters (the limit is V <= "
            f"{MAX_VOCAB}, meant for the synthetic tasks); use reward.model_class=last, mean or "
            f"sum (a scalar head on a transformer) for this model"
        )


class _Offset(nn.Module):
    """The scalar offset b, named `scalar_head/bias` like ScalarModel's head bias so that the
    reward-model normalisation folds into it for every reward class."""

    @nn.compact
    def __call__(self):
        return self.param(
            "bias", nn.with_logical_partitioning(nn.initializers.zeros_init(), (None,)), (1,)
        )[0]


class BilinearRewardModel(nn.Module):
    """One reward per row [B] from token ids; all params replicated (vocab axis unsharded)."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, tokens_BxT, mask_BxT, loss_mask_BxT):
        check_vocab(self.cfg)
        v = self.cfg.vocab_size
        zeros = nn.initializers.zeros_init()
        w_VxV = self.param(
            "pair_table", nn.with_logical_partitioning(zeros, ("vocab", None)), (v, v)
        )
        u_V = self.param("token_table", nn.with_logical_partitioning(zeros, ("vocab",)), (v,))
        resp_BxT = loss_mask_BxT.astype(jnp.float32)
        prompt_BxT = (mask_BxT.astype(bool) & ~loss_mask_BxT.astype(bool)).astype(jnp.float32)
        prompt_BxT = prompt_BxT / jnp.maximum(jnp.sum(prompt_BxT, -1, keepdims=True), 1.0)
        # pair_BxTxT[b, i, t] = W[x_i, y_t]: a gather of T^2 entries per row, cheap for short T.
        pair_BxTxT = w_VxV[tokens_BxT[:, :, None], tokens_BxT[:, None, :]]
        cross_B = jnp.einsum("bi,bit,bt->b", prompt_BxT, pair_BxTxT, resp_BxT)
        return _Offset(name="scalar_head")() + cross_B + jnp.sum(u_V[tokens_BxT] * resp_BxT, -1)


def bilinear_reward(
    cfg: ModelConfig, params, tokens_BxT: jax.Array, mask_BxT: jax.Array, loss_mask_BxT: jax.Array
) -> jax.Array:
    """Forward of the bilinear reward model: float32 rewards [B]."""
    return BilinearRewardModel(cfg).apply({"params": params}, tokens_BxT, mask_BxT, loss_mask_BxT)
