"""Decoder properties: causality, padding, rotary, KV cache, remat, bf16, scalar head init.

Prime-sized dims (vocab 67, T 7 or 11, B 3, heads 3, d_ff 37) so that axis mix-ups fail.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlft import models
from rlft.models import (
    LanguageModel,
    causal_mask,
    init_kv_cache,
    model_config,
    positions_from_mask,
)
from rlft.objectives.logprobs import token_logprobs

B, V = 3, 67

# Jitted once per config: eager op-by-op dispatch would dominate the runtime on CPU.
lm_logits = jax.jit(models.lm_logits, static_argnums=0)
init_params = jax.jit(models.init_params, static_argnums=(0, 1))


def tiny_cfg(**overrides):
    fields = dict(vocab_size=V, num_layers=2, d_model=24, num_heads=3, d_ff=37, max_len=64)
    return model_config("tiny", **{**fields, **overrides})


@functools.cache
def lm_params(cfg, seed=0):
    """Sharpened init params; they depend only on the shapes, so numeric variants share them."""
    shapes = {
        k: getattr(cfg, k) for k in ("vocab_size", "num_layers", "d_model", "num_heads", "d_ff")
    }
    params = nn.unbox(init_params("lm", model_config("tiny", **shapes), jax.random.key(seed)))
    return sharpen(params)


def sharpen(params, factor=10.0):
    """Scale query and key kernels so attention is peaked rather than near-uniform at init."""

    def scale(path, x):
        names = {getattr(k, "key", None) for k in path}
        return x * factor if names & {"query", "key"} and "kernel" in names else x

    return jax.tree_util.tree_map_with_path(scale, params)


def left_pad_mask(pads, t):
    """[len(pads), t] bool with pads[b] leading pad slots in row b."""
    return jnp.arange(t)[None, :] >= jnp.asarray(pads)[:, None]


def random_tokens(seed, shape):
    return jax.random.randint(jax.random.key(seed), shape, 0, V)


def test_causality_via_gradients():
    """d logits[b, t] / d input embedding [b', s] is nonzero iff b' = b and s is visible to t."""
    cfg, T = tiny_cfg(), 7
    params = lm_params(cfg)
    # Distinct tokens everywhere, so each embedding-table row belongs to one (b, s).
    tokens_BxT = jax.random.permutation(jax.random.key(1), V)[: B * T].reshape(B, T)
    mask_BxT = left_pad_mask([0, 2, 0], T)
    w_V = jax.random.normal(jax.random.key(2), (V,))

    def readout_BxT(table_VxD):
        p = {**params, "backbone": {**params["backbone"], "embed_in": {"embedding": table_VxD}}}
        return jnp.einsum("btv,v->bt", lm_logits(cfg, p, tokens_BxT, mask_BxT), w_V)

    jac_BxTxVxD = jax.jit(jax.jacrev(readout_BxT))(params["backbone"]["embed_in"]["embedding"])
    jac_BxTxBxTxD = jac_BxTxVxD[:, :, tokens_BxT]
    influence = np.asarray(jnp.linalg.norm(jac_BxTxBxTxD, axis=-1))
    same_row = np.eye(B, dtype=bool)[:, None, :, None]
    t, s = np.arange(T)[:, None], np.arange(T)[None, :]
    # A real query sees real keys s <= t; a pad query sees only itself (causal_mask's diagonal).
    visible_BxTxT = (s <= t) & (np.asarray(mask_BxT)[:, None, :] | (s == t))
    expected = same_row & visible_BxTxT[:, :, None, :]
    assert np.all(influence[~expected] == 0.0)
    assert np.all(influence[expected] > 1e-6)


def test_left_padding_is_invisible():
    cfg, T = tiny_cfg(), 7
    params = lm_params(cfg)
    tokens_BxT = random_tokens(1, (B, T))
    logits_BxTxV = lm_logits(cfg, params, tokens_BxT, jnp.ones((B, T), bool))
    pads, width = np.array([0, 2, 5]), T + 5
    garbage_BxW = random_tokens(2, (B, width))  # pad slots hold arbitrary tokens
    cols_BxT = pads[:, None] + np.arange(T)[None, :]
    padded_BxW = garbage_BxW.at[np.arange(B)[:, None], cols_BxT].set(tokens_BxT)
    mask_BxW = left_pad_mask(pads, width)
    padded_logits_BxWxV = lm_logits(cfg, params, padded_BxW, mask_BxW)
    np.testing.assert_allclose(
        padded_logits_BxWxV[np.arange(B)[:, None], cols_BxT], logits_BxTxV, atol=1e-5, rtol=0
    )


@functools.partial(jax.jit, static_argnums=0)
def _apply_step(cfg, params, tokens_BxT, positions_BxT, mask_BxTxS, cache, cache_index):
    return LanguageModel(cfg).apply(
        {"params": params}, tokens_BxT, positions_BxT, mask_BxTxS, cache, cache_index
    )


def cached_logits(cfg, params, tokens_BxT, mask_BxT, prefix, spare=2):
    """Prefill tokens[:, :prefix] into a cache of T + spare slots, then decode one at a time."""
    t = tokens_BxT.shape[1]
    positions_BxT = positions_from_mask(mask_BxT)
    attn_BxTxS = jnp.pad(causal_mask(mask_BxT), ((0, 0), (0, 0), (0, spare)))
    cache = init_kv_cache(cfg, tokens_BxT.shape[0], t + spare)
    chunks, bounds = [], [(0, prefix)] + [(j, j + 1) for j in range(prefix, t)]
    for lo, hi in bounds:  # cache_index lo: this chunk's k/v land in slots lo..hi-1
        inputs = (tokens_BxT[:, lo:hi], positions_BxT[:, lo:hi], attn_BxTxS[:, lo:hi])
        logits, cache = _apply_step(cfg, params, *inputs, cache, lo)
        chunks.append(logits)
    return jnp.concatenate(chunks, axis=1)


@pytest.mark.parametrize("parallel_residual", [True, False])
@pytest.mark.parametrize("rotary_pct", [0.25, 1.0])
def test_kv_cache_decode_equals_full_forward(parallel_residual, rotary_pct):
    cfg, T, prefix = tiny_cfg(parallel_residual=parallel_residual, rotary_pct=rotary_pct), 11, 4
    params = lm_params(cfg)
    tokens_BxT = random_tokens(1, (B, T))
    mask_BxT = left_pad_mask([0, 2, 3], T)  # row 2's prompt has a single real token
    full_BxTxV = lm_logits(cfg, params, tokens_BxT, mask_BxT)
    decoded_BxTxV = cached_logits(cfg, params, tokens_BxT, mask_BxT, prefix)
    real = np.asarray(mask_BxT)
    np.testing.assert_allclose(decoded_BxTxV[real], full_BxTxV[real], atol=1e-5, rtol=0)


def test_kv_cache_layout_is_heads_before_slots():
    """[B, H, S, K], so a decode step's attention einsums read the cache without a transpose."""
    cfg, S = tiny_cfg(), 13
    cache = init_kv_cache(cfg, B, S)
    assert len(cache) == cfg.num_layers
    assert all(x.shape == (B, cfg.num_heads, S, cfg.head_dim) for kv in cache for x in kv)


def test_rotary_sees_only_relative_positions():
    """Shifting every position by a constant leaves the logits unchanged; doubling them does not.

    With rotary, left padding is invisible twice over (positions_from_mask and shift
    invariance), so the padding test cannot catch a wrong rotary formula; this one can.
    """
    cfg, T = tiny_cfg(), 7
    params = lm_params(cfg)
    tokens_BxT, mask_BxT = random_tokens(1, (B, T)), left_pad_mask([0, 1, 3], T)
    attn_BxTxT, positions_BxT = causal_mask(mask_BxT), positions_from_mask(mask_BxT)

    def logits(positions_BxT):
        return _apply_step(cfg, params, tokens_BxT, positions_BxT, attn_BxTxT, None, None)[0]

    base_BxTxV = logits(positions_BxT)
    np.testing.assert_allclose(logits(positions_BxT + 13), base_BxTxV, atol=1e-5, rtol=0)
    assert np.max(np.abs(logits(2 * positions_BxT) - base_BxTxV)) > 1e-2


def test_remat_matches_plain():
    cfg, T = tiny_cfg(), 7
    params = lm_params(cfg)
    tokens_BxT, mask_BxT = random_tokens(1, (B, T)), left_pad_mask([0, 1, 3], T)

    @functools.partial(jax.jit, static_argnums=1)
    @functools.partial(jax.grad, has_aux=True)
    def grad_and_logits(params, cfg):
        logits_BxTxV = models.lm_logits(cfg, params, tokens_BxT, mask_BxT)
        logp_BxT = token_logprobs(logits_BxTxV, tokens_BxT)
        return -jnp.sum(jnp.where(mask_BxT, logp_BxT, 0.0)), logits_BxTxV

    grads, logits_BxTxV = grad_and_logits(params, cfg)
    remat_grads, remat_logits_BxTxV = grad_and_logits(params, tiny_cfg(remat=True))
    np.testing.assert_allclose(remat_logits_BxTxV, logits_BxTxV, atol=1e-5, rtol=0)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5), remat_grads, grads
    )


def test_bf16_compute_keeps_float32_params_and_logits():
    cfg, T = tiny_cfg(dtype="bfloat16"), 7
    params = lm_params(cfg)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
    tokens_BxT, mask_BxT = random_tokens(1, (B, T)), left_pad_mask([0, 1, 3], T)
    logits_BxTxV = lm_logits(cfg, params, tokens_BxT, mask_BxT)
    ref_BxTxV = lm_logits(tiny_cfg(), params, tokens_BxT, mask_BxT)
    assert logits_BxTxV.dtype == jnp.float32
    # A bf16 tolerance: 8 mantissa bits through 2 layers; relative error in norm under 3%.
    rel_err = jnp.linalg.norm(logits_BxTxV - ref_BxTxV) / jnp.linalg.norm(ref_BxTxV)
    assert rel_err < 3e-2
    assert not np.allclose(logits_BxTxV, ref_BxTxV, atol=1e-6, rtol=0)  # really ran in bf16


def test_scalar_head_init():
    """Head weights ~ N(0, 1/sqrt(D+1)) and zero bias; D = 4095 weights estimate the std."""
    # No blocks: the head's init does not depend on them, and a wide model stays cheap.
    cfg = model_config("tiny", vocab_size=V, num_layers=0, d_model=4095, num_heads=5)
    head = nn.unbox(init_params("scalar", cfg, jax.random.key(0)))["scalar_head"]
    kernel = np.asarray(head["kernel"])
    assert kernel.shape == (cfg.d_model, 1) and kernel.dtype == np.float32
    np.testing.assert_allclose(kernel.std(), (cfg.d_model + 1) ** -0.5, rtol=0.05)
    assert abs(kernel.mean()) < 0.1 * (cfg.d_model + 1) ** -0.5
    assert np.all(np.asarray(head["bias"]) == 0.0)


def test_param_shapes_trace_each_model_once(monkeypatch):
    """Restore targets and sharding plans share one traced init per (kind, config): a second
    abstract_params or init_state of the same models traces no model; the shapes are
    init_params's, logical axis names included."""
    from rlft.config import OptimConfig
    from rlft.models.params_io import abstract_params
    from rlft.parallel import make_mesh
    from rlft.train.state import init_state, make_optimizer

    cfg = models.model_config("tiny", d_ff=96)  # a config no other test has traced
    calls = []
    real = models.MODEL_KINDS["lm"]

    class Counting(real):
        def __call__(self, *args, **kwargs):
            if self.is_initializing():
                calls.append(1)
            return super().__call__(*args, **kwargs)

    monkeypatch.setitem(models.MODEL_KINDS, "lm", Counting)
    models._param_shapes.cache_clear()
    jax.clear_caches()  # init_state's jitted init is kept per setting: trace it afresh
    first = abstract_params("lm", cfg)
    assert len(calls) == 1
    assert jax.tree.map(lambda x: (x.shape, x.dtype), abstract_params("lm", cfg)) == (
        jax.tree.map(lambda x: (x.shape, x.dtype), first)
    )
    assert len(calls) == 1  # cached: no second trace
    boxed = models.param_shapes("lm", cfg)
    direct = jax.eval_shape(lambda r: models.init_params("lm", cfg, r), jax.random.PRNGKey(0))
    assert jax.tree.structure(boxed) == jax.tree.structure(direct)  # boxes (axis names) kept
    calls.clear()
    tx, _ = make_optimizer(OptimConfig(), 10)
    init_state({"policy": ("lm", cfg)}, tx, 0, make_mesh(1, 1, devices=jax.devices()[:1]))
    assert len(calls) == 1  # the jitted init alone; the sharding plan reused the cache


def test_gelu_exact_matches_float64_erf_and_its_derivative():
    """Against math.erf in float64: GELU(x) = x Phi(x), GELU'(x) = Phi(x) + x phi(x)."""
    import math

    from rlft.models.transformer import gelu_exact

    x = np.concatenate([np.linspace(-12, 12, 2001), np.random.default_rng(0).normal(0, 3, 999)])
    phi_cdf = np.array([0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x])
    phi_pdf = np.exp(-0.5 * x**2) / math.sqrt(2 * math.pi)
    x32 = jnp.asarray(x, jnp.float32)
    np.testing.assert_allclose(np.asarray(gelu_exact(x32)), x * phi_cdf, atol=2e-6, rtol=2e-6)
    grad = jax.vmap(jax.grad(gelu_exact))(x32)
    np.testing.assert_allclose(np.asarray(grad), phi_cdf + x * phi_pdf, atol=2e-6, rtol=2e-6)
    # bfloat16 in, bfloat16 out, the float64 value rounded once (within one bf16 step, 2^-8,
    # or float32's own cancellation of 1 + erf in the far tail, as above and in torch), also
    # at x near -3, where 1 + erf computed in bfloat16 was off by 0.002
    x16 = x32.astype(jnp.bfloat16)
    out16 = gelu_exact(x16)
    assert out16.dtype == jnp.bfloat16
    x16_64 = np.asarray(x16, np.float64)
    want = x16_64 * np.array([0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x16_64])
    np.testing.assert_allclose(np.asarray(out16, np.float64), want, rtol=2**-8, atol=2e-6)
