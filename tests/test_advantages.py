"""KL penalties, PPO rewards, GAE and whitening: hand cases and plain-numpy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlft.rollout.advantages import gae, kl_penalty, masked_whiten, ppo_rewards

SIMPLE = dict(rtol=1e-5, atol=1e-5)
COMPOSITE = dict(rtol=1e-4, atol=1e-4)


def span_masks(rng, b, t):
    """Prompt, response and pad regions per row: response masks are one contiguous span."""
    mask_BxT = np.zeros((b, t), bool)
    for i in range(b):
        start = rng.integers(1, t // 2)
        mask_BxT[i, start : rng.integers(start + 1, t + 1)] = True
    mask_BxT[0, 1:] = True  # one row whose response runs to the last slot
    return mask_BxT


def test_kl_penalty_hand():
    logp = jnp.array([[-1.0, -2.0]])
    ref = jnp.array([[-2.0, -1.0]])
    np.testing.assert_allclose(kl_penalty(logp, ref, "k1"), [[1.0, -1.0]], **SIMPLE)
    # k3 = exp(ref - logp) - 1 - (ref - logp): e^-1 - 1 + 1 = 0.367879; e - 1 - 1 = 0.718282
    np.testing.assert_allclose(kl_penalty(logp, ref, "k3"), [[0.36787944, 0.71828183]], **SIMPLE)
    with pytest.raises(ValueError, match="k1"):
        kl_penalty(logp, ref, "k2")


def test_kl_penalty_estimates_kl_pi_to_ref():
    """Weighted by pi itself, both estimators give exactly KL(pi || ref): checks direction."""
    rng = np.random.default_rng(0)
    logpi_V = np.log(rng.dirichlet(np.ones(11)))
    logref_V = np.log(rng.dirichlet(np.ones(11)))
    kl = np.sum(np.exp(logpi_V) * (logpi_V - logref_V))
    for est in ("k1", "k3"):
        k_V = np.asarray(kl_penalty(jnp.asarray(logpi_V)[None], jnp.asarray(logref_V)[None], est))
        np.testing.assert_allclose(np.sum(np.exp(logpi_V) * k_V[0]), kl, **SIMPLE)


def test_ppo_rewards_hand_score_on_last_response_token():
    # Row 0: response at 2..4 (4 = EOS); row 1: response 1..2; row 2: no response at all.
    mask = jnp.array([[0, 0, 1, 1, 1, 0], [0, 1, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0]], bool)
    logp = jnp.full((3, 6), -1.0)
    ref = jnp.full((3, 6), -1.5)  # k1 = 0.5 everywhere; with kl_coef 0.1 each token gets -0.05
    got = ppo_rewards(jnp.array([2.0, -1.0, 7.0]), logp, ref, mask, kl_coef=0.1)
    want = [[0, 0, -0.05, -0.05, 1.95, 0], [0, -0.05, -1.05, 0, 0, 0], [0] * 6]
    np.testing.assert_allclose(got, want, **SIMPLE)


def np_ppo_rewards(score_B, logp_BxT, ref_BxT, mask_BxT, kl_coef):
    out = np.where(mask_BxT, -kl_coef * (logp_BxT - ref_BxT), 0.0)
    for i in range(mask_BxT.shape[0]):
        idx = np.flatnonzero(mask_BxT[i])
        if idx.size:
            out[i, idx[-1]] += score_B[i]
    return out


def test_ppo_rewards_vs_numpy():
    rng = np.random.default_rng(1)
    b, t = 5, 11
    mask = span_masks(rng, b, t)
    score, logp, ref = rng.normal(size=b), rng.normal(size=(b, t)), rng.normal(size=(b, t))
    got = ppo_rewards(jnp.asarray(score), jnp.asarray(logp), jnp.asarray(ref), mask, 0.05)
    np.testing.assert_allclose(got, np_ppo_rewards(score, logp, ref, mask, 0.05), **SIMPLE)


def test_gae_hand():
    # Prompt at 0, response 1..3, pad at 4; values off the span must be ignored.
    rewards = jnp.array([[9.0, 0.0, 0.0, 1.0, 5.0]])
    values = jnp.array([[7.0, 0.5, 0.4, 0.2, 3.0]])
    mask = jnp.array([[0, 1, 1, 1, 0]], bool)
    # gamma 1, lam 0.95, bootstrap 0 after t = 3:
    # A3 = 1 + 0 - 0.2 = 0.8
    # A2 = (0 + 0.2 - 0.4) + 0.95 * 0.8 = -0.2 + 0.76 = 0.56
    # A1 = (0 + 0.4 - 0.5) + 0.95 * 0.56 = -0.1 + 0.532 = 0.432
    # returns = A + V = 0.932, 0.96, 1.0
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=0.95)
    np.testing.assert_allclose(adv, [[0, 0.432, 0.56, 0.8, 0]], **SIMPLE)
    np.testing.assert_allclose(ret, [[0, 0.932, 0.96, 1.0, 0]], **SIMPLE)


def np_gae(rewards, values, mask, gamma, lam):
    """A_t = sum_l (gamma lam)^l delta_{t+l} over the rest of the span: a plain double loop."""
    b, t = rewards.shape
    adv = np.zeros((b, t))
    for i in range(b):
        for s in range(t):
            if not mask[i, s]:
                continue
            k = s
            while k < t and mask[i, k]:
                next_v = values[i, k + 1] if k + 1 < t and mask[i, k + 1] else 0.0
                delta = rewards[i, k] + gamma * next_v - values[i, k]
                adv[i, s] += (gamma * lam) ** (k - s) * delta
                k += 1
    return adv, np.where(mask, adv + values, 0.0)


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.8)])
def test_gae_vs_double_loop(gamma, lam):
    rng = np.random.default_rng(2)
    b, t = 5, 13
    mask = span_masks(rng, b, t)
    rewards, values = rng.normal(size=(b, t)), rng.normal(size=(b, t))
    adv, ret = jax.jit(gae, static_argnums=(3, 4))(
        jnp.asarray(rewards), jnp.asarray(values), mask, gamma, lam
    )
    want_adv, want_ret = np_gae(rewards, values, mask, gamma, lam)
    np.testing.assert_allclose(adv, want_adv, **COMPOSITE)
    np.testing.assert_allclose(ret, want_ret, **COMPOSITE)


def test_masked_whiten_hand():
    x = jnp.array([[1.0, 2.0], [3.0, 100.0]])
    mask = jnp.array([[1, 1], [1, 0]], bool)
    # mean 2, population var 2/3: (x - 2) / sqrt(2/3) = -1.2247449, 0, 1.2247449
    np.testing.assert_allclose(
        masked_whiten(x, mask), [[-1.2247449, 0.0], [1.2247449, 0.0]], **SIMPLE
    )
    np.testing.assert_allclose(
        masked_whiten(x, mask, shift_mean=False), [[0.7752551, 2.0], [3.2247449, 0.0]], **SIMPLE
    )


@pytest.mark.parametrize("shift_mean", [True, False])
def test_masked_whiten_vs_numpy(shift_mean):
    rng = np.random.default_rng(3)
    x = rng.normal(loc=3.0, scale=2.0, size=(4, 9))
    mask = span_masks(rng, 4, 9)
    vals = x[mask]
    want = (x - vals.mean()) / np.sqrt(vals.var() + 1e-8) + (0.0 if shift_mean else vals.mean())
    got = masked_whiten(jnp.asarray(x), mask, shift_mean)
    np.testing.assert_allclose(got, np.where(mask, want, 0.0), **SIMPLE)
    if shift_mean:
        np.testing.assert_allclose(np.asarray(got)[mask].mean(), 0.0, **SIMPLE)
        np.testing.assert_allclose(np.asarray(got)[mask].std(), 1.0, **SIMPLE)
