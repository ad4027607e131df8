"""Preference data of the pipeline: Bradley-Terry labelled pairs and online best/worst pairs.

Labelled pairs are two responses per prompt (from the SFT policy, or from a wider mix of
policies) ordered by a simulated labeller: P(a preferred) = sigmoid(bt_scale * (gold_a -
gold_b)), so pairs whose gold rewards tie are coin flips (they carry no information about the
verifier; `informative_frac` counts the others). Online pairs are K samples of a policy per
prompt, the scorer's best as chosen and worst as rejected; prompts whose K scores all tie give
no pair.
"""

import numpy as np

from rlft.data.arrays import pack_sequences
from rlft.experiments.pipeline.evaluate import gold_parts, rng_key, sample
from rlft.models import ModelConfig
from rlft.tasks import Task, bradley_terry_labels, pairs_from_samples

SEQUENCE_KEYS = ("tokens", "mask", "loss_mask")
PAIR_KEYS = tuple(f"{side}_{k}" for side in ("chosen", "rejected") for k in SEQUENCE_KEYS)
WIDE_SOURCES = ("sft_t1", "sft_t2", "demonstrator")  # the policies a "wide" response comes from


def take_pairs(pairs: dict, rows) -> dict[str, np.ndarray]:
    """The pair fields the DPO and reward stages read, for the given rows."""
    return {k: pairs[k][rows] for k in PAIR_KEYS}


def informative_frac(pairs: dict, rows) -> float:
    """Share of pairs whose two responses differ in gold reward (the others are coin flips)."""
    return float(np.mean(pairs["chosen_gold"][rows] != pairs["rejected_gold"][rows]))


def _label(task: Task, s: dict, rng, bt_scale: float, extras=None) -> dict[str, np.ndarray]:
    """Bradley-Terry labels on prompt-major sample pairs (rows 2i, 2i+1), packed as pairs."""
    gold = gold_parts(task, s)["reward"]
    a_wins = bradley_terry_labels(gold[0::2], gold[1::2], bt_scale, rng)
    # A label is a strict order: score the preferred sample 1 and the other 0.
    scores = np.stack([a_wins, ~a_wins], axis=1).astype(np.float64).reshape(-1)
    return pairs_from_samples(
        s["tokens"],
        s["mask"],
        s["loss_mask"],
        scores,
        2,
        extras={"gold": gold, **(extras or {})},
        drop_degenerate=False,
    )


def labelled_pairs(
    task: Task, cfg: ModelConfig, params, prompts: dict, rng, mesh, bt_scale, temperature
) -> dict[str, np.ndarray]:
    """Two samples per prompt of the policy `params`, labelled by Bradley-Terry on gold."""
    s = sample(
        cfg, params, prompts, task, rng_key(rng), mesh, num_samples=2, temperature=temperature
    )
    return _label(task, s, rng, bt_scale)


def wide_labelled_pairs(
    task: Task, cfg: ModelConfig, params, prompts: dict, rng, mesh, bt_scale: float
) -> dict[str, np.ndarray]:
    """Pairs whose two responses each come from a source drawn at random per response.

    The sources (WIDE_SOURCES) are the SFT policy at temperature 1 and 2 and the task's
    demonstrator, so the pairs cover more than the SFT policy's own samples (H4's wide data).
    `chosen_source` / `rejected_source` hold each response's index into WIDE_SOURCES.
    """
    n = len(prompts["prompt_tokens"])
    pools = [
        sample(cfg, params, prompts, task, rng_key(rng), mesh, num_samples=2, temperature=t)
        for t in (1.0, 2.0)
    ]
    prompt_lists = [
        [int(t) for t in row[m]]
        for row, m in zip(prompts["prompt_tokens"], prompts["prompt_mask"], strict=True)
    ]
    demos = [task.demonstrate(prompt_lists, rng) for _ in range(2)]
    # Prompt-major rows like the sampler's: row 2i + j is response j of prompt i.
    demo_rows = [r for pair in zip(*demos, strict=True) for r in pair]
    twice = [p for p in prompt_lists for _ in range(2)]
    pools.append(pack_sequences(twice, demo_rows, task.prompt_len, task.response_len, task.pad_id))
    source_2N = rng.integers(len(pools), size=2 * n)
    rows = np.arange(2 * n)
    s = {
        k: np.stack([np.asarray(pool[k]) for pool in pools])[source_2N, rows] for k in SEQUENCE_KEYS
    }
    return _label(task, s, rng, bt_scale, {"source": source_2N})


def best_worst_pairs(
    task: Task, cfg: ModelConfig, params, prompts: dict, scorer, rng, mesh, *, k, temperature
) -> dict[str, np.ndarray]:
    """Online DPO's data: K policy samples per prompt, best and worst by `scorer(samples)`."""
    s = sample(
        cfg, params, prompts, task, rng_key(rng), mesh, num_samples=k, temperature=temperature
    )
    gold = gold_parts(task, s)["reward"]
    return pairs_from_samples(
        s["tokens"], s["mask"], s["loss_mask"], scorer(s), k, extras={"gold": gold}
    )
