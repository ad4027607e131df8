"""How each arm of rlft.experiments.arms.ARMS is trained and evaluated along its frontier.

Every arm's record is its frontier: point 0 is its starting policy, then `frontier.points`
checkpoints along its training. Each point holds the evaluation (evaluate.py) and `selection`,
the arm's own held-out objective (higher is better; no gold inside, except for the oracle arm,
whose own pairs are gold-scored), which picks its checkpoint:

    DPO arms          mean log sigmoid(beta * implicit margin) on held-out pairs of the arm's own
                      kind: the held-out labelled pairs (offline), or best/worst of K samples of
                      the starting policy on the held-out prompts by the arm's scorer (online)
    PPO, iterated     held-out RM score - beta * KL(pi || pi_sft) on the held-out pair prompts
                      (the KL-regularised objective both optimise; an iterated arm's rounds
                      see different pairs)

Online DPO computes log-probs from logits / T at its sampling temperature T, for policy and
reference alike (the paper's rule). Units are cached under fingerprints (units.py).
"""

import dataclasses
import math
import os
import time

import numpy as np

from rlft.data.bundle import DataBundle
from rlft.experiments.arms import ARMS, uses_reward_model
from rlft.experiments.pipeline import units
from rlft.experiments.pipeline.evaluate import (
    RewardModel,
    evaluate,
    gold_parts,
    load_policy,
    rng_key,
    sample,
)
from rlft.experiments.pipeline.pairs import best_worst_pairs, take_pairs
from rlft.experiments.pipeline.seed import SeedData, Sft, derived_rng
from rlft.experiments.pipeline.spec import ReproduceSpec
from rlft.experiments.pipeline.training import epochs_to_steps, stage_config, train_frontier
from rlft.rollout.scoring import logprob_scores
from rlft.tasks import log_sigmoid, make_prompt_arrays


@dataclasses.dataclass(frozen=True)
class Budget:
    """One label budget of one (task, seed, pair source), with its trained reward models."""

    spec: ReproduceSpec
    data: SeedData
    sft: Sft
    source: str
    pairs: dict  # every labelled pair of the seed; the budget uses the first n, val the last
    n: int
    dir: str
    mesh: object
    rms: dict[str, RewardModel]  # class -> trained reward model
    rm_dirs: dict[str, str]
    rm_fps: dict[str, str]
    labels_fp: str

    @property
    def train_rows(self) -> np.ndarray:
        """[n] the budget's labelled pairs: the first n of the pool."""
        return np.arange(self.n)

    @property
    def val_rows(self) -> np.ndarray:
        """[num_val_pairs] the held-out pairs: the last rows of the pool, shared by budgets."""
        total = len(self.pairs["chosen_tokens"])
        return np.arange(total - self.spec.labels.num_val_pairs, total)

    def prompts(self, rows) -> dict:
        """The pair prompts of `rows`: {'prompt_tokens', 'prompt_mask'} [len(rows), P]."""
        return {k: v[rows] for k, v in self.data.pref_prompts.items()}


def arm_dir(b: Budget, arm: str, model_class: str | None) -> str:
    """The arm's unit directory (per reward class when the arm uses the reward model)."""
    if arm == "sft":
        return b.sft.dir
    return (
        os.path.join(b.dir, model_class, arm)
        if uses_reward_model(arm)
        else os.path.join(b.dir, arm)
    )


def policy_dir(b: Budget, arm: str, model_class: str | None) -> str:
    """Where the arm's final policy is checkpointed (an iterated arm: its last round)."""
    unit = arm_dir(b, arm, model_class)
    return os.path.join(unit, f"round{b.spec.online.rounds - 1}") if ARMS[arm].iterated else unit


def _scorer(b: Budget, arm: str, model_class: str | None):
    if ARMS[arm].scorer == "gold":
        return lambda s: gold_parts(b.data.task, s)["reward"]
    return lambda s: b.rms[model_class].scores(b.spec.model, s, b.mesh)


def _point(b: Budget, workdir: str, selection) -> dict:
    params = b.sft.params if workdir == b.sft.dir else load_policy(workdir, b.spec.model, b.mesh)
    p = evaluate(b.sft.eval_set, params, b.rms)
    return {**p, "selection": selection(params, p) if selection else None}


def _rm_minus_kl(b: Budget, model_class: str):
    """Held-out RM score - beta * KL(pi || pi_sft) of T=1 samples on the held-out pair prompts
    (not the evaluation prompts, whose samples carry the reported gold), the same draws at
    every checkpoint; KL as in evaluate.py, nats per response."""
    cfg, mesh, task, rm = b.spec.model, b.mesh, b.data.task, b.rms[model_class]
    prompts = b.prompts(b.val_rows)

    def selection(params, _):
        rng = derived_rng(b.data.name, b.data.seed, b.n, "heldout_rm_kl")
        s = sample(cfg, params, prompts, task, rng_key(rng), mesh, num_samples=1, temperature=1.0)
        kl = np.mean(np.sum(s["logp"], axis=-1) - logprob_scores(cfg, b.sft.params, s, mesh))
        return float(np.mean(rm.scores(cfg, s, mesh)) - b.spec.beta * kl)

    return selection


def _heldout_dpo(b: Budget, held: dict, ref_params, temperature: float):
    """mean log sigmoid(beta * ((log pi - log ref)(chosen) - (log pi - log ref)(rejected))), or
    None at every point when there are no held-out pairs (every held-out prompt's K samples
    scored alike): then the arm has no selected checkpoint."""
    cfg, mesh = b.spec.model, b.mesh
    if not len(held["chosen_tokens"]):
        return lambda params, _: None

    def logps(params):
        return [
            logprob_scores(cfg, params, held, mesh, side, temperature)
            for side in ("chosen_", "rejected_")
        ]

    ref_c, ref_r = logps(ref_params)

    def selection(params, _):
        c, r = logps(params)
        margin = b.spec.beta * ((c - ref_c) - (r - ref_r))
        return float(np.mean(log_sigmoid(margin)))

    return selection


def _online_pairs(b: Budget, arm: str, cls, start_params, prompts: dict, purpose: str) -> dict:
    o = b.spec.online
    rng = derived_rng(b.data.name, b.data.seed, b.n, arm, str(cls), purpose)
    return best_worst_pairs(
        b.data.task,
        b.spec.model,
        start_params,
        prompts,
        _scorer(b, arm, cls),
        rng,
        b.mesh,
        k=o.num_samples,
        temperature=o.temperature,
    )


def _more_prompts(b: Budget) -> dict:
    """The budget's prompts plus fresh task prompts, more_prompts_factor x in all (H3); rounded
    up to a multiple of the mesh size (the sampler shards prompts)."""
    size = b.mesh.size
    total = math.ceil(round(b.spec.online.more_prompts_factor * b.n, 6) / size) * size
    extra = make_prompt_arrays(
        b.data.task, total - b.n, derived_rng(b.data.name, b.data.seed, b.n, "more_prompts")
    )
    return {k: np.concatenate([v, extra[k]]) for k, v in b.prompts(b.train_rows).items()}


def _dpo(b: Budget, workdir, pairs, start_dir, ref_dir, temperature, epochs, selection, offset=0):
    """Train DPO on `pairs` from start_dir (reference ref_dir) for `epochs`, along its frontier."""
    if not len(pairs["chosen_tokens"]):  # best_worst_pairs drops prompts whose K tie
        raise ValueError(
            f"{workdir}: no preference pairs, every prompt's samples scored equal; raise "
            "config.online.temperature or num_samples"
        )
    task, spec = b.data.task, b.spec
    steps = epochs_to_steps(epochs, len(pairs["chosen_tokens"]), spec.stages["dpo"]["batch_size"])
    config = stage_config(
        spec,
        "dpo",
        seed=b.data.seed,
        total_steps=steps,
        init={"policy": start_dir, "reference": ref_dir},
        extra={"dpo": {"temperature": temperature}},
    )
    bundle = DataBundle(
        task.eos_id, task.pad_id, task.vocab_size, pairs=take_pairs(pairs, slice(None))
    )
    return train_frontier(
        config, workdir, bundle, spec.frontier.points, lambda w, _: _point(b, w, selection), offset
    )


def run_arm(b: Budget, arm: str, cls: str | None) -> dict:
    """Train and evaluate one arm; its record: {frontier, selection_rule, num_pairs, ...}."""
    a, spec = ARMS[arm], b.spec
    start_dir = b.sft.dir if a.start == "sft" else arm_dir(b, "offline_dpo", None)
    start_params = load_policy(start_dir, spec.model, b.mesh)
    start = _point(b, start_dir, None)
    workdir = arm_dir(b, arm, cls)
    if a.kind == "sft":
        return {"frontier": [{"step": 0, **start}], "num_pairs": None, "num_prompts": None}
    if a.kind == "ppo":
        return _ppo(b, workdir, cls, start)
    if a.iterated:
        return _iterated(b, arm, cls, workdir, start)
    temperature = 1.0 if a.pairs == "labels" else spec.online.temperature
    val_prompts = b.prompts(b.val_rows)
    if a.pairs == "labels":
        pairs = take_pairs(b.pairs, b.train_rows)
        held = take_pairs(b.pairs, b.val_rows)
    else:
        prompts = _more_prompts(b) if a.prompts == "more" else b.prompts(b.train_rows)
        pairs = _online_pairs(b, arm, cls, start_params, prompts, "train")
        held = _online_pairs(b, arm, cls, start_params, val_prompts, "heldout")
    selection = _heldout_dpo(b, held, start_params, temperature)
    start = {**start, "selection": selection(start_params, start)}
    epochs = spec.epochs.dpo if a.pairs == "labels" else spec.epochs.online_dpo
    frontier = _dpo(b, workdir, pairs, start_dir, start_dir, temperature, epochs, selection)
    return {
        "frontier": [{"step": 0, **start}, *frontier],
        "num_pairs": int(len(pairs["chosen_tokens"])),
        "num_prompts": int(len(prompts["prompt_tokens"])) if a.pairs == "online" else b.n,
    }


def _iterated(b: Budget, arm: str, cls: str, workdir: str, start: dict) -> dict:
    """Rounds of: K samples of the current policy, RM best/worst, DPO from the current policy
    with the SFT reference; selection by held-out RM score - beta * KL across all rounds."""
    spec, selection = b.spec, _rm_minus_kl(b, cls)
    frontier = [{"step": 0, **start, "selection": selection(b.sft.params, start)}]
    current, num_pairs = b.sft.dir, []
    for r in range(spec.online.rounds):
        params = load_policy(current, spec.model, b.mesh)
        pairs = _online_pairs(b, arm, cls, params, b.prompts(b.train_rows), f"round{r}")
        round_dir = os.path.join(workdir, f"round{r}")
        points = _dpo(
            b,
            round_dir,
            pairs,
            current,
            b.sft.dir,
            spec.online.temperature,
            spec.epochs.online_dpo,
            selection,
            offset=frontier[-1]["step"],
        )
        frontier += points
        current, num_pairs = round_dir, [*num_pairs, int(len(pairs["chosen_tokens"]))]
    return {
        "frontier": frontier,
        "num_pairs": int(sum(num_pairs)),
        "num_prompts": b.n,
        "pairs_per_round": num_pairs,
    }


def _ppo(b: Budget, workdir: str, cls: str, start: dict) -> dict:
    spec, task = b.spec, b.data.task
    steps = epochs_to_steps(spec.epochs.ppo, b.n, spec.stages["ppo"]["batch_size"])
    config = stage_config(
        spec,
        "ppo",
        seed=b.data.seed,
        total_steps=steps,
        init={"policy": b.sft.dir, "reward": b.rm_dirs[cls]},
        extra={
            "reward_model": dict(spec.raw["model"]),
            "rollout": {"response_len": task.response_len},
        },
    )
    bundle = DataBundle(task.eos_id, task.pad_id, task.vocab_size, prompts=b.prompts(b.train_rows))
    selection = _rm_minus_kl(b, cls)
    frontier = train_frontier(
        config, workdir, bundle, spec.frontier.points, lambda w, _: _point(b, w, selection)
    )
    return {
        "frontier": [{"step": 0, **start, "selection": selection(b.sft.params, start)}, *frontier],
        "num_pairs": None,
        "num_prompts": b.n,
    }


def arm_settings(b: Budget, arm: str, cls: str | None) -> dict:
    """Everything an arm's record depends on (its unit fingerprint)."""
    a, spec = ARMS[arm], b.spec
    up = {"sft": b.sft.fingerprint, "labels": b.labels_fp, "rms": b.rm_fps}
    if a.start == "offline_dpo":
        up["start"] = units.fingerprint(arm_settings(b, "offline_dpo", None))
    stages = {s: spec.stages[s] for s in ("dpo", "ppo")}
    evaluation = {k: v for k, v in dataclasses.asdict(spec.eval).items() if k != "primary"}
    extra = {"devices": b.mesh.size} if a.prompts == "more" else {}  # prompts round to it
    return extra | {
        "arm": dataclasses.asdict(a),
        "class": cls,
        "n": b.n,
        "beta": spec.beta,
        "up": up,
        "stages": stages,
        "online": dataclasses.asdict(spec.online),
        "epochs": dataclasses.asdict(spec.epochs),
        "frontier": spec.frontier.points,
        "eval": evaluation,  # `primary` only picks the report's headline
        "model": spec.raw["model"],
    }


def arm_record(b: Budget, arm: str, cls: str | None) -> dict:
    """The arm's record, trained and evaluated once under its fingerprint, then read."""
    if ARMS[arm].start == "offline_dpo":
        arm_record(b, "offline_dpo", None)  # its final policy is this arm's start
    unit = arm_dir(b, arm, cls) if arm != "sft" else os.path.join(b.dir, "sft_eval")
    t0 = time.time()

    def compute():
        rule = ARMS[arm].selection_rule  # the arm table says which objective picks
        return {**run_arm(b, arm, cls), "selection_rule": rule, "wall_s": time.time() - t0}

    return units.cached(unit, arm_settings(b, arm, cls), compute)
