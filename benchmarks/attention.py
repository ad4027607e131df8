"""The train step with rlft's attention backward against jax's derivative, in one process.

    python benchmarks/attention.py [--objective reward] [--rounds 10] [--steps 3]

rlft's `rlft.models.transformer.masked_attention` has a hand-written backward (the softmax
gradient of FlashAttention's appendix B.2) and normalises after the value product; the other
program traces the attention rlft computed before it, a float32 `jax.nn.softmax` over the
masked logits then the value product, and lets jax differentiate it. Both programs are traced
in this process and timed alternately (benchmarks/alternate.py says how, and what is printed).
"""

import contextlib
from functools import partial
from unittest import mock

import jax
import jax.numpy as jnp
from alternate import alternate, parser  # this directory, run as a script

import rlft.models.transformer as transformer


def softmax_attention(q_BxHxTxK, k_BxHxSxK, v_BxHxSxK, mask_BxTxS, scale):
    """The attention before issue 9's custom backward, for jax to differentiate."""
    logits_BxHxTxS = (
        jnp.einsum("bhtk,bhsk->bhts", q_BxHxTxK, k_BxHxSxK, preferred_element_type=jnp.float32)
        * scale
    )
    logits_BxHxTxS = jnp.where(mask_BxTxS[:, None], logits_BxHxTxS, jnp.finfo(jnp.float32).min)
    probs_BxHxTxS = jax.nn.softmax(logits_BxHxTxS, axis=-1).astype(q_BxHxTxK.dtype)
    return jnp.einsum("bhts,bhsk->bhtk", probs_BxHxTxS, v_BxHxSxK.astype(q_BxHxTxK.dtype))


def main(argv=None) -> dict:
    args = parser(__doc__).parse_args(argv)
    variants = {
        "jax derivative": partial(
            mock.patch.object, transformer, "masked_attention", softmax_attention
        ),
        "rlft masked_attention": contextlib.nullcontext,
    }
    return alternate(args, variants)


if __name__ == "__main__":
    main()
