"""Training one unit of the pipeline with the library's own driver: stage configs and frontiers.

`stage_config` turns a recipe of the reproduce config (spec.stages) into a complete `rlft train`
config by adding only what the pipeline owns (spec.PIPELINE_OWNED). `train_frontier` trains it
along its true learning-rate schedule, stopping at `points` checkpoints (driver `stop_at`) to
evaluate each: the arm's reward-KL frontier.
"""

import contextvars
import copy
import json
import math
import os
from collections.abc import Callable

from rlft.data.bundle import DataBundle
from rlft.errors import RunStopped
from rlft.experiments.pipeline.spec import ReproduceSpec
from rlft.experiments.pipeline.units import write_json
from rlft.models.params_io import read_meta
from rlft.train.loop import train


def deep_merge(base: dict, extra: dict) -> dict:
    """`base` with `extra` merged in, section by section (a new dict; inputs untouched)."""
    out = copy.deepcopy(base)
    for k, v in extra.items():
        out[k] = deep_merge(out.get(k, {}), v) if isinstance(v, dict) else v
    return out


def epochs_to_steps(epochs: float, rows: int, batch_size: int) -> int:
    """ceil(epochs * rows / batch_size), at least 1."""
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
        objective=stage,  # the stage sections are named after their objectives
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


# Whether a unit's training shows its step bar (stage, workdir, step, loss, ETA) beneath the
# run's unit bar: run_reproduce sets it from its `progress`.
STEP_BARS = contextvars.ContextVar("rlft_reproduce_step_bars", default=False)


def frontier_marks(total_steps: int, points: int) -> list[int]:
    """`points` checkpoint steps spread evenly over the run, the last one at its end."""
    return sorted({max(1, round(total_steps * (i + 1) / points)) for i in range(points)})


def train_to(config: dict, workdir: str, bundle: DataBundle, stop_at: int | None = None) -> None:
    """Train `config` in `workdir` up to step `stop_at` (default: its total_steps), resuming.

    Raises RunStopped if a signal stopped it (the checkpoint is saved; a rerun resumes), and
    RuntimeError if the workdir's latest checkpoint is not at that step afterwards (a unit
    trained past a mark by an older run: delete the unit to recompute it), so no caller ever
    goes on with a half-trained or wrong-step model.
    """
    want = config["total_steps"] if stop_at is None else stop_at
    last = train(config, workdir, progress=STEP_BARS.get(), data=bundle, stop_at=want)
    if last.get("stopped_by"):
        raise RunStopped(
            f"{workdir}: stopped by {last['stopped_by']} at step {last['step']} (saved); run the "
            "same command again to resume"
        )
    step, _ = read_meta(workdir)
    if step != want:
        raise RuntimeError(f"{workdir}: latest checkpoint is step {step}, expected {want}")


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
    iterated arm's later rounds continue the count). Each point is saved as
    `workdir/frontier/<step>.json` when evaluated, so a rerun after an interruption skips the
    points it has and resumes training from the last checkpoint, which is never past the first
    missing mark (checkpoints are saved only at marks, or at a signal before the next one).
    """
    frontier = []
    for stop in frontier_marks(config["total_steps"], points):
        path = os.path.join(workdir, "frontier", f"{stop}.json")
        if os.path.exists(path):
            with open(path) as f:
                frontier.append(json.load(f))
            continue
        train_to(config, workdir, bundle, stop)
        point = {"step": step_offset + stop, **evaluate(workdir, step_offset + stop)}
        write_json(path, point)
        frontier.append(point)
    return frontier
