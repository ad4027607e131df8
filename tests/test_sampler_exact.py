"""The sampler draws from the law it claims: chi-square fits, a float64 reference, edge uniforms.

`sample_token` draws two uniforms per row (`categorical_from_uniform`). Here its empirical
frequencies are tested against softmax(logits / T), and with top_p < 1 against the
renormalised nucleus, both computed in float64 numpy (the nucleus by rank, independently of
`top_p_filter`). Pearson's chi-square goodness of fit (scipy.stats.chisquare) at a fixed seed
must not reject at ALPHA; tokens outside the support must never be drawn. Cells with an
expected count under 5 are pooled, the usual validity condition of the chi-square
approximation (Cochran, 1954). Prime vocabularies (11, 1031) leave a short last block.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlft import models
from rlft.rollout import generate
from rlft.rollout.sampler import block_size, categorical_from_uniform, sample_token, top_p_filter

stats = pytest.importorskip("scipy.stats")

ALPHA = 1e-3  # a correct sampler fails one case in 1000 seeds; the seeds here are fixed
DRAWS = 40_000
LOGITS_11 = np.array([0.3, -1.2, 2.0, 0.0, 1.1, -0.4, 0.9, -2.5, 1.6, 0.2, -0.8], np.float32)


def nucleus_probs(logits_V: np.ndarray, temperature: float, top_p: float) -> np.ndarray:
    """softmax(logits / T) in float64, renormalised over the fewest top-ranked tokens whose
    mass reaches top_p (ties by lower index), zero elsewhere."""
    z_V = logits_V.astype(np.float64) / temperature
    probs_V = np.exp(z_V - z_V.max())
    probs_V /= probs_V.sum()
    order_V = np.argsort(-probs_V, kind="stable")
    before_V = np.cumsum(probs_V[order_V]) - probs_V[order_V]
    kept_V = np.zeros(len(probs_V), bool)
    kept_V[order_V[: max(int(np.sum(before_V < top_p)), 1)]] = True
    probs_V = np.where(kept_V, probs_V, 0.0)
    return probs_V / probs_V.sum()


def draw(logits_V, temperature, top_p, block=None, n=DRAWS, seed=0) -> np.ndarray:
    """n independent tokens: n identical rows, one key (each row gets its own uniforms)."""
    logits_NxV = jnp.broadcast_to(jnp.asarray(logits_V), (n, len(logits_V)))
    fn = jax.jit(sample_token, static_argnums=(2, 3, 4, 5))
    return np.asarray(fn(logits_NxV, jax.random.key(seed), temperature, top_p, False, block))


def chi_square_p(tokens_N: np.ndarray, probs_V: np.ndarray) -> float:
    """Pearson's p-value over the support, cells expected under 5 pooled into one."""
    counts_V = np.bincount(tokens_N, minlength=len(probs_V))
    assert np.all(counts_V[probs_V == 0] == 0), "drew a token outside the support"
    expected_V = probs_V * len(tokens_N)
    big_V, small_V = expected_V >= 5, (expected_V > 0) & (expected_V < 5)
    observed = np.append(counts_V[big_V], counts_V[small_V].sum())
    expected = np.append(expected_V[big_V], expected_V[small_V].sum())
    keep = expected > 0
    return float(stats.chisquare(observed[keep], expected[keep]).pvalue)


@pytest.mark.parametrize(
    "temperature,top_p,block",
    [
        (0.7, 1.0, None),  # block_size(11) = 4: three blocks, the last of 3
        (1.0, 1.0, 1),  # G = V: the first level alone decides
        (1.0, 1.0, 11),  # G = 1: the second level alone decides
        (0.5, 1.0, 3),
        (1.3, 0.8, None),  # nucleus of 6 tokens
        (0.7, 0.5, 2),  # nucleus of 2: -inf entries in most blocks
    ],
)
def test_chi_square_small_vocab(temperature, top_p, block):
    probs_V = nucleus_probs(LOGITS_11, temperature, top_p)
    tokens_N = draw(LOGITS_11, temperature, top_p, block)
    p_value = chi_square_p(tokens_N, probs_V)
    assert p_value > ALPHA, f"chi-square rejects softmax(logits / T): p = {p_value:.3g}"


@pytest.mark.parametrize("temperature,top_p", [(0.7, 1.0), (1.3, 0.9)])
def test_chi_square_large_vocab(temperature, top_p):
    """V = 1031 (prime): block 33 gives 31 full blocks and one of 8; 50k draws. The nucleus is
    cut once by `top_p_filter` (the rows are identical; the small-vocab cases cut it in
    `sample_token`), which saves a 50k x 1031 argsort; the draw still applies T."""
    logits_V = (np.random.default_rng(1).normal(size=1031) * 1.5).astype(np.float32)
    probs_V = nucleus_probs(logits_V, temperature, top_p)
    assert block_size(1031) == 33 and (top_p == 1.0 or 0 < np.sum(probs_V == 0) < 1031)
    kept_V = np.isfinite(top_p_filter(jnp.asarray(logits_V)[None] / temperature, top_p)[0])
    tokens_N = draw(np.where(kept_V, logits_V, -np.inf), temperature, 1.0, n=50_000, seed=1)
    p_value = chi_square_p(tokens_N, probs_V)
    assert p_value > ALPHA, f"chi-square rejects softmax(logits / T): p = {p_value:.3g}"


def reference_two_level(logits_V: np.ndarray, u_Nx2: np.ndarray, block: int):
    """float64 numpy inverse CDF per level: (tokens [N], distance of each u to its nearest
    level boundary, relative to that level's total)."""
    w_V = np.exp(logits_V.astype(np.float64) - logits_V.max())
    upto_G = np.cumsum(np.add.reduceat(w_V, np.arange(0, len(w_V), block)))
    target_N = u_Nx2[:, 0] * upto_G[-1]
    block_N = np.searchsorted(upto_G, target_N, side="right")
    gap_N = np.min(np.abs(upto_G[None, :] - target_N[:, None]), axis=-1) / upto_G[-1]
    tokens_N = np.zeros(len(u_Nx2), np.int64)
    for row, j in enumerate(block_N):
        upto_B = np.cumsum(w_V[j * block : (j + 1) * block])
        target = u_Nx2[row, 1] * upto_B[-1]
        tokens_N[row] = j * block + np.searchsorted(upto_B, target, side="right")
        gap_N[row] = min(gap_N[row], np.min(np.abs(upto_B - target)) / upto_B[-1])
    return tokens_N, gap_N


def test_agrees_with_float64_inverse_cdf():
    """Given the uniforms, the draw is the float64 two-level inverse CDF, except where u lies
    within float32 rounding (1e-5 of a level's total) of a boundary."""
    logits_V = (np.random.default_rng(2).normal(size=1031) * 2.0).astype(np.float32)
    u_Nx2 = np.random.default_rng(3).random((5000, 2)).astype(np.float32)
    ours_N = np.asarray(
        jax.jit(categorical_from_uniform)(
            jnp.broadcast_to(jnp.asarray(logits_V), (len(u_Nx2), 1031)), jnp.asarray(u_Nx2)
        )
    )
    theirs_N, gap_N = reference_two_level(logits_V, u_Nx2.astype(np.float64), 33)
    clear_N = gap_N > 1e-5
    assert clear_N.mean() > 0.99
    np.testing.assert_array_equal(ours_N[clear_N], theirs_N[clear_N])


U_MAX = 1.0 - 2.0**-23  # the largest float32 jax.random.uniform returns


@pytest.mark.parametrize("block", [1, 3, 4, 11])
def test_edge_uniforms_never_draw_excluded_tokens(block):
    """u = 0 draws the first finite token and u = U_MAX the last, through -inf tokens at both
    ends and whole -inf blocks; a -inf token is never returned."""
    ninf = -np.inf
    logits_V = np.array([ninf, ninf, ninf, ninf, 0.5, ninf, ninf, ninf, ninf, 1.5, ninf], "f4")
    u_Nx2 = np.array([[0, 0], [0, U_MAX], [U_MAX, 0], [U_MAX, U_MAX]], np.float32)
    tokens_N = categorical_from_uniform(
        jnp.broadcast_to(jnp.asarray(logits_V), (4, 11)), jnp.asarray(u_Nx2), block
    )
    assert np.isfinite(logits_V[np.asarray(tokens_N)]).all()
    assert tokens_N[0] == 4 and tokens_N[3] == 9


def test_top_p_one_compiles_no_sort():
    """The nucleus argsort over V is traced only when top_p < 1."""
    logits_NxV = jnp.zeros((4, 50_304))
    text = {
        top_p: jax.jit(sample_token, static_argnums=(2, 3, 4))
        .lower(logits_NxV, jax.random.key(0), 0.7, top_p, False)
        .as_text()
        for top_p in (1.0, 0.9)
    }
    assert "stablehlo.sort" not in text[1.0] and "stablehlo.sort" in text[0.9]


def test_generate_first_tokens_fit_the_model_softmax():
    """End to end: K = 20,000 samples of one prompt share its prefill logits, so their first
    response tokens are i.i.d. draws from softmax(logits / T) of the trainer's forward; rows
    that shared a uniform, or a wrong temperature, would fail the fit."""
    cfg = models.model_config(
        "tiny", vocab_size=67, num_layers=2, d_model=24, num_heads=3, d_ff=37, max_len=64
    )
    params = nn.unbox(models.init_params("lm", cfg, jax.random.key(0)))
    params["embed_out"]["kernel"] = params["embed_out"]["kernel"] * 4.0  # a spread-out softmax
    prompt_1xP = jax.random.randint(jax.random.key(1), (1, 5), 0, 67)
    mask_1xP = jnp.ones((1, 5), bool)
    k, temperature = 20_000, 0.8
    samples = generate(
        cfg,
        params,
        prompt_1xP,
        mask_1xP,
        jax.random.key(2),
        max_new_tokens=1,
        num_samples=k,
        temperature=temperature,
        eos_id=None,
        pad_id=0,
    )
    logits_V = np.asarray(models.lm_logits(cfg, params, prompt_1xP, mask_1xP)[0, -1])
    probs_V = nucleus_probs(logits_V, temperature, 1.0)
    p_value = chi_square_p(np.asarray(samples.tokens[:, -1]), probs_V)
    assert p_value > ALPHA, f"chi-square rejects the model's softmax(logits / T): p = {p_value:.3g}"
