"""`rlft convert`: Hugging Face GPT-NeoX checkpoints <-> rlft params directories.

    rlft convert --from-hf HF_DIR --out RLFT_DIR     # config.json + *.safetensors -> rlft
    rlft convert --to-hf RLFT_DIR --out HF_DIR       # rlft -> config.json + model.safetensors

The command only: the directory layouts and their readers and writers (`load_pretrained`,
`save_params_dir`, `load_params_dir`) are the model layer's, rlft.models.params_io.
"""

import argparse
import json
import os
import shutil
import sys
from typing import Any

import jax
import numpy as np

from rlft.models.config import ModelConfig
from rlft.models.hf import CONFIG_FILE, RLFT_CONFIG_FILE
from rlft.models.hf_files import load_hf_checkpoint, save_hf_checkpoint
from rlft.models.params_io import (
    abstract_params,
    load_params,
    load_params_dir,
    read_meta,
    save_params_dir,
)
from rlft.parallel import make_mesh

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
)
# config.json fields that do not change the model function but that an export should keep.
HF_KEPT_FIELDS = ("bos_token_id", "eos_token_id", "pad_token_id")


def _copy_tokenizer(src: str, dst: str) -> list[str]:
    copied = [n for n in TOKENIZER_FILES if os.path.isfile(os.path.join(src, n))]
    for name in copied:
        shutil.copyfile(os.path.join(src, name), os.path.join(dst, name))
    return copied


def from_hf(src: str, out: str) -> ModelConfig:
    """HF checkpoint directory -> rlft params directory."""
    cfg, params = load_hf_checkpoint(src)
    with open(os.path.join(src, CONFIG_FILE)) as f:
        hf_config = json.load(f)
    kept = {k: hf_config[k] for k in HF_KEPT_FIELDS if k in hf_config}
    save_params_dir(out, cfg, params, kept)
    _copy_tokenizer(src, out)
    return cfg


def _load_workdir_policy(workdir: str) -> tuple[ModelConfig, Any]:
    """The policy of an `rlft train` workdir's latest checkpoint, as numpy arrays."""
    _, meta = read_meta(workdir)
    if "policy" not in meta.get("models", {}):
        raise ValueError(
            f"{workdir} holds {sorted(meta.get('models', {}))}, no 'policy' language model to "
            f"export"
        )
    cfg = ModelConfig(**meta["models"]["policy"]["config"])
    mesh = make_mesh(1, 1, jax.devices()[:1])
    return cfg, jax.device_get(load_params(workdir, "policy", "lm", cfg, mesh))


def to_hf(src: str, out: str, dtype: str = "float32") -> ModelConfig:
    """rlft params directory, or an `rlft train` workdir (its policy) -> HF checkpoint dir."""
    if os.path.isdir(os.path.join(src, "checkpoints")):
        cfg, params = _load_workdir_policy(src)
        save_hf_checkpoint(out, cfg, params, dtype=dtype)
        return cfg
    if not os.path.isfile(os.path.join(src, RLFT_CONFIG_FILE)):
        raise FileNotFoundError(
            f"{src} is neither an rlft params directory (no {RLFT_CONFIG_FILE}; write one with "
            f"`rlft convert --from-hf HF_DIR --out DIR`) nor an `rlft train` workdir (no "
            f"checkpoints/)"
        )
    cfg, params, kept = load_params_dir(src)
    save_hf_checkpoint(out, cfg, params, dtype=dtype, **kept)
    _copy_tokenizer(src, out)
    return cfg


def _num_params(cfg: ModelConfig) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract_params("lm", cfg)))


class _Parser(argparse.ArgumentParser):
    """argparse with rlft's one-line usage errors (exit status 2)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def main(argv: list[str]) -> int:
    """`rlft convert` entry point; returns the exit status."""
    parser = _Parser(
        prog="rlft convert",
        description="Convert GPT-NeoX/Pythia checkpoints between the "
        "Hugging Face layout and an rlft params directory (see docs/convert.md).",
    )
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--from-hf", metavar="DIR", help="HF checkpoint directory to import")
    src.add_argument("--to-hf", metavar="DIR", help="rlft params directory to export")
    parser.add_argument(
        "--out", metavar="DIR", required=True, help="output directory (must not exist or be empty)"
    )
    parser.add_argument(
        "--dtype",
        choices=("float32", "float16"),
        help="weight dtype of an HF export, --to-hf only (default float32; rlft params are "
        "always float32)",
    )
    args = parser.parse_args(argv)
    if args.from_hf and args.dtype:
        parser.error("--dtype applies to --to-hf only (rlft params are always float32)")
    if os.path.exists(args.out) and (not os.path.isdir(args.out) or os.listdir(args.out)):
        print(
            f"rlft convert: error: --out {args.out} exists and is not empty; pick a new directory",
            file=sys.stderr,
        )
        return 1
    try:
        if args.from_hf:
            cfg = from_hf(args.from_hf, args.out)
        else:
            cfg = to_hf(args.to_hf, args.out, args.dtype or "float32")
    except (OSError, KeyError, ValueError) as e:
        print(f"rlft convert: error: {e}", file=sys.stderr)
        return 1
    kind = "rlft params" if args.from_hf else "HF checkpoint"
    print(
        f"wrote {kind} to {args.out}: {cfg.num_layers} layers, d_model {cfg.d_model}, "
        f"vocab {cfg.vocab_size}, {_num_params(cfg):,} params"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
