"""`rlft reproduce` end to end on micro configs: every arm, results schema, resume, and the
hypothesis extras (more-prompts arm, narrow/wide pair sources, curves, policy distances)."""

import json
import math
import os

import flax.linen as nn
import jax
import numpy as np
import pytest

from rlft.config import load_config, parse_config
from rlft.experiments import arms, diagnostics, policy_ops
from rlft.experiments.report.judge import NOT_RUN
from rlft.experiments.reproduce import run_reproduce
from rlft.experiments.spec import ARMS, ParallelSpec, parse_reproduce
from rlft.models import init_params, model_config
from rlft.parallel import make_mesh
from rlft.tasks import make_prompt_arrays, make_task
from tests.helpers import REPO_CONFIGS

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
    for d in (p for row in diag for p in row["per_seed"]):
        assert 0.0 <= d["rm_heldout_accuracy"] <= 1.0 and 0.0 <= d["dpo_heldout_accuracy"] <= 1.0
    assert results["curves"] == []  # one budget: no learning curve
    assert all("policy_distance" not in r for r in results["runs"])  # keyed: 6 response tokens
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
    c = load_config(REPRODUCE)
    c.labels.sources = ("sft", "broad")
    with pytest.raises(ValueError, match="broad"):
        parse_reproduce(c)


def test_parallel_section_lays_out_every_stage():
    """`parallel` reaches each stage's mesh and accumulation; left out, the defaults apply."""
    c = load_config(REPRODUCE)
    c.parallel = dict(data=1, fsdp=-1, accum_steps=4)
    stage = arms.stage_config(
        "dpo", parse_reproduce(c), seed=0, steps=3, batch_size=8, learning_rate=1e-3
    )
    assert (stage["mesh"]["data"], stage["mesh"]["fsdp"], stage["optim"]["accum_steps"]) == (
        1,
        -1,
        4,
    )
    run = parse_config(stage)  # what `train` checks: 8 rows split into 4 micro-batches
    assert run.optim.accum_steps == 4 and run.mesh.fsdp == -1
    del c.parallel
    assert parse_reproduce(c).parallel == ParallelSpec()
    c.parallel = dict(data=1, tensor=2)
    with pytest.raises(ValueError, match="config.parallel.tensor"):
        parse_reproduce(c)


def test_hypotheses_variant_adds_the_extra_arm_and_sources():
    spec = parse_reproduce(load_config(REPRODUCE, "hypotheses"))
    assert spec.arms == (*ARMS, "online_dpo_more_prompts") and spec.label_budgets == (256, 1024)
    assert spec.labels.sources == ("sft", "wide") and spec.online.more_prompts_factor == 2.3
    default = parse_reproduce(load_config(REPRODUCE))
    assert default.arms == ARMS and default.labels.sources == ("sft",)


def _micro_hypotheses():
    """The bandit with two budgets, both pair sources and the extra arm (H3, H4, curves)."""
    c = _micro()
    c.tasks = ("bandit",)
    c.label_budgets = (32, 64)
    c.labels.sources = ("sft", "wide")
    c.arms = ("sft", "offline_dpo", "online_dpo", "online_dpo_more_prompts")
    return c


@pytest.fixture(scope="module")
def hypotheses_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("reproduce_hypotheses"))
    return run_reproduce(_micro_hypotheses(), workdir, progress=False)


@pytest.mark.slow  # a second end-to-end run; CI runs slow tests
def test_sources_become_tasks_and_curves_fill(hypotheses_run):
    results = hypotheses_run
    keys = {"bandit_narrow", "bandit_wide"}
    assert set(results["tasks"]) == keys
    assert {r["task"] for r in results["runs"]} == keys
    assert {(c["task"], c["n_pairs"]) for c in results["curves"]} == {
        (k, n) for k in keys for n in (32, 64)
    }
    h4 = [r for r in results["hypotheses"] if r["id"] == "H4"]
    assert {r["task"] for r in h4} == keys and all(r["verdict"] != NOT_RUN for r in h4)
    # The narrow copy stands in for the plain task in the role-based hypotheses.
    control = [r for r in results["hypotheses"] if r["id"] == "control"]
    assert {r["task"] for r in control} == {"bandit_narrow"}
    assert all(r["verdict"] != NOT_RUN for r in control)
    assert any("first-token TV" in r["note"] for r in control)  # the arms' distances
    assert any("exact tabular" in r["quantity"] for r in control)  # the isomorphic solve
    h3 = [r for r in results["hypotheses"] if r["id"] == "H3"]
    assert len(h3) == 4 and all("online_dpo_more_prompts" in r["quantity"] for r in h3)
    # Same prompts, different pair sources: the RMs saw different labels.
    narrow, wide = (
        {(r["label_budget"], r["arm"]): r for r in results["runs"] if r["task"] == k}
        for k in ("bandit_narrow", "bandit_wide")
    )
    assert narrow[64, "offline_dpo"]["gold_reward"] != wide[64, "offline_dpo"]["gold_reward"]
    assert narrow[64, "sft"]["gold_reward"] == wide[64, "sft"]["gold_reward"]  # one SFT


@pytest.mark.slow  # a second end-to-end run; CI runs slow tests
def test_more_prompts_arm_has_factor_times_the_pairs(hypotheses_run):
    factor, devices = _micro_hypotheses().online.more_prompts_factor, jax.device_count()
    runs = {(r["task"], r["label_budget"], r["arm"]): r for r in hypotheses_run["runs"]}
    for task in ("bandit_narrow", "bandit_wide"):
        for n in (32, 64):
            more, base = runs[task, n, "online_dpo_more_prompts"], runs[task, n, "online_dpo"]
            assert factor * n <= more["num_prompts"] < factor * n + devices
            assert more["num_pairs"] <= more["num_prompts"] and base["num_pairs"] <= n
            # Degenerate prompts (all K samples score the same) are dropped on both sides.
            assert math.isclose(more["num_pairs"] / base["num_pairs"], factor, rel_tol=0.15)


@pytest.mark.slow  # a second end-to-end run; CI runs slow tests
def test_policy_distance_on_one_token_tasks(hypotheses_run):
    for r in hypotheses_run["runs"]:
        d = r["policy_distance"]
        assert set(d) == {"tv_to_offline_dpo", "tv_to_soft_optimal", "choice_mass"}
        assert all(0.0 <= v <= 1.0 + 1e-9 for v in d.values())
        if r["arm"] == "offline_dpo":
            assert d["tv_to_offline_dpo"] == 0.0
        else:
            assert d["tv_to_offline_dpo"] > 0.0


def test_first_token_probs_match_sampler_logprobs():
    """The distance's distribution is the sampler's: same position under left padding."""
    task = make_task("keyed_short")  # prompts of several lengths: left padding matters
    cfg = model_config("tiny", vocab_size=64)
    params = nn.unbox(init_params("lm", cfg, jax.random.PRNGKey(1)))
    mesh = make_mesh(1, 1, jax.devices()[:1])
    prompts = make_prompt_arrays(task, 16, np.random.default_rng(0))
    assert len(set(prompts["prompt_mask"].sum(-1))) > 1
    probs_NxV = diagnostics.first_token_probs(cfg, params, prompts, mesh)
    np.testing.assert_allclose(probs_NxV.sum(-1), 1.0, atol=1e-5)
    s = policy_ops.sample(
        cfg, params, prompts, task, jax.random.PRNGKey(2), mesh, num_samples=3, temperature=1.0
    )
    first = task.prompt_len  # the first response column
    rows = np.repeat(np.arange(16), 3)
    np.testing.assert_allclose(
        np.log(probs_NxV[rows, s["tokens"][:, first]]), s["logp"][:, first], atol=1e-4
    )


def test_wide_pairs_mix_sources_and_keep_the_layout():
    task = make_task("bandit")
    cfg = model_config("tiny", vocab_size=64)
    params = nn.unbox(init_params("lm", cfg, jax.random.PRNGKey(0)))
    mesh = make_mesh(1, 1, jax.devices()[:1])
    prompts = make_prompt_arrays(task, 64, np.random.default_rng(0))
    args = (task, cfg, params, prompts, np.random.default_rng(1), mesh, 10.0)
    wide = arms.wide_labelled_pairs(*args)
    narrow = arms.labelled_pairs(*args, 1.0)
    assert set(narrow) <= set(wide) and wide["chosen_tokens"].shape == (64, 3)
    sources = np.concatenate([wide["chosen_source"], wide["rejected_source"]])
    assert set(sources) == {0, 1, 2}
    demo = arms.WIDE_SOURCES.index("demonstrator")
    for side in ("chosen", "rejected"):
        rows = wide[f"{side}_source"] == demo
        # Demonstrations: one choice token then EOS, scored by the verifier like samples.
        assert (wide[f"{side}_tokens"][rows, 1] >= task.first_choice).all()
        assert (wide[f"{side}_tokens"][rows, 2] == task.eos_id).all()
        gold = policy_ops.gold_parts(task, wide, f"{side}_")["reward"]
        np.testing.assert_allclose(gold, wide[f"{side}_gold"])
