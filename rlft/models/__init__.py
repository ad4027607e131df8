"""Models: a GPT-NeoX decoder with a language-model head or a scalar (reward/value) head, and
a transformer-free bilinear reward model (the simple feature class). Their params on disk:
`rlft.models.params_io`; Hugging Face conversion: `rlft.models.hf`
(mapping) and `rlft.models.hf_files` (checkpoint directories, tokenizer)."""

import functools

import jax
import jax.numpy as jnp

from rlft.models.bilinear import BilinearRewardModel, bilinear_reward
from rlft.models.config import PRESETS, ModelConfig, model_config
from rlft.models.transformer import (
    Backbone,
    KVCache,
    LanguageModel,
    ScalarModel,
    init_kv_cache,
    lm_head,
    scalar_head,
)

__all__ = [
    "MODEL_KINDS",
    "PRESETS",
    "BilinearRewardModel",
    "KVCache",
    "LanguageModel",
    "ModelConfig",
    "ScalarModel",
    "backbone_hidden",
    "bilinear_reward",
    "causal_mask",
    "head_logits_VxN",
    "head_target_logits",
    "init_kv_cache",
    "init_params",
    "last_index",
    "lm_head_kernels",
    "lm_head_logits",
    "lm_hidden",
    "lm_logits",
    "model_config",
    "param_shapes",
    "positions_from_mask",
    "scalar_values",
]

MODEL_KINDS = {"lm": LanguageModel, "scalar": ScalarModel, "bilinear": BilinearRewardModel}


def positions_from_mask(mask_BxT: jax.Array) -> jax.Array:
    """Position ids that skip left padding: the first real token is position 0."""
    return jnp.maximum(jnp.cumsum(mask_BxT.astype(jnp.int32), axis=-1) - 1, 0)


def causal_mask(mask_BxT: jax.Array) -> jax.Array:
    """Boolean [B, T, T]: query t sees real keys s <= t (and itself, so no row is empty)."""
    t = mask_BxT.shape[-1]
    causal_TxT = jnp.tril(jnp.ones((t, t), bool))
    return (causal_TxT & mask_BxT.astype(bool)[:, None, :]) | jnp.eye(t, dtype=bool)


def last_index(mask_BxT: jax.Array) -> jax.Array:
    """Index of the last real (non-pad) token in each row."""
    t = mask_BxT.shape[-1]
    return t - 1 - jnp.argmax(jnp.flip(mask_BxT.astype(bool), axis=-1), axis=-1)


def init_params(kind: str, cfg: ModelConfig, rng: jax.Array, seq_len: int = 8):
    """Params (boxed with logical axis names) of a model kind in MODEL_KINDS."""
    tokens_BxT = jnp.zeros((1, seq_len), jnp.int32)
    mask_BxT = jnp.ones((1, seq_len), bool)
    if kind == "bilinear":  # reads token ids and masks, no positions or attention
        inputs = (tokens_BxT, mask_BxT, mask_BxT)
    else:
        inputs = (tokens_BxT, positions_from_mask(mask_BxT), causal_mask(mask_BxT))
    return MODEL_KINDS[kind](cfg).init(rng, *inputs)["params"]


def param_shapes(kind: str, cfg: ModelConfig, seq_len: int = 8):
    """`init_params(kind, cfg, rng, seq_len)` as boxed ShapeDtypeStructs (logical axis names
    kept), traced once per (kind, cfg, seq_len) in a process: restore targets and sharding
    plans reuse it instead of tracing the model's init again (0.1 s each for the tiny model,
    dozens of times in one `rlft reproduce`). Callers get a tree they must not mutate in place.
    """
    return _param_shapes(kind, cfg, seq_len)  # one cache key however the caller passes them


@functools.lru_cache(maxsize=64)
def _param_shapes(kind: str, cfg: ModelConfig, seq_len: int):
    return jax.eval_shape(lambda r: init_params(kind, cfg, r, seq_len), jax.random.PRNGKey(0))


def lm_logits(cfg: ModelConfig, params, tokens_BxT: jax.Array, mask_BxT: jax.Array) -> jax.Array:
    """Full forward of the language model: float32 logits [B, T, V]."""
    logits_BxTxV, _ = LanguageModel(cfg).apply(
        {"params": params}, tokens_BxT, positions_from_mask(mask_BxT), causal_mask(mask_BxT)
    )
    return logits_BxTxV


def backbone_hidden(
    cfg: ModelConfig,
    backbone_params,
    tokens_BxT: jax.Array,
    mask_BxT: jax.Array,
    *,
    prefix_len: int = 0,
    copies: int = 1,
) -> jax.Array:
    """The backbone's final-LayerNorm hidden states h_BxTxD (cfg.dtype), in rlft's layout.

    With `prefix_len` P > 0 the B rows are G = B / `copies` groups of `copies` adjacent rows,
    and every row of a group holds the first row's first P columns (tokens and mask): a
    preference pair's chosen and rejected rows (`copies` = 2, `rlft.objectives.base.pair_rows`)
    share their prompt, as do the K samples of a prompt in the sampler's layout (row k of
    prompt g at g * K + k). Those P columns then run through the backbone once per group, into
    a P-slot KV cache repeated `copies` times, and the remaining U = T - P columns of all B rows
    attend over it (the sampler's prefill and decode, with U new tokens at once): the same
    attention masks, positions and ops per row as the whole forward, so the same hidden states
    and gradients to float rounding (tests/test_shared_prefix.py), with the prefix's FLOPs paid
    once per group. A group's rows are adjacent, so a mesh that splits rows into blocks keeps
    each group on one device. Nothing checks that the rows share the prefix: a caller passes P
    from `rlft.data.arrays.shared_prefix_len` of its data. Raises ValueError unless
    0 <= P < T, copies >= 1 and copies divides B (whatever P).
    """
    positions_BxT, attn_BxTxT = positions_from_mask(mask_BxT), causal_mask(mask_BxT)
    backbone, variables = Backbone(cfg), {"params": backbone_params}
    b, t = tokens_BxT.shape
    if not 0 <= prefix_len < t or copies < 1 or b % copies:
        raise ValueError(
            f"prefix_len={prefix_len} must lie in [0, {t}) and copies={copies} divide {b} rows"
        )
    if prefix_len == 0:
        return backbone.apply(variables, tokens_BxT, positions_BxT, attn_BxTxT)[0]
    p, first = prefix_len, slice(None, None, copies)  # each group's first row
    h_GxPxD, cache = backbone.apply(
        variables,
        tokens_BxT[first, :p],
        positions_BxT[first, :p],
        attn_BxTxT[first, :p, :p],
        init_kv_cache(cfg, b // copies, p),
        0,
    )
    pad = ((0, 0), (0, 0), (0, t - p), (0, 0))  # slots P.. for the rest of the row

    def per_row(x_GxHxPxK):
        return jnp.repeat(jnp.pad(x_GxHxPxK, pad), copies, axis=0)

    h_BxUxD, _ = backbone.apply(
        variables,
        tokens_BxT[:, p:],
        positions_BxT[:, p:],
        attn_BxTxT[:, p:],
        jax.tree.map(per_row, cache),
        p,
    )
    return jnp.concatenate([jnp.repeat(h_GxPxD, copies, axis=0), h_BxUxD], axis=1)


def lm_hidden(
    cfg: ModelConfig,
    params,
    tokens_BxT: jax.Array,
    mask_BxT: jax.Array,
    *,
    prefix_len: int = 0,
    copies: int = 1,
) -> jax.Array:
    """The language model without its head: final-LayerNorm hidden states h_BxTxD (cfg.dtype).

    `lm_head_logits(cfg, params, h_BxTxD)` of these equals `lm_logits`; splitting the two lets
    a caller run the [D, V] head only at the positions it scores (rlft.objectives.logprobs).
    `prefix_len`, `copies`: a prefix the rows share, run once (`backbone_hidden`).
    """
    return backbone_hidden(
        cfg, params["backbone"], tokens_BxT, mask_BxT, prefix_len=prefix_len, copies=copies
    )


def lm_head_logits(cfg: ModelConfig, params, h_NxD: jax.Array) -> jax.Array:
    """The language model's head alone: float32 logits [..., V] of hidden states [..., D]
    (any leading shape), with `params` the whole language model's tree."""
    return lm_head(cfg).apply({"params": params["embed_out"]}, h_NxD)


def scalar_values(
    cfg: ModelConfig,
    params,
    tokens_BxT: jax.Array,
    mask_BxT: jax.Array,
    *,
    prefix_len: int = 0,
    copies: int = 1,
) -> jax.Array:
    """Full forward of a scalar model: one float32 value per position [B, T].
    `prefix_len`, `copies`: a prefix the rows share, run once (`backbone_hidden`)."""
    h_BxTxD = backbone_hidden(
        cfg, params["backbone"], tokens_BxT, mask_BxT, prefix_len=prefix_len, copies=copies
    )
    return scalar_head(cfg).apply({"params": params["scalar_head"]}, h_BxTxD)[..., 0]


def lm_head_kernels(params) -> tuple[jax.Array, jax.Array]:
    """The head's float32 kernel as stored, [D, V] (gradient stopped), and transposed, [V, D],
    for `head_logits_VxN` and `head_target_logits`, which differentiate through the second.
    Take them once per step, outside any loop over chunks: the transpose is then one copy
    forward and one backward."""
    kernel_DxV = params["embed_out"]["kernel"]
    return jax.lax.stop_gradient(kernel_DxV), kernel_DxV.T


@jax.custom_vjp
def head_logits_VxN(kernel_DxV: jax.Array, kernel_VxD: jax.Array, h_NxD: jax.Array) -> jax.Array:
    """`lm_head_logits` of hidden states h [N, D], vocabulary-major: float32 logits [V, N]
    (the transpose of the head's [N, V]), from both layouts of its kernel (`lm_head_kernels`).
    The forward reads kernel_DxV; the kernel's gradient is returned for kernel_VxD (none for
    kernel_DxV) and the hidden states' in their dtype. Wrong if kernel_VxD is not
    kernel_DxV.T.

    Why this layout (issue 9, XLA CPU at Pythia's vocabulary, one chunk of 16 x 29 positions):
    a log-softmax reduced along each contiguous 50,304-wide row of [N, V] logits, and the
    scatter of a gather's gradient into them, cost more than the head's matmul itself; reduced
    across rows (axis 0 here), with the target's logit from `head_target_logits`, the chunk's
    forward ran 2.4x and its forward + backward 1.8x faster, the matmuls at the same rates in
    both layouts (`python benchmarks/head_layout.py`; docs/benchmarks/peers-cpu.md).
    """
    return jnp.einsum("dv,nd->vn", kernel_DxV, h_NxD.astype(jnp.float32))


def _head_logits_fwd(kernel_DxV, kernel_VxD, h_NxD):
    return head_logits_VxN(kernel_DxV, kernel_VxD, h_NxD), (kernel_VxD, h_NxD)


def _head_logits_bwd(residuals, g_VxN):
    kernel_VxD, h_NxD = residuals
    dh_NxD = jnp.einsum("vn,vd->nd", g_VxN, kernel_VxD).astype(h_NxD.dtype)
    dkernel_VxD = jnp.einsum("vn,nd->vd", g_VxN, h_NxD.astype(jnp.float32))
    return None, dkernel_VxD, dh_NxD


head_logits_VxN.defvjp(_head_logits_fwd, _head_logits_bwd)


def head_target_logits(kernel_VxD: jax.Array, h_NxD: jax.Array, targets_N: jax.Array) -> jax.Array:
    """float32 logit [N] of each row's target token: h_n . kernel[:, target_n], from the
    target rows of kernel_VxD (`lm_head_kernels`). Equal to `head_logits_VxN`'s entries
    [targets_N, n] to float rounding (another summation order); its gradient reaches the
    kernel as a scatter into N rows of [V, D], where a gather from [V, N] logits would
    scatter into all of them (a [V, N] buffer per chunk in the backward)."""
    rows_NxD = jnp.take(kernel_VxD, targets_N, axis=0)
    return jnp.einsum("nd,nd->n", h_NxD.astype(jnp.float32), rows_NxD)
