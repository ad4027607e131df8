"""The scored-token path (`scored_token_stats`: head only on chunks holding scored tokens,
chunked under jax.checkpoint) equals the plain full-logits path, values and gradients, in the
helper itself and in every objective that uses it (sft, dpo, ppo, the reference pass)."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlft.models import (
    head_logits_VxN,
    head_target_logits,
    init_params,
    lm_head_kernels,
    lm_head_logits,
    lm_hidden,
    model_config,
)
from rlft.objectives import LossOut, Models, dpo, ppo, sft
from rlft.objectives.logprobs import (
    CHUNK_LEN,
    chunking,
    first_argmax,
    head_positions,
    scored_token_stats,
    sequence_logprobs,
    shifted_entropy,
    token_logprobs,
)
from rlft.objectives.ppo import ppo_token_terms, token_values
from tests.loss_refs import COMPOSITE, SIMPLE, lm_logits

# Prime sizes: V = 37, B = 3. T - 1 = 66 positions make 3 chunks of CHUNK_LEN -> 22 under the
# objectives' default chunking: [0, 22) holds no scored prediction and is skipped, and the
# first scored prediction (position P - 1 = 43, of the first response token) is the last
# position of chunk [22, 44), so a chunk test shifted by one position fails every objective.
CFG = model_config("tiny", vocab_size=37, num_layers=1)
P, R = 44, 23


@pytest.fixture(scope="module")
def params():
    init = jax.jit(init_params, static_argnums=(0, 1))
    return {
        "policy": nn.unbox(init("lm", CFG, jax.random.key(0))),
        "critic": nn.unbox(init("scalar", CFG, jax.random.key(1))),
    }


def rows(rng, prompt_lens, resp_lens, p=P, r=R):
    """Left-padded prompts then right-padded responses (rlft.data.arrays' layout)."""
    b = len(prompt_lens)
    tokens = rng.integers(0, CFG.vocab_size, size=(b, p + r)).astype(np.int32)
    mask, loss_mask = np.zeros((b, p + r), bool), np.zeros((b, p + r), bool)
    for i, (pl, rl) in enumerate(zip(prompt_lens, resp_lens, strict=True)):
        mask[i, p - pl : p + rl] = True
        loss_mask[i, p : p + rl] = True
    return tokens, mask, loss_mask


def plain_stats(cfg, p, tokens, mask, loss_mask, temperature):
    """The reference: full logits [B, T, V], then the full-logits helpers, masked."""
    logits = lm_logits(cfg, p, tokens, mask)
    on = loss_mask.astype(bool)
    hits = jnp.pad(jnp.argmax(logits[:, :-1], -1) == tokens[:, 1:], ((0, 0), (1, 0)))
    return {
        "logp": jnp.where(on, token_logprobs(logits, tokens, temperature), 0.0),
        "entropy": jnp.where(on, shifted_entropy(logits, temperature), 0.0),
        "hits": hits & on,
    }


def assert_trees_close(got, want, tol):
    for (path, g), w in zip(
        jax.tree_util.tree_flatten_with_path(got)[0], jax.tree.leaves(want), strict=True
    ):
        np.testing.assert_allclose(g, w, **tol, err_msg=jax.tree_util.keystr(path))


def test_chunking_covers_with_less_than_a_position_of_padding_per_chunk():
    for n in (1, 2, 7, 31, 32, 33, 65, 116):
        for c in (1, 3, 32, 200):
            chunks, length = chunking(n, c)
            assert length <= c and chunks * length >= n and chunks * length - n < chunks
    with pytest.raises(ValueError):
        chunking(0)


def test_head_positions_skip_prompt_and_trailing_chunks():
    _, _, loss_mask = rows(np.random.default_rng(0), [5, 9], [3, 8], p=11, r=12)
    # T - 1 = 22 positions in 8 chunks of 3; scored predictions sit at 10..17 -> chunks 3..5.
    assert head_positions(loss_mask, 3) == 9
    assert head_positions(loss_mask, 100) == 22
    assert chunking(P + R - 1) == (3, 22)  # the layout the objective tests below rely on


@pytest.mark.parametrize("chunk_len", [1, 3, 5, 22, CHUNK_LEN])
def test_scored_stats_equal_full_logits(params, chunk_len):
    """Values of all three stats, and the gradient of a mix of logp and entropy, over params."""
    rng = np.random.default_rng(chunk_len)
    tokens, mask, loss_mask = rows(rng, [5, 11, 2], [3, 9, 0], p=11, r=12)
    w_logp, w_ent = rng.normal(size=(2,) + tokens.shape).astype(np.float32)
    p, temperature = params["policy"], 0.7

    def loss(stats_fn):
        def f(p):
            s = stats_fn(p)
            return jnp.sum(w_logp * s["logp"] + w_ent * s["entropy"]), s

        return jax.jit(jax.value_and_grad(f, has_aux=True))

    (got_v, got), got_g = loss(
        lambda p: scored_token_stats(
            CFG,
            p,
            tokens,
            mask,
            loss_mask,
            temperature,
            entropy=True,
            hits=True,
            chunk_len=chunk_len,
        )
    )(p)
    (want_v, want), want_g = loss(
        lambda p: plain_stats(CFG, p, tokens, mask, loss_mask, temperature)
    )(p)
    assert set(got) == {"logp", "entropy", "hits"}
    for k in ("logp", "entropy"):
        np.testing.assert_allclose(got[k], want[k], **SIMPLE, err_msg=k)
    np.testing.assert_array_equal(got["hits"], want["hits"])
    assert np.all(np.asarray(got["logp"])[~loss_mask] == 0)
    np.testing.assert_allclose(got_v, want_v, **SIMPLE)
    assert_trees_close(got_g, want_g, SIMPLE)


def test_sequence_logprobs_equal_full_logits(params):
    """The reference pass (rlft.rollout.scoring) sums the same log-probs as full logits."""
    tokens, mask, loss_mask = rows(np.random.default_rng(1), [44, 1, 20], [23, 3, 0])
    got = jax.jit(sequence_logprobs, static_argnums=(0, 5))(
        CFG, params["policy"], tokens, mask, loss_mask, 0.7
    )
    want = plain_stats(CFG, params["policy"], tokens, mask, loss_mask, 0.7)["logp"].sum(-1)
    np.testing.assert_allclose(got, want, **SIMPLE)


def check_loss(loss_fn, plain_fn, params, batch, models, hp):
    """loss_fn and its full-logits reference agree on (sum, denom, metrics) and gradients."""

    def grad(fn):
        def f(p):
            out = fn(p, batch, models, hp)
            return out.loss_sum, out

        return jax.jit(jax.value_and_grad(f, has_aux=True))(params)

    (_, got), got_g = grad(loss_fn)
    (_, want), want_g = grad(plain_fn)
    np.testing.assert_allclose(got.loss_sum, want.loss_sum, **COMPOSITE)
    np.testing.assert_allclose(got.denom, want.denom, **COMPOSITE)
    assert set(got.metrics) == set(want.metrics)
    for k in want.metrics:
        np.testing.assert_allclose(got.metrics[k], want.metrics[k], **COMPOSITE, err_msg=k)
    assert_trees_close(got_g, want_g, COMPOSITE)
    assert any(np.any(g != 0) for g in jax.tree.leaves(got_g["policy"]))


def plain_sft(params, batch, models, hp):
    logits = lm_logits(models.policy, params["policy"], batch["tokens"], batch["mask"])
    nll, hit = sft.nll_and_accuracy(logits, batch["tokens"], hp.temperature)
    on = batch["loss_mask"].astype(bool)
    return LossOut(
        jnp.sum(jnp.where(on, nll, 0.0)),
        jnp.sum(on).astype(jnp.float32),
        {"accuracy": jnp.sum(hit & on).astype(jnp.float32)},
    )


def test_sft_equals_full_logits(params):
    tokens, mask, loss_mask = rows(np.random.default_rng(2), [44, 4, 20], [23, 5, 1])
    batch = dict(tokens=tokens, mask=mask, loss_mask=loss_mask)
    p = {"policy": params["policy"]}
    check_loss(sft.loss_fn, plain_sft, p, batch, Models(policy=CFG), sft.SftHparams(0.9))


def plain_dpo(params, batch, models, hp):
    def logp(side):
        t, m, lm = (batch[f"{side}_{k}"] for k in ("tokens", "mask", "loss_mask"))
        return plain_stats(models.policy, params["policy"], t, m, lm, hp.temperature)["logp"]

    chosen, rejected = logp("chosen").sum(-1), logp("rejected").sum(-1)
    losses, rc, rr = dpo.dpo_losses(
        chosen,
        rejected,
        batch["ref_chosen_logp"],
        batch["ref_rejected_logp"],
        beta=hp.beta,
        loss_type=hp.loss_type,
        label_smoothing=hp.label_smoothing,
        reference_free=hp.reference_free,
    )
    metrics = {
        "accuracy": jnp.sum(rc > rr).astype(jnp.float32),
        "margin": jnp.sum(rc - rr),
        "chosen_reward": jnp.sum(rc),
        "rejected_reward": jnp.sum(rr),
        "policy_chosen_logp": jnp.sum(chosen),
        "policy_rejected_logp": jnp.sum(rejected),
    }
    return LossOut(jnp.sum(losses), jnp.float32(len(chosen)), metrics)


def test_dpo_equals_full_logits(params):
    rng = np.random.default_rng(3)
    ct, cm, cl = rows(rng, [44, 4, 20], [6, 2, 7])  # chosen: short responses
    rt, rm, rl = rows(rng, [44, 4, 20], [23, 11, 1])
    rt[:, :P] = ct[:, :P]
    batch = dict(
        chosen_tokens=ct,
        chosen_mask=cm,
        chosen_loss_mask=cl,
        rejected_tokens=rt,
        rejected_mask=rm,
        rejected_loss_mask=rl,
        ref_chosen_logp=rng.normal(-20, 3, 3).astype(np.float32),
        ref_rejected_logp=rng.normal(-20, 3, 3).astype(np.float32),
    )
    hp = dpo.DpoHparams(beta=0.05, temperature=0.8, label_smoothing=0.1)
    check_loss(dpo.loss_fn, plain_dpo, {"policy": params["policy"]}, batch, Models(policy=CFG), hp)


def plain_ppo(params, batch, models, hp):
    tokens, mask = batch["tokens"], batch["mask"]
    stats = plain_stats(
        models.policy, params["policy"], tokens, mask, batch["loss_mask"], hp.temperature
    )
    terms = ppo_token_terms(
        stats["logp"],
        batch["old_logp"],
        batch["advantages"],
        token_values(models.critic, params["critic"], tokens, mask),
        batch["old_values"],
        batch["returns"],
        stats["entropy"],
        batch["loss_mask"],
        clip_eps=hp.clip_eps,
        vf_clip=hp.vf_clip,
        vf_coef=hp.vf_coef,
        ent_coef=hp.ent_coef,
    )
    sums = {k: jnp.sum(v) for k, v in terms.items()}
    denom = jnp.sum(batch["loss_mask"].astype(bool)).astype(jnp.float32)
    return LossOut(sums.pop("loss"), denom, sums)


def test_ppo_equals_full_logits(params):
    rng = np.random.default_rng(4)
    tokens, mask, loss_mask = rows(rng, [44, 4, 20], [23, 5, 12])
    shape = tokens.shape
    batch = dict(
        tokens=tokens,
        mask=mask,
        loss_mask=loss_mask,
        old_logp=rng.normal(-3.6, 0.3, shape).astype(np.float32),
        old_values=rng.normal(0, 0.3, shape).astype(np.float32),
        advantages=rng.normal(size=shape).astype(np.float32),
        returns=rng.normal(size=shape).astype(np.float32),
    )
    hp = ppo.PpoHparams(ent_coef=0.05)
    check_loss(ppo.loss_fn, plain_ppo, params, batch, Models(policy=CFG, critic=CFG), hp)


def test_scored_gradient_memory_does_not_grow_with_logits():
    """XLA's temporary buffers for the gradient, grown by 44 more response columns: beyond
    what the backbone alone adds (attention grows as T^2), the scored path (chunks of 4
    positions) adds under a quarter of those columns' [B, 44, V] float32 logits, and the
    full-logits path more than all of them (so the measure can see it)."""
    cfg = model_config("tiny", vocab_size=4099, num_layers=1)
    p = nn.unbox(jax.jit(init_params, static_argnums=(0, 1))("lm", cfg, jax.random.key(0)))

    def growth(stats_fn):
        def temp_bytes(r):
            batch = rows(np.random.default_rng(5), [44, 4, 20], [r, 5, 12], r=r)
            grad = jax.jit(jax.grad(lambda p: jnp.sum(stats_fn(p, *batch))))
            return grad.lower(p).compile().memory_analysis().temp_size_in_bytes

        return temp_bytes(R + 44) - temp_bytes(R)

    def backbone(p, tokens, mask, loss_mask):
        return lm_hidden(cfg, p, tokens, mask) ** 2

    def scored(p, *batch):
        return scored_token_stats(cfg, p, *batch, chunk_len=4)["logp"]

    def plain(p, *batch):
        return plain_stats(cfg, p, *batch, 1.0)["logp"]

    added_logits = 3 * 44 * cfg.vocab_size * 4
    base = growth(backbone)
    assert growth(scored) - base < added_logits / 4
    assert growth(plain) - base > added_logits


def test_ppo_rollout_old_logp_equals_the_samplers():
    """The PPO rollout scores its samples through the scored-chunk path; its old_logp (and the
    reference's, with the same params) must equal the sampler's own log-probs, an independent
    computation from the KV-cache decode."""
    import flax.linen as nn

    from rlft.models import init_params, model_config
    from rlft.rollout.ppo import RolloutConfig, make_rollout_fn
    from rlft.rollout.sampler import generate

    cfg = model_config("tiny")
    lm = nn.unbox(init_params("lm", cfg, jax.random.PRNGKey(0)))
    critic = nn.unbox(init_params("scalar", cfg, jax.random.PRNGKey(1)))
    prompts_BxP = jax.random.randint(jax.random.PRNGKey(2), (4, 6), 3, cfg.vocab_size)
    mask_BxP = jnp.ones((4, 6), bool).at[1, :2].set(False)
    rollout = RolloutConfig(response_len=40)  # two chunks of response, one of prompt
    fn = make_rollout_fn(cfg, cfg, rollout, 0.7, eos_id=1, pad_id=0)
    rng = jax.random.PRNGKey(3)
    batch, stats = fn({"policy": lm, "critic": critic}, lm, critic, prompts_BxP, mask_BxP, rng)
    samples = generate(cfg, lm, prompts_BxP, mask_BxP, rng, max_new_tokens=40, temperature=0.7,
                       eos_id=1, pad_id=0)  # fmt: skip
    np.testing.assert_array_equal(batch["tokens"], samples.tokens)
    np.testing.assert_allclose(batch["old_logp"], samples.logp, atol=2e-5)
    assert float(stats["rollout/kl"]) == pytest.approx(0.0, abs=1e-6)  # reference = policy


def test_first_argmax_equals_numpy_argmax_with_ties_and_minus_inf():
    """First index of the row maximum, as numpy's argmax: random rows, rows of ties (small
    integers), an all -inf row, a row whose max is +inf twice; a NaN row gives the last index."""
    rng = np.random.default_rng(0)
    x_NxV = np.concatenate(
        [
            rng.standard_normal((5, 50_304)),
            rng.integers(0, 3, (5, 50_304)).astype(np.float64),
            np.full((1, 50_304), -np.inf),
            np.where(np.arange(50_304) % 7000 == 3, np.inf, 0.0)[None],
        ]
    ).astype(np.float32)
    np.testing.assert_array_equal(first_argmax(jnp.asarray(x_NxV)), np.argmax(x_NxV, axis=-1))
    x_VxN = jnp.asarray(np.ascontiguousarray(x_NxV.T))  # the train steps' layout
    np.testing.assert_array_equal(first_argmax(x_VxN, axis=0), np.argmax(x_NxV, axis=-1))
    with_nan_V = np.zeros(11, np.float32)
    with_nan_V[4] = np.nan
    assert int(first_argmax(jnp.asarray(with_nan_V[None]))[0]) == 10


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_head_logits_equal_the_heads_values_and_gradients(params, dtype):
    """`head_logits_VxN` (forward from the stored [D, V] kernel, vocabulary-major, gradient
    through the [V, D] transpose) and `head_target_logits` against autodiff of the head
    module itself: logits transposed and the targets' entries equal to float rounding, the
    kernel's and the hidden states' gradients too, in the hidden states' dtype."""
    lm = params["policy"]
    h_NxD = jax.random.normal(jax.random.key(5), (21, CFG.d_model)).astype(dtype)
    w_NxV = jax.random.normal(jax.random.key(6), (21, CFG.vocab_size))
    targets_N = jax.random.randint(jax.random.key(7), (21,), 0, CFG.vocab_size)
    w_N = jax.random.normal(jax.random.key(8), (21,))

    def loss(head, target, p, h):
        return jnp.sum(jnp.sin(head(p, h)) * w_NxV) + jnp.sum(jnp.cos(target(p, h)) * w_N)

    def ours_head(p, h):
        return head_logits_VxN(*lm_head_kernels(p), h).T

    def ours_target(p, h):
        return head_target_logits(lm_head_kernels(p)[1], h, targets_N)

    def theirs_head(p, h):
        return lm_head_logits(CFG, p, h)

    def theirs_target(p, h):
        return jnp.take_along_axis(theirs_head(p, h), targets_N[:, None], axis=1)[:, 0]

    np.testing.assert_allclose(ours_head(lm, h_NxD), theirs_head(lm, h_NxD), atol=1e-6)
    np.testing.assert_allclose(ours_target(lm, h_NxD), theirs_target(lm, h_NxD), atol=1e-6)
    got = jax.grad(functools.partial(loss, ours_head, ours_target), argnums=(0, 1))(lm, h_NxD)
    want = jax.grad(functools.partial(loss, theirs_head, theirs_target), argnums=(0, 1))(lm, h_NxD)
    assert got[1].dtype == dtype
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), atol=1e-5)
    assert float(jnp.max(jnp.abs(got[0]["embed_out"]["kernel"]))) > 0.1  # not vacuous


def test_scored_logprobs_never_exceed_zero_when_peaked(params):
    """A target's log-prob is <= 0 even where softmax is ~1 at large logits: the target logit
    (its own dot) and the normaliser (the logits' matmul) round apart there (6e-5 above 0
    measured before the clamp at 300x the head's scale)."""
    lm = dict(params["policy"], embed_out={"kernel": params["policy"]["embed_out"]["kernel"] * 300})
    tokens, mask, loss_mask = rows(np.random.default_rng(3), [P] * 3, [R] * 3)
    greedy = np.argmax(np.asarray(lm_logits(CFG, lm, tokens, mask)), axis=-1)[:, :-1]
    tokens = np.concatenate([tokens[:, :1], greedy], axis=1).astype(np.int32)
    logp = scored_token_stats(CFG, lm, tokens, mask, loss_mask)["logp"]
    assert float(jnp.max(logp)) <= 0.0
    assert float(jnp.max(jnp.where(loss_mask, logp, -1.0))) > -1e-3  # peaked: not vacuous
