"""What the pipeline does with trained models: sample, score, and evaluate against a verifier.

Every function takes numpy arrays in rlft's batch layout and returns numpy, so the pipeline
stays plain Python; the heavy lifting is the jitted sampler and jitted forward passes.
"""

import jax
import numpy as np

from rlft.models import ModelConfig
from rlft.parallel import shard_batch
from rlft.rollout import scoring
from rlft.rollout.sampler import generate
from rlft.tasks import Task, split_sequences


def sample(
    cfg: ModelConfig,
    params,
    prompts: dict,
    task: Task,
    rng,
    mesh,
    *,
    num_samples: int,
    temperature: float,
) -> dict[str, np.ndarray]:
    """K responses per prompt (prompt-major rows): tokens, mask, loss_mask, logp [N*K, P+R]."""
    p = shard_batch(prompts, mesh)
    out = generate(
        cfg,
        params,
        p["prompt_tokens"],
        p["prompt_mask"],
        rng,
        max_new_tokens=task.response_len,
        num_samples=num_samples,
        temperature=temperature,
        eos_id=task.eos_id,
        pad_id=task.pad_id,
    )
    out = jax.device_get(out)
    return {"tokens": out.tokens, "mask": out.mask, "loss_mask": out.loss_mask, "logp": out.logp}


def gold_parts(task: Task, arrays: dict, prefix: str = "") -> dict[str, np.ndarray]:
    """The task's verifier on sampled sequences: {'reward': [N], other parts ...}."""
    return task.gold_reward_parts(
        *split_sequences(arrays[prefix + "tokens"], arrays[prefix + "mask"], task.prompt_len)
    )


def matched_win_rate(gold_a: np.ndarray, gold_b: np.ndarray) -> float:
    """P(a beats b) on matched samples under the gold verifier, ties counting half."""
    return float(np.mean((gold_a > gold_b) + 0.5 * (gold_a == gold_b)))


def evaluate_policy(
    cfg: ModelConfig,
    params,
    ref_params,
    rm_params,
    task: Task,
    prompts: dict,
    sft_gold: np.ndarray,
    rng,
    mesh,
    samples_per_prompt: int,
    rm_pooling: str = "last",
) -> dict:
    """Gold reward, win rate vs SFT, KL to the reference and RM score of a policy's samples.

    Samples at temperature 1 (the policy itself). KL(pi || ref) is the Monte Carlo mean of
    sum_t log pi - log ref over those samples. `sft_gold` holds the SFT policy's gold rewards
    on the same prompts (same row layout), for the matched win rate.
    """
    s = sample(
        cfg, params, prompts, task, rng, mesh, num_samples=samples_per_prompt, temperature=1.0
    )
    parts = gold_parts(task, s)
    logp_pol = np.sum(s["logp"], axis=-1)
    logp_ref = scoring.logprob_scores(cfg, ref_params, s, mesh)
    out = {
        "gold_reward": float(np.mean(parts["reward"])),
        "win_rate_vs_sft": matched_win_rate(parts["reward"], sft_gold),
        "kl_to_ref": float(np.mean(logp_pol - logp_ref)),
        "gold_parts": {k: float(np.mean(v)) for k, v in parts.items() if k != "reward"},
        "rm_score": None,
    }
    if rm_params is not None:
        out["rm_score"] = float(
            np.mean(scoring.rm_scores(cfg, rm_params, s, mesh, model_class=rm_pooling))
        )
    return out
