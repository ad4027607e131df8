"""`rlft reproduce` end to end on micro configs: every arm along its frontier, resume, refusal of
changed settings, seeds that vary the task, and the hypothesis extras (more-prompts arm,
narrow/wide pair sources, curves, policy distances); the reproduce config's checks."""

import json
import math
import os

import flax.linen as nn
import jax
import numpy as np
import pytest

from rlft.config import load_config, parse_config
from rlft.experiments.arms import ARMS, DEFAULT_ARMS, EXTRA_ARMS
from rlft.experiments.pipeline import diagnostics, pairs, seed, units
from rlft.experiments.pipeline.evaluate import gold_parts, sample
from rlft.experiments.pipeline.run import run_reproduce
from rlft.experiments.pipeline.spec import ParallelSpec, parse_reproduce
from rlft.experiments.pipeline.training import stage_config
from rlft.experiments.pipeline.units import WorkdirMismatch
from rlft.experiments.report.judge import NOT_RUN
from rlft.models import init_params, model_config
from rlft.parallel import make_mesh
from rlft.tasks import make_prompt_arrays, make_task
from rlft.train.workdir import code_version
from tests.helpers import REPO_CONFIGS

REPRODUCE = os.path.join(REPO_CONFIGS, "reproduce.py")


def _micro():
    c = load_config(REPRODUCE, "quick")
    c.label_budgets = (64,)
    c.sft_examples = 512
    c.epochs.update(sft=4.0, reward=1.0, dpo=2.0, online_dpo=1.0, ppo=1.0)
    c.labels.num_val_pairs = 64
    c.online.update(num_samples=4, rounds=2)
    c.frontier.points = 2
    c.eval.update(num_prompts=32, samples_per_prompt=2, best_of_n=(1, 2, 4))
    return c


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("reproduce"))
    return workdir, run_reproduce(_micro(), workdir, progress=False)


@pytest.mark.slow  # shares micro_run: every default arm end to end, about 2.5 min
def test_every_arm_along_its_frontier(micro_run):
    workdir, _ = micro_run
    with open(os.path.join(workdir, "results.json")) as f:
        results = json.load(f)
    runs = {r["arm"]: r for r in results["runs"]}
    assert set(runs) == set(DEFAULT_ARMS)
    sft = runs["sft"]["frontier"]
    assert len(sft) == 1 and abs(sft[0]["kl_to_ref"]) < 1e-4  # the reference is SFT itself
    for arm, r in runs.items():
        for point in r["frontier"]:
            for key in ("gold_reward", "gold_reward_greedy", "kl_to_ref", "rm_score"):
                assert np.isfinite(point[key]), (arm, key)
            assert 0.0 <= point["win_rate_vs_sft_greedy"] <= 1.0
        assert r["selection_rule"] == ARMS[arm].selection_rule
        if arm == "sft":
            continue
        # Every trained arm: its start (step 0) and up to frontier.points checkpoints after it
        # (fewer when the run has fewer steps); iterated online DPO: that many per round, the
        # steps counting on across rounds.
        steps = [p["step"] for p in r["frontier"]]
        rounds = _micro().online.rounds if ARMS[arm].iterated else 1
        assert steps[0] == 0 and 1 + rounds <= len(steps) <= 1 + 2 * rounds
        assert steps == sorted(set(steps))
        assert all(p["selection"] is not None for p in r["frontier"])
    # Arms that start from SFT start exactly where SFT is (one evaluation, same draws).
    for arm in ("offline_dpo", "online_dpo", "ppo", "iterated_online_dpo"):
        assert runs[arm]["frontier"][0]["gold_reward"] == sft[0]["gold_reward"]
    # online DPO from DPO starts at offline DPO's final policy.
    offline_end = runs["offline_dpo"]["frontier"][-1]
    assert runs["online_dpo_from_dpo"]["frontier"][0]["kl_to_ref"] == offline_end["kl_to_ref"]
    # A DPO arm's selection at its start is log sigmoid(0): policy = reference.
    assert runs["offline_dpo"]["frontier"][0]["selection"] == pytest.approx(math.log(0.5))
    assert runs["online_dpo"]["num_pairs"] <= runs["online_dpo"]["num_prompts"] == 64
    (diag,) = [p for row in results["diagnostics"] for p in row["per_seed"]]
    assert 0.0 < diag["informative_label_frac"] <= 1.0 and "sft_fit" in diag
    assert os.path.exists(os.path.join(workdir, "report.md"))


@pytest.mark.slow  # shares micro_run: every default arm end to end, about 2.5 min
def test_rerun_resumes_and_changed_settings_refuse(micro_run):
    workdir, first = micro_run
    record = os.path.join(workdir, "keyed", "seed0", "n64", "last", "online_dpo", "record.json")
    mtime = os.path.getmtime(record)
    again = run_reproduce(_micro(), workdir, progress=False)
    assert os.path.getmtime(record) == mtime

    def strip(rs):
        return [{k: v for k, v in r.items() if k != "wall_s"} for r in rs]

    assert strip(again["runs"]) == strip(first["runs"])
    with open(os.path.join(workdir, "run_config.json")) as f:
        assert json.load(f)["beta"] == _micro().beta
    changed = _micro()
    changed.beta = 0.2
    with pytest.raises(WorkdirMismatch, match="beta"):
        run_reproduce(changed, workdir, progress=False)
    with open(os.path.join(workdir, "run_config.json")) as f:  # still what produced the results
        assert json.load(f)["beta"] == _micro().beta


@pytest.mark.slow  # shares micro_run: every default arm end to end, about 2.5 min
def test_units_computed_by_other_code_refuse(micro_run, monkeypatch):
    workdir, first = micro_run
    assert first["config"]["code"] == code_version()
    other = {**code_version(), "source_sha256": "0" * 16}
    monkeypatch.setattr(units, "code_version", lambda: other)
    with pytest.raises(WorkdirMismatch, match=r"other code \(changed: \['code.source_sha256'\]"):
        run_reproduce(_micro(), workdir, progress=False)


def test_seeds_draw_their_own_hidden_task(tmp_path):
    spec = parse_reproduce(_micro())
    a, b = (seed.draw(spec, "keyed", s, str(tmp_path)) for s in (0, 1))
    assert a.knobs["seed"] == 0 and b.knobs["seed"] == 1
    assert not np.array_equal(a.task.table_TxM, b.task.table_TxM)
    again = seed.draw(spec, "keyed", 0, str(tmp_path))
    np.testing.assert_array_equal(again.sft_arrays["tokens"], a.sft_arrays["tokens"])
    c = _micro()
    c.task_knobs = {"keyed": {"seed": 7}}  # a fixed hidden task across run seeds
    fixed = parse_reproduce(c)
    assert seed.draw(fixed, "keyed", 1, str(tmp_path)).knobs["seed"] == 7


def test_best_worst_pairs_order_by_scorer():
    task = make_task("keyed")
    cfg = model_config("tiny")
    params = nn.unbox(init_params("lm", cfg, jax.random.PRNGKey(0)))
    rng = np.random.default_rng(0)
    prompts = make_prompt_arrays(task, 8, rng)
    seen = {}

    def scorer(samples):  # any deterministic score: response length plus a small jitter
        s = samples["loss_mask"].sum(-1).astype(float) + rng.random(len(samples["tokens"])) * 0.1
        seen["s"] = s
        return s

    mesh = make_mesh(1, 1, jax.devices()[:1])
    out = pairs.best_worst_pairs(
        task, cfg, params, prompts, scorer, rng, mesh, k=4, temperature=1.0
    )
    s_NxK = seen["s"].reshape(8, 4)
    np.testing.assert_allclose(out["chosen_score"], s_NxK.max(1)[out["prompt_index"]])
    np.testing.assert_allclose(out["rejected_score"], s_NxK.min(1)[out["prompt_index"]])


def test_reproduce_config_rejects_bad_input():
    cases = [
        (lambda c: setattr(c, "arms", ("sft", "dpo_online")), "dpo_online"),
        (lambda c: setattr(c, "tasks", ("kyed",)), "kyed"),
        (lambda c: c.labels.update(sources=("sft", "broad")), "broad"),
        (lambda c: setattr(c.dpo, "total_steps", 5), "config.dpo.total_steps"),
        # --config.dpo.dpo.beta moves the shared reference; a section replaced whole does not.
        (lambda c: setattr(c.dpo, "dpo", {**c.dpo.dpo.to_dict(), "beta": 0.3}), "identical beta"),
        (lambda c: setattr(c, "reward_classes", ("lastt",)), "lastt"),
        (lambda c: c.eval.update(primary="best"), "config.eval.primary"),
    ]
    for change, match in cases:
        c = load_config(REPRODUCE)
        change(c)
        with pytest.raises(ValueError, match=match):
            parse_reproduce(c)


def test_one_beta_reaches_dpo_and_ppo_and_the_recipes_reach_train():
    c = load_config(REPRODUCE)
    c.beta = 0.3  # --config.beta: one reference for every arm
    spec = parse_reproduce(c)
    assert (
        spec.beta == spec.stages["dpo"]["dpo"]["beta"] == spec.stages["ppo"]["rollout"]["kl_coef"]
    )
    dpo = stage_config(spec, "dpo", seed=0, total_steps=3, init={"policy": "p"})
    run = parse_config(dpo)  # what `train` reads: the recipe's own keys and the pipeline's
    assert run.hparams.beta == 0.3 and run.optim.learning_rate == c.dpo.optim.learning_rate
    assert run.init.policy == "p" and run.total_steps == 3


def test_parallel_section_lays_out_every_stage():
    """`parallel` reaches each stage's mesh and accumulation; left out, the defaults apply."""
    c = load_config(REPRODUCE)
    c.parallel = dict(data=1, fsdp=-1, accum_steps=4)
    stage = stage_config(parse_reproduce(c), "dpo", seed=0, total_steps=3)
    assert (stage["mesh"]["data"], stage["mesh"]["fsdp"], stage["optim"]["accum_steps"]) == (
        1,
        -1,
        4,
    )
    run = parse_config(stage)  # what `train` checks: 64 rows split into 4 micro-batches
    assert run.optim.accum_steps == 4 and run.mesh.fsdp == -1
    del c.parallel
    assert parse_reproduce(c).parallel == ParallelSpec()
    c.parallel = dict(data=1, tensor=2)
    with pytest.raises(ValueError, match="config.parallel.tensor"):
        parse_reproduce(c)


def test_variants():
    default = parse_reproduce(load_config(REPRODUCE))
    assert default.arms == DEFAULT_ARMS and default.labels.sources == ("sft",)
    paper = parse_reproduce(load_config(REPRODUCE, "paper"))
    assert (paper.online.num_samples, paper.online.temperature, paper.beta) == (25, 0.1, 0.05)
    assert (paper.epochs.dpo, paper.epochs.online_dpo, paper.eval.greedy_temperature) == (
        1,
        1,
        0.01,
    )
    hyp = parse_reproduce(load_config(REPRODUCE, "hypotheses"))
    assert hyp.arms == DEFAULT_ARMS + EXTRA_ARMS and hyp.labels.sources == ("sft", "wide")
    m = parse_reproduce(load_config(REPRODUCE, "map"))
    assert len(m.label_budgets) >= 3 and set(m.reward_classes) == {
        "last",
        "mean",
        "sum",
        "bilinear",
    }
    lengths = {
        m.task_knobs[t].get("response_len", m.task_knobs[t].get("max_items", 0) + 1) - 1
        for t in m.tasks
    }
    assert min(lengths) == 1 and max(lengths) >= 8
    assert {m.task_knobs[t]["family"] for t in m.tasks} == {"keyed", "rouge"}
    for name in m.tasks:  # every map task builds and shows where its response starts
        knobs = {k: v for k, v in m.task_knobs[name].items() if k != "family"}
        task = make_task(m.task_knobs[name]["family"], **knobs)
        assert task.vocab_size <= m.model.vocab_size


def _micro_hypotheses():
    """The bandit with two budgets, both pair sources and the extra arm (H3, H4, curves)."""
    c = _micro()
    c.tasks = ("bandit",)
    c.label_budgets = (32, 64)
    c.labels.sources = ("sft", "wide")
    c.arms = ("sft", "offline_dpo", "online_dpo", "iterated_online_dpo", "online_dpo_more_prompts")
    return c


@pytest.fixture(scope="module")
def hypotheses_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("reproduce_hypotheses"))
    return run_reproduce(_micro_hypotheses(), workdir, progress=False)


@pytest.mark.slow  # a second end-to-end run; CI runs slow tests
def test_sources_become_cells_and_curves_fill(hypotheses_run):
    results = hypotheses_run
    keys = {"bandit_narrow", "bandit_wide"}
    assert set(results["tasks"]) == keys
    assert {r["task"] for r in results["runs"]} == keys
    assert {(c["task"], c["n_pairs"]) for c in results["curves"]} == {
        (k, n) for k in keys for n in (32, 64)
    }
    h4 = [r for r in results["hypotheses"] if r["id"] == "H4"]
    assert {r["task"] for r in h4} == keys and all(r["verdict"] != NOT_RUN for r in h4)
    control = [r for r in results["hypotheses"] if r["id"] == "control"]
    assert control and all(r["verdict"] != NOT_RUN for r in control)
    assert any("exact tabular" in r["quantity"] for r in control)  # the isomorphic solve
    h3 = [r for r in results["hypotheses"] if r["id"] == "H3"]
    extra = ("online_dpo_more_prompts", "iterated_online_dpo")
    assert h3 and all(r["quantity"].startswith(extra) for r in h3)
    assert any(r["quantity"].startswith("online_dpo_more_prompts") for r in h3)
    # Same prompts, different pair sources: the RMs saw different labels; one SFT.
    narrow, wide = (
        {(r["label_budget"], r["arm"]): r for r in results["runs"] if r["task"] == k}
        for k in ("bandit_narrow", "bandit_wide")
    )
    end = lambda r: r["frontier"][-1]["gold_reward"]  # noqa: E731
    assert end(narrow[64, "offline_dpo"]) != end(wide[64, "offline_dpo"])
    assert end(narrow[64, "sft"]) == end(wide[64, "sft"])


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
    s = sample(
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
    wide = pairs.wide_labelled_pairs(*args)
    narrow = pairs.labelled_pairs(*args, 1.0)
    assert set(narrow) <= set(wide) and wide["chosen_tokens"].shape == (64, 3)
    sources = np.concatenate([wide["chosen_source"], wide["rejected_source"]])
    assert set(sources) == {0, 1, 2}
    demo = pairs.WIDE_SOURCES.index("demonstrator")
    for side in ("chosen", "rejected"):
        rows = wide[f"{side}_source"] == demo
        # Demonstrations: one choice token then EOS, scored by the verifier like samples.
        assert (wide[f"{side}_tokens"][rows, 1] >= task.first_choice).all()
        assert (wide[f"{side}_tokens"][rows, 2] == task.eos_id).all()
        gold = gold_parts(task, wide, f"{side}_")["reward"]
        np.testing.assert_allclose(gold, wide[f"{side}_gold"])
