"""Everything that produces a batch, outside the gradient step: KV-cache sampling (`sampler`),
forward-only scoring with a policy or a reward model (`scoring`), the PPO rollout (`ppo`) and
its rewards and advantages (`advantages`)."""

from rlft.rollout.sampler import Samples, generate, sample_token, top_p_filter

__all__ = ["Samples", "generate", "sample_token", "top_p_filter"]
