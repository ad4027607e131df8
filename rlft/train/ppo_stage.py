"""PPO stage: each loop step is one rollout, then `ppo_epochs x num_minibatches` train steps.

The rollout (rlft.rollout.ppo) samples from the policy, scores with the frozen reward model and
computes advantages outside the gradient step; its batch is shuffled into minibatches that go
through the same `train_step` as every other objective. The reward model's class is read once,
from its stage's checkpoint (rlft.rollout.scoring.load_reward_model).
"""

import jax
import jax.numpy as jnp
import numpy as np

from rlft.config import RunConfig
from rlft.data import ArrayDataset
from rlft.data.bundle import DataBundle
from rlft.errors import ConfigError
from rlft.models.params_io import load_params
from rlft.objectives.base import Models
from rlft.objectives.reward import model_kind
from rlft.parallel import batch_sharding, shard_batch
from rlft.rollout.ppo import make_rollout_fn
from rlft.rollout.scoring import load_reward_model
from rlft.train.stage import Stage, replace_params, require_init


def ppo_stage(run: RunConfig, mesh, workdir: str, bundle: DataBundle) -> Stage:
    """Policy (init.policy) and critic on rollouts of `bundle.prompts`, scored by the reward
    model at init.reward; raises ConfigError without config.rollout or init paths."""
    rollout = run.rollout
    if rollout is None:
        raise ConfigError("config.rollout is missing; PPO needs it (see configs/ppo.py)")
    policy_path = require_init(run.init.policy, "policy", "an SFT policy")
    reward_path = require_init(run.init.reward, "reward", "a trained reward model")
    critic_cfg = run.reward_model or run.model
    if run.batch_size % rollout.num_minibatches:
        raise ConfigError(
            f"config.batch_size={run.batch_size} does not split into "
            f"config.rollout.num_minibatches={rollout.num_minibatches}"
        )
    prompts = ArrayDataset(bundle.require("prompts", "ppo"), run.batch_size, run.seed)
    ref_params = load_params(run.init.reference or policy_path, "policy", "lm", run.model, mesh)
    rm_params, model_class = load_reward_model(reward_path, critic_cfg, mesh)
    rollout_fn = make_rollout_fn(
        run.model,
        critic_cfg,
        rollout,
        run.hparams.temperature,
        bundle.eos_id,
        bundle.pad_id,
        model_class,
    )
    take = jax.jit(
        lambda b, idx: jax.tree.map(lambda x: x[idx], b), out_shardings=batch_sharding(mesh)
    )
    minibatch = run.batch_size // rollout.num_minibatches

    def load_init(state):
        state = replace_params(
            state, "policy", load_params(policy_path, "policy", "lm", run.model, mesh)
        )
        if model_kind(model_class) != "scalar":  # no backbone in the RM: the SFT one, fresh head
            lm = load_params(policy_path, "policy", "lm", critic_cfg, mesh)
            critic = {**state.params["critic"], "backbone": lm["backbone"]}
            return replace_params(state, "critic", critic)
        # The critic starts as the reward model; copy, since the train step donates its state.
        return replace_params(state, "critic", jax.tree.map(jnp.copy, rm_params))

    def run_step(step_fn, state, step):
        p = shard_batch(prompts.batch(step), mesh)
        batch, stats = rollout_fn(
            state.params,
            ref_params,
            rm_params,
            p["prompt_tokens"],
            p["prompt_mask"],
            jax.random.fold_in(state.rng, step),
        )
        updates = []
        for epoch in range(rollout.ppo_epochs):
            perm = np.random.default_rng([run.seed, step, epoch]).permutation(run.batch_size)
            for j in range(rollout.num_minibatches):
                idx = jnp.asarray(perm[j * minibatch : (j + 1) * minibatch])
                state, metrics = step_fn(state, take(batch, idx))
                updates.append(metrics)
        metrics = jax.tree.map(lambda *xs: jnp.mean(jnp.stack(xs)), *updates)
        return state, {**metrics, **stats}

    return Stage(
        {"policy": ("lm", run.model), "critic": ("scalar", critic_cfg)},
        Models(policy=run.model, critic=critic_cfg),
        load_init,
        run_step,
        updates_per_step=rollout.ppo_epochs * rollout.num_minibatches,
    )
