"""Sampler properties: trainer log-probs, EOS, K-sample layout, greedy, top-p, determinism.

Prime-sized dims: vocab 67 (7 for the EOS test), B 3 prompts of width P 5, K 4, L 11.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlft import models
from rlft.objectives.logprobs import logprobs_from_logits, token_logprobs
from rlft.rollout import generate, sample_token, sampler, top_p_filter

B, P, K, L = 3, 5, 4, 11
PADS = [0, 2, 4]  # left padding per prompt; the last prompt has one real token
PAD_ID = 2  # nonzero, so a zero-filled buffer is not mistaken for padding

lm_logits = jax.jit(models.lm_logits, static_argnums=0)


def tiny_cfg(vocab_size=67):
    return models.model_config(
        "tiny", vocab_size=vocab_size, num_layers=2, d_model=24, num_heads=3, d_ff=37, max_len=64
    )


@functools.cache
def setup(vocab_size=67, logit_scale=8.0):
    """(cfg, params, prompts, prompt mask); the output layer is scaled so logits are peaked."""
    cfg = tiny_cfg(vocab_size)
    params = nn.unbox(
        jax.jit(models.init_params, static_argnums=(0, 1))("lm", cfg, jax.random.key(0))
    )
    params = {**params, "embed_out": {"kernel": params["embed_out"]["kernel"] * logit_scale}}
    prompt_BxP = jax.random.randint(jax.random.key(1), (B, P), 1, vocab_size)
    mask_BxP = jnp.arange(P)[None, :] >= jnp.asarray(PADS)[:, None]
    return cfg, params, jnp.where(mask_BxP, prompt_BxP, PAD_ID), mask_BxP


def sample(seed=2, vocab_size=67, **kwargs):
    cfg, params, prompt_BxP, mask_BxP = setup(vocab_size)
    kwargs = {"max_new_tokens": L, "num_samples": K, "eos_id": None, "pad_id": PAD_ID, **kwargs}
    return generate(cfg, params, prompt_BxP, mask_BxP, jax.random.key(seed), **kwargs)


def trainer_logp(samples, temperature, vocab_size=67):
    cfg, params, _, _ = setup(vocab_size)
    logits_NxTxV = lm_logits(cfg, params, samples.tokens, samples.mask)
    return jnp.where(
        samples.loss_mask, token_logprobs(logits_NxTxV, samples.tokens, temperature), 0.0
    )


@pytest.mark.parametrize("temperature", [0.7, 1.0])
def test_sampler_logp_equals_trainer_logp(temperature):
    samples = sample(temperature=temperature)
    assert samples.tokens.shape == samples.logp.shape == (B * K, P + L)
    assert np.all(samples.logp[~samples.loss_mask] == 0.0)
    np.testing.assert_allclose(samples.logp, trainer_logp(samples, temperature), atol=1e-5, rtol=0)


@pytest.mark.parametrize("new_tokens", [L, 37])
def test_eos_stops_rows_and_masks_the_tail(new_tokens):
    """With 11 new tokens some rows stop; with 37 all do by step 29 and the loop exits early."""
    eos_id = 3  # vocab 7: EOS comes at a different step in different rows
    samples = sample(vocab_size=7, eos_id=eos_id, max_new_tokens=new_tokens)
    tokens, mask, loss_mask = (np.asarray(x)[:, P:] for x in samples[:3])
    lengths = np.asarray(samples.lengths)
    assert len(set(lengths)) > 2
    if new_tokens == L:
        assert 0 < np.sum(samples.finished) < B * K
    else:
        assert np.all(samples.finished) and np.max(lengths) < new_tokens
    for row in range(B * K):
        hits = np.flatnonzero(tokens[row] == eos_id)
        n = hits[0] + 1 if len(hits) else new_tokens
        assert lengths[row] == n and bool(samples.finished[row]) == bool(len(hits))
        assert np.all(tokens[row, n:] == PAD_ID)
        assert np.all(mask[row, :n]) and not np.any(mask[row, n:])
        np.testing.assert_array_equal(loss_mask[row], mask[row])
    assert not np.any(samples.loss_mask[:, :P])
    np.testing.assert_allclose(
        samples.logp, trainer_logp(samples, 1.0, vocab_size=7), atol=1e-5, rtol=0
    )


def test_k_samples_are_prompt_major():
    _, _, prompt_BxP, mask_BxP = setup()
    samples = sample()
    np.testing.assert_array_equal(samples.tokens[:, :P], np.repeat(prompt_BxP, K, axis=0))
    np.testing.assert_array_equal(samples.mask[:, :P], np.repeat(mask_BxP, K, axis=0))
    responses = np.asarray(samples.tokens[:, P:]).reshape(B, K, L)
    for b in range(B):  # the K samples of a prompt are distinct draws
        assert len({tuple(r) for r in responses[b]}) == K


def greedy_reference(cfg, params, prompt_BxP, mask_BxP, eos_id):
    """No cache: rerun the full forward for every new token and take the argmax."""
    tokens_NxT = jnp.repeat(jnp.pad(prompt_BxP, ((0, 0), (0, L))), K, axis=0)
    mask_NxT = jnp.repeat(jnp.pad(mask_BxP, ((0, 0), (0, L))), K, axis=0)
    done_N = jnp.zeros(B * K, bool)
    for i in range(L):
        logits_NxV = lm_logits(cfg, params, tokens_NxT, mask_NxT)[:, P + i - 1]
        tok_N = jnp.where(done_N, PAD_ID, jnp.argmax(logits_NxV, axis=-1))
        tokens_NxT, mask_NxT = (
            tokens_NxT.at[:, P + i].set(tok_N),
            mask_NxT.at[:, P + i].set(~done_N),
        )
        done_N = done_N | (tok_N == eos_id)
    return tokens_NxT


GREEDY_EOS = 12  # greedy rows 4-7 emit it at step 2, the others never (asserted below)


def test_greedy_equals_stepwise_argmax_of_full_forward():
    eos_id = GREEDY_EOS
    samples = sample(greedy=True, eos_id=eos_id)
    np.testing.assert_array_equal(samples.tokens, greedy_reference(*setup(), eos_id=eos_id))
    np.testing.assert_allclose(samples.logp, trainer_logp(samples, 1.0), atol=1e-5, rtol=0)
    assert len({tuple(r) for r in np.asarray(samples.tokens[:, P:])}) > 1
    np.testing.assert_array_equal(samples.finished, np.repeat([False, True, False], K))


def test_tiny_top_p_keeps_only_the_argmax():
    greedy = sample(seed=3, greedy=True, eos_id=GREEDY_EOS)
    nucleus = sample(seed=4, temperature=1.0, top_p=1e-6, eos_id=GREEDY_EOS)
    np.testing.assert_array_equal(nucleus.tokens, greedy.tokens)
    np.testing.assert_allclose(nucleus.logp, greedy.logp, atol=1e-6, rtol=0)  # full softmax


def test_top_p_filter_hand_case():
    logits_1xV = jnp.log(jnp.array([[0.05, 0.5, 0.15, 0.3]]))
    kept = [np.isfinite(top_p_filter(logits_1xV, p)[0]).tolist() for p in (0.5, 0.8, 0.81, 1.0)]
    assert kept == [
        [False, True, False, False],
        [False, True, False, True],
        [False, True, True, True],
        [True, True, True, True],
    ]


@pytest.mark.parametrize(
    "probs,top_p,kept",
    [
        # Ties at the boundary: the fewest tokens reaching 0.5 are 2, the lower index first.
        ([0.4, 0.2, 0.2, 0.2], 0.5, [1, 1, 0, 0]),
        ([0.2, 0.4, 0.2, 0.2], 0.5, [1, 1, 0, 0]),
        ([0.25, 0.25, 0.25, 0.25], 0.5, [1, 1, 0, 0]),
        ([0.1] * 7, 0.3, [1, 1, 1, 0, 0, 0, 0]),
        # 0.5 + 0.3 reaches 0.8 exactly: 2 tokens (the earlier filter kept 3).
        ([0.3, 0.5, 0.1, 0.06, 0.04], 0.8, [1, 1, 0, 0, 0]),
        ([0.3, 0.5, 0.1, 0.06, 0.04], 0.81, [1, 1, 1, 0, 0]),
        # 0.46 + 0.36 reaches 0.82 exactly, but the float32 sum falls short: the tolerance.
        ([0.15, 0.36, 0.46, 0.03], 0.82, [0, 1, 1, 0]),
        ([0.3, 0.5, 0.1, 0.06, 0.04], 1e-9, [0, 1, 0, 0, 0]),  # the argmax always stays
    ],
)
def test_top_p_filter_takes_tokens_by_rank(probs, top_p, kept):
    logits_1xV = jnp.log(jnp.array([probs], jnp.float32))
    got = jax.jit(top_p_filter, static_argnums=1)(logits_1xV, top_p)
    assert np.isfinite(got[0]).astype(int).tolist() == kept
    np.testing.assert_array_equal(got[0][np.array(kept, bool)], logits_1xV[0][np.array(kept, bool)])


def test_top_p_filter_matches_transformers():
    """Against transformers' TopPLogitsWarper (torch, float32) and a float64 numpy count, on
    random rows of three sharpnesses. Rows whose exact boundary mass lies within twice the
    tolerance of top_p are left out (there the float32 sums, not the rule, decide); on the
    hand rows only the count is compared (among ties transformers keeps the higher index)."""
    torch = pytest.importorskip("torch")
    warper_cls = pytest.importorskip("transformers.generation.logits_process").TopPLogitsWarper
    from rlft.rollout.sampler import TOP_P_TOLERANCE  # noqa: PLC0415

    rng = np.random.default_rng(0)
    logits_NxV = np.concatenate([rng.normal(size=(61, 97)) * s for s in (0.5, 2.0, 5.0)])
    logits_NxV = logits_NxV.astype(np.float32)
    filt = jax.jit(top_p_filter, static_argnums=1)
    probs_NxV = np.exp(logits_NxV.astype(np.float64))
    probs_NxV = -np.sort(-probs_NxV / probs_NxV.sum(-1, keepdims=True), axis=-1)
    mass_before_NxV = np.cumsum(probs_NxV, axis=-1) - probs_NxV
    compared = 0
    for top_p in (0.1, 0.5, 0.9, 0.99):
        ours_NxV = np.isfinite(filt(jnp.asarray(logits_NxV), top_p))
        theirs_NxV = np.isfinite(warper_cls(top_p)(None, torch.tensor(logits_NxV)).numpy())
        clear_N = np.all(np.abs(mass_before_NxV - top_p) > 2 * TOP_P_TOLERANCE, axis=-1)
        count_N = np.maximum(np.sum(mass_before_NxV < top_p, axis=-1), 1)
        np.testing.assert_array_equal(ours_NxV[clear_N], theirs_NxV[clear_N])
        np.testing.assert_array_equal(ours_NxV.sum(-1)[clear_N], count_N[clear_N])
        compared += clear_N.sum()
    assert compared > 0.98 * 4 * len(logits_NxV)
    hand = [([0.4, 0.2, 0.2, 0.2], 0.5), ([0.3, 0.5, 0.1, 0.06, 0.04], 0.8)]
    for probs, top_p in [*hand, ([0.15, 0.36, 0.46, 0.03], 0.82)]:
        logits_1xV = np.log(np.array([probs], np.float32))
        theirs = np.isfinite(warper_cls(top_p)(None, torch.tensor(logits_1xV)).numpy())
        assert np.isfinite(filt(jnp.asarray(logits_1xV), top_p)).sum() == theirs.sum()


@pytest.mark.parametrize("temperature,top_p", [(0.5, 1.0), (2.0, 0.8)])
def test_sample_token_frequencies(temperature, top_p):
    """Draws follow softmax(logits / T), renormalised over the nucleus (4-sigma bound)."""
    n = 40_000
    logits_V = jnp.array([0.0, 1.0, -0.5, 0.4, 2.0])
    probs_V = np.asarray(jax.nn.softmax(top_p_filter(logits_V[None] / temperature, top_p)[0]))
    toks_N = sample_token(
        jnp.broadcast_to(logits_V, (n, 5)), jax.random.key(0), temperature, top_p, False
    )
    freqs_V = np.bincount(np.asarray(toks_N), minlength=5) / n
    assert np.all(np.abs(freqs_V - probs_V) < 4 * np.sqrt(probs_V * (1 - probs_V) / n) + 1e-9)
    assert top_p == 1.0 or np.sum(probs_V == 0) == 1  # nucleus of 4 (hand-checked)


def test_right_padded_prompts_are_rejected():
    cfg, params, prompt_BxP, mask_BxP = setup()
    kwargs = {"max_new_tokens": 2, "eos_id": None, "pad_id": PAD_ID}
    right_BxP = mask_BxP[:, ::-1]  # the same real tokens per row, the padding at the end
    for mask in (right_BxP, np.asarray(right_BxP)):
        with pytest.raises(ValueError, match=r"row\(s\) \[1, 2\]\); left-pad prompts"):
            generate(cfg, params, prompt_BxP, mask, jax.random.key(0), **kwargs)
    # Under a trace the mask is not read: jitted callers (the PPO rollout) pay nothing.
    jitted = jax.jit(lambda m: generate(cfg, params, prompt_BxP, m, jax.random.key(0), **kwargs))
    assert jitted(right_BxP).tokens.shape == (B, P + 2)


@pytest.mark.parametrize("spec", [("data", None), (None, "data")])
def test_left_padding_check_reads_sharded_masks(spec):
    """Rows or columns over 8 devices: only the shards holding the last column are read."""
    from jax.sharding import NamedSharding, PartitionSpec  # noqa: PLC0415

    mesh = jax.make_mesh((8,), ("data",))
    left_8x8 = np.arange(8)[None, :] >= np.arange(8)[:, None]  # row r: r pads, then tokens
    put = functools.partial(jax.device_put, device=NamedSharding(mesh, PartitionSpec(*spec)))
    sampler.check_left_padded(put(left_8x8))
    right_8x8 = left_8x8.copy()
    right_8x8[5] = left_8x8[5, ::-1]  # row 5 padded on the right
    with pytest.raises(ValueError, match=r"1 prompt\(s\) end in padding .*row\(s\) \[5\]"):
        sampler.check_left_padded(put(right_8x8))


def test_same_rng_same_samples_and_no_recompile():
    first, again, other = sample(seed=7), sample(seed=7), sample(seed=8)
    jax.tree.map(np.testing.assert_array_equal, first, again)
    assert not np.array_equal(first.tokens, other.tokens)
    if not hasattr(sampler._generate, "_cache_size"):
        pytest.skip("jax.jit no longer exposes _cache_size")
    compiled = sampler._generate._cache_size()
    cfg, params, prompt_BxP, mask_BxP = setup()
    new_params = jax.tree.map(lambda x: x * 1.01, params)
    generate(
        cfg,
        new_params,
        prompt_BxP[::-1],
        mask_BxP[::-1],
        jax.random.key(9),
        max_new_tokens=L,
        num_samples=K,
        eos_id=None,
        pad_id=PAD_ID,
    )
    assert sampler._generate._cache_size() == compiled


def wide_logits(dtype=jnp.float32, n=16, v=50_304):
    """[n, v] logits at Pythia's vocabulary (192 blocks of 262) with a wide spread, -inf
    entries and one dominant logit."""
    logits_NxV = 6.0 * jax.random.normal(jax.random.key(5), (n, v))
    return logits_NxV.at[:, :1000].set(-jnp.inf).at[0, 7].set(40.0).astype(dtype)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("temperature", [1.3, 0.7, 0.01, 0.003])
def test_fused_logprob_equals_the_trainers(temperature, dtype):
    """The log-prob read off the draw's block masses = the trainer's logprobs_from_logits at
    the drawn token, to float32 rounding, also at low temperature (logits / T in the
    thousands) and from bf16 logits."""
    logits_NxV, rng = wide_logits(dtype), jax.random.key(6)
    token_N, logp_N = sampler.sample_token_and_logprob(logits_NxV, rng, temperature, 1.0, False)
    want_N = logprobs_from_logits(logits_NxV, token_N, temperature)
    np.testing.assert_allclose(logp_N, want_N, atol=1e-5, rtol=0)


@pytest.mark.parametrize("temperature,top_p", [(0.7, 1.0), (1.3, 1.0), (0.7, 0.9), (0.0, 1.0)])
def test_sample_token_and_logprob_matches_a_float64_log_softmax(temperature, top_p):
    """Every path of sample_token_and_logprob (fused, nucleus, greedy) against plain numpy in
    float64: log softmax(logits / T)[token] under the full softmax (T = 1 when greedy)."""
    logits_NxV, rng, greedy = wide_logits(), jax.random.key(6), temperature == 0.0
    token_N, logp_N = sampler.sample_token_and_logprob(logits_NxV, rng, temperature, top_p, greedy)
    t = 1.0 if greedy else temperature
    x_NxV = np.asarray(logits_NxV, np.float64) / t
    max_Nx1 = x_NxV.max(axis=-1, keepdims=True)
    want_NxV = x_NxV - max_Nx1 - np.log(np.exp(x_NxV - max_Nx1).sum(axis=-1, keepdims=True))
    want_N = want_NxV[np.arange(len(want_NxV)), np.asarray(token_N)]
    np.testing.assert_allclose(logp_N, want_N, atol=1e-5, rtol=0)
