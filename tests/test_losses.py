"""MLE, reward and DPO losses: hand cases, plain-numpy references, end-to-end wiring (PPO:
tests/test_ppo_loss.py; the references: tests/loss_refs.py)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlft.objectives import OBJECTIVES, Models, dpo, reward, sft
from rlft.objectives.logprobs import sequence_logprobs
from tests.loss_refs import (
    CFG,
    COMPOSITE,
    SIMPLE,
    init_lm_params,
    init_scalar_params,
    jit_loss,
    lm_logits,
    make_rows,
    np_dpo,
    np_log_sigmoid,
    np_token_logprobs,
    pair_batch,
    scalar_values,
)


@pytest.fixture(scope="module")
def lm_params():
    return init_lm_params()


@pytest.fixture(scope="module")
def scalar_params():
    return init_scalar_params()


def test_registry():
    assert set(OBJECTIVES) == {"sft", "reward", "dpo", "ppo"}
    assert OBJECTIVES["ppo"][2] == ("policy", "critic")
    assert OBJECTIVES["reward"][2] == ("reward",)
    for fn, hp_cls, _ in OBJECTIVES.values():
        assert callable(fn)
        hp_cls()  # every field has a default


# ---- MLE ----


def test_mle_hand():
    # Position 0 predicts token 1 with p = [1/4, 1/2, 1/4] (argmax 1: a hit), nll = ln 2.
    # Position 1 predicts token 2 with p = [3/5, 1/5, 1/5] (argmax 0: a miss), nll = ln 5.
    logits = jnp.log(jnp.array([[[1.0, 2.0, 1.0], [3.0, 1.0, 1.0], [1.0, 1.0, 1.0]]]))
    tokens = jnp.array([[0, 1, 2]])
    nll, hit = sft.nll_and_accuracy(logits, tokens)
    np.testing.assert_allclose(nll, [[0.0, math.log(2), math.log(5)]], **SIMPLE)
    np.testing.assert_array_equal(hit, [[False, True, False]])
    # Temperature 2 takes square roots: p = sqrt2 / (2 + sqrt2), 1 / (sqrt3 + 2).
    nll, _ = sft.nll_and_accuracy(logits, tokens, temperature=2.0)
    np.testing.assert_allclose(
        nll, [[0.0, math.log(1 + math.sqrt(2)), math.log(2 + math.sqrt(3))]], **SIMPLE
    )


def test_mle_masked_logits_get_no_gradient():
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(2, 5, 7)))
    tokens = jnp.asarray(rng.integers(0, 7, size=(2, 5)))
    loss_mask = jnp.array([[0, 0, 1, 1, 0], [0, 1, 1, 1, 1]], bool)

    def f(x):
        return jnp.sum(jnp.where(loss_mask, sft.nll_and_accuracy(x, tokens)[0], 0.0))

    grad_norm_BxT = np.abs(np.asarray(jax.grad(f)(logits))).sum(-1)
    predicts_target = np.pad(np.asarray(loss_mask)[:, 1:], ((0, 0), (0, 1)))  # logits t -> t+1
    assert np.all(grad_norm_BxT[~predicts_target] == 0)
    assert np.all(grad_norm_BxT[predicts_target] > 0)


def test_mle_loss_fn_vs_numpy(lm_params):
    tokens, mask, loss_mask = make_rows(np.random.default_rng(1), [3, 1, 2], [2, 4, 1])
    batch = dict(tokens=tokens, mask=mask, loss_mask=loss_mask)
    out = jit_loss(sft.loss_fn)({"policy": lm_params}, batch, Models(policy=CFG), sft.SftHparams())
    logits = np.asarray(lm_logits(CFG, lm_params, tokens, mask), np.float64)
    logp = np_token_logprobs(logits, tokens)
    rows, cols = np.nonzero(loss_mask)
    hits = [logits[i, s - 1].argmax() == tokens[i, s] for i, s in zip(rows, cols, strict=True)]
    np.testing.assert_allclose(out.loss_sum, -np.sum(logp * loss_mask), **COMPOSITE)
    assert out.denom == 7
    assert out.metrics["accuracy"] == sum(hits)


# ---- Reward model ----


def test_bradley_terry_hand_and_numpy():
    # -log sigmoid(1) = log(1 + e^-1) = 0.3132617; -log sigmoid(0) = log 2; -log sigmoid(-2).
    got = reward.bradley_terry(jnp.array([1.0, 0.0, -1.0]), jnp.array([0.0, 0.0, 1.0]))
    np.testing.assert_allclose(got, [0.31326169, math.log(2), 2.12692801], **SIMPLE)
    rng = np.random.default_rng(2)
    c, r = rng.normal(scale=3, size=17), rng.normal(scale=3, size=17)
    np.testing.assert_allclose(reward.bradley_terry(c, r), -np_log_sigmoid(c - r), **SIMPLE)


def test_reward_loss_fn_vs_numpy(scalar_params):
    batch = pair_batch(np.random.default_rng(3))
    out = jit_loss(reward.loss_fn)(
        {"reward": scalar_params}, batch, Models(reward=CFG), reward.RewardHparams()
    )

    def rewards(side):
        v = np.asarray(
            scalar_values(CFG, scalar_params, batch[f"{side}_tokens"], batch[f"{side}_mask"]),
            np.float64,
        )
        return np.array([v[i, np.flatnonzero(m)[-1]] for i, m in enumerate(batch[f"{side}_mask"])])

    rc, rr = rewards("chosen"), rewards("rejected")
    np.testing.assert_allclose(out.loss_sum, np.sum(-np_log_sigmoid(rc - rr)), **COMPOSITE)
    assert out.denom == 3
    assert out.metrics["accuracy"] == np.sum(rc > rr)
    np.testing.assert_allclose(out.metrics["margin"], np.sum(rc - rr), **COMPOSITE)
    np.testing.assert_allclose(out.metrics["chosen_reward"], np.sum(rc), **COMPOSITE)
    np.testing.assert_allclose(out.metrics["rejected_reward"], np.sum(rr), **COMPOSITE)


def test_reward_mean_pooling_vs_numpy(scalar_params):
    batch = pair_batch(np.random.default_rng(4))
    out = jit_loss(reward.loss_fn)(
        {"reward": scalar_params}, batch, Models(reward=CFG), reward.RewardHparams("mean")
    )

    def rewards(side):
        v = np.asarray(
            scalar_values(CFG, scalar_params, batch[f"{side}_tokens"], batch[f"{side}_mask"]),
            np.float64,
        )
        lm = batch[f"{side}_loss_mask"]
        return np.array([v[i][lm[i]].mean() for i in range(len(v))])

    rc, rr = rewards("chosen"), rewards("rejected")
    np.testing.assert_allclose(out.loss_sum, np.sum(-np_log_sigmoid(rc - rr)), **COMPOSITE)
    with pytest.raises(ValueError, match="reward.model_class"):
        reward.RewardHparams("max")


# ---- DPO ----


def test_dpo_hand():
    # Policy (-1, -3), reference (-1.5, -2.5): h = (-1 + 3) - (-1.5 + 2.5) = 1; beta 0.5.
    args = [jnp.array([x]) for x in (-1.0, -3.0, -1.5, -2.5)]
    loss, cr, rr = dpo.dpo_losses(*args, beta=0.5)
    np.testing.assert_allclose(loss, [0.47407698], **SIMPLE)  # log(1 + e^-0.5)
    np.testing.assert_allclose(cr, [0.25], **SIMPLE)  # 0.5 * (-1 + 1.5)
    np.testing.assert_allclose(rr, [-0.25], **SIMPLE)  # 0.5 * (-3 + 2.5)
    # Reference-free: h = 2, beta h = 1: log(1 + e^-1); rewards are beta * log pi.
    loss, cr, rr = dpo.dpo_losses(*args, beta=0.5, reference_free=True)
    np.testing.assert_allclose(loss, [0.31326169], **SIMPLE)
    np.testing.assert_allclose((cr, rr), ([-0.5], [-1.5]), **SIMPLE)
    # cDPO, eps 0.1, beta 1: 0.9 log(1 + e^-1) + 0.1 log(1 + e) = log(1 + e^-1) + 0.1.
    loss, _, _ = dpo.dpo_losses(*args, beta=1.0, label_smoothing=0.1)
    np.testing.assert_allclose(loss, [0.41326169], **SIMPLE)
    # IPO, beta 0.25: (h - 1 / (2 * 0.25))^2 = (1 - 2)^2 = 1.
    loss, _, _ = dpo.dpo_losses(*args, beta=0.25, loss_type="ipo")
    np.testing.assert_allclose(loss, [1.0], **SIMPLE)


@pytest.mark.parametrize("loss_type,eps", [("sigmoid", 0.0), ("sigmoid", 0.2), ("ipo", 0.0)])
def test_dpo_losses_vs_numpy(loss_type, eps):
    rng = np.random.default_rng(4)
    pc, pr, rc, rr = rng.normal(scale=10, size=(4, 19)) - 30
    got, cr, rj = dpo.dpo_losses(pc, pr, rc, rr, beta=0.1, loss_type=loss_type, label_smoothing=eps)
    np.testing.assert_allclose(got, np_dpo(pc, pr, rc, rr, 0.1, loss_type, eps), **SIMPLE)
    np.testing.assert_allclose(cr, 0.1 * (pc - rc), **SIMPLE)
    np.testing.assert_allclose(rj, 0.1 * (pr - rr), **SIMPLE)


def test_dpo_bad_settings_raise():
    with pytest.raises(ValueError, match=r"dpo\.loss_type.*'sigmoid', 'ipo'"):
        dpo.DpoHparams(loss_type="hinge")
    with pytest.raises(ValueError, match=r"dpo\.loss_type"):
        dpo.dpo_losses(*jnp.zeros((4, 1)), beta=0.1, loss_type="hinge")
    with pytest.raises(ValueError, match=r"dpo\.label_smoothing"):
        dpo.DpoHparams(loss_type="ipo", label_smoothing=0.1)


def test_dpo_loss_fn_vs_numpy(lm_params):
    rng = np.random.default_rng(5)
    batch = pair_batch(rng)
    batch["ref_chosen_logp"] = rng.normal(size=3) - 10
    batch["ref_rejected_logp"] = rng.normal(size=3) - 10
    hp = dpo.DpoHparams(beta=0.3, temperature=0.7)
    out = jit_loss(dpo.loss_fn)({"policy": lm_params}, batch, Models(policy=CFG), hp)

    def seq_logp(side):
        tokens, mask = batch[f"{side}_tokens"], batch[f"{side}_mask"]
        logits = np.asarray(lm_logits(CFG, lm_params, tokens, mask), np.float64)
        return np.sum(np_token_logprobs(logits, tokens, 0.7) * batch[f"{side}_loss_mask"], -1)

    pc, pr = seq_logp("chosen"), seq_logp("rejected")
    rc, rr = batch["ref_chosen_logp"], batch["ref_rejected_logp"]
    want = np.sum(np_dpo(pc, pr, rc, rr, 0.3, "sigmoid"))
    np.testing.assert_allclose(out.loss_sum, want, **COMPOSITE)
    assert out.denom == 3
    cr, rj = 0.3 * (pc - rc), 0.3 * (pr - rr)
    assert out.metrics["accuracy"] == np.sum(cr > rj)
    np.testing.assert_allclose(out.metrics["margin"], np.sum(cr - rj), **COMPOSITE)
    np.testing.assert_allclose(out.metrics["chosen_reward"], np.sum(cr), **COMPOSITE)
    np.testing.assert_allclose(out.metrics["rejected_reward"], np.sum(rj), **COMPOSITE)
    np.testing.assert_allclose(out.metrics["policy_chosen_logp"], np.sum(pc), **COMPOSITE)


def test_dpo_loss_fn_properties(lm_params):
    rng = np.random.default_rng(6)
    batch = pair_batch(rng)
    params, models = {"policy": lm_params}, Models(policy=CFG)
    hp = dpo.DpoHparams(beta=0.1, temperature=0.7)
    # sequence_logprobs is the reference pass: policy == reference gives log 2 per pair.
    for side in ("chosen", "rejected"):
        rows = [batch[f"{side}_{k}"] for k in ("tokens", "mask", "loss_mask")]
        batch[f"ref_{side}_logp"] = sequence_logprobs(CFG, lm_params, *rows, 0.7)
    out = jit_loss(dpo.loss_fn)(params, batch, models, hp)
    np.testing.assert_allclose(out.loss_sum, 3 * math.log(2), **SIMPLE)
    np.testing.assert_allclose(out.metrics["margin"], 0.0, **SIMPLE)
    # Reference-free equals zero reference log-probs.
    free = jit_loss(dpo.loss_fn)(
        params, batch, models, dpo.DpoHparams(0.1, reference_free=True, temperature=0.7)
    )
    zeroed = {**batch, "ref_chosen_logp": np.zeros(3), "ref_rejected_logp": np.zeros(3)}
    np.testing.assert_allclose(
        free.loss_sum, jit_loss(dpo.loss_fn)(params, zeroed, models, hp).loss_sum, **SIMPLE
    )
    # Tokens under padding do not reach the loss (padding mask and loss mask both hold).
    scrambled = dict(batch)
    for side in ("chosen", "rejected"):
        tokens = batch[f"{side}_tokens"].copy()
        pad = ~batch[f"{side}_mask"]
        tokens[pad] = rng.integers(0, CFG.vocab_size, size=pad.sum())
        scrambled[f"{side}_tokens"] = tokens
    np.testing.assert_allclose(
        jit_loss(dpo.loss_fn)(params, scrambled, models, hp).loss_sum, out.loss_sum, **SIMPLE
    )
