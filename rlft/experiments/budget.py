"""One label budget of `rlft reproduce`: its reward model, every arm, their records.

A `Budget` is a prefix of N labelled pairs (from one pair source) of a `reproduce.TaskSeed`:
`train_reward_model` fits the global RM (normalised), `record(arm)` trains and evaluates one
arm (offline DPO, online DPO from SFT or from offline DPO, PPO, the oracle, the extra H3 arm)
and `run_budget` runs them all plus the diagnostics. Every unit is a JSON record on disk
(`cached_json`), so a rerun resumes where it stopped.
"""

import json
import math
import os
import time
import zlib
from typing import TYPE_CHECKING

import numpy as np

from rlft.data.bundle import DataBundle
from rlft.experiments import arms, control, diagnostics, policy_ops
from rlft.experiments.spec import task_key
from rlft.rollout import scoring
from rlft.tasks import BanditTask, make_prompt_arrays
from rlft.train.loop import train

if TYPE_CHECKING:
    from rlft.experiments.reproduce import TaskSeed


def cached_json(path: str, compute):
    """JSON record at `path`, computed once: the pipeline's unit of resumption."""
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    value = compute()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(value, f)
    os.replace(path + ".tmp", path)
    return value


class Budget:
    """One label budget and pair source of one (task, seed): the reward model, then the arms."""

    def __init__(self, ts: "TaskSeed", n: int, source: str = "sft"):
        self.ts, self.n, self.pairs = ts, n, ts.pairs[source]
        self.key = task_key(ts.name, source, ts.spec.labels.sources)  # the records' task name
        self.dir = os.path.join(ts.root, self.key, f"seed{ts.seed}", f"n{n}")
        self.train_rows = np.arange(n)
        num_pairs = len(self.pairs["chosen_tokens"])
        self.val_rows = np.arange(num_pairs - ts.spec.labels.num_val_pairs, num_pairs)
        self.prompts = {k: v[:n] for k, v in ts.pref_prompts.items()}

    def train_reward_model(self):
        ts, r = self.ts, self.ts.spec.reward
        bundle = DataBundle(
            ts.task.eos_id,
            ts.task.pad_id,
            ts.task.vocab_size,
            pairs=arms.take_pairs(self.pairs, self.train_rows),
            reference=ts.sft_arrays,
        )
        self.rm_dir = os.path.join(self.dir, "reward")
        steps = arms.epochs_to_steps(r.epochs, self.n, r.batch_size)
        train(
            ts.config(
                "reward",
                steps=steps,
                batch_size=r.batch_size,
                learning_rate=r.learning_rate,
                init={"policy": ts.sft_dir},
                reward=dict(model_class=r.pooling),
            ),
            self.rm_dir,
            progress=False,
            data=bundle,
        )
        self.rm_params, _ = scoring.load_reward_model(self.rm_dir, ts.spec.model, ts.mesh)

    def dpo_arm(self, name: str, pairs: dict, init_dir: str, temperature: float = 1.0) -> dict:
        ts, d = self.ts, self.ts.spec.dpo
        if not len(pairs["chosen_tokens"]):  # best_worst_pairs drops prompts whose K tie
            raise ValueError(
                f"{name}: no preference pairs, every prompt's samples scored equal; raise "
                f"config.online.temperature or num_samples"
            )
        bundle = DataBundle(ts.task.eos_id, ts.task.pad_id, ts.task.vocab_size, pairs=pairs)
        total = arms.epochs_to_steps(d.epochs, len(pairs["chosen_tokens"]), d.batch_size)

        def make_config(steps):
            return ts.config(
                "dpo",
                steps=steps,
                batch_size=d.batch_size,
                learning_rate=d.learning_rate,
                init={"policy": init_dir},
                dpo=dict(beta=d.beta, temperature=temperature),
            )

        workdir = os.path.join(self.dir, name)
        last, frontier = arms.train_with_frontier(
            make_config,
            workdir,
            bundle,
            total,
            d.eval_points,
            lambda w: ts.evaluate(w, self.rm_params),
        )
        return {**last, "frontier": frontier, "num_pairs": len(pairs["chosen_tokens"])}

    def online_pairs(self, arm: str, init_dir: str, scorer, prompts: dict | None = None) -> dict:
        """Best/worst of K samples from the policy at init_dir (on the budget's prompts)."""
        ts, o = self.ts, self.ts.spec.online
        params = arms.load_policy(init_dir, ts.spec.model, ts.mesh)
        # A generator per unit, so a resumed pipeline draws exactly what a fresh one would.
        rng = np.random.default_rng(
            [zlib.crc32(ts.name.encode()), ts.seed, self.n, zlib.crc32(arm.encode())]
        )
        return arms.best_worst_pairs(
            ts.task,
            ts.spec.model,
            params,
            self.prompts if prompts is None else prompts,
            scorer,
            rng,
            ts.mesh,
            num_samples=o.num_samples,
            temperature=o.temperature,
        )

    def more_prompts(self) -> dict:
        """The budget's prompts plus unlabelled task prompts, more_prompts_factor x in all (H3).

        The total is rounded up to a multiple of the mesh size (the sampler shards prompts).
        """
        ts, size = self.ts, self.ts.mesh.size
        total = math.ceil(round(ts.spec.online.more_prompts_factor * self.n, 6) / size) * size
        # Its own generator per unit, like online_pairs: a resumed run draws the same prompts.
        rng = np.random.default_rng(
            [zlib.crc32(ts.name.encode()), ts.seed, self.n, zlib.crc32(b"more_prompts")]
        )
        extra = make_prompt_arrays(ts.task, total - self.n, rng)
        return {k: np.concatenate([v, extra[k]]) for k, v in self.prompts.items()}

    def arm_dir(self, arm: str) -> str:
        """Where the arm's final policy is checkpointed."""
        return self.ts.sft_dir if arm == "sft" else os.path.join(self.dir, arm)

    def dpo_dir(self) -> str:
        """The offline-DPO policy (trained on demand: online-from-DPO and diagnostics need it)."""
        self.record("offline_dpo")
        return os.path.join(self.dir, "offline_dpo")

    def record(self, arm: str) -> dict:
        """The arm's evaluation record, trained and evaluated once, then read from disk."""
        t0 = time.time()
        return cached_json(
            os.path.join(self.dir, arm, "record.json"),
            lambda: {**self.run_arm(arm), "wall_s": time.time() - t0},
        )

    def rm_scorer(self, samples):
        return scoring.rm_scores(
            self.ts.spec.model,
            self.rm_params,
            samples,
            self.ts.mesh,
            model_class=self.ts.spec.reward.pooling,
        )

    def gold_scorer(self, samples):
        return policy_ops.gold_parts(self.ts.task, samples)["reward"]

    def run_arm(self, arm: str) -> dict:
        ts = self.ts
        offline_pairs = arms.take_pairs(self.pairs, self.train_rows)
        temp = ts.spec.online.temperature
        if arm == "sft":
            return {**ts.evaluate(ts.sft_dir, self.rm_params), "frontier": []}
        if arm == "offline_dpo":
            return self.dpo_arm(arm, offline_pairs, ts.sft_dir)
        if arm == "online_dpo":
            return self.dpo_arm(
                arm, self.online_pairs(arm, ts.sft_dir, self.rm_scorer), ts.sft_dir, temp
            )
        if arm == "online_dpo_more_prompts":
            prompts = self.more_prompts()
            pairs = self.online_pairs(arm, ts.sft_dir, self.rm_scorer, prompts)
            num_prompts = len(prompts["prompt_tokens"])
            return {**self.dpo_arm(arm, pairs, ts.sft_dir, temp), "num_prompts": num_prompts}
        if arm == "oracle_online_dpo":
            return self.dpo_arm(
                arm, self.online_pairs(arm, ts.sft_dir, self.gold_scorer), ts.sft_dir, temp
            )
        if arm == "online_dpo_from_dpo":
            dpo_dir = self.dpo_dir()
            return self.dpo_arm(arm, self.online_pairs(arm, dpo_dir, self.rm_scorer), dpo_dir, temp)
        if arm == "ppo":
            return self.ppo_arm()
        raise ValueError(f"unknown arm {arm!r}")

    def ppo_arm(self) -> dict:
        ts, p = self.ts, self.ts.spec.ppo
        bundle = DataBundle(
            ts.task.eos_id, ts.task.pad_id, ts.task.vocab_size, prompts=self.prompts
        )
        sections = dict(
            reward_model=dict(ts.spec.raw["model"]),
            ppo=dict(temperature=p.temperature),
            rollout=dict(
                response_len=ts.task.response_len, kl_coef=ts.spec.dpo.beta, num_minibatches=2
            ),
        )

        def make_config(steps):
            return ts.config(
                "ppo",
                steps=steps,
                batch_size=p.batch_size,
                learning_rate=p.learning_rate,
                init={"policy": ts.sft_dir, "reward": self.rm_dir},
                **sections,
            )

        last, frontier = arms.train_with_frontier(
            make_config,
            os.path.join(self.dir, "ppo"),
            bundle,
            p.iterations,
            p.eval_points,
            lambda w: ts.evaluate(w, self.rm_params),
        )
        return {**last, "frontier": frontier}


def run_budget(b: Budget, arm_names: tuple[str, ...], bar) -> tuple[list[dict], dict]:
    """The reward model, every arm and the diagnostics of one budget: (run records, diagnostics)."""
    where = f"{b.key} seed {b.ts.seed} N={b.n}"
    keys = {"task": b.key, "label_budget": b.n, "seed": b.ts.seed}
    bar.set_description(f"{where}: reward model")
    b.train_reward_model()
    bar.update(1)
    runs = []
    for arm in arm_names:
        bar.set_description(f"{where}: {arm}")
        runs.append({**keys, "arm": arm, **b.record(arm)})
        bar.update(1)
    diag = cached_json(os.path.join(b.dir, "diagnostics.json"), lambda: diagnostics.measure(b))
    if b.ts.task.response_len <= 2:  # one content token: the first token is the whole policy
        distances = diagnostics.policy_distances(b, arm_names)
        for run in runs:
            run["policy_distance"] = distances[run["arm"]]
    if isinstance(b.ts.task, BanditTask):  # the isomorphic control, also solved exactly
        path = os.path.join(b.dir, "isomorphic.json")
        diag = {**diag, "isomorphic": cached_json(path, lambda: control.measure(b, arm_names))}
    return runs, {**keys, **diag}
