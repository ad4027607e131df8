"""Hugging Face checkpoint directories on disk: weights (safetensors, sharded or torch pickles),
config.json, and the checkpoint's tokenizer. The name mapping lives in rlft.models.hf.

Heavy imports (torch, safetensors, tokenizers) are lazy: the base install reads safetensors
with numpy alone.
"""

import json
import os
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

from rlft.models.config import ModelConfig
from rlft.models.hf import (
    CONFIG_FILE,
    PAD_TOKEN,
    RLFT_CONFIG_FILE,
    TOKENIZER_FILE,
    config_from_hf,
    config_to_hf,
    params_from_hf,
    params_to_hf,
)


def _safetensors_dtypes() -> dict[str, Any]:
    import ml_dtypes  # ships with jax; numpy has no bfloat16

    return {
        "F64": np.float64,
        "F32": np.float32,
        "F16": np.float16,
        "BF16": ml_dtypes.bfloat16,
        "I64": np.int64,
        "I32": np.int32,
        "I16": np.int16,
        "I8": np.int8,
        "U8": np.uint8,
        "BOOL": np.bool_,
    }


def read_safetensors(file: str) -> dict[str, np.ndarray]:
    """Memory-mapped tensors of a .safetensors file, bfloat16 included (safetensors.numpy
    cannot represent it). Format: u64 header length, JSON header, raw little-endian data."""
    with open(file, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    data = np.memmap(file, dtype=np.uint8, mode="r", offset=8 + n) if header else None
    dtypes = _safetensors_dtypes()
    out = {}
    for name, info in header.items():
        start, end = info["data_offsets"]
        out[name] = data[start:end].view(dtypes[info["dtype"]]).reshape(info["shape"])
    return out


def _read_torch_bin(file: str) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError as e:
        raise ImportError(
            f"{file} is a torch pickle; reading it needs torch "
            f"(pip install torch), or convert the checkpoint to safetensors"
        ) from e
    sd = torch.load(file, map_location="cpu", weights_only=True)
    return {k: v.float().numpy() for k, v in sd.items()}


_WEIGHT_FILES = (
    ("model.safetensors", read_safetensors),
    ("model.safetensors.index.json", read_safetensors),
    ("pytorch_model.bin", _read_torch_bin),
    ("pytorch_model.bin.index.json", _read_torch_bin),
)


def read_state_dict(path: str) -> dict[str, np.ndarray]:
    """All weight tensors of an HF checkpoint directory (single file or sharded with index)."""
    for name, reader in _WEIGHT_FILES:
        file = os.path.join(path, name)
        if not os.path.exists(file):
            continue
        if not name.endswith(".index.json"):
            return reader(file)
        with open(file) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        sd: dict[str, np.ndarray] = {}
        for shard in shards:
            sd |= reader(os.path.join(path, shard))
        return sd
    raise FileNotFoundError(
        f"no weights in HF checkpoint directory {path}: expected one of "
        f"{[n for n, _ in _WEIGHT_FILES]}"
    )


def load_hf_checkpoint(path: str) -> tuple[ModelConfig, dict[str, Any]]:
    """(cfg, float32 numpy params) from an HF GPT-NeoX directory (config.json + weights)."""
    config_file = os.path.join(path, CONFIG_FILE)
    if not os.path.isfile(config_file):
        raise FileNotFoundError(
            f"{path} is not an HF checkpoint directory: no {CONFIG_FILE} "
            f"(expected {CONFIG_FILE} and model.safetensors)"
        )
    with open(config_file) as f:
        cfg = config_from_hf(json.load(f), source=config_file)
    return cfg, params_from_hf(read_state_dict(path), cfg)


def save_hf_checkpoint(
    path: str,
    cfg: ModelConfig,
    params: Mapping[str, Any],
    dtype: str = "float32",
    **extra_config: Any,
) -> None:
    """Write config.json and model.safetensors (float32 or float16) for transformers."""
    from safetensors.numpy import save_file

    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype={dtype!r}: save float32 or float16.")
    os.makedirs(path, exist_ok=True)
    sd = {k: v.astype(dtype) for k, v in params_to_hf(params, cfg).items()}
    save_file(sd, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(path, CONFIG_FILE), "w") as f:
        json.dump(config_to_hf(cfg, dtype=dtype, **extra_config), f, indent=2)


def _model_vocab_size(path: str) -> tuple[int, str]:
    """(vocab_size, file) from an HF config.json or an rlft converted directory."""
    for name, key in ((CONFIG_FILE, ("vocab_size",)), (RLFT_CONFIG_FILE, ("model", "vocab_size"))):
        file = os.path.join(path, name)
        if os.path.isfile(file):
            with open(file) as f:
                value = json.load(f)
            for k in key:
                value = value[k]
            return int(value), file
    raise FileNotFoundError(
        f"{path} has no {CONFIG_FILE} or {RLFT_CONFIG_FILE} to read the model's "
        f"vocab_size from; pass vocab_size= to load_tokenizer"
    )


def load_tokenizer(path: str, vocab_size: int | None = None):
    """The checkpoint's `tokenizers.Tokenizer` with "[PAD]" added as a special token.

    As in the paper's code the embedding is not resized: [PAD] takes the next free id, which
    must fit the model's vocab_size (Pythia: tokenizer 50277 entries, embedding 50304 rows).
    """
    from tokenizers import Tokenizer

    tok_file = os.path.join(path, TOKENIZER_FILE) if os.path.isdir(path) else path
    if not os.path.isfile(tok_file):
        raise FileNotFoundError(f"no tokenizer at {tok_file}: expected an HF {TOKENIZER_FILE}")
    tokenizer = Tokenizer.from_file(tok_file)
    tokenizer.add_special_tokens([PAD_TOKEN])
    if vocab_size is None:
        vocab_size, vocab_src = _model_vocab_size(os.path.dirname(tok_file))
    else:
        vocab_src = "the vocab_size argument"
    size = max(tokenizer.get_vocab(with_added_tokens=True).values()) + 1  # ids may have gaps
    if size > vocab_size:
        raise ValueError(
            f"mismatched tokenizer/vocab size: {tok_file} has {size} tokens including "
            f"{PAD_TOKEN} (id {tokenizer.token_to_id(PAD_TOKEN)}), but the model's vocab_size "
            f"in {vocab_src} is {vocab_size}; use the tokenizer the checkpoint was trained with"
        )
    return tokenizer
