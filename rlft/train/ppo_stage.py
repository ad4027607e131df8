"""PPO stage: each loop step is one rollout, then `ppo_epochs x num_minibatches` train steps.

Rollout (one jitted program, outside the gradient step): sample a response per prompt with the
KV-cache sampler at the PPO temperature; recompute policy, reference and critic values with
full forwards (log-probs from logits / temperature); score the sequence with the frozen reward
model of its class (`reward.pooling` of the reward stage: for the paper's head, the output at the
last real token, i.e. the EOS token or the last sampled token if none); replace the score by
`no_eos_penalty` when no EOS was sampled; fold the per-token KL penalty into the reward
with the score on the last response token (`rlft.rollout.advantages.ppo_rewards`); GAE; whiten
advantages. The batch then goes through the same `train_step` as every other objective.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rlft.config import RolloutConfig, RunConfig
from rlft.data import ArrayDataset
from rlft.data.bundle import DataBundle
from rlft.errors import ConfigError
from rlft.models import ModelConfig, lm_logits
from rlft.models.params_io import load_params, read_meta
from rlft.objectives.base import Models
from rlft.objectives.logprobs import token_logprobs
from rlft.objectives.ppo import token_values
from rlft.objectives.reward import model_kind, sequence_reward
from rlft.parallel import batch_sharding, shard_batch
from rlft.rollout.advantages import gae, kl_penalty, masked_whiten, ppo_rewards
from rlft.rollout.sampler import generate
from rlft.train.stages import Stage, _replace_params, _require


def make_rollout_fn(
    run: RunConfig, rollout: RolloutConfig, eos_id: int, pad_id: int, pooling: str = "last"
):
    """Jitted (params, ref_params, rm_params, prompts, rng) -> (ppo batch, rollout stats)."""
    policy_cfg, critic_cfg = run.model, run.reward_model or run.model
    temperature = run.hparams.temperature

    def rollout_fn(params, ref_params, rm_params, prompt_tokens, prompt_mask, rng):
        samples = generate(
            policy_cfg,
            params["policy"],
            prompt_tokens,
            prompt_mask,
            rng,
            max_new_tokens=rollout.response_len,
            temperature=temperature,
            top_p=rollout.top_p,
            eos_id=eos_id,
            pad_id=pad_id,
        )
        tokens_BxT, mask_BxT, loss_mask_BxT = samples.tokens, samples.mask, samples.loss_mask

        def logp(p):
            return (
                token_logprobs(
                    lm_logits(policy_cfg, p, tokens_BxT, mask_BxT), tokens_BxT, temperature
                )
                * loss_mask_BxT
            )

        logp_BxT, ref_logp_BxT = logp(params["policy"]), logp(ref_params)
        values_BxT = (
            token_values(critic_cfg, params["critic"], tokens_BxT, mask_BxT) * loss_mask_BxT
        )
        score_B = sequence_reward(
            critic_cfg, rm_params, tokens_BxT, mask_BxT, loss_mask_BxT, pooling
        )
        score_B = jnp.where(samples.finished, score_B, rollout.no_eos_penalty)
        rewards_BxT = ppo_rewards(
            score_B, logp_BxT, ref_logp_BxT, loss_mask_BxT, rollout.kl_coef, rollout.kl_estimator
        )
        if rollout.whiten_rewards:
            rewards_BxT = masked_whiten(rewards_BxT, loss_mask_BxT, shift_mean=False)
        adv_BxT, returns_BxT = gae(
            rewards_BxT, values_BxT, loss_mask_BxT, rollout.gamma, rollout.lam
        )
        adv_BxT = masked_whiten(adv_BxT, loss_mask_BxT)
        kl_B = jnp.sum(kl_penalty(logp_BxT, ref_logp_BxT, "k1") * loss_mask_BxT, axis=-1)
        batch = {
            "tokens": tokens_BxT,
            "mask": mask_BxT,
            "loss_mask": loss_mask_BxT,
            "old_logp": logp_BxT,
            "old_values": values_BxT,
            "advantages": adv_BxT,
            "returns": returns_BxT,
        }
        stats = {
            "rollout/score": jnp.mean(score_B),
            "rollout/kl": jnp.mean(kl_B),
            "rollout/reward": jnp.mean(score_B - rollout.kl_coef * kl_B),
            "rollout/response_len": jnp.mean(samples.lengths),
            "rollout/eos_rate": jnp.mean(samples.finished),
        }
        return batch, stats

    return jax.jit(rollout_fn)


def reward_pooling(reward_path: str) -> str:
    """How the reward model at `reward_path` reads a sequence (its stage's reward.pooling)."""
    _, meta = read_meta(reward_path)
    return meta.get("config", {}).get("reward", {}).get("model_class", "last")


def load_reward_model(reward_path: str, cfg: ModelConfig, mesh) -> tuple[Any, str]:
    """(params, pooling) of the trained reward model at `reward_path`, of the kind its class
    reads (`sequence_reward(cfg, params, ..., pooling)` scores with it)."""
    pooling = reward_pooling(reward_path)
    return load_params(reward_path, "reward", model_kind(pooling), cfg, mesh), pooling


def ppo_stage(run: RunConfig, mesh, workdir: str, bundle: DataBundle) -> Stage:
    rollout = run.rollout
    if rollout is None:
        raise ConfigError("config.rollout is missing; PPO needs it (see configs/ppo.py)")
    policy_path = _require(run.init.policy, "policy", "an SFT policy")
    reward_path = _require(run.init.reward, "reward", "a trained reward model")
    critic_cfg = run.reward_model or run.model
    if run.batch_size % rollout.num_minibatches:
        raise ConfigError(
            f"config.batch_size={run.batch_size} does not split into "
            f"config.rollout.num_minibatches={rollout.num_minibatches}"
        )
    prompts = ArrayDataset(bundle.require("prompts", "ppo"), run.batch_size, run.seed)
    ref_params = load_params(run.init.reference or policy_path, "policy", "lm", run.model, mesh)
    rm_params, pooling = load_reward_model(reward_path, critic_cfg, mesh)
    rollout_fn = make_rollout_fn(run, rollout, bundle.eos_id, bundle.pad_id, pooling)
    take = jax.jit(
        lambda b, idx: jax.tree.map(lambda x: x[idx], b), out_shardings=batch_sharding(mesh)
    )
    minibatch = run.batch_size // rollout.num_minibatches

    def load_init(state):
        state = _replace_params(
            state, "policy", load_params(policy_path, "policy", "lm", run.model, mesh)
        )
        if model_kind(pooling) != "scalar":  # no backbone in the RM: the SFT one, fresh head
            lm = load_params(policy_path, "policy", "lm", critic_cfg, mesh)
            critic = {**state.params["critic"], "backbone": lm["backbone"]}
            return _replace_params(state, "critic", critic)
        # The critic starts as the reward model; copy, since the train step donates its state.
        return _replace_params(state, "critic", jax.tree.map(jnp.copy, rm_params))

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
