"""One (task, seed) of `rlft reproduce`: the drawn data, the SFT policy, its labelled pairs.

Each seed draws its own hidden task (tables, grammar, references: the task's `seed` knob is the
run seed unless config.task_knobs fixes it), so intervals over seeds cover task variation. Every
random draw comes from a generator derived from (task, seed, purpose), so a resumed run draws
exactly what a fresh one would and changing one purpose leaves the others alone.
"""

import dataclasses
import os
import zlib

import numpy as np

from rlft.data.bundle import DataBundle
from rlft.experiments.pipeline import units
from rlft.experiments.pipeline.evaluate import EvalSet, gold_parts, load_policy, rng_key, sample
from rlft.experiments.pipeline.pairs import labelled_pairs, wide_labelled_pairs
from rlft.experiments.pipeline.spec import ReproduceSpec
from rlft.experiments.pipeline.training import epochs_to_steps, stage_config, train_to
from rlft.rollout.scoring import logprob_scores
from rlft.tasks import TASK_CONFIGS, Task, make_prompt_arrays, make_sft_arrays, make_task


def derived_rng(*keys) -> np.random.Generator:
    """A generator for one purpose: keys are ints or strings (hashed)."""
    return np.random.default_rng(
        [k if isinstance(k, int) else zlib.crc32(k.encode()) for k in keys]
    )


@dataclasses.dataclass(frozen=True)
class SeedData:
    """The task and the arrays drawn for one (task entry, seed)."""

    name: str  # the entry of config.tasks
    family: str  # the registry task it is built from
    knobs: dict  # the task's knobs, seed included where the task has one
    seed: int
    task: Task
    dir: str
    sft_arrays: dict  # demonstrations [n, P+R]
    eval_prompts: dict  # held-out prompts [num_prompts, P]
    pref_prompts: dict  # labelled-pair prompts [max budget + num_val_pairs, P]; val at the end


def draw(spec: ReproduceSpec, name: str, seed: int, root: str) -> SeedData:
    """The task of config.tasks entry `name` for run seed `seed`, and its drawn arrays.

    Raises ValueError if the task's vocabulary does not fit config.model.vocab_size.
    """
    knobs = dict(spec.task_knobs.get(name, {}))
    family = knobs.pop("family", name)
    if "seed" in {f.name for f in dataclasses.fields(TASK_CONFIGS[family])}:
        knobs.setdefault("seed", seed)  # the hidden task varies with the run seed
    task = make_task(family, **knobs)
    if task.vocab_size > spec.model.vocab_size:
        raise ValueError(
            f"task {name!r} needs vocab {task.vocab_size} > model.vocab_size "
            f"{spec.model.vocab_size}; raise config.model.vocab_size"
        )
    n_pref = max(spec.label_budgets) + spec.labels.num_val_pairs
    return SeedData(
        name=name,
        family=family,
        knobs=knobs,
        seed=seed,
        task=task,
        dir=os.path.join(root, name, f"seed{seed}"),
        sft_arrays=make_sft_arrays(task, spec.sft_examples, derived_rng(name, seed, "sft")),
        eval_prompts=make_prompt_arrays(
            task, spec.eval.num_prompts, derived_rng(name, seed, "eval"), held_out=True
        ),
        pref_prompts=make_prompt_arrays(task, n_pref, derived_rng(name, seed, "pref")),
    )


@dataclasses.dataclass(frozen=True)
class Sft:
    """The trained SFT policy of one (task, seed) and what every cell reuses of it."""

    dir: str
    fingerprint: str
    params: object
    eval_set: EvalSet  # held-out prompts, SFT as reference and baseline
    bon_samples: dict  # T=1 samples for Best-of-N [num_prompts * K, P+R]
    bon_gold_NxK: np.ndarray
    fit: dict  # sft_fit diagnostics: demo_gold, sft_gold, sft_gold_greedy, heldout NLL


def train_sft(spec: ReproduceSpec, data: SeedData, mesh) -> Sft:
    """SFT on the demonstrations (or resumed), then its evaluation samples and fit diagnostics.

    Raises RunStopped if a signal stops the training (a rerun resumes).
    """
    recipe = spec.stages["sft"]
    steps = epochs_to_steps(spec.epochs.sft, spec.sft_examples, recipe["batch_size"])
    config = stage_config(
        spec, "sft", seed=data.seed, total_steps=steps, init={"policy": spec.sft_init}
    )
    path = os.path.join(data.dir, "sft")
    fp = units.claim(
        path, {"config": config, "task": data.family, "knobs": data.knobs, "n": spec.sft_examples}
    )
    bundle = DataBundle(
        data.task.eos_id, data.task.pad_id, data.task.vocab_size, sft=data.sft_arrays
    )
    train_to(config, path, bundle)
    params = load_policy(path, spec.model, mesh)
    task, cfg, e = data.task, spec.model, spec.eval
    rng = derived_rng(data.name, data.seed, "sft_eval")
    k = max(e.best_of_n + (e.samples_per_prompt,))
    bon = sample(
        cfg, params, data.eval_prompts, task, rng_key(rng), mesh, num_samples=k, temperature=1.0
    )
    bon_gold = gold_parts(task, bon)["reward"].reshape(-1, k)
    greedy = sample(
        cfg,
        params,
        data.eval_prompts,
        task,
        rng_key(rng),
        mesh,
        num_samples=1,
        temperature=e.greedy_temperature,
    )
    ev = EvalSet(
        task=task,
        cfg=cfg,
        mesh=mesh,
        prompts=data.eval_prompts,
        ref_params=params,
        ref_gold=bon_gold[:, : e.samples_per_prompt].reshape(-1),
        ref_gold_greedy=gold_parts(task, greedy)["reward"],
        samples_per_prompt=e.samples_per_prompt,
        greedy_temperature=e.greedy_temperature,
        seed=data.seed,
    )
    return Sft(path, fp, params, ev, bon, bon_gold, _fit(data, ev, params, bon_gold, mesh, spec))


def _fit(data: SeedData, ev: EvalSet, params, bon_gold_NxK, mesh, spec) -> dict:
    """How well SFT fits the demonstrator: gold of both, and held-out NLL per response token."""
    rng = derived_rng(data.name, data.seed, "sft_fit")
    prompts = [
        [int(t) for t in row[m]]
        for row, m in zip(ev.prompts["prompt_tokens"], ev.prompts["prompt_mask"], strict=True)
    ]
    demo_gold = data.task.score(prompts, data.task.demonstrate(prompts, rng))
    held = make_sft_arrays(data.task, min(1024, spec.sft_examples), rng)
    logp = logprob_scores(spec.model, params, held, mesh)
    return {
        "demo_gold": float(np.mean(demo_gold)),
        "sft_gold": float(np.mean(bon_gold_NxK[:, : ev.samples_per_prompt])),
        "sft_gold_greedy": float(np.mean(ev.ref_gold_greedy)),
        "heldout_nll_per_token": float(-np.sum(logp) / np.sum(held["loss_mask"])),
    }


def label(spec: ReproduceSpec, data: SeedData, sft: Sft, source: str, mesh) -> dict:
    """Labelled pairs on the preference prompts, both responses drawn from `source`."""
    labels, rng = spec.labels, derived_rng(data.name, data.seed, "labels", source)
    if source == "sft":
        return labelled_pairs(
            data.task,
            spec.model,
            sft.params,
            data.pref_prompts,
            rng,
            mesh,
            labels.bt_scale,
            labels.temperature,
        )
    return wide_labelled_pairs(
        data.task, spec.model, sft.params, data.pref_prompts, rng, mesh, labels.bt_scale
    )
