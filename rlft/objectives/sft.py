"""Supervised fine-tuning (objective `sft`, alias `mle`): next-token cross-entropy (maximum
likelihood) on the response tokens."""

import dataclasses

import jax
import jax.numpy as jnp

from rlft.errors import check_ranges
from rlft.objectives.base import LossOut, Models
from rlft.objectives.logprobs import scored_token_stats, token_logprobs

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
    """loss_sum = sum of nll over loss_mask (the response tokens), denom = their count.

    The head runs only where tokens are scored (`scored_token_stats`); the same numbers as
    `nll_and_accuracy` on full logits.
    """
    stats = scored_token_stats(
        models.policy,
        params["policy"],
        batch["tokens"],
        batch["mask"],
        batch["loss_mask"],
        hp.temperature,
        hits=True,
    )
    loss_sum = -jnp.sum(stats["logp"])
    accuracy = jnp.sum(stats["hits"]).astype(jnp.float32)
    denom = jnp.sum(batch["loss_mask"].astype(bool)).astype(jnp.float32)
    return LossOut(loss_sum, denom, {"accuracy": accuracy})
