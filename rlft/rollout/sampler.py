"""Batched autoregressive sampling with an explicit KV cache, one jitted program.

Prompts arrive left-padded as [B, P] (at least one real token each, the last slot real). One
prefill pass writes the prompts into a cache of S = P + L slots, the cache is repeated K times
(row b*K + k is sample k of prompt b), then a `lax.while_loop` decodes one token per step and
stops early once every row has emitted EOS. The generated token at response step i sits at
column P + i and gets rotary position n_real + i, so left padding is invisible: the result
scores identically under the trainer's full forward on (tokens, mask).

Tokens are drawn exactly by a two-level inverse CDF on two uniforms per row
(`categorical_from_uniform`), not a Gumbel draw per vocabulary entry; `test_sampler_exact`
fits the frequencies by chi-square. Log-probs are under softmax(logits / T), read off the
draw's own block masses (one pass over the vocabulary for both), equal to the trainer's
`logprobs_from_logits` to float rounding. With top_p < 1 the token is drawn from the nucleus but
`logp` is still the log-prob under the temperature-scaled *full* softmax, which is what
PPO/DPO recompute with `token_logprobs`.
Greedy decoding (greedy=True or temperature=0) reports log-probs at temperature 1.
"""

import functools
import math
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rlft.models import ModelConfig, causal_mask, init_kv_cache, positions_from_mask
from rlft.models.transformer import Backbone
from rlft.objectives.logprobs import first_argmax, logprobs_from_logits


class Samples(NamedTuple):
    """N = B*K rows (prompt-major), T = P + L columns: the prompt, then the response."""

    tokens: jax.Array  # [N, T] int32; response slots after EOS hold pad_id
    mask: jax.Array  # [N, T] bool; real tokens: prompt and response up to and incl. EOS
    loss_mask: jax.Array  # [N, T] bool; response tokens up to and including EOS
    logp: jax.Array  # [N, T] float32; aligned as token_logprobs; 0 off loss_mask
    lengths: jax.Array  # [N] int32; response tokens incl. EOS
    finished: jax.Array  # [N] bool; the response ended with EOS (else it hit max_new_tokens)


# Mass short of top_p by at most this much counts as reaching it: a float32 cumulative sum of
# probabilities that add up to top_p exactly (0.5 + 0.3 at 0.8) can land a few ulps below it.
TOP_P_TOLERANCE = 1e-6


def top_p_filter(logits_NxV: jax.Array, top_p: float) -> jax.Array:
    """Keep the fewest most-likely tokens whose probability reaches top_p; -inf the rest.

    Tokens are taken by rank in the descending order, ties broken by lower index, so a
    boundary token tied with others keeps only as many of them as the mass needs ([0.4, 0.2,
    0.2, 0.2] at 0.5 keeps tokens 0 and 1). Mass within TOP_P_TOLERANCE of top_p reaches it.
    The most likely token is always kept. Matches transformers' TopPLogitsWarper up to the
    choice among tied tokens. Jittable; top_p is a Python float.
    """
    order_NxV = jnp.argsort(-logits_NxV, axis=-1, stable=True)  # rank -> token, ties by index
    sorted_NxV = jnp.take_along_axis(logits_NxV, order_NxV, axis=-1)
    probs_NxV = jax.nn.softmax(sorted_NxV, axis=-1)
    # Mass of the higher ranks: an exclusive prefix sum, nondecreasing, so `short` is a prefix.
    mass_before_NxV = jnp.pad(jnp.cumsum(probs_NxV[:, :-1], axis=-1), ((0, 0), (1, 0)))
    short_NxV = mass_before_NxV < top_p - TOP_P_TOLERANCE
    last_Nx1 = jnp.maximum(jnp.sum(short_NxV, axis=-1, keepdims=True), 1) - 1  # last kept rank
    edge_logit_Nx1 = jnp.take_along_axis(sorted_NxV, last_Nx1, axis=-1)
    edge_token_Nx1 = jnp.take_along_axis(order_NxV, last_Nx1, axis=-1)
    # A token's rank is <= the last kept rank iff it sorts before or at the edge token.
    token_V = jnp.arange(logits_NxV.shape[-1])
    keep_NxV = (logits_NxV > edge_logit_Nx1) | (
        (logits_NxV == edge_logit_Nx1) & (token_V <= edge_token_Nx1)
    )
    return jnp.where(keep_NxV, logits_NxV, -jnp.inf)


def block_size(vocab_size: int) -> int:
    """B for `categorical_from_uniform`: the divisor of V with the least G + B = B + V / B.

    G + B bounds the float32 error and sizes the two prefix sums; its optimum is 2 sqrt(V). A
    divisor leaves no short last block, whose slice would copy the logits (50,304 -> 192). If no
    divisor comes within 1.5x of the optimum (a prime V), ceil(sqrt(V)) with a short last block.
    """
    divisors = [d for d in range(1, math.isqrt(vocab_size) + 1) if vocab_size % d == 0]
    best = max(divisors)  # the largest divisor <= sqrt(V) minimises d + V / d
    if best + vocab_size // best <= 3 * math.sqrt(vocab_size):
        return best
    return math.ceil(math.sqrt(vocab_size))


def categorical_from_uniform(
    logits_NxV: jax.Array, u_Nx2: jax.Array, block: int | None = None
) -> jax.Array:
    """One token per row from softmax(logits), by a two-level inverse CDF on two uniforms;
    see `categorical_and_log_mass`, which also returns the log-softmax's normalizer parts."""
    return categorical_and_log_mass(logits_NxV, u_Nx2, block)[0]


def categorical_and_log_mass(
    logits_NxV: jax.Array, u_Nx2: jax.Array, block: int | None = None
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One token per row from softmax(logits), by a two-level inverse CDF on two uniforms.

    The vocabulary is cut into G = ceil(V / B) blocks of B tokens (the last may be short).
    With weights w = exp(logits - max) and block masses S_g, u_Nx2[:, 0] picks block j, the
    first whose inclusive prefix mass exceeds u0 * sum(S), and u_Nx2[:, 1] picks the token of
    block j whose inclusive prefix weight first exceeds u1 * S_j. By the chain rule
    P(token) = S_j / sum(S) * w / S_j = softmax(logits)[token]: inversion, and sequential
    search in a table cut into blocks (Devroye, Non-Uniform Random Variate Generation, 1986,
    sections III.2-III.3). Cost: one pass over [N, V] (max, then exp and block sums) and two
    prefix sums of G and of B entries; a float32 prefix sum over all V is several times slower
    on CPU. Precision: a float32 uniform is a multiple of 2^-23, so each level moves each of
    its cells' probabilities by under 2^-23; with an independent uniform per level the draw's
    total variation from softmax is about (G + B) * 2^-24 plus float32 sum rounding (3e-5 at
    V = 50,304), where one uniform over all V tokens could reach V * 2^-24 (3e-3).

    A -inf token is never drawn: u * total < total for u < 1 and a normal total, so the chosen
    prefix entry exceeds the one before it, and adding 0 to a float leaves it unchanged. If the
    chosen block's mass underflows (a subnormal sum) an overshoot is clamped to its last finite
    token. Rows need a finite logit. Shapes: logits_NxV float, u_Nx2 float32 in [0, 1); returns
    int32 tokens [N], the row maxima [N] and log sum_v exp(logits[:, v] - max) [N] (float32),
    read off the block masses the draw already summed, so a drawn token's log-prob,
    (logit - max) - log_mass, needs no second pass over [N, V]. Kept apart rather than as one
    log-normalizer max + log_mass: at large logits (a temperature of 0.01 scales them 100x)
    that sum rounds to max's precision, 1e-4 off where log_softmax is within 2e-5. Jittable;
    `block` (B, default `block_size(V)`) is static and need not divide V.
    """
    n, v = logits_NxV.shape
    b = block or block_size(v)
    g, tail = divmod(v, b)
    logits_NxV = logits_NxV.astype(jnp.float32)
    max_Nx1 = jnp.max(logits_NxV, axis=-1, keepdims=True)
    # Full blocks by a reshape, the short one apart: padding [N, V] to G * B would copy it.
    full_NxGxB = logits_NxV[:, : g * b].reshape(n, g, b)
    mass_NxG = jnp.sum(jnp.exp(full_NxGxB - max_Nx1[:, :, None]), axis=-1)
    if tail:
        tail_Nx1 = jnp.sum(jnp.exp(logits_NxV[:, g * b :] - max_Nx1), axis=-1, keepdims=True)
        mass_NxG = jnp.concatenate([mass_NxG, tail_Nx1], axis=-1)
    upto_NxG = jnp.cumsum(mass_NxG, axis=-1)  # upto_NxG[:, -1] >= 1: the max has weight 1
    block_N = jnp.sum(upto_NxG <= u_Nx2[:, :1] * upto_NxG[:, -1:], axis=-1)
    token_NxB = block_N[:, None] * b + jnp.arange(b)
    logits_NxB = jnp.take_along_axis(logits_NxV, jnp.minimum(token_NxB, v - 1), axis=-1)
    logits_NxB = jnp.where(token_NxB < v, logits_NxB, -jnp.inf)
    upto_NxB = jnp.cumsum(jnp.exp(logits_NxB - max_Nx1), axis=-1)
    within_N = jnp.sum(upto_NxB <= u_Nx2[:, 1:] * upto_NxB[:, -1:], axis=-1)
    last_finite_N = jnp.max(jnp.where(logits_NxB > -jnp.inf, jnp.arange(b), 0), axis=-1)
    token_N = (block_N * b + jnp.minimum(within_N, last_finite_N)).astype(jnp.int32)
    return token_N, max_Nx1[:, 0], jnp.log(upto_NxG[:, -1])


def sample_token(
    logits_NxV: jax.Array,
    rng: jax.Array,
    temperature: float,
    top_p: float,
    greedy: bool,
    block: int | None = None,
) -> jax.Array:
    """One token per row from softmax(logits / temperature), nucleus-filtered; or the argmax.

    Draws two uniforms per row (`categorical_from_uniform`), not a Gumbel per vocabulary entry
    as `jax.random.categorical` does: at [32, 50,304] that costs several LM-head matmuls.
    Returns int32 [N]; the nucleus argsort runs only when top_p < 1.
    """
    return sample_token_and_logprob(logits_NxV, rng, temperature, top_p, greedy, block)[0]


def sample_token_and_logprob(
    logits_NxV: jax.Array,
    rng: jax.Array,
    temperature: float,
    top_p: float,
    greedy: bool,
    block: int | None = None,
) -> tuple[jax.Array, jax.Array]:
    """`sample_token`'s token [N] int32 and its float32 log-prob [N] under the full
    softmax(logits / temperature) (temperature 1 when greedy), as `logprobs_from_logits`
    computes it (to float rounding: tests/test_sampler.py). Without top-p the log-prob comes
    from the draw's own block masses, saving a second log-softmax pass over [N, V].
    """
    if greedy:
        token_N = first_argmax(logits_NxV)
        return token_N, logprobs_from_logits(logits_NxV, token_N, 1.0)
    scaled_NxV = logits_NxV.astype(jnp.float32) / temperature
    u_Nx2 = jax.random.uniform(rng, (logits_NxV.shape[0], 2), jnp.float32)
    if top_p < 1.0:  # drawn from the nucleus, scored under the full softmax
        token_N = categorical_from_uniform(top_p_filter(scaled_NxV, top_p), u_Nx2, block)
        return token_N, logprobs_from_logits(logits_NxV, token_N, temperature)
    token_N, max_N, log_mass_N = categorical_and_log_mass(scaled_NxV, u_Nx2, block)
    picked_N = jnp.take_along_axis(scaled_NxV, token_N[:, None], axis=-1)[:, 0]
    return token_N, (picked_N - max_N) - log_mass_N  # as log_softmax rounds: shift first


def _last_logits(
    cfg: ModelConfig, params, tokens_BxT, positions_BxT, mask_BxTxS, cache, cache_index
):
    """LanguageModel's forward, with the vocab projection applied to the last position only.

    Saves the [B, P, V] prefill logits; `test_sampler` checks it against the full model.
    """
    h_BxTxD, cache = Backbone(cfg).apply(
        {"params": params["backbone"]}, tokens_BxT, positions_BxT, mask_BxTxS, cache, cache_index
    )
    head = nn.DenseGeneral(
        cfg.vocab_size, use_bias=False, dtype=jnp.float32, param_dtype=jnp.float32
    )
    logits_BxV = head.apply({"params": params["embed_out"]}, h_BxTxD[:, -1])
    return logits_BxV, cache


def _prefill(cfg: ModelConfig, params, prompt_BxP, mask_BxP, max_new_tokens: int, k: int):
    """Run the B distinct prompts once into a cache of P + L slots, then repeat it K times.

    Returns the next-token logits [N, V], the cache and the prompt mask [N, P], N = B*K.
    """
    b, p = prompt_BxP.shape
    attn_BxPxS = jnp.pad(causal_mask(mask_BxP), ((0, 0), (0, 0), (0, max_new_tokens)))
    cache = init_kv_cache(cfg, b, p + max_new_tokens)
    logits_BxV, cache = _last_logits(
        cfg, params, prompt_BxP, positions_from_mask(mask_BxP), attn_BxPxS, cache, 0
    )
    repeat = functools.partial(jnp.repeat, repeats=k, axis=0)
    return jax.tree.map(repeat, (logits_BxV, cache, mask_BxP))


_STATIC = ("max_new_tokens", "num_samples", "temperature", "top_p", "eos_id", "pad_id", "greedy")


def check_left_padded(prompt_mask_BxP) -> None:
    """Raise ValueError unless every prompt's last column is a real token (left padding).

    Reads the mask only where it is concrete (numpy, or a jax.Array's addressable shards that
    hold the last column); under a trace it does nothing, so jitted callers pay nothing.
    """
    if isinstance(prompt_mask_BxP, jax.core.Tracer):
        return
    if isinstance(prompt_mask_BxP, jax.Array):
        p = prompt_mask_BxP.shape[-1]
        last = [
            np.asarray(s.data)[:, -1]
            for s in prompt_mask_BxP.addressable_shards
            if range(p)[s.index[-1]][-1:] == range(p - 1, p)
        ]
        last_B = np.concatenate(last) if last else np.ones(0, bool)
    else:
        last_B = np.asarray(prompt_mask_BxP)[:, -1]
    if not np.all(last_B):
        rows = np.flatnonzero(~last_B.astype(bool))
        raise ValueError(
            f"generate: {len(rows)} prompt(s) end in padding (prompt_mask[:, -1] is 0, e.g. "
            f"row(s) {rows[:5].tolist()}); left-pad prompts: put the padding before the "
            "tokens so each prompt's last column is its last real token."
        )


def generate(
    cfg: ModelConfig,
    params,
    prompt_tokens_BxP: jax.Array,
    prompt_mask_BxP: jax.Array,
    rng: jax.Array,
    **settings,
) -> Samples:
    """Sample `num_samples` responses of up to `max_new_tokens` per left-padded prompt.

    `settings` are `_generate`'s keywords: max_new_tokens, num_samples (1), temperature (1.0),
    top_p (1.0), eos_id, pad_id, greedy (False). Raises ValueError for prompts that are not
    left-padded (`check_left_padded`: only where the mask is concrete, not under a trace) and
    for top_p or temperature out of range. The work is one jitted program (`_generate`), the
    config and sampling settings static: a loop that passes new params, prompts of the same
    shape and fresh rng keys reuses it.
    """
    check_left_padded(prompt_mask_BxP)
    return _generate(cfg, params, prompt_tokens_BxP, prompt_mask_BxP, rng, **settings)


@functools.partial(jax.jit, static_argnums=0, static_argnames=_STATIC)
def _generate(
    cfg: ModelConfig,
    params,
    prompt_tokens_BxP: jax.Array,
    prompt_mask_BxP: jax.Array,
    rng: jax.Array,
    *,
    max_new_tokens: int,
    num_samples: int = 1,
    temperature: float = 1.0,
    top_p: float = 1.0,
    eos_id: int | None,
    pad_id: int,
    greedy: bool = False,
) -> Samples:
    """`generate` after its padding check; see there."""
    if not 0.0 < top_p <= 1.0 or temperature < 0.0:
        raise ValueError(f"need 0 < top_p <= 1 and temperature >= 0; got {top_p}, {temperature}.")
    greedy = greedy or temperature == 0.0
    b, p = prompt_tokens_BxP.shape
    L, K, n = max_new_tokens, num_samples, b * num_samples
    mask_BxP = prompt_mask_BxP.astype(bool)

    logits_NxV, cache, mask_NxP = _prefill(cfg, params, prompt_tokens_BxP, mask_BxP, L, K)
    num_real_N = jnp.sum(mask_NxP, axis=-1, dtype=jnp.int32)

    def pick(i, logits_NxV, done_N):
        """Sample response token i; rows already done get pad_id and log-prob 0."""
        rng_i = jax.random.fold_in(rng, i)
        tok_N, logp_N = sample_token_and_logprob(logits_NxV, rng_i, temperature, top_p, greedy)
        tok_N = jnp.where(done_N, pad_id, tok_N)
        logp_N = jnp.where(done_N, 0.0, logp_N)
        if eos_id is not None:
            done_N = done_N | (tok_N == eos_id)
        return tok_N, logp_N, done_N

    tok_N, logp_N, done_N = pick(0, logits_NxV, jnp.zeros((n,), bool))
    resp_NxL = jnp.full((n, L), pad_id, jnp.int32).at[:, 0].set(tok_N)
    resp_logp_NxL = jnp.zeros((n, L), jnp.float32).at[:, 0].set(logp_N)

    def cond(carry):
        i, _, _, _, done_N, _ = carry
        return (i < L) & ~jnp.all(done_N)

    def body(carry):
        i, resp_NxL, resp_logp_NxL, tok_N, done_N, cache = carry
        # Feed token i-1 at cache slot P+i-1, rotary position num_real+i-1; it sees the real
        # prompt slots and the response slots written so far (itself included).
        attn_Nx1xS = jnp.concatenate(
            [mask_NxP, jnp.broadcast_to(jnp.arange(L) < i, (n, L))], axis=-1
        )[:, None, :]
        positions_Nx1 = (num_real_N + i - 1)[:, None]
        logits_NxV, cache = _last_logits(
            cfg, params, tok_N[:, None], positions_Nx1, attn_Nx1xS, cache, p + i - 1
        )
        tok_N, logp_N, done_N = pick(i, logits_NxV, done_N)
        resp_NxL = resp_NxL.at[:, i].set(tok_N)
        resp_logp_NxL = resp_logp_NxL.at[:, i].set(logp_N)
        return i + 1, resp_NxL, resp_logp_NxL, tok_N, done_N, cache

    carry = (jnp.int32(1), resp_NxL, resp_logp_NxL, tok_N, done_N, cache)
    _, resp_NxL, resp_logp_NxL, _, _, _ = jax.lax.while_loop(cond, body, carry)
    prompt_NxP = jnp.repeat(prompt_tokens_BxP.astype(jnp.int32), K, axis=0)
    return _assemble(prompt_NxP, mask_NxP, resp_NxL, resp_logp_NxL, eos_id)


def _assemble(prompt_NxP, mask_NxP, resp_NxL, resp_logp_NxL, eos_id) -> Samples:
    """Concatenate prompt and response; a response token is real iff no EOS precedes it."""
    if eos_id is None:
        valid_NxL = jnp.ones(resp_NxL.shape, bool)
        finished_N = jnp.zeros(resp_NxL.shape[:1], bool)
    else:
        eos_NxL = resp_NxL == eos_id
        valid_NxL = (jnp.cumsum(eos_NxL, axis=-1) - eos_NxL) == 0
        finished_N = jnp.any(eos_NxL & valid_NxL, axis=-1)
    return Samples(
        tokens=jnp.concatenate([prompt_NxP, resp_NxL], axis=-1),
        mask=jnp.concatenate([mask_NxP, valid_NxL], axis=-1),
        loss_mask=jnp.concatenate([jnp.zeros_like(mask_NxP), valid_NxL], axis=-1),
        logp=jnp.concatenate(
            [jnp.zeros(mask_NxP.shape, jnp.float32), jnp.where(valid_NxL, resp_logp_NxL, 0.0)],
            axis=-1,
        ),
        lengths=jnp.sum(valid_NxL, axis=-1, dtype=jnp.int32),
        finished=finished_N,
    )
