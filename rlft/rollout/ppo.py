"""The PPO rollout: prompts in, a PPO batch out, one jitted program outside the gradient step.

Sample a response per prompt with the KV-cache sampler at the PPO temperature; recompute policy,
reference and critic values with full forwards (log-probs from logits / temperature); score the
sequence with the frozen reward model of its class (`reward.model_class`, read from the reward
stage's checkpoint: for the paper's head, the output at the last real token, i.e. the EOS token
or the last sampled token if none); replace the score by `no_eos_penalty` when no EOS was
sampled; fold the per-token KL penalty into the reward with the score on the last response
token (`advantages.ppo_rewards`); GAE; whiten advantages. The batch then goes through the same
`train_step` as every other objective (rlft.train.ppo_stage).
"""

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from rlft.errors import ConfigError, check_ranges
from rlft.models import ModelConfig
from rlft.objectives.logprobs import scored_token_stats
from rlft.objectives.ppo import token_values
from rlft.objectives.reward import sequence_reward
from rlft.rollout.advantages import KL_ESTIMATORS, gae, kl_penalty, masked_whiten, ppo_rewards
from rlft.rollout.sampler import generate


@dataclasses.dataclass(frozen=True)
class RolloutConfig:
    """PPO rollouts (the public TL;DR PPO recipe's defaults, see docs/paper.md section 4)."""

    response_len: int = 53  # new tokens sampled per prompt
    top_p: float = 1.0
    kl_coef: float = 0.05  # beta of the per-token KL penalty folded into the reward
    kl_estimator: str = "k1"  # k1 | k3
    no_eos_penalty: float = -1.0  # score given to responses that never emit EOS
    gamma: float = 1.0
    lam: float = 0.95
    whiten_rewards: bool = False
    ppo_epochs: int = 4
    num_minibatches: int = 1  # per epoch; the rollout batch is batch_size prompts

    def __post_init__(self):
        """Raises ConfigError naming the field and its range (rollout.gamma = 2: must be in
        [0, 1]) or, for kl_estimator, the choices."""
        check_ranges(
            "rollout",
            vars(self),
            {
                "response_len": ("int >= 1", "new tokens per prompt; the paper uses 53"),
                "top_p": ("(0, 1]", "the nucleus mass; 1 samples the full softmax"),
                "kl_coef": (">= 0", "the per-token KL penalty; the paper uses 0.05"),
                "no_eos_penalty": (
                    "finite",
                    "the score of a response without EOS; the paper uses -1",
                ),
                "gamma": ("[0, 1]", "the discount; the paper uses 1"),
                "lam": ("[0, 1]", "the GAE lambda; the paper uses 0.95"),
                "ppo_epochs": ("int >= 1", "passes over each rollout batch; the paper uses 4"),
                "num_minibatches": ("int >= 1", "minibatches per epoch; must divide batch_size"),
            },
        )
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ConfigError(
                f"rollout.kl_estimator={self.kl_estimator!r} is unknown; "
                f"choose one of {KL_ESTIMATORS}"
            )


@functools.lru_cache(maxsize=16)  # one jitted rollout per setting: a PPO run's segments share it
def make_rollout_fn(
    policy_cfg: ModelConfig,
    critic_cfg: ModelConfig,
    rollout: RolloutConfig,
    temperature: float,
    eos_id: int,
    pad_id: int,
    model_class: str = "last",
) -> Callable:
    """Jitted (params, ref_params, rm_params, prompt_tokens_BxP, prompt_mask_BxP, rng) ->
    (PPO batch, rollout stats).

    `params` holds the train state's "policy" and "critic"; the reward model (`rm_params`, of
    class `model_class`) shares `critic_cfg`. The batch has tokens, mask, loss_mask [B, P + L]
    and old_logp, old_values, advantages, returns [B, P + L] (rlft.objectives.ppo's keys); the
    stats are scalars: mean score, KL (k1, summed over the response), KL-penalised reward,
    response length and EOS rate.
    """

    # No arrays in this closure: make_rollout_fn is cached for the process, and anything it
    # captured (params, say) would stay in device memory with it. Arrays are arguments.
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

        def logp(p):  # the LM head only on chunks holding response tokens (0 elsewhere)
            stats = scored_token_stats(
                policy_cfg, p, tokens_BxT, mask_BxT, loss_mask_BxT, temperature
            )
            return stats["logp"]

        logp_BxT, ref_logp_BxT = logp(params["policy"]), logp(ref_params)
        values_BxT = (
            token_values(critic_cfg, params["critic"], tokens_BxT, mask_BxT) * loss_mask_BxT
        )
        score_B = sequence_reward(
            critic_cfg, rm_params, tokens_BxT, mask_BxT, loss_mask_BxT, model_class
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
