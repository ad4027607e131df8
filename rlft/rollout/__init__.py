"""Rollouts: batched KV-cache sampling (and, alongside, advantages) that produce a batch."""

from rlft.rollout.sampler import Samples, generate, sample_token, top_p_filter

__all__ = ["Samples", "generate", "sample_token", "top_p_filter"]
