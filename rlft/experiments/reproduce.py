"""`rlft reproduce`: the paper's offline-vs-online comparison, end to end, per task/seed/budget.

For each task and seed: SFT on the task's demonstrations; preference pairs = two SFT samples
per prompt labelled by Bradley-Terry on the gold reward. For each label budget N (a prefix of
those pairs): the global reward model (normalised), then the arms — offline DPO, online DPO
(best/worst of K SFT samples by the RM), online DPO from the offline-DPO policy, PPO against
the RM, an oracle online DPO scored by the gold verifier — all with the same beta and the SFT
reference. Each arm is evaluated with the verifier on held-out prompts along its training
(reward-KL frontier). Every unit writes its record to disk, so a rerun resumes where it stopped.

Hypothesis extras. The optional arm online_dpo_more_prompts is online DPO on the budget's
prompts plus unlabelled ones, online.more_prompts_factor x as many pairs (H3). With
labels.sources = ("sft", "wide") every budget runs once per pair source, recorded as tasks
`{task}_narrow` and `{task}_wide` (H4; SFT and prompts shared). Several budgets fill the
learning curves; one-content-token tasks get each arm's first-token distance to offline DPO.
"""

import json
import math
import os
import time
import zlib

import jax
import numpy as np
from tqdm.auto import tqdm

from rlft.data.bundle import DataBundle
from rlft.experiments import arms, control, diagnostics, policy_ops
from rlft.experiments.spec import ReproduceSpec, parse_reproduce, task_key
from rlft.objectives import reward
from rlft.parallel import make_mesh
from rlft.tasks import BanditTask, Task, make_prompt_arrays, make_sft_arrays, make_task
from rlft.train.checkpoint import load_params
from rlft.train.loop import train


def _cached(path: str, compute):
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


class TaskSeed:
    """Everything shared by the budgets of one (task, seed): data, SFT, eval samples."""

    def __init__(self, spec: ReproduceSpec, name: str, seed: int, root: str, mesh):
        self.spec, self.name, self.seed, self.mesh, self.root = spec, name, seed, mesh, root
        self.task: Task = make_task(name, **spec.task_knobs.get(name, {}))
        self.dir = os.path.join(root, name, f"seed{seed}")
        self.rng = np.random.default_rng([zlib.crc32(name.encode()), seed])
        t, cfg = self.task, spec.model
        if t.vocab_size > cfg.vocab_size:
            raise ValueError(
                f"task {name!r} needs vocab {t.vocab_size} > model.vocab_size "
                f"{cfg.vocab_size}; raise config.model.vocab_size"
            )
        self.sft_arrays = make_sft_arrays(t, spec.sft.num_examples, self.rng)
        self.eval_prompts = make_prompt_arrays(t, spec.eval.num_prompts, self.rng, held_out=True)
        n_pref = max(spec.label_budgets) + spec.labels.num_val_pairs
        self.pref_prompts = make_prompt_arrays(t, n_pref, self.rng)
        self.bundle = DataBundle(t.eos_id, t.pad_id, t.vocab_size, sft=self.sft_arrays)

    def config(self, objective, **kw):
        return arms.stage_config(objective, self.spec, seed=self.seed, **kw)

    def train_sft(self):
        s = self.spec.sft
        path = os.path.join(self.dir, "sft")
        train(
            self.config(
                "mle",
                steps=s.steps,
                batch_size=s.batch_size,
                learning_rate=s.learning_rate,
                init={"policy": s.init},  # "": random init; else a pretrained checkpoint
            ),
            path,
            progress=False,
            data=self.bundle,
        )
        self.sft_dir, self.sft_params = path, arms.load_policy(path, self.spec.model, self.mesh)
        # SFT samples on the eval prompts: the win-rate baseline and the Best-of-N pool.
        k = max(self.spec.eval.best_of_n + (self.spec.eval.samples_per_prompt,))
        self.sft_samples = policy_ops.sample(
            self.spec.model,
            self.sft_params,
            self.eval_prompts,
            self.task,
            arms.rng_key(self.rng),
            self.mesh,
            num_samples=k,
            temperature=1.0,
        )
        self.sft_gold_NxK = policy_ops.gold_parts(self.task, self.sft_samples)["reward"].reshape(
            -1, k
        )
        m = self.spec.eval.samples_per_prompt
        self.sft_gold_matched = self.sft_gold_NxK[:, :m].reshape(-1)
        self.pairs = {source: self.label(source) for source in self.spec.labels.sources}

    def label(self, source: str) -> dict:
        """Labelled pairs on the preference prompts, both responses drawn from `source`."""
        labels, cfg = self.spec.labels, self.spec.model
        if source == "sft":  # self.rng, right after the eval samples: the original draw order
            return arms.labelled_pairs(
                self.task,
                cfg,
                self.sft_params,
                self.pref_prompts,
                self.rng,
                self.mesh,
                labels.bt_scale,
                labels.temperature,
            )
        rng = np.random.default_rng(
            [zlib.crc32(self.name.encode()), self.seed, zlib.crc32(source.encode())]
        )
        return arms.wide_labelled_pairs(
            self.task, cfg, self.sft_params, self.pref_prompts, rng, self.mesh, labels.bt_scale
        )

    def evaluate(self, workdir: str, rm_params) -> dict:
        params = arms.load_policy(workdir, self.spec.model, self.mesh)
        return policy_ops.evaluate_policy(
            self.spec.model,
            params,
            self.sft_params,
            rm_params,
            self.task,
            self.eval_prompts,
            self.sft_gold_matched,
            arms.rng_key(np.random.default_rng(self.seed)),
            self.mesh,
            self.spec.eval.samples_per_prompt,
            self.spec.reward.pooling,
        )


class Budget:
    """One label budget and pair source of one (task, seed): the reward model, then the arms."""

    def __init__(self, ts: TaskSeed, n: int, source: str = "sft"):
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
                reward=dict(pooling=r.pooling),
            ),
            self.rm_dir,
            progress=False,
            data=bundle,
        )
        kind = reward.model_kind(r.pooling)
        self.rm_params = load_params(self.rm_dir, "reward", kind, ts.spec.model, ts.mesh)

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
        return _cached(
            os.path.join(self.dir, arm, "record.json"),
            lambda: {**self.run_arm(arm), "wall_s": time.time() - t0},
        )

    def rm_scorer(self, samples):
        return policy_ops.rm_scores(
            self.ts.spec.model,
            self.rm_params,
            samples,
            self.ts.mesh,
            pooling=self.ts.spec.reward.pooling,
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
    diag = _cached(os.path.join(b.dir, "diagnostics.json"), lambda: diagnostics.measure(b))
    if b.ts.task.response_len <= 2:  # one content token: the first token is the whole policy
        distances = diagnostics.policy_distances(b, arm_names)
        for run in runs:
            run["policy_distance"] = distances[run["arm"]]
    if isinstance(b.ts.task, BanditTask):  # the isomorphic control, also solved exactly
        path = os.path.join(b.dir, "isomorphic.json")
        diag = {**diag, "isomorphic": _cached(path, lambda: control.measure(b, arm_names))}
    return runs, {**keys, **diag}


def learning_curves(diags: list[dict]) -> list[dict]:
    """RM and DPO held-out accuracy per (task, seed, budget), when several budgets ran."""
    if len({d["label_budget"] for d in diags}) < 2:
        return []  # a single budget is no curve
    fields = ("rm_heldout_accuracy", "dpo_heldout_accuracy")
    return [
        {"task": d["task"], "seed": d["seed"], "n_pairs": d["label_budget"]}
        | {k: d[k] for k in fields}
        for d in diags
    ]


def run_reproduce(config, workdir: str, progress: bool = True) -> dict:
    """Run every task x seed x source x budget x arm; write results.json, report.md and plots."""
    spec = parse_reproduce(config)
    mesh = make_mesh(spec.parallel.data, spec.parallel.fsdp)
    start = time.time()
    sources = spec.labels.sources
    per_seed = 1 + len(sources) * len(spec.label_budgets) * (1 + len(spec.arms))
    bar = tqdm(
        total=len(spec.tasks) * len(spec.seeds) * per_seed,
        desc="reproduce",
        disable=not progress or jax.process_index() != 0,
        dynamic_ncols=True,
    )
    records = {"runs": [], "diagnostics": [], "curves": [], "tasks": {}}
    for name in spec.tasks:
        for seed in spec.seeds:
            bar.set_description(f"{name} seed {seed}: sft + labels")
            ts = TaskSeed(spec, name, seed, workdir, mesh)
            ts.train_sft()
            bar.update(1)
            for source in sources:
                key = task_key(name, source, sources)
                records["tasks"][key] = _task_entry(ts.task, source, key != name)
                for n in spec.label_budgets:
                    runs, diag = run_budget(Budget(ts, n, source), spec.arms, bar)
                    records["runs"] += runs
                    records["diagnostics"].append(diag)
    bar.close()
    records["curves"] = learning_curves(records["diagnostics"])
    records["wall_time_s"] = time.time() - start
    from rlft.experiments.report import write_outputs  # noqa: PLC0415

    return write_outputs(workdir, spec.raw, records)


SOURCE_NOTES = {
    "sft": "Preference pairs: two SFT samples per prompt (narrow, the paper's data).",
    "wide": "Preference pairs: each response from the SFT policy at temperature 1 or 2 or the "
    "demonstrator, drawn at random (wide data).",
}


def _task_entry(task: Task, source: str, suffixed: bool) -> dict:
    desc = task.describe() + (f" {SOURCE_NOTES[source]}" if suffixed else "")
    return {
        "description": desc,
        "vocab_size": task.vocab_size,
        "prompt_len": task.prompt_len,
        "response_len": task.response_len,
        "label_source": source,
    }
