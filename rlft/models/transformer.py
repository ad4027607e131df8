"""GPT-NeoX (Pythia) decoder as pure Flax Linen modules, with an explicit KV cache.

Every module is a pure function of (params, inputs). Attention masks and positions are built
by the caller (`causal_mask`, `positions_from_mask` in `rlft.models`), so the same forward
serves training, prefill and one-token decode. Params carry logical axis names for sharding
(`rlft.parallel`).
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rlft.models.config import ModelConfig
from rlft.parallel.mesh import constrain_batch

# Per layer: (k_cache_BxHxSxK, v_cache_BxHxSxK). Heads before slots, so a decode step's
# attention einsums read each buffer in place; [B, S, H, K] made XLA copy and transpose every
# layer's K and V cache in every step (issue 9).
KVCache = list[tuple[jax.Array, jax.Array]]

_INIT_STD = 0.02


def _kernel(*names: str, std: float = _INIT_STD):
    return nn.with_logical_partitioning(nn.initializers.normal(std), names)


def _zeros(*names: str):
    return nn.with_logical_partitioning(nn.initializers.zeros_init(), names)


def _layer_norm(cfg: ModelConfig, name: str) -> nn.LayerNorm:
    return nn.LayerNorm(
        epsilon=cfg.layer_norm_eps,
        dtype=cfg.dtype,
        param_dtype=jnp.float32,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ("embed",)),
        bias_init=_zeros("embed"),
        name=name,
    )


def apply_rotary(
    x_BxTxHxK: jax.Array, positions_BxT: jax.Array, rotary_dim: int, base: float
) -> jax.Array:
    """GPT-NeoX rotary embedding on the first `rotary_dim` dims (rotate-half convention)."""
    if rotary_dim == 0:
        return x_BxTxHxK
    half = rotary_dim // 2
    inv_freq_R = 1.0 / (base ** (jnp.arange(0, rotary_dim, 2, dtype=jnp.float32) / rotary_dim))
    angles_BxTxR = positions_BxT[..., None].astype(jnp.float32) * inv_freq_R
    angles_BxTxR = jnp.concatenate([angles_BxTxR, angles_BxTxR], axis=-1)
    cos_BxTx1xR = jnp.cos(angles_BxTxR)[:, :, None, :]
    sin_BxTx1xR = jnp.sin(angles_BxTxR)[:, :, None, :]
    x_rot = x_BxTxHxK[..., :rotary_dim].astype(jnp.float32)
    rotated = jnp.concatenate([-x_rot[..., half:], x_rot[..., :half]], axis=-1)
    x_rot = x_rot * cos_BxTx1xR + rotated * sin_BxTx1xR
    return jnp.concatenate([x_rot.astype(x_BxTxHxK.dtype), x_BxTxHxK[..., rotary_dim:]], axis=-1)


def gelu_exact(x: jax.Array) -> jax.Array:
    """Exact (erf) GELU, x * (1 + erf(x / sqrt 2)) / 2, elementwise, any shape and dtype.

    The formula of torch's `F.gelu` (Hendrycks & Gimpel 2016), which Hugging Face's GPT-NeoX
    applies for `hidden_act="gelu"`. `jax.nn.gelu(approximate=False)` computes the same
    function through `erfc`, a piecewise approximation XLA CPU evaluates with selects; erf's
    single rational approximation is as accurate in absolute terms in float32 (both within
    6e-7 of float64 on N(0, 1) inputs; like torch's, it reaches 0 in the far negative tail,
    where erfc keeps relative accuracy). On the Pythia-shaped steps of `python
    benchmarks/gelu.py` (issue 9; both programs in one process, timed alternately) it took
    0.93-1.00x the reward-model step's time and 0.97-0.99x the DPO step's, with 23 MB fewer
    temporaries (docs/benchmarks/gelu-cpu.txt).
    Computed in float32 and cast back once: in bfloat16, 1 + erf(x / sqrt 2) cancels to 0
    for x below about -3.5 (GELU(-3) came out -0.0059 against -0.0041).
    """
    x_f = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    return (x_f * (1 + jax.lax.erf(x_f * (2**-0.5))) * 0.5).astype(x.dtype)


def masked_attention(
    q_BxHxTxK: jax.Array,
    k_BxHxSxK: jax.Array,
    v_BxHxSxK: jax.Array,
    mask_BxTxS: jax.Array,
    scale: float,
) -> jax.Array:
    """softmax(scale * q k^T, keys where mask is False excluded) v: [B, H, T, K], q's dtype.

    Head-major operands (q [B, H, T, K]; k, v [B, H, S, K], cast to q's dtype outside the
    differentiated function, so their gradients come back in their own dtypes; mask bool
    [B, T, S]). The logits, the exponentials' sums and the products' accumulations are
    float32 (`preferred_element_type`). A row whose mask is all False attends uniformly to
    every key, as a softmax over equal float32-min logits does.

    Undifferentiated (sampling, scoring), the forward never divides the [B, H, T, S]
    exponentials: it divides the [B, H, T, K] value product by each row's sum. Differentiated,
    it also keeps the probabilities, which the backward needs. The backward is written out (the
    softmax gradient of Dao et al. 2022, FlashAttention, appendix B.2): with P the
    probabilities and dO the output's cotangent, dV = P^T dO, dP = dO V^T,
    dS = P * (dP - rowsum(dO * O)) with masked entries zeroed, dQ = scale * dS K,
    dK = scale * dS^T Q. P and O are the float32 ones the forward computed from its
    exponentials as rounded to q's dtype, so each row of dS sums to 0 up to float32 rounding,
    and dS stays float32 into dQ and dK: in bfloat16, rounding either broke that sum and let a
    component shared by all keys or values into dQ and dK (an offset of 32 on k: 10x the plain
    formula's relative error in dQ). The reference in tests/test_attention.py is jax's
    derivative of the plain formula (softmax, then the value product), and float64.
    In the train step, XLA CPU's fusions of jax's derivative of the plain softmax materialised
    each row's normaliser broadcast to [B, H, T, S] in every layer. On the Pythia-shaped steps
    of `python benchmarks/attention.py` (issue 9; both programs in one process, timed
    alternately, on a 2-core AMD EPYC) the reward-model step took 0.94-0.96x the time it took
    with jax's derivative, with 191 MB of temporaries instead of 224; SFT 0.96x; DPO with
    precomputed reference log-probs 0.97-1.03x (docs/benchmarks/attention-cpu.txt).
    """
    dtype = q_BxHxTxK.dtype
    return _masked_attention(
        q_BxHxTxK, k_BxHxSxK.astype(dtype), v_BxHxSxK.astype(dtype), mask_BxTxS, scale
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _masked_attention(q_BxHxTxK, k_BxHxSxK, v_BxHxSxK, mask_BxTxS, scale):
    return _masked_attention_fwd(q_BxHxTxK, k_BxHxSxK, v_BxHxSxK, mask_BxTxS, scale)[0]


def _masked_attention_fwd(q_BxHxTxK, k_BxHxSxK, v_BxHxSxK, mask_BxTxS, scale):
    dtype = q_BxHxTxK.dtype
    logits_BxHxTxS = (
        jnp.einsum("bhtk,bhsk->bhts", q_BxHxTxK, k_BxHxSxK, preferred_element_type=jnp.float32)
        * scale
    )
    logits_BxHxTxS = jnp.where(mask_BxTxS[:, None], logits_BxHxTxS, jnp.finfo(jnp.float32).min)
    exp_BxHxTxS = jnp.exp(logits_BxHxTxS - jnp.max(logits_BxHxTxS, axis=-1, keepdims=True))
    exp_BxHxTxS = exp_BxHxTxS.astype(dtype)  # what the value product sees
    sum_BxHxTx1 = jnp.sum(exp_BxHxTxS.astype(jnp.float32), axis=-1, keepdims=True)
    out_f32_BxHxTxK = (
        jnp.einsum("bhts,bhsk->bhtk", exp_BxHxTxS, v_BxHxSxK, preferred_element_type=jnp.float32)
        / sum_BxHxTx1
    )
    probs_BxHxTxS = exp_BxHxTxS.astype(jnp.float32) / sum_BxHxTx1
    residuals = (q_BxHxTxK, k_BxHxSxK, v_BxHxSxK, mask_BxTxS, probs_BxHxTxS, out_f32_BxHxTxK)
    return out_f32_BxHxTxK.astype(dtype), residuals


def _masked_attention_bwd(scale, residuals, d_out_BxHxTxK):
    q_BxHxTxK, k_BxHxSxK, v_BxHxSxK, mask_BxTxS, probs_BxHxTxS, out_f32_BxHxTxK = residuals
    dtype, f32 = q_BxHxTxK.dtype, jnp.float32
    d_v_BxHxSxK = jnp.einsum("bhts,bhtk->bhsk", probs_BxHxTxS.astype(dtype), d_out_BxHxTxK)
    d_probs_BxHxTxS = jnp.einsum(
        "bhtk,bhsk->bhts", d_out_BxHxTxK, v_BxHxSxK, preferred_element_type=f32
    )
    row_BxHxTx1 = jnp.sum(d_out_BxHxTxK.astype(f32) * out_f32_BxHxTxK, axis=-1, keepdims=True)
    d_logits_BxHxTxS = probs_BxHxTxS * (d_probs_BxHxTxS - row_BxHxTx1) * scale
    d_logits_BxHxTxS = jnp.where(mask_BxTxS[:, None], d_logits_BxHxTxS, 0.0)  # float32
    d_q_BxHxTxK = jnp.einsum("bhts,bhsk->bhtk", d_logits_BxHxTxS, k_BxHxSxK.astype(f32))
    d_k_BxHxSxK = jnp.einsum("bhts,bhtk->bhsk", d_logits_BxHxTxS, q_BxHxTxK.astype(f32))
    return d_q_BxHxTxK.astype(dtype), d_k_BxHxSxK.astype(dtype), d_v_BxHxSxK, None


_masked_attention.defvjp(_masked_attention_fwd, _masked_attention_bwd)


def _attend(cfg: ModelConfig, q_BxTxHxK, k_BxHxSxK, v_BxHxSxK, mask_BxTxS) -> jax.Array:
    """Masked softmax attention [B, T, H, K] over keys and values laid out [B, H, S, K].

    Both products run head-major ([B, H, T, K] queries): XLA's CPU batched matmuls are
    faster with the batch dims leading each operand (forward measured in issue 9).
    """
    q_BxHxTxK = q_BxTxHxK.astype(cfg.dtype).transpose(0, 2, 1, 3)
    out_BxHxTxK = masked_attention(q_BxHxTxK, k_BxHxSxK, v_BxHxSxK, mask_BxTxS, cfg.head_dim**-0.5)
    return out_BxHxTxK.transpose(0, 2, 1, 3)


class Attention(nn.Module):
    cfg: ModelConfig

    @nn.compact
    def __call__(self, x_BxTxD, positions_BxT, mask_BxTxS, cache=None, cache_index=None):
        cfg = self.cfg
        heads = (cfg.num_heads, cfg.head_dim)

        def proj(name):
            return nn.DenseGeneral(
                heads,
                dtype=cfg.dtype,
                param_dtype=jnp.float32,
                name=name,
                kernel_init=_kernel("embed", "heads", "kv"),
                bias_init=_zeros("heads", "kv"),
            )(x_BxTxD)

        q_BxTxHxK, k_BxTxHxK, v_BxTxHxK = proj("query"), proj("key"), proj("value")
        q_BxTxHxK = apply_rotary(q_BxTxHxK, positions_BxT, cfg.rotary_dim, cfg.rotary_base)
        k_BxTxHxK = apply_rotary(k_BxTxHxK, positions_BxT, cfg.rotary_dim, cfg.rotary_base)
        if cache is None:
            new_cache = None
            out_BxTxHxK = _attend(
                cfg,
                q_BxTxHxK,
                k_BxTxHxK.transpose(0, 2, 1, 3),
                v_BxTxHxK.transpose(0, 2, 1, 3),
                mask_BxTxS,
            )
        else:  # write this chunk at slots cache_index.., attend over all S slots
            k_cache_BxHxSxK, v_cache_BxHxSxK = cache
            start = (0, 0, cache_index, 0)
            k_cache_BxHxSxK = jax.lax.dynamic_update_slice(
                k_cache_BxHxSxK,
                k_BxTxHxK.transpose(0, 2, 1, 3).astype(k_cache_BxHxSxK.dtype),
                start,
            )
            v_cache_BxHxSxK = jax.lax.dynamic_update_slice(
                v_cache_BxHxSxK,
                v_BxTxHxK.transpose(0, 2, 1, 3).astype(v_cache_BxHxSxK.dtype),
                start,
            )
            new_cache = (k_cache_BxHxSxK, v_cache_BxHxSxK)
            out_BxTxHxK = _attend(cfg, q_BxTxHxK, k_cache_BxHxSxK, v_cache_BxHxSxK, mask_BxTxS)
        out_BxTxD = nn.DenseGeneral(
            cfg.d_model,
            axis=(-2, -1),
            dtype=cfg.dtype,
            param_dtype=jnp.float32,
            name="out",
            kernel_init=_kernel("heads", "kv", "embed"),
            bias_init=_zeros("embed"),
        )(out_BxTxHxK)
        return out_BxTxD, new_cache


class Mlp(nn.Module):
    cfg: ModelConfig

    @nn.compact
    def __call__(self, x_BxTxD):
        cfg = self.cfg
        h_BxTxF = nn.Dense(
            cfg.d_ff,
            dtype=cfg.dtype,
            param_dtype=jnp.float32,
            name="up",
            kernel_init=_kernel("embed", "mlp"),
            bias_init=_zeros("mlp"),
        )(x_BxTxD)
        h_BxTxF = gelu_exact(h_BxTxF)  # Pythia uses exact GELU
        return nn.Dense(
            cfg.d_model,
            dtype=cfg.dtype,
            param_dtype=jnp.float32,
            name="down",
            kernel_init=_kernel("mlp", "embed"),
            bias_init=_zeros("embed"),
        )(h_BxTxF)


class Block(nn.Module):
    cfg: ModelConfig

    @nn.compact
    def __call__(self, x_BxTxD, positions_BxT, mask_BxTxS, cache=None, cache_index=None):
        cfg = self.cfg
        attn_BxTxD, new_cache = Attention(cfg, name="attn")(
            _layer_norm(cfg, "ln_attn")(x_BxTxD), positions_BxT, mask_BxTxS, cache, cache_index
        )
        if cfg.parallel_residual:
            x_BxTxD = (
                x_BxTxD + attn_BxTxD + Mlp(cfg, name="mlp")(_layer_norm(cfg, "ln_mlp")(x_BxTxD))
            )
        else:
            x_BxTxD = x_BxTxD + attn_BxTxD
            x_BxTxD = x_BxTxD + Mlp(cfg, name="mlp")(_layer_norm(cfg, "ln_mlp")(x_BxTxD))
        return x_BxTxD, new_cache


class Backbone(nn.Module):
    """Token embedding, the blocks and the final LayerNorm: hidden states h_BxTxD."""

    cfg: ModelConfig

    @nn.compact
    def __call__(
        self, tokens_BxT, positions_BxT, mask_BxTxS, cache: KVCache | None = None, cache_index=None
    ):
        cfg = self.cfg
        x_BxTxD = nn.Embed(
            cfg.vocab_size,
            cfg.d_model,
            param_dtype=jnp.float32,
            name="embed_in",
            embedding_init=_kernel("vocab", "embed"),
        )(tokens_BxT).astype(cfg.dtype)
        x_BxTxD = constrain_batch(x_BxTxD)  # rows split over the mesh, as are the tokens
        block_cls = nn.remat(Block) if cfg.remat else Block
        new_cache = [] if cache is not None else None
        for i in range(cfg.num_layers):
            layer_cache = cache[i] if cache is not None else None
            x_BxTxD, c = block_cls(cfg, name=f"layer_{i}")(
                x_BxTxD, positions_BxT, mask_BxTxS, layer_cache, cache_index
            )
            x_BxTxD = constrain_batch(x_BxTxD)
            if cache is not None:
                new_cache.append(c)
        return _layer_norm(cfg, "final_ln")(x_BxTxD), new_cache


def lm_head(cfg: ModelConfig, name: str | None = None) -> nn.DenseGeneral:
    """The untied output embedding D -> V, float32 logits: `LanguageModel`'s head, and the
    module that `rlft.models.lm_head_logits` applies alone to hidden states."""
    return nn.DenseGeneral(
        cfg.vocab_size,
        use_bias=False,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        name=name,
        kernel_init=_kernel("embed", "vocab"),
    )


class LanguageModel(nn.Module):
    """Backbone plus an untied output embedding; logits are float32."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, tokens_BxT, positions_BxT, mask_BxTxS, cache=None, cache_index=None):
        h_BxTxD, new_cache = Backbone(self.cfg, name="backbone")(
            tokens_BxT, positions_BxT, mask_BxTxS, cache, cache_index
        )
        logits_BxTxV = lm_head(self.cfg, name="embed_out")(h_BxTxD)
        return logits_BxTxV, new_cache


class ScalarModel(nn.Module):
    """Backbone plus a scalar head per position: a reward model or a critic.

    The head follows the paper's reward model: N(0, 1/sqrt(D+1)) weights, zero bias.
    """

    cfg: ModelConfig

    @nn.compact
    def __call__(self, tokens_BxT, positions_BxT, mask_BxTxS):
        h_BxTxD, _ = Backbone(self.cfg, name="backbone")(tokens_BxT, positions_BxT, mask_BxTxS)
        return scalar_head(self.cfg, name="scalar_head")(h_BxTxD)[..., 0]


def scalar_head(cfg: ModelConfig, name: str | None = None) -> nn.Dense:
    """The scalar head D -> 1, float32: `ScalarModel`'s, and the module that
    `rlft.models.scalar_values` applies alone to hidden states."""
    return nn.Dense(
        1,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        name=name,
        kernel_init=_kernel("embed", None, std=(cfg.d_model + 1) ** -0.5),
        bias_init=_zeros(None),
    )


def init_kv_cache(cfg: ModelConfig, batch: int, length: int, dtype: Any = None) -> KVCache:
    """Zeroed per-layer (k_cache_BxHxSxK, v_cache_BxHxSxK) buffers of shape [B, H, S, K],
    S = `length` slots."""
    shape = (batch, cfg.num_heads, length, cfg.head_dim)
    dtype = dtype or cfg.dtype
    return [(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)) for _ in range(cfg.num_layers)]
