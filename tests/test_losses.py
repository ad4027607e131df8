"""MLE, reward, DPO and PPO losses: hand cases, plain-numpy references, end-to-end wiring."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlft import models
from rlft.models import init_params, model_config
from rlft.objectives import OBJECTIVES, Models, dpo, ppo, reward, sft
from rlft.objectives.logprobs import sequence_logprobs

SIMPLE = dict(rtol=1e-5, atol=1e-5)
COMPOSITE = dict(rtol=1e-4, atol=1e-4)
# One compile per forward and per loss keeps the file fast (eager flax compiles op by op).
lm_logits = jax.jit(models.lm_logits, static_argnums=0)
scalar_values = jax.jit(models.scalar_values, static_argnums=0)


def jit_loss(loss_fn):
    return jax.jit(loss_fn, static_argnums=(2, 3))


PPO_KW = dict(clip_eps=0.2, vf_clip=0.2, vf_coef=0.1, ent_coef=0.0)

# Prime sizes so an axis mix-up cannot broadcast: B = 3, T = P + R = 7, V = 37.
CFG = model_config("tiny", vocab_size=37, num_layers=1)
P, R = 3, 4


@pytest.fixture(scope="module")
def lm_params():
    return nn.unbox(jax.jit(init_params, static_argnums=(0, 1))("lm", CFG, jax.random.key(0)))


@pytest.fixture(scope="module")
def scalar_params():
    return nn.unbox(jax.jit(init_params, static_argnums=(0, 1))("scalar", CFG, jax.random.key(1)))


def make_rows(rng, prompt_lens, resp_lens):
    """Left-padded prompts then right-padded responses; pads hold random tokens too."""
    b = len(prompt_lens)
    tokens = rng.integers(0, CFG.vocab_size, size=(b, P + R)).astype(np.int32)
    mask, loss_mask = np.zeros((b, P + R), bool), np.zeros((b, P + R), bool)
    for i, (pl, rl) in enumerate(zip(prompt_lens, resp_lens, strict=True)):
        mask[i, P - pl : P + rl] = True
        loss_mask[i, P : P + rl] = True
    return tokens, mask, loss_mask


def pair_batch(rng):
    ct, cm, cl = make_rows(rng, [3, 1, 2], [2, 4, 1])
    rt, rm, rl = make_rows(rng, [3, 1, 2], [4, 1, 3])
    rt[:, :P] = ct[:, :P]  # a pair shares its prompt
    return dict(
        chosen_tokens=ct,
        chosen_mask=cm,
        chosen_loss_mask=cl,
        rejected_tokens=rt,
        rejected_mask=rm,
        rejected_loss_mask=rl,
    )


# Plain-numpy references, written independently of the jax code (float64, explicit loops).


def np_log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def np_token_logprobs(logits, tokens, temperature=1.0):
    b, t, _ = logits.shape
    out = np.zeros((b, t))
    for i in range(b):
        for s in range(1, t):
            out[i, s] = np_log_softmax(logits[i, s - 1] / temperature)[tokens[i, s]]
    return out


def np_log_sigmoid(x):
    return -np.logaddexp(0.0, -x)


def np_dpo(pc, pr, rc, rr, beta, loss_type, eps=0.0):
    h = (pc - rc) - (pr - rr)
    if loss_type == "ipo":
        return (h - 1 / (2 * beta)) ** 2
    return -(1 - eps) * np_log_sigmoid(beta * h) - eps * np_log_sigmoid(-beta * h)


def np_ppo_terms(logp, old_logp, adv, v, old_v, ret, ent, mask, hp):
    ratio = np.exp(np.where(mask, logp - old_logp, 0.0))
    pg1, pg2 = -adv * ratio, -adv * np.clip(ratio, 1 - hp.clip_eps, 1 + hp.clip_eps)
    vc = old_v + np.clip(v - old_v, -hp.vf_clip, hp.vf_clip)
    vf1, vf2 = (v - ret) ** 2, (vc - ret) ** 2
    pg, vf = np.maximum(pg1, pg2), 0.5 * np.maximum(vf1, vf2)
    # A clip fraction counts tokens whose clip is active and binding; written this way so float
    # rounding inside the clip range cannot count.
    clipped = (np.abs(ratio - 1) > hp.clip_eps) & (pg2 > pg1)
    vf_clipped = (np.abs(v - old_v) > hp.vf_clip) & (vf2 > vf1)
    terms = dict(
        loss=pg + hp.vf_coef * vf - hp.ent_coef * ent,
        pg_loss=pg,
        vf_loss=vf,
        entropy=ent,
        approx_kl_k1=old_logp - logp,
        approx_kl_k3=(ratio - 1) - np.log(ratio),
        clipfrac=clipped * 1.0,
        vf_clipfrac=vf_clipped * 1.0,
        ratio=ratio,
    )
    return {k: np.where(mask, x, 0.0) for k, x in terms.items()}


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


# ---- PPO ----


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
