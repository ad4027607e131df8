"""Training one unit of the pipeline with the library's own driver: stage configs and frontiers.

`stage_config` turns a recipe of the reproduce config (spec.stages) into a complete `rlft train`
config by adding only what the pipeline owns (spec.PIPELINE_OWNED). `train_frontier` trains it
along its true learning-rate schedule, stopping at `points` checkpoints (driver `stop_at`) to
evaluate each: the arm's reward-KL frontier.
"""

import copy
import math
from collections.abc import Callable

from rlft.data.bundle import DataBundle
from rlft.experiments.pipeline.spec import ReproduceSpec
from rlft.train.loop import train

OBJECTIVE = {"sft": "sft", "reward": "reward", "dpo": "dpo", "ppo": "ppo"}


def deep_merge(base: dict, extra: dict) -> dict:
    """`base` with `extra` merged in, section by section (a new dict; inputs untouched)."""
    out = copy.deepcopy(base)
    for k, v in extra.items():
        out[k] = deep_merge(out.get(k, {}), v) if isinstance(v, dict) else v
    return out


def epochs_to_steps(epochs: float, rows: int, batch_size: int) -> int:
    return max(1, math.ceil(round(epochs * rows / batch_size, 6)))


def stage_config(
    spec: ReproduceSpec,
    stage: str,
    *,
    seed: int,
    total_steps: int,
    init: dict | None = None,
    extra: dict | None = None,
) -> dict:
    """A complete `rlft train` config (a dict) for one unit: the stage's recipe plus `extra`
    (pipeline rules such as online DPO's temperature) plus the pipeline-owned keys."""
    c = deep_merge(spec.stages[stage], extra or {})
    c.update(
        objective=OBJECTIVE[stage],
        seed=seed,
        total_steps=total_steps,
        checkpoint_every=total_steps,  # segments end with a checkpoint anyway (stop_at)
        log_every=max(1, total_steps // 10),
        model=dict(spec.raw["model"]),
        mesh=dict(data=spec.parallel.data, fsdp=spec.parallel.fsdp),
        init={"policy": "", "reward": "", "reference": "", **(init or {})},
    )
    c.setdefault("optim", {})["accum_steps"] = spec.parallel.accum_steps
    return c


def frontier_marks(total_steps: int, points: int) -> list[int]:
    """`points` checkpoint steps spread evenly over the run, the last one at its end."""
    return sorted({max(1, round(total_steps * (i + 1) / points)) for i in range(points)})


def train_frontier(
    config: dict,
    workdir: str,
    bundle: DataBundle,
    points: int,
    evaluate: Callable[[str, int], dict],
    step_offset: int = 0,
) -> list[dict]:
    """Train `config` to its total_steps, stopping at `points` marks to evaluate the policy.

    `evaluate(workdir, step)` returns a frontier point; steps are reported + `step_offset` (an
    iterated arm's later rounds continue the count). A rerun resumes from the last checkpoint.
    """
    frontier = []
    for stop in frontier_marks(config["total_steps"], points):
        train(config, workdir, progress=False, data=bundle, stop_at=stop)
        frontier.append({"step": step_offset + stop, **evaluate(workdir, step_offset + stop)})
    return frontier
