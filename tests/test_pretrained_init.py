"""Stages start from pretrained checkpoints (HF GPT-NeoX layout) and export back (no torch)."""

import os

import flax.linen as nn
import jax
import numpy as np
import pytest

from rlft.config import load_config
from rlft.convert import to_hf
from rlft.errors import CheckpointError
from rlft.models import init_params, model_config
from rlft.models.hf_files import load_hf_checkpoint, save_hf_checkpoint
from rlft.train import loop
from tests.helpers import REPO_CONFIGS

SFT = os.path.join(REPO_CONFIGS, "sft.py")


def _hf_dir(path, **overrides):
    cfg = model_config("tiny", **overrides)
    params = jax.device_get(nn.unbox(init_params("lm", cfg, jax.random.PRNGKey(7))))
    save_hf_checkpoint(str(path), cfg, params)
    return cfg, params


def _config(init_policy, **overrides):
    c = load_config(SFT, "tiny")
    c.total_steps, c.checkpoint_every, c.log_every = 2, 2, 1
    c.data.num_examples = 64
    c.init.policy = str(init_policy)
    for k, v in overrides.items():
        setattr(c.optim, k, v)
    return c


def test_train_from_hf_checkpoint_and_export_back(tmp_path):
    _, params = _hf_dir(tmp_path / "hf")
    # lr 0: the trained policy must be exactly the imported one.
    c = _config(tmp_path / "hf", learning_rate=0.0, schedule="constant")
    loop.train(c, str(tmp_path / "run"), progress=False)
    to_hf(str(tmp_path / "run"), str(tmp_path / "exported"))
    _, exported = load_hf_checkpoint(str(tmp_path / "exported"))
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(exported), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_pretrained_vocab_mismatch_is_named(tmp_path):
    _hf_dir(tmp_path / "hf", vocab_size=96)
    with pytest.raises(CheckpointError, match="model.vocab_size: checkpoint 96 vs config 64"):
        loop.train(_config(tmp_path / "hf"), str(tmp_path / "run"), progress=False)
