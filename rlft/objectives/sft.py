"""Supervised fine-tuning (objective `sft`, alias `mle`): next-token cross-entropy (maximum
likelihood) on the response tokens."""

import dataclasses

import jax
import jax.numpy as jnp

from rlft.errors import check_ranges
from rlft.models import lm_logits
from rlft.objectives.base import LossOut, Models
from rlft.objectives.logprobs import token_logprobs

BATCH_KEYS = ("tokens", "mask", "loss_mask")  # [B, T]: demonstrations, response in loss_mask


@dataclasses.dataclass(frozen=True)
class SftHparams:
    temperature: float = 1.0  # logits / temperature; kept at 1 for SFT, here for symmetry

    def __post_init__(self):
        """Raises ConfigError unless temperature > 0 (the section is `sft`, or its alias)."""
        rule = ("> 0", "logits / temperature; SFT keeps 1")
        check_ranges("sft", vars(self), {"temperature": rule})


def nll_and_accuracy(
    logits_BxTxV: jax.Array, tokens_BxT: jax.Array, temperature: float = 1.0
) -> tuple[jax.Array, jax.Array]:
    """Per-token -log p(tokens[t] | tokens[<t]) and argmax hits, aligned to tokens.

    Position 0 has no prediction: its nll is 0 and it never counts as a hit.
    """
    nll_BxT = -token_logprobs(logits_BxTxV, tokens_BxT, temperature)
    hit_Bx_T1 = jnp.argmax(logits_BxTxV[:, :-1], axis=-1) == tokens_BxT[:, 1:]
    return nll_BxT, jnp.pad(hit_Bx_T1, ((0, 0), (1, 0)))


def loss_fn(params: dict, batch: dict, models: Models, hp: SftHparams) -> LossOut:
    """loss_sum = sum of nll over loss_mask (the response tokens), denom = their count."""
    logits_BxTxV = lm_logits(models.policy, params["policy"], batch["tokens"], batch["mask"])
    nll_BxT, hit_BxT = nll_and_accuracy(logits_BxTxV, batch["tokens"], hp.temperature)
    loss_mask_BxT = batch["loss_mask"].astype(bool)
    loss_sum = jnp.sum(jnp.where(loss_mask_BxT, nll_BxT, 0.0))
    accuracy = jnp.sum(hit_BxT & loss_mask_BxT).astype(jnp.float32)
    return LossOut(loss_sum, jnp.sum(loss_mask_BxT).astype(jnp.float32), {"accuracy": accuracy})
