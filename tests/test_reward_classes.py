"""Reward-model classes (`reward.model_class`): last, mean, sum and bilinear against plain numpy,
the bilinear table learns a hidden prompt x response table, and oversized vocabularies fail."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rlft import models
from rlft.errors import ConfigError
from rlft.models import init_params, model_config
from rlft.objectives import Models, reward
from rlft.parallel import make_mesh
from rlft.rollout.scoring import normalize_reward_model

SIMPLE = dict(rtol=1e-5, atol=1e-5)
COMPOSITE = dict(rtol=1e-4, atol=1e-4)
# Prime sizes so an axis mix-up cannot broadcast: B = 3, T = P + R = 7, V = 37.
CFG = model_config("tiny", vocab_size=37, num_layers=1)
P, R = 3, 4
scalar_values = jax.jit(models.scalar_values, static_argnums=0)
sequence_reward = jax.jit(reward.sequence_reward, static_argnums=(0, 5))


def make_rows(rng, prompt_lens, resp_lens):
    """Left-padded prompts then right-padded responses; pads hold random tokens too."""
    tokens = rng.integers(0, CFG.vocab_size, size=(len(prompt_lens), P + R)).astype(np.int32)
    mask, loss_mask = np.zeros(tokens.shape, bool), np.zeros(tokens.shape, bool)
    for i, (pl, rl) in enumerate(zip(prompt_lens, resp_lens, strict=True)):
        mask[i, P - pl : P + rl] = True
        loss_mask[i, P : P + rl] = True
    return tokens, mask, loss_mask


ROWS = dict(prompt_lens=[3, 1, 2], resp_lens=[2, 4, 1])  # left padding, shorter responses


@pytest.fixture(scope="module")
def scalar_params():
    """A ScalarModel with a non-zero head bias, so the offset's place in each class shows."""
    params = nn.unbox(jax.jit(init_params, static_argnums=(0, 1))("scalar", CFG, jax.random.key(1)))
    return {**params, "scalar_head": {**params["scalar_head"], "bias": jnp.array([0.3])}}


@pytest.fixture(scope="module")
def bilinear_params():
    params = nn.unbox(init_params("bilinear", CFG, jax.random.key(0)))
    assert all(not np.any(x) for x in jax.tree.leaves(params))  # W, u, b start at zero
    rng = np.random.default_rng(5)
    return jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32), params)


def test_scalar_classes_vs_numpy(scalar_params):
    tokens, mask, loss_mask = make_rows(np.random.default_rng(0), **ROWS)
    v = np.asarray(scalar_values(CFG, scalar_params, tokens, mask), np.float64)
    b = 0.3
    want = {
        "last": [v[i, np.flatnonzero(mask[i])[-1]] for i in range(3)],
        "mean": [v[i][loss_mask[i]].mean() for i in range(3)],
        "sum": [b + np.sum(v[i][loss_mask[i]] - b) for i in range(3)],  # offset counted once
    }
    for pooling, expected in want.items():
        got = sequence_reward(CFG, scalar_params, tokens, mask, loss_mask, pooling)
        np.testing.assert_allclose(got, expected, **COMPOSITE, err_msg=pooling)


def test_sum_is_mean_times_length_at_zero_offset(scalar_params):
    params = {
        **scalar_params,
        "scalar_head": {**scalar_params["scalar_head"], "bias": jnp.zeros(1)},
    }
    tokens, mask, loss_mask = make_rows(np.random.default_rng(1), **ROWS)
    sum_B = sequence_reward(CFG, params, tokens, mask, loss_mask, "sum")
    mean_B = sequence_reward(CFG, params, tokens, mask, loss_mask, "mean")
    np.testing.assert_allclose(sum_B, mean_B * loss_mask.sum(-1), **COMPOSITE)


def np_bilinear(params, tokens, mask, loss_mask):
    """r = b + sum_{t in y} (mean_{i in x} W[x_i, y_t] + u[y_t]), by explicit loops."""
    w = np.asarray(params["pair_table"], np.float64)
    u = np.asarray(params["token_table"], np.float64)
    out = []
    for row, m, lm in zip(tokens, mask, loss_mask, strict=True):
        prompt = [row[i] for i in range(len(row)) if m[i] and not lm[i]]
        r = float(params["scalar_head"]["bias"][0])
        for t in range(len(row)):
            if lm[t]:
                r += sum(w[x, row[t]] for x in prompt) / len(prompt) + u[row[t]]
        out.append(r)
    return np.array(out)


def test_bilinear_vs_numpy(bilinear_params):
    tokens, mask, loss_mask = make_rows(np.random.default_rng(2), **ROWS)
    got = sequence_reward(CFG, bilinear_params, tokens, mask, loss_mask, "bilinear")
    np.testing.assert_allclose(got, np_bilinear(bilinear_params, tokens, mask, loss_mask), **SIMPLE)


@pytest.mark.parametrize("pooling", reward.MODEL_CLASSES)
def test_normalisation_centres_every_class(scalar_params, bilinear_params, pooling):
    """After folding the offset into scalar_head/bias, the reference mean reward is 0 exactly
    (rows of different response lengths: a per-token offset would miss for `sum`)."""
    params = bilinear_params if pooling == "bilinear" else scalar_params
    tokens, mask, loss_mask = make_rows(
        np.random.default_rng(3), [3, 1, 2, 2] * 2, [2, 4, 1, 3] * 2
    )
    ref = dict(tokens=tokens, mask=mask, loss_mask=loss_mask)
    mesh = make_mesh()
    new, offset = normalize_reward_model(CFG, params, ref, 8, mesh, pooling)
    before = sequence_reward(CFG, params, tokens, mask, loss_mask, pooling)
    after = sequence_reward(CFG, new, tokens, mask, loss_mask, pooling)
    np.testing.assert_allclose(offset, np.mean(before), **COMPOSITE)
    np.testing.assert_allclose(after, before - offset, **COMPOSITE)


def test_bilinear_learns_a_hidden_table():
    """Bradley-Terry on pairs ordered by a hidden table over (prompt token, response token)
    reaches high held-out accuracy in a few hundred steps."""
    v, topics, p_len, r_len = 29, 5, 2, 5  # prompt ids < topics; response ids >= topics
    cfg = model_config("tiny", vocab_size=v)
    rng = np.random.default_rng(0)
    hidden = rng.normal(size=(v, v))  # continuous: no gold ties

    def responses(n):
        tokens = np.concatenate(
            [rng.integers(0, topics, (n, p_len)), rng.integers(topics, v, (n, r_len))], axis=1
        )
        loss_mask = np.arange(p_len + r_len) >= p_len
        return tokens.astype(np.int32), np.ones_like(tokens, bool), np.tile(loss_mask, (n, 1))

    def pairs(n):
        a, b = responses(n), responses(n)
        b[0][:, :p_len] = a[0][:, :p_len]  # a pair shares its prompt
        a_wins = (np_bilinear_table(hidden, *a) > np_bilinear_table(hidden, *b))[:, None]
        out = {}
        for key, x, y in zip(("tokens", "mask", "loss_mask"), a, b, strict=True):
            out[f"chosen_{key}"], out[f"rejected_{key}"] = (
                np.where(a_wins, x, y),
                np.where(a_wins, y, x),
            )
        return out

    train, held_out = pairs(4096), pairs(512)
    params = nn.unbox(init_params("bilinear", cfg, jax.random.key(0)))
    tx = optax.adam(0.05)
    hp, roles = reward.RewardHparams("bilinear"), Models(reward=cfg)

    @jax.jit
    def step(params, opt_state, batch):
        def loss(p):
            out = reward.loss_fn({"reward": p}, batch, roles, hp)
            return out.loss_sum / out.denom

        grads = jax.grad(loss)(params)
        updates, opt_state = tx.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state

    opt_state = tx.init(params)
    for i in range(300):
        idx = np.arange(i * 64, (i + 1) * 64) % 4096
        params, opt_state = step(params, opt_state, {k: x[idx] for k, x in train.items()})
    out = jax.jit(reward.loss_fn, static_argnums=(2, 3))({"reward": params}, held_out, roles, hp)
    assert out.metrics["accuracy"] / 512 > 0.9


def np_bilinear_table(table, tokens, mask, loss_mask):
    zero = {"pair_table": table, "token_table": np.zeros(len(table)), "scalar_head": {"bias": [0]}}
    return np_bilinear(zero, tokens, mask, loss_mask)


def test_bilinear_refuses_a_large_vocabulary():
    big = model_config("tiny", vocab_size=4097)
    with pytest.raises(
        ValueError, match=r"reward.model_class=bilinear.*V x V table.*last, mean or sum"
    ):
        init_params("bilinear", big, jax.random.key(0))
    # `rlft reproduce` checks the class against the model before any training.
    from rlft.config import load_config  # noqa: PLC0415
    from rlft.experiments.pipeline.spec import parse_reproduce  # noqa: PLC0415
    from tests.helpers import REPO_CONFIGS  # noqa: PLC0415

    c = load_config(f"{REPO_CONFIGS}/reproduce.py")
    c.reward_classes = ("bilinear",)
    c.model = dict(preset="tiny", vocab_size=4097)
    with pytest.raises(ConfigError, match=r"config.reward_classes: .*bilinear.*vocab_size=4097"):
        parse_reproduce(c)
    c.model = dict(preset="tiny", vocab_size=4096)
    parse_reproduce(c)
    c.reward_classes = ("max",)
    with pytest.raises(ConfigError, match="reward.model_class='max'"):
        parse_reproduce(c)
