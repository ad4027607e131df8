"""`rlft reproduce`: the paper's offline-vs-online comparison, end to end (configs/reproduce.py).

For each task and seed (seed.py): the seed's own hidden task, SFT on its demonstrations, and
preference pairs = two SFT samples per prompt labelled by Bradley-Terry on the gold reward. For
each pair source and label budget N (a prefix of those pairs; budget.py): one reward model per
reward-model class, then every arm (arm_runs.py) trained along its frontier, and the
diagnostics. The records go to the report (rlft/experiments/report), which writes results.json,
report.md and plots. Every unit is fingerprinted (units.py): a rerun resumes; a rerun with
changed settings stops at the first unit they change instead of reusing it (adding seeds,
tasks or arms reuses the units whose settings are unchanged; a larger label budget changes the
pair pool, so every unit below the SFT).
"""

import dataclasses
import os
import time

import jax
from tqdm.auto import tqdm

from rlft.experiments.arms import uses_reward_model
from rlft.experiments.pipeline import seed as seeds
from rlft.experiments.pipeline import units
from rlft.experiments.pipeline.budget import make_budget, run_budget
from rlft.experiments.pipeline.spec import ReproduceSpec, cell_key, parse_reproduce, resolved
from rlft.experiments.pipeline.training import STEP_BARS
from rlft.experiments.report.render import write_outputs
from rlft.parallel import make_mesh
from rlft.train.workdir import CONFIG_FILE, code_version, workdir_lock

SOURCE_NOTES = {
    "sft": "Preference pairs: two SFT samples per prompt (narrow, the paper's data).",
    "wide": "Preference pairs: each response from the SFT policy at temperature 1 or 2 or the "
    "demonstrator, drawn at random (wide data).",
}


def learning_curves(diags: list[dict]) -> list[dict]:
    """RM and DPO held-out accuracy per (cell, seed, budget), when several budgets ran."""
    if len({d["label_budget"] for d in diags}) < 2:
        return []  # a single budget is no curve
    fields = ("rm_heldout_accuracy", "dpo_heldout_accuracy")
    return [
        {"task": d["task"], "seed": d["seed"], "n_pairs": d["label_budget"]}
        | {k: d[k] for k in fields}
        for d in diags
    ]


def _units_per_seed(spec: ReproduceSpec) -> int:
    per_budget = sum(len(spec.reward_classes) if uses_reward_model(a) else 1 for a in spec.arms)
    return 1 + len(spec.labels.sources) * len(spec.label_budgets) * per_budget


def _cell_entry(spec, data, source: str, cls: str) -> dict:
    t = data.task
    several = spec.labels.sources != ("sft",)
    return {
        "task": data.name,
        "family": data.family,
        "knobs": {k: v for k, v in data.knobs.items() if k != "seed"},
        "description": t.describe() + (f" {SOURCE_NOTES[source]}" if several else ""),
        "vocab_size": t.vocab_size,
        "prompt_len": t.prompt_len,
        "response_len": t.response_len,
        "label_source": source,
        "reward_class": cls,
    }


def run_reproduce(config, workdir: str, progress: bool = True) -> dict:
    """Run every task x seed x source x budget x arm; write results.json, report.md, plots.
    Raises WorkdirLocked if another live rlft process holds `workdir`."""
    token = STEP_BARS.set(progress)  # each unit's step bar beneath the unit bar
    try:
        with workdir_lock(workdir):
            return _run_reproduce(config, workdir, progress)
    finally:
        STEP_BARS.reset(token)


def _run_reproduce(config, workdir: str, progress: bool) -> dict:
    spec = parse_reproduce(config)
    config_record = {**resolved(spec), "code": code_version()}  # the code is part of the record
    record = os.path.join(workdir, CONFIG_FILE)  # what a person reads to see what ran here
    if jax.process_index() == 0 and not os.path.exists(record):
        units.write_json(record, config_record)  # a rerun rewrites it only once it has finished
    mesh = make_mesh(spec.parallel.data, spec.parallel.fsdp)
    start = time.time()
    bar = tqdm(
        total=len(spec.tasks) * len(spec.seeds) * _units_per_seed(spec),
        desc="reproduce",
        disable=not progress or jax.process_index() != 0,
        dynamic_ncols=True,
    )
    records = {"runs": [], "diagnostics": [], "curves": [], "tasks": {}}
    for name in spec.tasks:
        for seed in spec.seeds:
            bar.set_description(f"{name} seed {seed}: sft + labels")
            data = seeds.draw(spec, name, seed, workdir)
            sft = seeds.train_sft(spec, data, mesh)
            bar.update(1)
            for source in spec.labels.sources:
                pairs = seeds.label(spec, data, sft, source, mesh)
                labels_fp = units.fingerprint(  # the pair pool: labelling, source, its size
                    {
                        "sft": sft.fingerprint,
                        "labels": dataclasses.asdict(spec.labels),
                        "source": source,
                        "prompts": len(data.pref_prompts["prompt_tokens"]),
                    }
                )
                for cls in spec.reward_classes:
                    key = cell_key(name, source, cls, spec)
                    records["tasks"][key] = _cell_entry(spec, data, source, cls)
                for n in spec.label_budgets:
                    b = make_budget(spec, data, sft, source, pairs, labels_fp, n, mesh)
                    runs, diags = run_budget(b, spec.arms, bar)
                    records["runs"] += runs
                    records["diagnostics"] += diags
    bar.close()
    records["curves"] = learning_curves(records["diagnostics"])
    records["settings"] = {
        "beta": spec.beta,
        "greedy_temperature": spec.eval.greedy_temperature,
        "sample_temperature": 1.0,
        "primary_eval": spec.eval.primary,
    }
    records["wall_time_s"] = time.time() - start
    results = write_outputs(workdir, config_record, records)
    if jax.process_index() == 0:
        units.write_json(record, config_record)
    return results
