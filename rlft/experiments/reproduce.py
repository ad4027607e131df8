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
This module holds the per-(task, seed) part (`TaskSeed`) and the loop; budget.py one budget.
"""

import os
import time
import zlib

import jax
import numpy as np
from tqdm.auto import tqdm

from rlft.data.bundle import DataBundle
from rlft.experiments import arms, policy_ops
from rlft.experiments.budget import Budget, run_budget
from rlft.experiments.spec import ReproduceSpec, parse_reproduce, task_key
from rlft.parallel import make_mesh
from rlft.tasks import Task, make_prompt_arrays, make_sft_arrays, make_task
from rlft.train.loop import train


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
    from rlft.experiments.report.render import write_outputs  # noqa: PLC0415

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
