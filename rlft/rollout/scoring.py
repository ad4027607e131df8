"""Forward-only scoring over a dataset: one log-prob scorer, one reward-model scorer and loader.

Every pass here is a jitted forward (no gradient) over fixed-size batches of numpy arrays in
rlft's sequence layout (`tokens`, `mask`, `loss_mask` [N, T], optionally behind a prefix such as
`chosen_`), and returns numpy [N]. The jitted programs are cached per (model config, setting),
so a stage's setup, the reproduce pipeline and a judge share one compiled program each:

  logprob_scores          log pi(y | x), summed over the response tokens (loss_mask)
  rm_scores               r(x, y) of a reward-model class (rlft.objectives.reward)
  reference_logprobs      DPO's batch keys ref_chosen_logp / ref_rejected_logp
  pair_prefix_len         the columns every pair's two rows share, agreed by all processes
  normalize_reward_model  the paper's normalisation, folded into the reward model's offset
  load_reward_model       a trained reward model and the class its checkpoint records
"""

import functools
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from rlft.data.arrays import shared_prefix_len
from rlft.errors import CheckpointError, ModelClassError
from rlft.models import ModelConfig
from rlft.models.params_io import load_params, read_meta
from rlft.objectives.base import pair_rows, split_pair_rows
from rlft.objectives.logprobs import sequence_logprobs
from rlft.objectives.reward import model_kind, sequence_reward
from rlft.parallel import shard_batch

FORWARD_BATCH = 256  # rows per forward-only pass, unless the caller gives its own batch size
NORMALIZE_ROWS = 4096  # reference responses averaged for the reward-model offset
SEQUENCE_KEYS = ("tokens", "mask", "loss_mask")


def forward_dataset(
    fn: Callable, params, arrays: dict, batch_size: int, mesh: Mesh
) -> dict[str, np.ndarray]:
    """Apply a jitted forward-only `fn(params, batch) -> {name: [B, ...]}` to every row.

    Batches are `batch_size` rows (a multiple of the mesh size), the last one wrapped around to
    the first rows so every batch has the same static shape; the wrapped rows are dropped.
    """
    n = len(next(iter(arrays.values())))
    out: dict[str, list] = {}
    with jax.set_mesh(mesh):  # traced under the mesh: rlft.parallel.constrain_batch
        for start in range(0, n, batch_size):
            idx = np.arange(start, start + batch_size) % n  # wrap the last batch: static shapes
            batch = shard_batch({k: v[idx] for k, v in arrays.items()}, mesh)
            for k, v in jax.device_get(fn(params, batch)).items():
                out.setdefault(k, []).append(np.asarray(v))
    return {k: np.concatenate(v)[:n] for k, v in out.items()}


@functools.lru_cache(maxsize=32)
def _logprob_fn(cfg: ModelConfig, temperature: float):
    return jax.jit(
        lambda p, b: {
            "logp": sequence_logprobs(cfg, p, b["tokens"], b["mask"], b["loss_mask"], temperature)
        }
    )


@functools.lru_cache(maxsize=32)
def _reward_fn(cfg: ModelConfig, model_class: str):
    return jax.jit(
        lambda p, b: {
            "r": sequence_reward(cfg, p, b["tokens"], b["mask"], b["loss_mask"], model_class)
        }
    )


@functools.lru_cache(maxsize=32)
def _pair_logprob_fn(cfg: ModelConfig, temperature: float, prefix_len: int):
    def fn(params, pairs):
        logp_2N = sequence_logprobs(
            cfg,
            params,
            *(pair_rows(pairs, k) for k in SEQUENCE_KEYS),
            temperature,
            prefix_len=prefix_len,
            copies=2,
        )
        chosen_N, rejected_N = split_pair_rows(logp_2N)
        return {"ref_chosen_logp": chosen_N, "ref_rejected_logp": rejected_N}

    return jax.jit(fn)


def pair_prefix_len(pairs: dict) -> int:
    """`rlft.data.arrays.shared_prefix_len` of the pairs, the least over processes: one program
    on every process, exact for every process's rows (`rlft.objectives.Models.pair_prefix_len`).
    """
    p = shared_prefix_len(pairs)
    if jax.process_count() == 1:
        return p
    return int(np.min(multihost_utils.process_allgather(np.int32(p))))


def _sequences(arrays: dict, prefix: str) -> dict[str, np.ndarray]:
    return {k: arrays[prefix + k] for k in SEQUENCE_KEYS}


def logprob_scores(
    cfg: ModelConfig,
    params,
    arrays: dict,
    mesh: Mesh,
    prefix: str = "",
    temperature: float = 1.0,
    batch_size: int = FORWARD_BATCH,
) -> np.ndarray:
    """Summed response log-probs [N] of `prefix`tokens/mask/loss_mask under the language model
    `params`, from logits / temperature (float32; rlft.objectives.logprobs)."""
    fn = _logprob_fn(cfg, temperature)
    return forward_dataset(fn, params, _sequences(arrays, prefix), batch_size, mesh)["logp"]


def rm_scores(
    cfg: ModelConfig,
    params,
    arrays: dict,
    mesh: Mesh,
    prefix: str = "",
    model_class: str = "last",
    batch_size: int = FORWARD_BATCH,
) -> np.ndarray:
    """Reward-model scores r(x, y) [N] of `prefix`tokens/mask/loss_mask under the reward model
    `params` of class `model_class` (rlft.objectives.reward.sequence_reward)."""
    fn = _reward_fn(cfg, model_class)
    return forward_dataset(fn, params, _sequences(arrays, prefix), batch_size, mesh)["r"]


def reference_logprobs(
    cfg: ModelConfig, params, pairs: dict, batch_size: int, mesh: Mesh, temperature: float
) -> dict[str, np.ndarray]:
    """{'ref_chosen_logp', 'ref_rejected_logp'} [N]: summed response log-probs of each side of
    the pairs under the reference policy `params`, the keys DPO's batch reads. Both sides of
    `batch_size` pairs (2 x batch_size rows) run in one forward, their shared prompt once
    (`pair_prefix_len`); the same as `logprob_scores` of each side to float rounding
    (tests/test_scoring.py)."""
    keys = [f"{side}_{k}" for side in ("chosen", "rejected") for k in SEQUENCE_KEYS]
    fn = _pair_logprob_fn(cfg, temperature, pair_prefix_len(pairs))
    return forward_dataset(fn, params, {k: pairs[k] for k in keys}, batch_size, mesh)


def normalize_reward_model(
    cfg: ModelConfig,
    params,
    reference: dict,
    batch_size: int,
    mesh: Mesh,
    model_class: str = "last",
) -> tuple[Any, float]:
    """(params with the offset folded in, offset): the paper's normalisation.

    offset = mean r over the first NORMALIZE_ROWS reference responses; subtracting it from
    `scalar_head/bias`, which every reward class adds once to r, shifts every score by -offset,
    so typical scores sit near 0 and PPO's no-EOS penalty means a penalty.
    """
    rows = {k: reference[k][:NORMALIZE_ROWS] for k in SEQUENCE_KEYS}
    scores = rm_scores(cfg, params, rows, mesh, model_class=model_class, batch_size=batch_size)
    offset = float(np.mean(scores))
    head = params["scalar_head"]
    return {**params, "scalar_head": {**head, "bias": head["bias"] - offset}}, offset


def reward_model_class(meta: dict[str, Any], workdir: str) -> str:
    """The reward-model class a reward stage's checkpoint meta records.

    Read from `models.reward.model_class`; checkpoints written before that field existed are
    read from their stage config's `reward.pooling`. Raises ModelClassError if neither is there
    (the class is never guessed: scoring with the wrong class gives plausible wrong scores).
    """
    saved = meta.get("models", {}).get("reward", {})
    if "model_class" in saved:
        return saved["model_class"]
    legacy = meta.get("config", {}).get("reward", {}).get("pooling")
    if legacy is not None:
        return legacy
    raise ModelClassError(
        f"{workdir}: the checkpoint meta does not record the reward-model class "
        f"(models.reward.model_class); retrain that reward stage with this version of rlft, "
        f"which records it"
    )


def _reward_meta(workdir: str) -> dict[str, Any]:
    _, meta = read_meta(workdir)
    models = meta.get("models", {})
    if "reward" not in models:
        raise CheckpointError(
            f"{workdir} holds models {sorted(models)}, no 'reward' model; point at the workdir "
            f"of a reward stage"
        )
    return meta


def reward_model_config(workdir: str) -> ModelConfig:
    """The model config the reward stage in `workdir` saved (e.g. a gold reward model's);
    raises CheckpointError if the workdir holds no reward model."""
    return ModelConfig(**_reward_meta(workdir)["models"]["reward"]["config"])


def load_reward_model(workdir: str, cfg: ModelConfig, mesh: Mesh) -> tuple[Any, str]:
    """(params, model_class) of the trained reward model in a reward stage's `workdir`.

    The class comes from the checkpoint (`reward_model_class`) and picks the params' model kind;
    `rm_scores(cfg, params, ..., model_class=model_class)` scores with them. Raises
    CheckpointError if the workdir has no reward model or it does not fit `cfg`, and
    ModelClassError if its meta does not say the class.
    """
    model_class = reward_model_class(_reward_meta(workdir), workdir)
    return load_params(workdir, "reward", model_kind(model_class), cfg, mesh), model_class
