"""A prefix the rows share, run through the backbone once (`rlft.models.backbone_hidden`,
`Models.pair_prefix_len`), equals the whole forward: hidden states, and the reward-model and
DPO losses, values and gradients; `shared_prefix_len` finds that prefix in pair data."""

import dataclasses
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rlft.models as models_module
from rlft.config import load_config, parse_config
from rlft.data import pack_pairs, shared_prefix_len
from rlft.data.sources import bundle_from_config
from rlft.models import backbone_hidden, init_params, lm_hidden, model_config
from rlft.objectives import Models, dpo, reward
from rlft.parallel import make_mesh
from rlft.rollout import scoring
from rlft.train import loop
from rlft.train.stages import build_stage
from tests.helpers import REPO_CONFIGS

# Prime sizes: V = 37, width 40 over 5 heads, G = 3 prompts. Prompts are left-padded to P = 7
# with 1 to 7 real tokens; responses right-padded to R = 5, one of them empty.
CFG = model_config("tiny", vocab_size=37, d_model=40, num_heads=5, d_ff=72, rotary_pct=0.5)
P, R = 7, 5


def _pairs(rng, prompt_lens=(3, 7, 1), chosen_lens=(5, 0, 2), rejected_lens=(1, 4, 5)):
    def draw(lengths):  # ids from 1: 0 is the pad
        return [rng.integers(1, CFG.vocab_size, n).tolist() for n in lengths]

    return pack_pairs(draw(prompt_lens), draw(chosen_lens), draw(rejected_lens), P, R, 0)


def _rows(copies, seed=0):
    """[G * copies, P + R] rows: `copies` responses to each of G prompts, adjacent (row
    g * copies + c), the layout of `pair_rows` and of the sampler's K samples."""
    rng = np.random.default_rng(seed)
    pairs = [_pairs(rng) for _ in range(copies)]
    for p in pairs[1:]:  # the first copy's prompts in every copy
        for key in ("tokens", "mask"):
            p[f"chosen_{key}"][:, :P] = pairs[0][f"chosen_{key}"][:, :P]
    tokens = np.stack([p["chosen_tokens"] for p in pairs], axis=1).reshape(-1, P + R)
    mask = np.stack([p["chosen_mask"] for p in pairs], axis=1).reshape(-1, P + R)
    return jnp.asarray(tokens), jnp.asarray(mask)


@pytest.fixture
def prefixes(monkeypatch):
    """(prefix_len, copies) of every `backbone_hidden` call traced during the test: the
    shared path's tests would pass with it unused, both sides then running whole rows."""
    seen, real = [], models_module.backbone_hidden

    def spy(*args, prefix_len=0, copies=1, **kw):
        seen.append((prefix_len, copies))
        return real(*args, prefix_len=prefix_len, copies=copies, **kw)

    monkeypatch.setattr(models_module, "backbone_hidden", spy)
    return seen


@pytest.fixture(scope="module")
def params():
    init = jax.jit(init_params, static_argnums=(0, 1))
    return {
        "lm": nn.unbox(init("lm", CFG, jax.random.key(0))),
        "scalar": nn.unbox(init("scalar", CFG, jax.random.key(1))),
    }


def _assert_trees_close(a, b, rtol):
    """Each leaf within rtol of b's largest entry in any leaf: float rounding, not a missing
    term. (Not each leaf's own: the reward model's final LayerNorm bias has an exactly-zero
    gradient, which cancels in r_chosen - r_rejected, so both sides hold only rounding.)"""
    scale = max(float(jnp.max(jnp.abs(y))) for y in jax.tree.leaves(b))
    for (path, x), y in zip(
        jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b), strict=True
    ):
        err = float(jnp.max(jnp.abs(x - y)))
        assert err <= rtol * scale, (jax.tree_util.keystr(path), err, scale)


@pytest.mark.parametrize(
    "copies,prefix_len,variant",
    [
        (2, P, {}),  # the prompt: a pair's two rows
        # K = 3 samples sharing part of their prompt, under remat, sequential residual
        (3, 4, {"remat": True, "parallel_residual": False}),
    ],
)
def test_backbone_with_a_shared_prefix_equals_the_whole_forward(
    params, copies, prefix_len, variant
):
    cfg = dataclasses.replace(CFG, **variant)
    tokens, mask = _rows(copies)
    kw = {"prefix_len": prefix_len, "copies": copies}
    whole = jax.jit(lambda p: lm_hidden(cfg, p, tokens, mask))(params["lm"])
    shared = jax.jit(lambda p: lm_hidden(cfg, p, tokens, mask, **kw))(params["lm"])
    _assert_trees_close(shared, whole, 1e-6)

    weight = jax.random.normal(jax.random.key(2), whole.shape)  # every position and width

    def loss(p, **kw):
        h_BxTxD = backbone_hidden(cfg, p["backbone"], tokens, mask, **kw)
        return jnp.sum(jnp.sin(h_BxTxD) * weight)

    grads_whole = jax.jit(jax.grad(loss))(params["lm"])
    grads_shared = jax.jit(jax.grad(lambda p: loss(p, **kw)))(params["lm"])
    _assert_trees_close(grads_shared, grads_whole, 2e-6)


def _check_pair_loss(loss_fn, role, params, batch, hp, prefixes):
    """loss_fn's metrics and gradients with Models.pair_prefix_len set (the spy: really used)
    equal those with whole rows."""
    prefix = shared_prefix_len(batch)
    assert prefix >= P  # the prompt at least

    def loss(p, models):
        out = loss_fn({role: p}, batch, models, hp)
        return out.loss_sum, out.metrics

    grad = jax.grad(loss, has_aux=True)
    g_whole, m_whole = jax.jit(lambda p: grad(p, Models(**{role: CFG})))(params)
    g_shared, m_shared = jax.jit(lambda p: grad(p, Models(**{role: CFG}, pair_prefix_len=prefix)))(
        params
    )
    assert prefixes == [(0, 2), (prefix, 2)]  # whole rows, then the prompt once per pair
    _assert_trees_close(m_shared, m_whole, 1e-6)
    _assert_trees_close(g_shared, g_whole, 2e-6)


@pytest.mark.parametrize("model_class", ["last", "sum"])  # "mean" reads values as "sum" does
def test_reward_loss_with_the_pair_prefix_equals_the_whole_forward(params, model_class, prefixes):
    batch = _pairs(np.random.default_rng(3))
    hp = reward.RewardHparams(model_class)
    _check_pair_loss(reward.loss_fn, "reward", params["scalar"], batch, hp, prefixes)


def test_dpo_loss_with_the_pair_prefix_equals_the_whole_forward(params, prefixes):
    batch = _pairs(np.random.default_rng(4))
    batch["ref_chosen_logp"] = np.array([-9.0, -1.0, -4.0], np.float32)
    batch["ref_rejected_logp"] = np.array([-3.0, -8.0, -12.0], np.float32)
    hp = dpo.DpoHparams(beta=0.5, temperature=0.7)
    _check_pair_loss(dpo.loss_fn, "policy", params["lm"], batch, hp, prefixes)


def test_backbone_hidden_rejects_a_prefix_it_cannot_share(params):
    tokens, mask = _rows(2)
    with pytest.raises(ValueError, match="prefix_len=12 must lie in"):
        backbone_hidden(CFG, params["lm"]["backbone"], tokens, mask, prefix_len=P + R)
    with pytest.raises(ValueError, match="copies=4 divide 6 rows"):
        backbone_hidden(CFG, params["lm"]["backbone"], tokens, mask, prefix_len=P, copies=4)


def test_shared_prefix_len_finds_the_columns_every_pair_shares():
    pairs = _pairs(np.random.default_rng(5))
    # First response tokens set apart: exactly the prompt's P columns.
    pairs["chosen_tokens"][:, P] = 1
    pairs["rejected_tokens"][:, P] = 2
    pairs["chosen_mask"][:, P] = pairs["rejected_mask"][:, P] = True
    assert shared_prefix_len(pairs) == P
    # Every pair's responses start alike: the shared columns run one further.
    pairs["rejected_tokens"][:, P] = 1
    assert shared_prefix_len(pairs) == P + 1
    # One pair whose prompts differ in a padded column's mask: the prefix stops there.
    pairs["chosen_mask"][0, 2] = not pairs["rejected_mask"][0, 2]
    assert shared_prefix_len(pairs) == 2
    # A token differing under padding counts too (its hidden state is the row's own).
    pairs["chosen_mask"][0, 2] = pairs["rejected_mask"][0, 2]
    pairs["chosen_tokens"][1, 0] += 1
    assert shared_prefix_len(pairs) == 0
    # Identical sides keep their last column to themselves; no pairs share nothing.
    same = {
        f"{s}_{k}": pairs[f"chosen_{k}"] for s in ("chosen", "rejected") for k in ("tokens", "mask")
    }
    assert shared_prefix_len(same) == P + R - 1
    assert shared_prefix_len({k: v[:0] for k, v in same.items()}) == 0
    with pytest.raises(ValueError, match="must have one shape"):
        shared_prefix_len({**same, "rejected_mask": same["rejected_mask"][:, :-1]})


@pytest.mark.parametrize("objective", ["reward", "dpo"])
def test_the_pair_stages_share_their_datas_prefix(objective, tmp_path):
    """The reward and DPO stages set Models.pair_prefix_len from their pairs: the columns
    every pair shares, the synthetic task's prompt at least."""
    c = load_config(os.path.join(REPO_CONFIGS, f"{objective}.py"), "tiny")
    c.data.num_examples, c.init.policy = 64, ""
    if objective == "dpo":  # the DPO stage starts from an SFT policy: one step of one
        sft = load_config(os.path.join(REPO_CONFIGS, "sft.py"), "tiny")
        sft.total_steps, sft.data.num_examples = 1, 64
        loop.train(sft, str(tmp_path / "sft"), progress=False)
        c.init.policy = str(tmp_path / "sft")
    run = parse_config(c)
    bundle = bundle_from_config(run.data, progress=False)
    mesh = make_mesh(1, 1, jax.devices()[:1])
    with jax.set_mesh(mesh):
        stage = build_stage(run, mesh, str(tmp_path / objective), bundle)
    assert stage.models.pair_prefix_len == shared_prefix_len(bundle.pairs)
    assert stage.models.pair_prefix_len >= run.data.prompt_len


def test_pair_prefix_len_takes_the_least_over_processes(monkeypatch):
    """Every process must trace one program, and each one's rows must share the prefix: the
    agreed length is the least any process found (here process 1's 3 columns against 7)."""
    pairs = _pairs(np.random.default_rng(6))
    assert shared_prefix_len(pairs) >= P
    gathered = []

    def allgather(x):
        gathered.append(int(x))
        return np.array([int(x), 3], np.int32)

    monkeypatch.setattr(scoring.jax, "process_count", lambda: 2)
    monkeypatch.setattr(scoring.multihost_utils, "process_allgather", allgather)
    assert scoring.pair_prefix_len(pairs) == 3
    assert gathered == [shared_prefix_len(pairs)]
