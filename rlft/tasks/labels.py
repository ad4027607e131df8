"""Preference labels from a gold reward, and best/worst-of-K pairs from scored samples.

Bradley-Terry labeller: response a is preferred to b with probability

    P(a > b) = sigmoid(scale * (r_a - r_b)),

so `scale` sets how noisy the "human" is (0: coin flips; large: always the better one).
"""

import numpy as np

from rlft.data.arrays import pack_pairs
from rlft.tasks.base import Task

SEQUENCE_FIELDS = ("tokens", "mask", "loss_mask")


def sigmoid(x) -> np.ndarray:
    """1 / (1 + exp(-x)) without overflow for large |x|."""
    x = np.asarray(x, np.float64)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def log_sigmoid(x) -> np.ndarray:
    """log sigmoid(x) = -log(1 + exp(-x)) in x's precision, without overflow for large |x|."""
    return -np.logaddexp(0.0, -np.asarray(x))


def bradley_terry_labels(reward_a_N, reward_b_N, scale: float, rng: np.random.Generator):
    """[N] bool: True where a is preferred, drawn with probability sigmoid(scale (r_a - r_b))."""
    p_N = sigmoid(scale * (np.asarray(reward_a_N, np.float64) - np.asarray(reward_b_N)))
    return rng.random(p_N.shape) < p_N


def make_preference_pairs(
    task: Task, prompts, responses_a, responses_b, scale: float, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Label (a, b) per prompt with the task's gold reward, pack as chosen/rejected pairs.

    Returns pack_pairs' chosen_*/rejected_* [N, P+R] arrays plus, each [N]: chosen_gold and
    rejected_gold (gold rewards), label_prob (the BT probability of the drawn label,
    sigmoid(scale * (chosen_gold - rejected_gold))) and a_preferred (which input was chosen).
    """
    if not len(prompts) == len(responses_a) == len(responses_b):
        raise ValueError("prompts, responses_a and responses_b need the same length")
    gold_a, gold_b = task.score(prompts, responses_a), task.score(prompts, responses_b)
    a_wins = bradley_terry_labels(gold_a, gold_b, scale, rng)
    chosen = [a if w else b for a, b, w in zip(responses_a, responses_b, a_wins, strict=True)]
    rejected = [b if w else a for a, b, w in zip(responses_a, responses_b, a_wins, strict=True)]
    out = pack_pairs(prompts, chosen, rejected, task.prompt_len, task.response_len, task.pad_id)
    out["chosen_gold"] = np.where(a_wins, gold_a, gold_b)
    out["rejected_gold"] = np.where(a_wins, gold_b, gold_a)
    out["label_prob"] = sigmoid(scale * (out["chosen_gold"] - out["rejected_gold"]))
    out["a_preferred"] = a_wins
    return out


def best_worst(scores_NxK) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(best_N, worst_N, degenerate_N) indices into K per row.

    Ties: best is the first argmax and worst the first argmin, so they differ whenever the row
    is not constant. A row whose K scores are all equal is `degenerate` (best == worst == 0):
    it holds no preference and callers should drop it.
    """
    scores_NxK = np.asarray(scores_NxK, np.float64)
    if scores_NxK.ndim != 2 or scores_NxK.shape[1] < 2:
        raise ValueError(f"best_worst needs scores [N, K] with K >= 2, got {scores_NxK.shape}")
    if np.isnan(scores_NxK).any():
        raise ValueError("best_worst: scores contain NaN")
    best_N, worst_N = np.argmax(scores_NxK, 1), np.argmin(scores_NxK, 1)
    return best_N, worst_N, best_N == worst_N


def pairs_from_samples(
    tokens_NKxT, mask_NKxT, loss_mask_NKxT, scores_NK, k: int, extras=None, drop_degenerate=True
) -> dict[str, np.ndarray]:
    """Best and worst of K samples per prompt as chosen/rejected pairs (online DPO's data).

    Rows are prompt-major, as the sampler returns them: row n*K + j is sample j of prompt n.
    Returns chosen_/rejected_ tokens, mask, loss_mask [N', T] and score [N'], the same for
    each array in `extras` (name -> [N*K], e.g. gold rewards next to reward-model scores),
    `prompt_index` [N'] and `degenerate` [N']. With drop_degenerate (default) rows whose K
    scores all tie are left out, so N' <= N; otherwise N' = N and `degenerate` marks them.
    """
    scores_NxK = np.asarray(scores_NK, np.float64).reshape(-1, k)
    n = scores_NxK.shape[0]
    best_N, worst_N, degenerate_N = best_worst(scores_NxK)
    per_sample = {
        **dict(zip(SEQUENCE_FIELDS, (tokens_NKxT, mask_NKxT, loss_mask_NKxT), strict=True)),
        "score": scores_NK,
        **(extras or {}),
    }
    keep_N = ~degenerate_N if drop_degenerate else np.ones(n, bool)
    rows = np.arange(n)
    out = {"prompt_index": rows[keep_N], "degenerate": degenerate_N[keep_N]}
    for name, value in per_sample.items():
        value_NxK = np.asarray(value).reshape(n, k, *np.shape(value)[1:])
        out[f"chosen_{name}"] = value_NxK[rows, best_N][keep_N]
        out[f"rejected_{name}"] = value_NxK[rows, worst_N][keep_N]
    return out
