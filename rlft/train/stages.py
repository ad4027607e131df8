"""The offline stages (sft, reward, dpo) and `build_stage`, which picks a stage by objective.

Each builder returns a rlft.train.stage.Stage: its batches are rows of a step-indexed dataset.
The reward stage normalises its model after the last step; the DPO stage computes the reference
log-probs once (cached in the workdir) and trains on pairs that carry them.
"""

import io

import jax
import numpy as np
from etils import epath
from jax.experimental import multihost_utils

from rlft.config import RunConfig
from rlft.data import ArrayDataset
from rlft.data.bundle import DataBundle
from rlft.errors import ConfigError
from rlft.models.bilinear import check_vocab
from rlft.models.params_io import load_params
from rlft.objectives import reward
from rlft.objectives.base import Models
from rlft.parallel import shard_batch
from rlft.rollout.scoring import normalize_reward_model, pair_prefix_len, reference_logprobs
from rlft.train.files import replace_file
from rlft.train.ppo_stage import ppo_stage
from rlft.train.stage import Stage, replace_params, require_init


def _agree(flag: bool) -> bool:
    """Process 0's value of `flag`, on every process."""
    if jax.process_count() == 1:
        return bool(flag)
    return bool(multihost_utils.broadcast_one_to_all(np.int32(flag)))


def _offline_run_step(data: ArrayDataset, mesh):
    def run_step(step_fn, state, step):
        return step_fn(state, shard_batch(data.batch(step), mesh))

    return run_step


def sft_stage(run: RunConfig, mesh, workdir: str, bundle: DataBundle) -> Stage:
    """The policy on the demonstrations (`bundle.sft`); from init.policy if set, else fresh."""
    data = ArrayDataset(bundle.require("sft", "sft"), run.batch_size, run.seed)

    def load_init(state):
        if not run.init.policy:
            return state
        return replace_params(
            state, "policy", load_params(run.init.policy, "policy", "lm", run.model, mesh)
        )

    return Stage(
        {"policy": ("lm", run.model)},
        Models(policy=run.model),
        load_init,
        _offline_run_step(data, mesh),
    )


def reward_stage(run: RunConfig, mesh, workdir: str, bundle: DataBundle) -> Stage:
    """A reward model of class reward.model_class on `bundle.pairs`, backbone from
    init.policy; normalised after the last step and its class recorded in the meta."""
    data = ArrayDataset(bundle.require("pairs", "reward"), run.batch_size, run.seed)
    # The normalisation's reference responses are the SFT demonstrations (data, not a policy).
    reference = bundle.reference or bundle.require("sft", "reward (normalisation)")
    model_class = run.hparams.model_class
    kind = reward.model_kind(model_class)
    if kind == "bilinear":
        try:
            check_vocab(run.model)
        except ValueError as e:
            raise ConfigError(f"config.{e}") from e

    def load_init(state):  # backbone from the SFT policy, fresh scalar head
        if not run.init.policy or kind == "bilinear":  # no backbone: W, u, b start at zero
            return state
        lm = load_params(run.init.policy, "policy", "lm", run.model, mesh)
        return replace_params(
            state, "reward", {**state.params["reward"], "backbone": lm["backbone"]}
        )

    def finalize(state):
        params, offset = normalize_reward_model(
            run.model, state.params["reward"], reference, run.batch_size, mesh, model_class
        )
        return replace_params(state, "reward", params), {"reward_offset": offset}

    return Stage(
        {"reward": (kind, run.model)},
        Models(reward=run.model, pair_prefix_len=pair_prefix_len(data.arrays)),
        load_init,
        _offline_run_step(data, mesh),
        finalize=finalize,
        role_meta={"reward": {"model_class": model_class}},  # read by load_reward_model
    )


def dpo_stage(run: RunConfig, mesh, workdir: str, bundle: DataBundle) -> Stage:
    """The policy from init.policy on `bundle.pairs` with reference log-probs (init.reference,
    default init.policy) computed once and cached in the workdir."""
    policy_path = require_init(run.init.policy, "policy", "an SFT policy")
    pairs = bundle.require("pairs", "dpo")
    # Cached in the workdir. Process 0 decides whether the cache is usable and tells the
    # others, so a multi-host run never has some processes skipping a collective pass.
    cache = epath.Path(workdir) / "ref_logprobs.npz"
    if _agree(cache.exists()):
        with cache.open("rb") as f:
            ref = dict(np.load(f))
    else:
        ref_params = load_params(run.init.reference or policy_path, "policy", "lm", run.model, mesh)
        ref = reference_logprobs(
            run.model, ref_params, pairs, run.batch_size, mesh, run.hparams.temperature
        )
        if jax.process_index() == 0:
            cache.parent.mkdir(parents=True, exist_ok=True)
            buffer = io.BytesIO()
            np.savez(buffer, **ref)
            replace_file(cache, buffer.getvalue())  # a kill never leaves a partial cache
    data = ArrayDataset({**pairs, **ref}, run.batch_size, run.seed)

    def load_init(state):
        return replace_params(
            state, "policy", load_params(policy_path, "policy", "lm", run.model, mesh)
        )

    return Stage(
        {"policy": ("lm", run.model)},
        Models(policy=run.model, pair_prefix_len=pair_prefix_len(pairs)),
        load_init,
        _offline_run_step(data, mesh),
    )


STAGES = {"sft": sft_stage, "reward": reward_stage, "dpo": dpo_stage, "ppo": ppo_stage}


def build_stage(run: RunConfig, mesh, workdir: str, bundle: DataBundle) -> Stage:
    """The stage of `run.objective`; raises ConfigError if the data's vocabulary does not fit."""
    if bundle.vocab_size > run.model.vocab_size:
        raise ConfigError(
            f"the data's vocabulary ({bundle.vocab_size} ids) exceeds config.model.vocab_size="
            f"{run.model.vocab_size}; the tokenizer's vocabulary must fit the model's embedding"
        )
    return STAGES[run.objective](run, mesh, workdir, bundle)
