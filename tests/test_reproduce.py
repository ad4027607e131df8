"""`rlft reproduce` end to end on a micro config: every arm, results schema, resume."""

import json
import os

import flax.linen as nn
import jax
import numpy as np
import pytest

from rlft.config import REPO_CONFIGS, load_config
from rlft.experiments import arms
from rlft.experiments.reproduce import run_reproduce
from rlft.experiments.spec import ARMS, parse_reproduce
from rlft.models import init_params, model_config
from rlft.parallel import make_mesh
from rlft.tasks import make_prompt_arrays, make_task

REPRODUCE = os.path.join(REPO_CONFIGS, "reproduce.py")


def _micro():
    c = load_config(REPRODUCE, "quick")
    c.label_budgets = (64,)
    c.sft.update(num_examples=512, steps=40)
    c.labels.num_val_pairs = 64
    c.reward.epochs = 1.0
    c.dpo.update(epochs=1.0, eval_points=1)
    c.ppo.update(iterations=2, eval_points=1)
    c.online.num_samples = 4
    c.eval.update(num_prompts=32, samples_per_prompt=2, best_of_n=(1, 2, 4))
    return c


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("reproduce"))
    return workdir, run_reproduce(_micro(), workdir, progress=False)


def test_results_schema_and_every_arm(micro_run):
    workdir, _ = micro_run
    with open(os.path.join(workdir, "results.json")) as f:
        results = json.load(f)
    assert {r["arm"] for r in results["runs"]} == set(ARMS)
    for r in results["runs"]:
        assert {"task", "label_budget", "seed", "arm"} <= set(r)
        for key in ("gold_reward", "win_rate_vs_sft", "kl_to_ref"):
            assert np.isfinite(r[key]), (r["arm"], key)
        assert 0.0 <= r["win_rate_vs_sft"] <= 1.0
    sft = next(r for r in results["runs"] if r["arm"] == "sft")
    assert abs(sft["kl_to_ref"]) < 1e-4  # the reference is the SFT policy itself
    for s in results["summary"]:
        assert s["n_seeds"] == 1 and isinstance(s["gold_reward_ci95"], list)
    diag = results["diagnostics"]
    assert diag
    for d in diag:
        assert 0.0 <= d["rm_heldout_accuracy"] <= 1.0 and 0.0 <= d["dpo_heldout_accuracy"] <= 1.0
    assert os.path.exists(os.path.join(workdir, "report.md"))


def test_rerun_resumes_from_records(micro_run):
    workdir, first = micro_run
    record = os.path.join(workdir, "keyed", "seed0", "n64", "online_dpo", "record.json")
    mtime = os.path.getmtime(record)
    again = run_reproduce(_micro(), workdir, progress=False)
    assert os.path.getmtime(record) == mtime
    strip = lambda rs: [{k: v for k, v in r.items() if k != "wall_s"} for r in rs]  # noqa: E731
    assert strip(again["runs"]) == strip(first["runs"])


def test_best_worst_pairs_order_by_scorer():
    task = make_task("keyed")
    cfg = model_config("tiny")
    params = nn.unbox(init_params("lm", cfg, jax.random.PRNGKey(0)))
    rng = np.random.default_rng(0)
    prompts = make_prompt_arrays(task, 8, rng)
    scores_seen = {}

    def scorer(samples):  # any deterministic score: response length
        s = samples["loss_mask"].sum(-1).astype(float) + rng.random(len(samples["tokens"])) * 0.1
        scores_seen["s"] = s
        return s

    pairs = arms.best_worst_pairs(
        task,
        cfg,
        params,
        prompts,
        scorer,
        rng,
        make_mesh(1, 1, jax.devices()[:1]),
        num_samples=4,
        temperature=1.0,
    )
    s_NxK = scores_seen["s"].reshape(8, 4)
    np.testing.assert_allclose(pairs["chosen_score"], s_NxK.max(1)[pairs["prompt_index"]])
    np.testing.assert_allclose(pairs["rejected_score"], s_NxK.min(1)[pairs["prompt_index"]])


def test_reproduce_config_rejects_unknown_arm_and_task():
    c = load_config(REPRODUCE)
    c.arms = ("sft", "dpo_online")
    with pytest.raises(ValueError, match="dpo_online"):
        parse_reproduce(c)
    c = load_config(REPRODUCE)
    c.tasks = ("kyed",)
    with pytest.raises(ValueError, match="kyed"):
        parse_reproduce(c)
