"""The one log-probability helper, shared by every objective and by the sampler.

Log-probs are float32 log softmax(logits / temperature), aligned to tokens: logp_BxT[t] is
log p(tokens[t] | tokens[<t]), so position 0 (no prediction) is 0.

Two paths compute them. `token_logprobs` reads full logits [B, T, V] (the sampler, tests, and
anything that already holds logits). `scored_token_stats` is what the train steps and the
reference pass use: it runs the backbone once, then the [D, V] head and its log-softmax in
time chunks of at most CHUNK_LEN positions under `jax.checkpoint`, so at most one chunk's
float32 logits [B, CHUNK_LEN, V] (and, in the backward, their cotangent) is live, and it skips
(`lax.cond`) every chunk in which no row has a scored token (loss_mask). In rlft's layout
(rlft.data.arrays: left-padded prompt, then right-padded response) that skips the prompt
columns and any response columns past the longest response in the batch, for every objective,
without the step knowing the prompt length. Both paths apply the same ops to the same rows, so
they agree to float rounding (tests/test_scored_logprobs.py). Chunking the head with its loss
is the memory trick of chunked/fused linear cross-entropy (Liger-Kernel; Wijmans et al. 2024,
"Cut Your Losses in Large-Vocabulary Language Models"), done here with plain XLA ops.
"""

import jax
import jax.numpy as jnp

from rlft.models import (
    ModelConfig,
    head_logits_VxN,
    head_target_logits,
    lm_head_kernels,
    lm_hidden,
)
from rlft.parallel.mesh import constrain_batch

# Positions per LM-head chunk. At Pythia's vocabulary (50,304) and 16 rows that is
# 16 x 32 x 50,304 x 4 bytes = 103 MB of float32 logits per chunk, not 377 MB for T = 117.
CHUNK_LEN = 32


def first_argmax(x_NxV: jax.Array, axis: int = -1) -> jax.Array:
    """int32 index of the first maximum along `axis` of x (the other axes kept): jnp.argmax's
    result for rows without NaN, as one max pass and one min-index pass, because XLA's CPU
    backend lowers argmax to an unvectorised variadic reduction (measured in issue 9). A row
    holding NaN gives its last index, not the NaN's.
    """
    v = x_NxV.shape[axis]
    max_Nx1 = jnp.max(x_NxV, axis=axis, keepdims=True)
    iota = jax.lax.broadcasted_iota(jnp.int32, x_NxV.shape, axis % x_NxV.ndim)
    first_N = jnp.min(jnp.where(x_NxV == max_Nx1, iota, v), axis=axis)
    return jnp.minimum(first_N, v - 1).astype(jnp.int32)


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
    *,
    prefix_len: int = 0,
    copies: int = 1,
) -> jax.Array:
    """log pi(y | x) [B]: the language model's token log-probs summed over loss_mask (the
    response tokens); the head runs only on chunks holding scored tokens. `prefix_len`,
    `copies`: a prefix the rows share, run through the backbone once (`scored_token_stats`)."""
    stats = scored_token_stats(
        cfg,
        params,
        tokens_BxT,
        mask_BxT,
        loss_mask_BxT,
        temperature,
        prefix_len=prefix_len,
        copies=copies,
    )
    return jnp.sum(stats["logp"], axis=-1)


def chunking(positions: int, chunk_len: int = CHUNK_LEN) -> tuple[int, int]:
    """(chunks, length) covering `positions` time steps in equal chunks of at most chunk_len,
    so padding is under one position per chunk. Raises ValueError unless both are >= 1."""
    if positions < 1 or chunk_len < 1:
        raise ValueError(f"positions={positions} and chunk_len={chunk_len} must be >= 1")
    chunks = -(-positions // chunk_len)
    return chunks, -(-positions // chunks)


def head_positions(loss_mask_BxT, chunk_len: int = CHUNK_LEN) -> int:
    """Positions per row at which `scored_token_stats` runs the LM head for this loss mask
    (chunks holding a scored token, times their length): the head's share of a step's FLOPs."""
    on_BxN = jnp.asarray(loss_mask_BxT, bool)[:, 1:]
    chunks, length = chunking(on_BxN.shape[1], chunk_len)
    on_BxCxS = jnp.pad(on_BxN, ((0, 0), (0, chunks * length - on_BxN.shape[1])))
    on_C = jnp.any(on_BxCxS.reshape(on_BxN.shape[0], chunks, length), axis=(0, 2))
    return int(jnp.sum(on_C)) * length


def scored_token_stats(
    cfg: ModelConfig,
    params,
    tokens_BxT: jax.Array,
    mask_BxT: jax.Array,
    loss_mask_BxT: jax.Array,
    temperature: float = 1.0,
    *,
    entropy: bool = False,
    hits: bool = False,
    chunk_len: int = CHUNK_LEN,
    prefix_len: int = 0,
    copies: int = 1,
) -> dict[str, jax.Array]:
    """Per-token statistics of the language model at the scored tokens, each [B, T] and
    aligned to tokens like `token_logprobs`, and 0 (False) wherever loss_mask is not set:

      logp     log softmax(logits / temperature)[tokens[t]] at t - 1, float32
      entropy  (if asked) entropy of that distribution, float32 (`entropy_from_logits`)
      hits     (if asked) argmax of the logits at t - 1 == tokens[t], bool

    Equal to the full-logits path (`lm_logits`, `token_logprobs`, `shifted_entropy`) to
    float rounding, values and gradients; see the module docstring for the chunking.
    `prefix_len`, `copies`: rows c * B / copies + g share their first prefix_len columns with
    row g, which run through the backbone once (`rlft.models.backbone_hidden`).
    Raises ValueError for T < 2 or chunk_len < 1, and as `backbone_hidden` does.
    """
    h_BxTxD = lm_hidden(cfg, params, tokens_BxT, mask_BxT, prefix_len=prefix_len, copies=copies)
    b, t = tokens_BxT.shape
    chunks, length = chunking(t - 1, chunk_len)

    def split(x_BxN):  # [B, N, ...] -> [C, B, S, ...], time padded to C * S
        pad = [(0, 0), (0, chunks * length - x_BxN.shape[1])] + [(0, 0)] * (x_BxN.ndim - 2)
        x_BxCxS = jnp.pad(x_BxN, pad).reshape(b, chunks, length, *x_BxN.shape[2:])
        return jnp.moveaxis(x_BxCxS, 1, 0)

    # Position t - 1 predicts token t: hidden states 0..T-2 against tokens 1..T-1.
    xs = (
        split(h_BxTxD[:, :-1]),
        split(tokens_BxT[:, 1:]),
        split(loss_mask_BxT[:, 1:].astype(bool)),
    )

    kernel_DxV, kernel_VxD = lm_head_kernels(params)  # outside the chunk loop

    def compute(h_BxSxD, targets_BxS):
        # Vocabulary-major: logits [V, B * S], each distribution a column, reduced along
        # axis 0 (why: `head_logits_VxN`); the target's logit from its kernel row.
        h_NxD, targets_N = h_BxSxD.reshape(-1, h_BxSxD.shape[-1]), targets_BxS.reshape(-1)
        h_NxD = constrain_batch(h_NxD)  # each device its rows' logits (rlft.parallel.mesh)
        logits_VxN = constrain_batch(
            head_logits_VxN(kernel_DxV, kernel_VxD, h_NxD) / temperature, axis=1
        )
        lse_N = jax.nn.logsumexp(logits_VxN, axis=0)
        target_N = head_target_logits(kernel_VxD, h_NxD, targets_N) / temperature
        # The target's logit comes from another dot than the logits' matmul; where p -> 1 the
        # two roundings could put log p a hair above 0 (6e-5 at logits ~1e3), so clamp it
        # (the gradient there, p - 1 -> 0, is lost only where it vanishes anyway).
        out = {"logp": jnp.minimum(target_N - lse_N, 0.0)}
        if entropy:  # as entropy_from_logits, along axis 0
            logp_VxN = logits_VxN - lse_N
            out["entropy"] = -jnp.sum(jnp.exp(logp_VxN) * logp_VxN, axis=0)
        if hits:
            out["hits"] = first_argmax(logits_VxN, axis=0) == targets_N
        return {k: v.reshape(targets_BxS.shape) for k, v in out.items()}

    @jax.checkpoint  # the backward recomputes one chunk's logits instead of storing them all
    def chunk(x):
        h_BxSxD, targets_BxS, on_BxS = x
        zeros = jax.tree.map(
            lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(compute, h_BxSxD, targets_BxS)
        )
        if jax.process_count() > 1:  # multi-process: the skip's conditional around the
            # head's fsdp collectives hung the gloo CPU run (tests/test_multihost.py)
            return compute(h_BxSxD, targets_BxS)
        return jax.lax.cond(jnp.any(on_BxS), compute, lambda *_: zeros, h_BxSxD, targets_BxS)

    out_CxBxS = jax.lax.map(chunk, xs)
    on_BxT = loss_mask_BxT.astype(bool)

    def join(x_CxBxS):  # [C, B, S] -> [B, T] aligned to tokens, 0 off the loss mask
        x_BxN = jnp.moveaxis(x_CxBxS, 0, 1).reshape(b, chunks * length)[:, : t - 1]
        return jnp.where(on_BxT, jnp.pad(x_BxN, ((0, 0), (1, 0))), jnp.zeros((), x_BxN.dtype))

    return {k: join(v) for k, v in out_CxBxS.items()}
