"""The PPO loss: hand case, plain-numpy reference, clip fractions, the k3 KL, end-to-end wiring."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlft.objectives import Models, ppo
from tests.loss_refs import (
    CFG,
    COMPOSITE,
    PPO_KW,
    SIMPLE,
    init_lm_params,
    init_scalar_params,
    jit_loss,
    lm_logits,
    make_rows,
    np_log_softmax,
    np_ppo_terms,
    np_token_logprobs,
    scalar_values,
)


@pytest.fixture(scope="module")
def lm_params():
    return init_lm_params()


@pytest.fixture(scope="module")
def scalar_params():
    return init_scalar_params()


def test_ppo_hand():
    # Token 0 is prompt (garbage that must be ignored); tokens 1, 2 are the response.
    # t1: ratio 1.5, A = 1: max(-1.5, -1.2) = -1.2 (clipped). v 0.5, old 0, R 1: clipped
    #     v = 0.2, 0.5 * max(0.25, 0.64) = 0.32 (value clipped). entropy 0.3.
    # t2: ratio 0.5, A = 1: max(-0.5, -0.8) = -0.5. v 0.1, old 0, R -1: inside the clip,
    #     0.5 * 1.21 = 0.605. entropy 0.5.
    # loss = (-1.2 + 0.1 * 0.32 - 0.01 * 0.3) + (-0.5 + 0.1 * 0.605 - 0.01 * 0.5) = -1.6155
    # k1 = -log 1.5, -log 0.5; k3 = 0.5 - log 1.5, -0.5 - log 0.5.
    mask = jnp.array([[0, 1, 1]], bool)
    terms = ppo.ppo_token_terms(
        jnp.log(jnp.array([[1e30, 1.5, 0.5]])),
        jnp.zeros((1, 3)),
        jnp.ones((1, 3)),
        jnp.array([[9.0, 0.5, 0.1]]),
        jnp.zeros((1, 3)),
        jnp.array([[9.0, 1.0, -1.0]]),
        jnp.array([[9.0, 0.3, 0.5]]),
        mask,
        **{**PPO_KW, "ent_coef": 0.01},
    )
    want = dict(
        loss=[0, -1.171, -0.4445],
        pg_loss=[0, -1.2, -0.5],
        vf_loss=[0, 0.32, 0.605],
        entropy=[0, 0.3, 0.5],
        approx_kl_k1=[0, -0.40546511, 0.69314718],
        approx_kl_k3=[0, 0.09453489, 0.19314718],
        clipfrac=[0, 1, 0],
        vf_clipfrac=[0, 1, 0],
        ratio=[0, 1.5, 0.5],
    )
    assert set(terms) == set(want)
    for k, v in want.items():
        np.testing.assert_allclose(terms[k], [v], **SIMPLE, err_msg=k)


def test_ppo_terms_vs_numpy_and_masked_gradients():
    rng = np.random.default_rng(7)
    b, t = 3, 11
    mask = rng.random((b, t)) < 0.7
    logp, old = -rng.random((b, t)) * 3, -rng.random((b, t)) * 3
    old[~mask] = -1e4  # would overflow exp() if padding reached the ratio
    adv, v, old_v, ret, ent = rng.normal(size=(5, b, t))
    hp = ppo.PpoHparams(ent_coef=0.03)
    kw = dict(clip_eps=hp.clip_eps, vf_clip=hp.vf_clip, vf_coef=hp.vf_coef, ent_coef=hp.ent_coef)
    # jax arrays in, as in the loss: numpy inputs would make part of the maths float64.
    args = [jnp.asarray(x) for x in (logp, old, adv, v, old_v, ret, ent)]
    terms = ppo.ppo_token_terms(*args, mask, **kw)
    want = np_ppo_terms(logp, old, adv, v, old_v, ret, ent, mask, hp)
    for k in want:
        np.testing.assert_allclose(terms[k], want[k], **SIMPLE, err_msg=k)
    assert 0 < np.sum(want["clipfrac"]) < mask.sum()  # both branches exercised

    def f(logp, v, ent):
        return jnp.sum(ppo.ppo_token_terms(logp, old, adv, v, old_v, ret, ent, mask, **kw)["loss"])

    for g in jax.grad(f, argnums=(0, 1, 2))(jnp.asarray(logp), jnp.asarray(v), jnp.asarray(ent)):
        assert np.all(np.isfinite(g))
        assert np.all(np.asarray(g)[~mask] == 0)


def test_ppo_clipfracs_ignore_rounding_inside_the_clip():
    """Tokens inside both clip ranges never count as clipped (old_v + clip(v - old_v) != v)."""
    rng = np.random.default_rng(10)
    n = 4096
    old, old_v, adv, ret = rng.normal(size=(4, 1, n))
    # Offsets added in float64 then rounded, as independent forwards would produce them.
    logp, v = old + rng.uniform(-0.15, 0.15, size=(1, n)), old_v + rng.uniform(-0.19, 0.19, (1, n))
    args = [jnp.asarray(x, jnp.float32) for x in (logp, old, adv, v, old_v, ret, ret)]
    terms = ppo.ppo_token_terms(*args, np.ones((1, n), bool), **PPO_KW)
    assert float(terms["clipfrac"].sum()) == 0
    assert float(terms["vf_clipfrac"].sum()) == 0


def test_ppo_kl_k3_estimates_kl_old_to_new():
    """Weighted by the old policy (the sampler), k1 and k3 give exactly KL(old || new)."""
    rng = np.random.default_rng(8)
    old_V, new_V = np.log(rng.dirichlet(np.ones(13), size=2))
    kl = np.sum(np.exp(old_V) * (old_V - new_V))
    z = jnp.zeros((1, 13))
    terms = ppo.ppo_token_terms(
        jnp.asarray(new_V)[None], jnp.asarray(old_V)[None], z, z, z, z, z, z == 0, **PPO_KW
    )
    for k in ("approx_kl_k1", "approx_kl_k3"):
        np.testing.assert_allclose(np.sum(np.exp(old_V) * terms[k][0]), kl, **SIMPLE, err_msg=k)


def test_ppo_loss_fn_vs_numpy(lm_params, scalar_params):
    rng = np.random.default_rng(9)
    tokens, mask, loss_mask = make_rows(rng, [3, 1, 2], [2, 4, 1])
    hp = ppo.PpoHparams(ent_coef=0.01)
    logits = np.asarray(lm_logits(CFG, lm_params, tokens, mask), np.float64)
    logp = np_token_logprobs(logits, tokens, hp.temperature)
    probs = np.exp(np_log_softmax(logits / hp.temperature))
    ent = np.pad(-np.sum(probs * np.log(probs), -1)[:, :-1], ((0, 0), (1, 0)))
    out_v = np.asarray(scalar_values(CFG, scalar_params, tokens, mask), np.float64)
    v = np.pad(out_v[:, :-1], ((0, 0), (1, 0)))  # V(state before token t) = critic at t - 1
    shape = tokens.shape
    batch = dict(
        tokens=tokens,
        mask=mask,
        loss_mask=loss_mask,
        old_logp=logp + rng.normal(scale=0.3, size=shape),
        old_values=v + rng.normal(scale=0.3, size=shape),
        advantages=rng.normal(size=shape),
        returns=rng.normal(size=shape),
    )
    out = jit_loss(ppo.loss_fn)(
        {"policy": lm_params, "critic": scalar_params}, batch, Models(policy=CFG, critic=CFG), hp
    )
    want = np_ppo_terms(
        logp,
        batch["old_logp"],
        batch["advantages"],
        v,
        batch["old_values"],
        batch["returns"],
        ent,
        loss_mask,
        hp,
    )
    np.testing.assert_allclose(out.loss_sum, want.pop("loss").sum(), **COMPOSITE)
    assert out.denom == loss_mask.sum()
    assert set(out.metrics) == set(want)
    for k, x in want.items():
        np.testing.assert_allclose(out.metrics[k], x.sum(), **COMPOSITE, err_msg=k)
