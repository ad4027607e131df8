"""What the loss tests share: a tiny model, padded rows and plain-numpy references of each
loss, written independently of the jax code (float64, explicit loops)."""

import flax.linen as nn
import jax
import numpy as np

from rlft import models
from rlft.models import init_params, model_config

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


def init_lm_params():
    return nn.unbox(jax.jit(init_params, static_argnums=(0, 1))("lm", CFG, jax.random.key(0)))


def init_scalar_params():
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
