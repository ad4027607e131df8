"""Training one arm of the comparison: stage configs, preference data, frontier checkpoints.

Every arm is trained by the library's own driver (`rlft.train.loop.train`) on arrays the
pipeline made, so it checkpoints and resumes like any `rlft train` run. Learning rates are
constant here: an arm is trained in segments and evaluated after each (its reward-KL frontier),
and a constant schedule makes the segments one uninterrupted run.
"""

import math
from collections.abc import Callable

import numpy as np

from rlft.data.arrays import pack_sequences
from rlft.data.bundle import DataBundle
from rlft.defaults import base_config
from rlft.experiments import policy_ops
from rlft.experiments.spec import ReproduceSpec
from rlft.models import ModelConfig
from rlft.models.params_io import load_params
from rlft.tasks import Task, bradley_terry_labels, pairs_from_samples
from rlft.train.loop import train


def stage_config(
    objective: str,
    spec: ReproduceSpec,
    *,
    seed: int,
    steps: int,
    batch_size: int,
    learning_rate: float,
    init: dict | None = None,
    **sections,
) -> dict:
    """A complete `rlft train` config (as a dict) for one stage of the pipeline."""
    c = base_config(objective, tiny=True).to_dict()
    c.pop("data")
    c.update(
        seed=seed,
        total_steps=steps,
        batch_size=batch_size,
        checkpoint_every=steps,
        log_every=max(1, steps // 10),
        model=dict(spec.raw["model"]),
    )
    c["optim"].update(
        learning_rate=learning_rate, schedule="constant", accum_steps=spec.parallel.accum_steps
    )
    c["mesh"].update(data=spec.parallel.data, fsdp=spec.parallel.fsdp)
    c["init"].update(init or {})
    c.update(sections)
    return c


def epochs_to_steps(epochs: float, rows: int, batch_size: int) -> int:
    return max(1, math.ceil(epochs * rows / batch_size))


def load_policy(workdir: str, cfg: ModelConfig, mesh):
    return load_params(workdir, "policy", "lm", cfg, mesh)


def train_with_frontier(
    make_config: Callable[[int], dict],
    workdir: str,
    bundle: DataBundle,
    total_steps: int,
    eval_points: int,
    evaluate: Callable[[str], dict],
):
    """Train to total_steps in `eval_points` segments, evaluating the policy after each.

    Returns (last evaluation, frontier rows [{step, gold_reward, kl_to_ref, ...}]).
    """
    frontier, last = [], {}
    marks = sorted({max(1, round(total_steps * (i + 1) / eval_points)) for i in range(eval_points)})
    for steps in marks:
        train(make_config(steps), workdir, progress=False, data=bundle)
        last = evaluate(workdir)
        frontier.append(
            {"step": steps, **{k: last[k] for k in ("gold_reward", "kl_to_ref", "win_rate_vs_sft")}}
        )
    return last, frontier


def labelled_pairs(
    task: Task,
    sft_cfg: ModelConfig,
    sft_params,
    prompts: dict,
    rng,
    mesh,
    bt_scale: float,
    temperature: float,
) -> dict[str, np.ndarray]:
    """Two SFT samples per prompt, labelled by the Bradley-Terry model of the gold reward."""
    s = policy_ops.sample(
        sft_cfg,
        sft_params,
        prompts,
        task,
        rng_key(rng),
        mesh,
        num_samples=2,
        temperature=temperature,
    )
    return _label(task, s, rng, bt_scale)


WIDE_SOURCES = ("sft_t1", "sft_t2", "demonstrator")  # the policies a "wide" response comes from


def wide_labelled_pairs(
    task: Task, sft_cfg: ModelConfig, sft_params, prompts: dict, rng, mesh, bt_scale: float
) -> dict[str, np.ndarray]:
    """Pairs whose two responses each come from a source drawn at random per response.

    The sources (WIDE_SOURCES) are the SFT policy at temperature 1 and 2 and the task's
    demonstrator, so the pairs cover more than the SFT policy's own samples (H4's wide data).
    `chosen_source` / `rejected_source` hold each response's index into WIDE_SOURCES.
    """
    n = len(prompts["prompt_tokens"])
    pools = [
        policy_ops.sample(
            sft_cfg, sft_params, prompts, task, rng_key(rng), mesh, num_samples=2, temperature=t
        )
        for t in (1.0, 2.0)
    ]
    prompt_lists = [
        [int(t) for t in row[m]]
        for row, m in zip(prompts["prompt_tokens"], prompts["prompt_mask"], strict=True)
    ]
    demos = [task.demonstrate(prompt_lists, rng) for _ in range(2)]
    # Prompt-major rows like the sampler's: row 2i + j is response j of prompt i.
    demo_rows = [r for pair in zip(*demos, strict=True) for r in pair]
    pools.append(
        pack_sequences(
            [p for p in prompt_lists for _ in range(2)],
            demo_rows,
            task.prompt_len,
            task.response_len,
            task.pad_id,
        )
    )
    source_2N = rng.integers(len(pools), size=2 * n)
    rows = np.arange(2 * n)
    s = {
        k: np.stack([np.asarray(pool[k]) for pool in pools])[source_2N, rows]
        for k in ("tokens", "mask", "loss_mask")
    }
    return _label(task, s, rng, bt_scale, {"source": source_2N})


def _label(task: Task, s: dict, rng, bt_scale: float, extras=None) -> dict[str, np.ndarray]:
    """Bradley-Terry labels on prompt-major sample pairs (rows 2i, 2i+1), packed as pairs."""
    gold = policy_ops.gold_parts(task, s)["reward"]
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


def best_worst_pairs(
    task: Task,
    cfg: ModelConfig,
    params,
    prompts: dict,
    scorer,
    rng,
    mesh,
    *,
    num_samples: int,
    temperature: float,
) -> dict[str, np.ndarray]:
    """Online DPO's data: K policy samples per prompt, best and worst by `scorer(samples)`."""
    s = policy_ops.sample(
        cfg,
        params,
        prompts,
        task,
        rng_key(rng),
        mesh,
        num_samples=num_samples,
        temperature=temperature,
    )
    gold = policy_ops.gold_parts(task, s)["reward"]
    return pairs_from_samples(
        s["tokens"], s["mask"], s["loss_mask"], scorer(s), num_samples, extras={"gold": gold}
    )


def take_pairs(pairs: dict, rows) -> dict[str, np.ndarray]:
    """The pair fields the DPO and reward stages read, for the given rows."""
    keys = [
        f"{side}_{k}" for side in ("chosen", "rejected") for k in ("tokens", "mask", "loss_mask")
    ]
    return {k: pairs[k][rows] for k in keys}


def rng_key(rng: np.random.Generator):
    import jax  # noqa: PLC0415

    return jax.random.PRNGKey(int(rng.integers(0, 2**31 - 1)))
