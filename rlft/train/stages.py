"""What differs between stages: which models train, where they start, and how a batch is made.

A stage never owns a training loop or a loss. It provides `roles` (models in the train state),
`load_init` (params from earlier stages), and `run_step` (build batch(es), call the one jitted
train step). Offline objectives read a step-indexed dataset; PPO makes its batch by rollout.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from etils import epath

from rlft.config import RunConfig
from rlft.data import ArrayDataset
from rlft.data.bundle import DataBundle
from rlft.errors import ConfigError
from rlft.models import ModelConfig
from rlft.models.bilinear import check_vocab
from rlft.models.params_io import load_params
from rlft.objectives import dpo, reward
from rlft.objectives.base import Models
from rlft.parallel import shard_batch


@dataclasses.dataclass
class Stage:
    roles: dict[str, tuple[str, ModelConfig]]  # role -> (model kind, config) in the train state
    models: Models
    load_init: Callable[[Any], Any]  # fresh state -> state with params from earlier stages
    run_step: Callable[[Callable, Any, int], tuple[Any, dict]]  # (step_fn, state, i) -> ...
    updates_per_step: int = 1  # optimizer updates per loop step (PPO: epochs x minibatches)
    finalize: Callable[[Any], tuple[Any, dict]] = lambda state: (state, {})  # after the last step


def _require(path: str, field: str, what: str) -> str:
    if not path:
        raise ConfigError(
            f"config.init.{field} is empty: this stage starts from {what}; set "
            f"--config.init.{field}=WORKDIR of that stage"
        )
    return path


def _agree(flag: bool) -> bool:
    """Process 0's value of `flag`, on every process."""
    if jax.process_count() == 1:
        return bool(flag)
    from jax.experimental import multihost_utils  # noqa: PLC0415

    return bool(multihost_utils.broadcast_one_to_all(np.int32(flag)))


def _offline_run_step(data: ArrayDataset, mesh):
    def run_step(step_fn, state, step):
        return step_fn(state, shard_batch(data.batch(step), mesh))

    return run_step


def _replace_params(state, role: str, params):
    return state.replace(params={**state.params, role: params})


def sft_stage(run: RunConfig, mesh, workdir: str, bundle: DataBundle) -> Stage:
    data = ArrayDataset(bundle.require("sft", "sft"), run.batch_size, run.seed)

    def load_init(state):
        if not run.init.policy:
            return state
        return _replace_params(
            state, "policy", load_params(run.init.policy, "policy", "lm", run.model, mesh)
        )

    return Stage(
        {"policy": ("lm", run.model)},
        Models(policy=run.model),
        load_init,
        _offline_run_step(data, mesh),
    )


def reward_stage(run: RunConfig, mesh, workdir: str, bundle: DataBundle) -> Stage:
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
        return _replace_params(
            state, "reward", {**state.params["reward"], "backbone": lm["backbone"]}
        )

    def finalize(state):
        params, offset = normalize_reward_model(
            run.model, state.params["reward"], reference, run.batch_size, mesh, model_class
        )
        return _replace_params(state, "reward", params), {"reward_offset": offset}

    return Stage(
        {"reward": (kind, run.model)},
        Models(reward=run.model),
        load_init,
        _offline_run_step(data, mesh),
        finalize=finalize,
    )


def forward_dataset(fn, params, arrays: dict, batch_size: int, mesh) -> dict[str, np.ndarray]:
    """Apply a jitted forward-only `fn(params, batch) -> {name: [B]}` to every row of arrays."""
    n = len(next(iter(arrays.values())))
    out: dict[str, list] = {}
    for start in range(0, n, batch_size):
        idx = np.arange(start, start + batch_size) % n  # wrap the last batch: static shapes
        batch = shard_batch({k: v[idx] for k, v in arrays.items()}, mesh)
        for k, v in jax.device_get(fn(params, batch)).items():
            out.setdefault(k, []).append(np.asarray(v))
    return {k: np.concatenate(v)[:n] for k, v in out.items()}


def reference_logprobs(
    cfg: ModelConfig, params, pairs: dict, batch_size: int, mesh, temperature: float
) -> dict[str, np.ndarray]:
    """Summed response log-probs of chosen and rejected under the reference `params`."""
    fn = jax.jit(
        lambda p, b: {
            f"ref_{side}_logp": dpo.sequence_logprobs(
                cfg, p, b[f"{side}_tokens"], b[f"{side}_mask"], b[f"{side}_loss_mask"], temperature
            )
            for side in ("chosen", "rejected")
        }
    )
    arrays = {k: v for k, v in pairs.items() if k.endswith(("tokens", "mask"))}
    return forward_dataset(fn, params, arrays, batch_size, mesh)


NORMALIZE_ROWS = 4096  # reference responses averaged for the reward-model offset


def normalize_reward_model(
    cfg: ModelConfig, params, reference: dict, batch_size: int, mesh, model_class: str = "last"
):
    """The paper's normalisation: subtract the mean reward of reference responses (folded into
    the offset `scalar_head/bias`, which every reward class adds once to r), so typical scores
    sit near 0 and PPO's no-EOS penalty means a penalty."""
    rows = {k: reference[k][:NORMALIZE_ROWS] for k in ("tokens", "mask", "loss_mask")}
    fn = jax.jit(
        lambda p, b: {
            "r": reward.sequence_reward(cfg, p, b["tokens"], b["mask"], b["loss_mask"], model_class)
        }
    )
    offset = float(np.mean(forward_dataset(fn, params, rows, batch_size, mesh)["r"]))
    head = params["scalar_head"]
    return {**params, "scalar_head": {**head, "bias": head["bias"] - offset}}, offset


def dpo_stage(run: RunConfig, mesh, workdir: str, bundle: DataBundle) -> Stage:
    policy_path = _require(run.init.policy, "policy", "an SFT policy")
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
            with cache.open("wb") as f:
                np.savez(f, **ref)
    data = ArrayDataset({**pairs, **ref}, run.batch_size, run.seed)

    def load_init(state):
        return _replace_params(
            state, "policy", load_params(policy_path, "policy", "lm", run.model, mesh)
        )

    return Stage(
        {"policy": ("lm", run.model)},
        Models(policy=run.model),
        load_init,
        _offline_run_step(data, mesh),
    )


def build_stage(run: RunConfig, mesh, workdir: str, bundle: DataBundle) -> Stage:
    from rlft.train.ppo_stage import ppo_stage  # noqa: PLC0415  (imports the sampler)

    builders = {"sft": sft_stage, "reward": reward_stage, "dpo": dpo_stage, "ppo": ppo_stage}
    if bundle.vocab_size > run.model.vocab_size:
        raise ConfigError(
            f"the data's vocabulary ({bundle.vocab_size} ids) exceeds config.model.vocab_size="
            f"{run.model.vocab_size}; the tokenizer's vocabulary must fit the model's embedding"
        )
    return builders[run.objective](run, mesh, workdir, bundle)
