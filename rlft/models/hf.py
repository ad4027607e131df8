"""Hugging Face GPT-NeoX (Pythia) config and weights <-> rlft config and params (in memory).

HF `query_key_value.weight` is [3*D, D] (torch Linear: out x in) and its output axis is laid
out per head as [H, 3, K]: `GPTNeoXAttention.forward` views the projection as
(..., H, 3*K) and chunks the last axis into q, k, v. `attention.dense` reads its input as the
flattened (H, K) head outputs. torch Linear weights are transposed relative to flax kernels.
See docs/convert.md for the full table. Reading and writing checkpoint directories and the
tokenizer: rlft.models.hf_files.
"""

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from rlft.models.config import ModelConfig

CONFIG_FILE = "config.json"
RLFT_CONFIG_FILE = "rlft_config.json"  # an `rlft convert` directory (see rlft.convert)
TOKENIZER_FILE = "tokenizer.json"
PAD_TOKEN = "[PAD]"
# Older GPT-NeoX checkpoints also store non-parameter buffers (causal mask, rotary freqs).
_BUFFERS = re.compile(
    r"gpt_neox\.(layers\.\d+\.attention\.(bias|masked_bias|rotary_emb\.inv_freq)"
    r"|rotary_emb\.inv_freq)"
)
_SUPPORTED = (
    "rlft supports GPT-NeoX/Pythia: hidden_act 'gelu' (exact), attention_bias true, "
    "tie_word_embeddings false, default (unscaled) rotary, no dropout"
)


def _unsupported(source: str, field: str, value: Any) -> ValueError:
    return ValueError(f"{source}: unsupported {field}={value!r}; {_SUPPORTED}.")


def _rope(hf: Mapping[str, Any], source: str) -> tuple[float, float]:
    """(rotary_pct, rotary_base) from the old fields or transformers>=5 `rope_parameters`."""
    if hf.get("rope_scaling"):
        raise _unsupported(source, "rope_scaling", hf["rope_scaling"])
    pct, base = hf.get("rotary_pct"), hf.get("rotary_emb_base")
    rope = dict(hf.get("rope_parameters") or {})
    if rope:
        if rope.pop("rope_type", "default") != "default" or set(rope) - {
            "rope_theta",
            "partial_rotary_factor",
        }:
            raise _unsupported(source, "rope_parameters", hf["rope_parameters"])
        for name, old, new in (
            ("rotary_pct", pct, rope.get("partial_rotary_factor")),
            ("rotary_emb_base", base, rope.get("rope_theta")),
        ):
            if old is not None and new is not None and float(old) != float(new):
                raise ValueError(
                    f"{source}: {name}={old} disagrees with rope_parameters "
                    f"{hf['rope_parameters']}; make them agree."
                )
        pct = rope.get("partial_rotary_factor", pct)
        base = rope.get("rope_theta", base)
    return float(0.25 if pct is None else pct), float(10000.0 if base is None else base)


def config_from_hf(hf_config: Mapping[str, Any], source: str = CONFIG_FILE) -> ModelConfig:
    """ModelConfig of a GPT-NeoX `config.json`; unsupported settings raise, naming the field.

    Fields that do not change the function (token ids, init range, dtype, use_cache, ...) are
    not used. `source` names the file in error messages.
    """
    hf = dict(hf_config)
    if hf.get("model_type", "gpt_neox") != "gpt_neox":
        raise _unsupported(source, "model_type", hf["model_type"])
    if hf.get("architectures", ["GPTNeoXForCausalLM"]) != ["GPTNeoXForCausalLM"]:
        raise _unsupported(source, "architectures", hf["architectures"])
    checks = (
        ("hidden_act", "gelu"),
        ("attention_bias", True),
        ("tie_word_embeddings", False),
        ("attention_dropout", 0.0),
        ("hidden_dropout", 0.0),
    )
    for field, ok in checks:
        if field in hf and hf[field] != ok:
            raise _unsupported(source, field, hf[field])
    required = (
        "vocab_size",
        "num_hidden_layers",
        "hidden_size",
        "num_attention_heads",
        "intermediate_size",
    )
    missing = [f for f in required if f not in hf]
    if missing:
        raise ValueError(f"{source}: missing GPT-NeoX field(s) {missing}.")
    d, h = hf["hidden_size"], hf["num_attention_heads"]
    if hf.get("head_dim") not in (None, d // h):
        raise _unsupported(source, "head_dim", hf["head_dim"])
    rotary_pct, rotary_base = _rope(hf, source)
    return ModelConfig(
        vocab_size=hf["vocab_size"],
        num_layers=hf["num_hidden_layers"],
        d_model=d,
        num_heads=h,
        d_ff=hf["intermediate_size"],
        rotary_pct=rotary_pct,
        rotary_base=rotary_base,
        parallel_residual=bool(hf.get("use_parallel_residual", True)),
        layer_norm_eps=float(hf.get("layer_norm_eps", 1e-5)),
        max_len=hf.get("max_position_embeddings", 2048),
    )


def config_to_hf(cfg: ModelConfig, **extra: Any) -> dict[str, Any]:
    """A GPT-NeoX `config.json` dict (readable by transformers 4.x and 5.x); `extra` is merged."""
    return {
        "architectures": ["GPTNeoXForCausalLM"],
        "model_type": "gpt_neox",
        "vocab_size": cfg.vocab_size,
        "num_hidden_layers": cfg.num_layers,
        "hidden_size": cfg.d_model,
        "num_attention_heads": cfg.num_heads,
        "intermediate_size": cfg.d_ff,
        "hidden_act": "gelu",
        "rotary_pct": cfg.rotary_pct,
        "rotary_emb_base": cfg.rotary_base,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": cfg.rotary_base,
            "partial_rotary_factor": cfg.rotary_pct,
        },
        "use_parallel_residual": cfg.parallel_residual,
        "layer_norm_eps": cfg.layer_norm_eps,
        "max_position_embeddings": cfg.max_len,
        "attention_bias": True,
        "tie_word_embeddings": False,
        "attention_dropout": 0.0,
        "hidden_dropout": 0.0,
        **extra,
    }


def params_from_hf(state_dict: Mapping[str, Any], cfg: ModelConfig) -> dict[str, Any]:
    """rlft LanguageModel params (float32 numpy) from a GPTNeoXForCausalLM state dict."""
    sd = {k: v for k, v in state_dict.items() if not _BUFFERS.fullmatch(k)}
    if "lm_head.weight" in sd and "embed_out.weight" not in sd:  # transformers>=5 module name
        sd["embed_out.weight"] = sd.pop("lm_head.weight")
    D, H, K, F, V = cfg.d_model, cfg.num_heads, cfg.head_dim, cfg.d_ff, cfg.vocab_size

    def take(key: str, *shape: int) -> np.ndarray:
        if key not in sd:
            raise KeyError(
                f"HF state dict has no {key!r} (expected a GPTNeoXForCausalLM with "
                f"{cfg.num_layers} layers); it has e.g. {sorted(sd)[:5]}"
            )
        x = np.asarray(sd.pop(key), np.float32)
        if x.shape != shape:
            raise ValueError(f"HF tensor {key} has shape {x.shape}, the config implies {shape}.")
        return x

    def ln(prefix: str) -> dict[str, np.ndarray]:
        return {"scale": take(f"{prefix}.weight", D), "bias": take(f"{prefix}.bias", D)}

    backbone: dict[str, Any] = {"embed_in": {"embedding": take("gpt_neox.embed_in.weight", V, D)}}
    for i in range(cfg.num_layers):
        p = f"gpt_neox.layers.{i}"
        qkv_HxSxKxD = take(f"{p}.attention.query_key_value.weight", 3 * D, D).reshape(H, 3, K, D)
        qkv_bias_HxSxK = take(f"{p}.attention.query_key_value.bias", 3 * D).reshape(H, 3, K)
        attn = {
            name: {
                "kernel": qkv_HxSxKxD[:, s].transpose(2, 0, 1),  # [D, H, K]
                "bias": qkv_bias_HxSxK[:, s],
            }
            for s, name in enumerate(("query", "key", "value"))
        }
        attn["out"] = {
            "kernel": take(f"{p}.attention.dense.weight", D, D).T.reshape(H, K, D),
            "bias": take(f"{p}.attention.dense.bias", D),
        }
        mlp = {
            "up": {
                "kernel": take(f"{p}.mlp.dense_h_to_4h.weight", F, D).T,
                "bias": take(f"{p}.mlp.dense_h_to_4h.bias", F),
            },
            "down": {
                "kernel": take(f"{p}.mlp.dense_4h_to_h.weight", D, F).T,
                "bias": take(f"{p}.mlp.dense_4h_to_h.bias", D),
            },
        }
        backbone[f"layer_{i}"] = {
            "ln_attn": ln(f"{p}.input_layernorm"),
            "ln_mlp": ln(f"{p}.post_attention_layernorm"),
            "attn": attn,
            "mlp": mlp,
        }
    backbone["final_ln"] = ln("gpt_neox.final_layer_norm")
    params = {"backbone": backbone, "embed_out": {"kernel": take("embed_out.weight", V, D).T}}
    if sd:
        raise ValueError(f"HF state dict has tensors rlft does not map: {sorted(sd)[:8]}.")
    return params


def params_to_hf(params: Mapping[str, Any], cfg: ModelConfig) -> dict[str, np.ndarray]:
    """GPTNeoXForCausalLM state dict (float32 numpy, contiguous) from rlft LanguageModel params."""
    import flax.linen as nn
    import jax

    params = jax.device_get(nn.unbox(params))
    D = cfg.d_model
    f32 = lambda x: np.ascontiguousarray(np.asarray(x, np.float32))  # noqa: E731
    b = params["backbone"]
    sd = {"gpt_neox.embed_in.weight": f32(b["embed_in"]["embedding"])}
    for i in range(cfg.num_layers):
        layer, p = b[f"layer_{i}"], f"gpt_neox.layers.{i}"
        attn = layer["attn"]
        qkv = [attn[n] for n in ("query", "key", "value")]
        sd |= {
            f"{p}.input_layernorm.weight": f32(layer["ln_attn"]["scale"]),
            f"{p}.input_layernorm.bias": f32(layer["ln_attn"]["bias"]),
            f"{p}.post_attention_layernorm.weight": f32(layer["ln_mlp"]["scale"]),
            f"{p}.post_attention_layernorm.bias": f32(layer["ln_mlp"]["bias"]),
            # [D, H, 3, K] -> [D, 3D] -> [3D, D]: the per-head [H, 3, K] output layout.
            f"{p}.attention.query_key_value.weight": f32(
                np.stack([x["kernel"] for x in qkv], axis=2).reshape(D, 3 * D).T
            ),
            f"{p}.attention.query_key_value.bias": f32(
                np.stack([x["bias"] for x in qkv], axis=1).reshape(3 * D)
            ),
            f"{p}.attention.dense.weight": f32(attn["out"]["kernel"].reshape(D, D).T),
            f"{p}.attention.dense.bias": f32(attn["out"]["bias"]),
            f"{p}.mlp.dense_h_to_4h.weight": f32(layer["mlp"]["up"]["kernel"].T),
            f"{p}.mlp.dense_h_to_4h.bias": f32(layer["mlp"]["up"]["bias"]),
            f"{p}.mlp.dense_4h_to_h.weight": f32(layer["mlp"]["down"]["kernel"].T),
            f"{p}.mlp.dense_4h_to_h.bias": f32(layer["mlp"]["down"]["bias"]),
        }
    sd["gpt_neox.final_layer_norm.weight"] = f32(b["final_ln"]["scale"])
    sd["gpt_neox.final_layer_norm.bias"] = f32(b["final_ln"]["bias"])
    sd["embed_out.weight"] = f32(params["embed_out"]["kernel"].T)
    return sd
