"""One label budget of one (task, seed, pair source): reward models, arms, diagnostics, records.

The budget's reward models (one per config.reward_classes entry) are trained first; then every
arm (those that use a reward model once per class, the others once) and the diagnostics. Each
(task, source, class) is a cell of the records; an arm that does not use the reward model
appears in every cell with the same numbers (its frontier carries every class's RM score).
"""

import dataclasses
import os

from rlft.data.bundle import DataBundle
from rlft.experiments.arms import uses_reward_model
from rlft.experiments.pipeline import control, diagnostics, units
from rlft.experiments.pipeline.arm_runs import Budget, arm_record, arm_settings
from rlft.experiments.pipeline.evaluate import RewardModel
from rlft.experiments.pipeline.pairs import take_pairs
from rlft.experiments.pipeline.seed import SeedData, Sft
from rlft.experiments.pipeline.spec import cell_key
from rlft.experiments.pipeline.training import deep_merge, epochs_to_steps, stage_config, train_to
from rlft.rollout.scoring import load_reward_model
from rlft.tasks import BanditTask


def train_reward_model(b: Budget, model_class: str) -> tuple[RewardModel, str, str]:
    """The class's Bradley-Terry RM on the budget's pairs, normalised: (model, dir, fingerprint)."""
    spec, task = b.spec, b.data.task
    extra = deep_merge(
        spec.reward_class_overrides.get(model_class, {}), {"reward": {"model_class": model_class}}
    )
    batch_size = deep_merge(spec.stages["reward"], extra)["batch_size"]
    config = stage_config(
        spec,
        "reward",
        seed=b.data.seed,
        init={"policy": b.sft.dir},
        extra=extra,
        total_steps=epochs_to_steps(spec.epochs.reward, b.n, batch_size),
    )
    path = os.path.join(b.dir, model_class, "reward")
    # Upstream units by fingerprint, not by path: the same config under another spelling of
    # --workdir is the same unit.
    recipe = {k: v for k, v in config.items() if k != "init"}
    fp = units.claim(path, {"config": recipe, "sft": b.sft.fingerprint, "labels": b.labels_fp})
    bundle = DataBundle(
        task.eos_id,
        task.pad_id,
        task.vocab_size,
        pairs=take_pairs(b.pairs, b.train_rows),
        reference=b.data.sft_arrays,
    )
    train_to(config, path, bundle)
    params, saved_class = load_reward_model(path, spec.model, b.mesh)
    return RewardModel(params, saved_class), path, fp


def make_budget(spec, data: SeedData, sft: Sft, source: str, pairs, labels_fp, n, mesh) -> Budget:
    """Budget n of (task, seed, source) with one trained reward model per reward class."""
    base = data.dir if spec.labels.sources == ("sft",) else os.path.join(data.dir, source)
    b = Budget(
        spec, data, sft, source, pairs, n, os.path.join(base, f"n{n}"), mesh, {}, {}, {}, labels_fp
    )
    trained = {c: train_reward_model(b, c) for c in spec.reward_classes}
    return dataclasses.replace(
        b,
        rms={c: t[0] for c, t in trained.items()},
        rm_dirs={c: t[1] for c, t in trained.items()},
        rm_fps={c: t[2] for c, t in trained.items()},
    )


def _cell_run(record: dict, cls: str) -> dict:
    """An arm's record as seen from one cell: the cell's RM score at every frontier point."""
    frontier = []
    for p in record["frontier"]:
        q = {k: v for k, v in p.items() if k not in ("rm_scores", "rm_scores_greedy")}
        frontier.append(
            q | {"rm_score": p["rm_scores"][cls], "rm_score_greedy": p["rm_scores_greedy"][cls]}
        )
    return {**record, "frontier": frontier}


def run_budget(b: Budget, arm_names, bar) -> tuple[list[dict], list[dict]]:
    """Every arm and the diagnostics of one budget: (run records, diagnostics records)."""
    spec = b.spec
    records = {}
    for arm in arm_names:
        for cls in spec.reward_classes if uses_reward_model(arm) else (None,):
            bar.set_description(f"{b.data.name} seed {b.data.seed} N={b.n}: {arm} {cls or ''}")
            records[arm, cls] = arm_record(b, arm, cls)
            bar.update(1)
    arm_record(b, "offline_dpo", None)  # diagnostics read offline DPO whether or not it is an arm
    runs, diags = [], []
    for cls in spec.reward_classes:
        key = cell_key(b.data.name, b.source, cls, spec)
        keys = {"task": key, "label_budget": b.n, "seed": b.data.seed}
        cell_diag = os.path.join(b.dir, cls, "diagnostics")
        offline = units.fingerprint(arm_settings(b, "offline_dpo", None))
        settings = {"rm": b.rm_fps[cls], "offline_dpo": offline, "eval": spec.eval.best_of_n}
        diag = units.cached(cell_diag, settings, lambda c=cls: diagnostics.measure(b, c))
        cell_runs = []
        for (arm, arm_cls), record in records.items():
            if arm_cls in (None, cls):
                cell_runs.append({**keys, "arm": arm, **_cell_run(record, cls)})
        if b.data.task.response_len <= 2:  # one content token: the first token is the policy
            distances = diagnostics.policy_distances(b, arm_names, cls)
            for run in cell_runs:
                run["policy_distance"] = distances[run["arm"]]
        if isinstance(b.data.task, BanditTask):  # the isomorphic control, also solved exactly
            path = os.path.join(b.dir, cls, "isomorphic")
            trained = {  # the control measures every arm's policy: their units are inputs
                arm: units.fingerprint(
                    arm_settings(b, arm, cls if uses_reward_model(arm) else None)
                )
                for arm in dict.fromkeys(("offline_dpo", *arm_names))
            }
            iso_settings = {**settings, "arms": trained}
            iso = units.cached(path, iso_settings, lambda c=cls: control.measure(b, arm_names, c))
            diag = {**diag, "isomorphic": iso}
        runs += cell_runs
        diags.append({**keys, **diag})
    return runs, diags
