"""`rlft.models.transformer.masked_attention`: its forward against a float64 numpy softmax,
its hand-written backward against jax's own derivative of the plain formula and, in bfloat16,
against float64 (no less accurate than the plain formula when keys or values share an offset).

Prime-sized dims (B 3, H 2, T 7, S 11, K 5) so that axis mix-ups fail. The masks include a
row with every key masked (uniform attention, as a softmax over equal logits) and rows with
one visible key.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlft.models.transformer import masked_attention

B, H, T, S, K = 3, 2, 7, 11, 5
SCALE = K**-0.5


def _inputs(dtype=jnp.float32, seed=0):
    rng = np.random.default_rng(seed)
    q, k, v = (rng.normal(size=shape) for shape in ((B, H, T, K), (B, H, S, K), (B, H, S, K)))
    mask_BxTxS = rng.random((B, T, S)) < 0.6
    mask_BxTxS[0, 2] = False  # nothing visible: uniform over all keys
    mask_BxTxS[1, 3] = False
    mask_BxTxS[1, 3, 4] = True  # one visible key
    return (*(jnp.asarray(x, dtype) for x in (q, k, v)), jnp.asarray(mask_BxTxS))


def _plain(q, k, v, mask_BxTxS, scale):
    """The attention rlft computed before the custom backward: jax differentiates it."""
    logits = jnp.einsum("bhtk,bhsk->bhts", q, k, preferred_element_type=jnp.float32) * scale
    logits = jnp.where(mask_BxTxS[:, None], logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1).astype(q.dtype)
    return jnp.einsum("bhts,bhsk->bhtk", probs, v.astype(q.dtype))


def test_forward_matches_float64_numpy():
    q, k, v, mask = _inputs()
    out = np.asarray(jax.jit(masked_attention, static_argnums=4)(q, k, v, mask, SCALE))
    logits = np.einsum("bhtk,bhsk->bhts", *(np.asarray(x, np.float64) for x in (q, k))) * SCALE
    logits = np.where(np.asarray(mask)[:, None], logits, -np.inf)
    logits[~np.isfinite(logits).any(-1)] = 0.0  # an empty row: uniform
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    ref = np.einsum("bhts,bhsk->bhtk", probs, np.asarray(v, np.float64))
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[0, :, 2], np.asarray(v, np.float64)[0].mean(1), atol=1e-6)


@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 2e-6), (jnp.bfloat16, 2e-2)])
def test_backward_matches_jax_derivative_of_the_plain_formula(dtype, tol):
    q, k, v, mask = _inputs(dtype)
    w = jnp.asarray(np.random.default_rng(1).normal(size=(B, H, T, K)), jnp.float32)

    def loss(fn):  # a cotangent that differs per output element
        return lambda q, k, v: jnp.sum(fn(q, k, v, mask, SCALE).astype(jnp.float32) * w)

    grads = jax.jit(jax.grad(loss(masked_attention), argnums=(0, 1, 2)))(q, k, v)
    refs = jax.jit(jax.grad(loss(_plain), argnums=(0, 1, 2)))(q, k, v)
    for name, g, r in zip("qkv", grads, refs, strict=True):
        assert g.dtype == dtype, name
        scale = float(jnp.abs(r.astype(jnp.float32)).max())
        np.testing.assert_allclose(
            np.asarray(g, np.float32), np.asarray(r, np.float32), atol=tol * scale, err_msg=name
        )
    # the empty row's query gets no gradient (its logits are all masked constants)
    assert not np.asarray(grads[0][0, :, 2], np.float32).any()


def _rel_err(got, ref_f64):
    got, ref_f64 = np.asarray(got, np.float64), np.asarray(ref_f64)
    return float(np.abs(got - ref_f64).max() / np.abs(ref_f64).max())


@pytest.mark.parametrize("k_offset,v_offset", [(0, 0), (0, 32), (32, 0), (64, 64)])
def test_bfloat16_gradients_as_accurate_as_the_plain_formula(k_offset, v_offset):
    """Against float64 on the same bfloat16-rounded inputs, with a component shared by all
    keys or values (rounding that breaks each row of dS summing to 0 lets it into dQ, dK)."""
    jax.config.update("jax_enable_x64", True)
    try:
        rng = np.random.default_rng(2)
        q, k, v = (rng.normal(size=s) for s in ((B, H, T, K), (B, H, S, K), (B, H, S, K)))
        k, v = k + k_offset, v + v_offset
        q, k, v = (jnp.asarray(x, jnp.bfloat16) for x in (q, k, v))
        mask = jnp.asarray(np.tril(np.ones((T, S), bool), k=S - T)[None].repeat(B, 0))
        w = rng.normal(size=(B, H, T, K))

        def grads(fn, dtype, *args):
            def loss(q, k, v):
                return jnp.sum(fn(q, k, v, mask, SCALE).astype(dtype) * w.astype(dtype))

            return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(*args)

        ref = grads(_plain, jnp.float64, *(x.astype(jnp.float64) for x in (q, k, v)))
        ours = grads(masked_attention, jnp.float32, q, k, v)
        plain = grads(_plain, jnp.float32, q, k, v)
        for name, o, p, r in zip("qkv", ours, plain, ref, strict=True):
            assert _rel_err(o, r) <= 1.5 * _rel_err(p, r) + 1e-3, (name, _rel_err(o, r))
    finally:
        jax.config.update("jax_enable_x64", False)


def test_gradients_keep_each_operands_dtype():
    q, k, v, mask = _inputs()
    q = q.astype(jnp.bfloat16)  # the KV-cache path may hold k, v in another dtype

    def loss(fn):
        return lambda q, k, v: jnp.sum(fn(q, k, v, mask, SCALE).astype(jnp.float32))

    ours = jax.grad(loss(masked_attention), argnums=(0, 1, 2))(q, k, v)
    plain = jax.grad(loss(_plain), argnums=(0, 1, 2))(q, k, v)
    assert [g.dtype for g in ours] == [g.dtype for g in plain] == [jnp.bfloat16, *[jnp.float32] * 2]


def test_large_logits_stay_finite_and_exact():
    """Logits of order 1e3: exp without the row max subtracted would overflow float32."""
    q, k, v, mask = _inputs()
    q, k = q * 30, k * 30
    out = np.asarray(masked_attention(q, k, v, mask, SCALE))
    logits = np.einsum("bhtk,bhsk->bhts", np.asarray(q, np.float64), np.asarray(k, np.float64))
    logits = np.where(np.asarray(mask)[:, None], logits * SCALE, -np.inf)
    logits[~np.isfinite(logits).any(-1)] = 0.0
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    ref = np.einsum("bhts,bhsk->bhtk", probs / probs.sum(-1, keepdims=True), np.asarray(v))
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)
    grads = jax.grad(lambda q: jnp.sum(masked_attention(q, k, v, mask, SCALE) ** 2))(q)
    assert np.isfinite(np.asarray(grads)).all()


def test_grad_under_remat_equals_jax_derivative():
    q, k, v, mask = _inputs()

    def loss(fn):
        return lambda q, k, v: jnp.sum(fn(q, k, v, mask, SCALE) ** 2)

    remat = jax.grad(jax.checkpoint(loss(masked_attention)), argnums=(0, 1, 2))(q, k, v)
    plain = jax.grad(loss(_plain), argnums=(0, 1, 2))(q, k, v)
    for g, r in zip(remat, plain, strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-5, atol=1e-6)
