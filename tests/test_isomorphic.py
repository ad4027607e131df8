"""The isomorphic control solved exactly (rlft/experiments/pipeline/isomorphic.py and
control.py): both roads coincide, each objective matches a plain-loop reference, both approach
the label optimum, and breaking the correspondence (or the shared ridge) separates them."""

import math

import numpy as np
import pytest

from rlft.experiments.pipeline import control, isomorphic
from rlft.tasks import bradley_terry_labels, make_task


def _pairs(task, n, rng, bt_scale=10.0, uniform=False):
    """n labelled pairs (x, chosen, rejected): responses from pi_ref (or uniform), BT labels."""
    num_c, num_m = task.reward_CxM.shape
    x = rng.integers(num_c, size=n)
    if uniform:
        a, b = rng.integers(num_m, size=n), rng.integers(num_m, size=n)
    else:
        cdf = np.cumsum(task.ref_probs_CxM, -1)[x]
        a, b = ((rng.random((n, 1)) > cdf).sum(-1) for _ in range(2))
        a, b = np.minimum(a, num_m - 1), np.minimum(b, num_m - 1)
    wins = bradley_terry_labels(task.reward_CxM[x, a], task.reward_CxM[x, b], bt_scale, rng)
    return x, np.where(wins, a, b), np.where(wins, b, a)


@pytest.mark.parametrize("n", [3, 40, 600, 5000])
@pytest.mark.parametrize("seed", [0, 1])
def test_both_roads_coincide(n, seed):
    task = make_task("bandit", num_contexts=5, num_choices=7, seed=seed)  # primes: no axis mix-up
    beta = [0.1, 1.0][seed]
    x, c, r = _pairs(task, n, np.random.default_rng([seed, n]))
    sol = isomorphic.solve(x, c, r, task.ref_probs_CxM, beta)
    assert sol["rm_fit"]["converged"] and sol["dpo_fit"]["converged"]
    assert sol["rm_fit"]["grad_norm"] <= isomorphic.TOL
    assert np.all(sol["tv_rl_dpo_per_context"] < 1e-6), sol["tv_rl_dpo_per_context"]
    np.testing.assert_allclose(sol["pi_rl"].sum(-1), 1.0, atol=1e-12)
    # Same objective value at the optimum: J_DPO(theta*) = J_RM(u*) with u* = r_hat.
    assert math.isclose(sol["rm_fit"]["objective"], sol["dpo_fit"]["objective"], rel_tol=1e-9)


def _bt_loop(r_CxM, pairs, lam):
    total = 0.0
    for x, c, r in pairs:
        total += -math.log(1.0 / (1.0 + math.exp(-(r_CxM[x][c] - r_CxM[x][r]))))
    return total + lam / 2 * sum(v * v for row in r_CxM for v in row)


def _dpo_loop(theta_CxM, ref_CxM, pairs, beta, lam):
    total = 0.0
    for x, c, r in pairs:
        z = sum(math.exp(t) for t in theta_CxM[x])
        log_pi = [t - math.log(z) for t in theta_CxM[x]]
        log_ref = [math.log(p) for p in ref_CxM[x]]
        m = beta * ((log_pi[c] - log_ref[c]) - (log_pi[r] - log_ref[r]))
        total += -math.log(1.0 / (1.0 + math.exp(-m)))
    dev = [
        beta * (theta_CxM[x][y] - math.log(ref_CxM[x][y]))
        for x in range(len(theta_CxM))
        for y in range(len(theta_CxM[0]))
    ]
    return total + lam / 2 * sum(d * d for d in dev)


HAND_PAIRS = [(0, 1, 0), (0, 1, 0), (0, 2, 1), (1, 0, 2), (1, 0, 0), (0, 0, 2)]


def test_objectives_match_plain_loops_on_a_hand_case():
    ref = np.array([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]])
    w = np.array([[0.3, -1.2, 2.0], [0.7, 0.1, -0.4]])  # a reward table / a set of logits
    lam, beta = 0.05, 0.7
    rows, counts = isomorphic.aggregate_pairs(*np.array(HAND_PAIRS).T)
    assert counts.sum() == len(HAND_PAIRS) and len(rows) == len(HAND_PAIRS) - 1
    cell = isomorphic.reward_cells(2, 3)
    a = isomorphic._difference_matrix(rows, cell, 6)
    f_rm, g_rm, _ = isomorphic.bt_objective(w.reshape(-1), a, counts, lam)
    assert math.isclose(f_rm, _bt_loop(w.tolist(), HAND_PAIRS, lam), rel_tol=1e-12)
    f_dpo, g_dpo, _ = isomorphic.dpo_objective(
        w.reshape(-1), rows, counts, np.log(ref), beta, lam, "reference"
    )
    assert math.isclose(f_dpo, _dpo_loop(w.tolist(), ref.tolist(), HAND_PAIRS, beta, lam))
    # Gradients against central differences of the plain loops.
    eps = 1e-6
    for k in range(6):
        e = np.zeros(6)
        e[k] = eps
        up, down = (w.reshape(-1) + s * e for s in (1, -1))
        num_rm = (
            _bt_loop(up.reshape(2, 3).tolist(), HAND_PAIRS, lam)
            - _bt_loop(down.reshape(2, 3).tolist(), HAND_PAIRS, lam)
        ) / (2 * eps)
        num_dpo = (
            _dpo_loop(up.reshape(2, 3).tolist(), ref.tolist(), HAND_PAIRS, beta, lam)
            - _dpo_loop(down.reshape(2, 3).tolist(), ref.tolist(), HAND_PAIRS, beta, lam)
        ) / (2 * eps)
        assert abs(g_rm[k] - num_rm) < 1e-5 and abs(g_dpo[k] - num_dpo) < 1e-5


def test_hand_case_minimisers_and_the_rl_optimum():
    ref = np.array([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]])
    x, c, r = np.array(HAND_PAIRS).T
    sol = isomorphic.solve(x, c, r, ref, beta=0.5, lam=0.1)
    # Stationarity of the plain-loop objective at r_hat: perturbing any cell raises it.
    base = _bt_loop(sol["reward"].tolist(), HAND_PAIRS, 0.1)
    for k in range(6):
        for s in (1e-4, -1e-4):
            bumped = sol["reward"].copy().reshape(-1)
            bumped[k] += s
            assert _bt_loop(bumped.reshape(2, 3).tolist(), HAND_PAIRS, 0.1) > base
    want = ref * np.exp(sol["reward"] / 0.5)
    np.testing.assert_allclose(sol["pi_rl"], want / want.sum(-1, keepdims=True), rtol=1e-12)
    assert sol["tv_rl_dpo"] < 1e-12


def test_huge_label_budget_approaches_the_label_optimum():
    task = make_task("bandit", num_contexts=3, num_choices=5, seed=2)
    dist = []
    for n in (300, 100_000):
        x, c, r = _pairs(task, n, np.random.default_rng(n), uniform=True)
        sol = isomorphic.solve(x, c, r, task.ref_probs_CxM, beta=1.0)
        gold = isomorphic.against_gold(sol, task.ref_probs_CxM, task.reward_CxM, 1.0, 10.0)
        dist.append((gold["tv_rl_to_label_optimal"], gold["tv_dpo_to_label_optimal"]))
        assert abs(gold["gold_reward_rl"] - gold["gold_reward_dpo"]) < 1e-9
    assert dist[-1][0] < 0.01 and dist[-1][1] < 0.01 and dist[0][0] > 3 * dist[-1][0], dist
    # With bt_scale = 1 the label optimum is the gold soft optimum itself.
    x, c, r = _pairs(task, 100_000, np.random.default_rng(7), bt_scale=1.0, uniform=True)
    sol = isomorphic.solve(x, c, r, task.ref_probs_CxM, beta=1.0)
    gold = isomorphic.against_gold(sol, task.ref_probs_CxM, task.reward_CxM, 1.0, 1.0)
    assert gold["tv_rl_to_soft_optimal"] == gold["tv_rl_to_label_optimal"] < 0.01


@pytest.mark.parametrize("n", [40, 5000])
def test_broken_correspondence_separates_the_roads(n):
    """A reward that ignores the context cannot represent the table: TV is clearly non-zero.
    So is a DPO ridge anchored at theta = 0 instead of the reference, where data are thin."""
    task = make_task("bandit", num_contexts=5, num_choices=7, seed=3)
    x, c, r = _pairs(task, n, np.random.default_rng(n))
    broken = isomorphic.solve(x, c, r, task.ref_probs_CxM, 1.0, reward_class="choice")
    assert broken["rm_fit"]["converged"] and broken["tv_rl_dpo"] > 0.05
    assert broken["reward"].shape == (5, 7) and np.all(broken["reward"] == broken["reward"][0])
    if n == 40:  # few labels: many unseen cells, where the anchors disagree
        zero = isomorphic.solve(x, c, r, task.ref_probs_CxM, 1.0, anchor="zero")
        assert zero["tv_rl_dpo"] > 0.01  # 4 orders above the coincidence tolerance


def test_bandit_pairs_reads_the_packed_layout_and_drops_non_choices():
    task = make_task("bandit")
    fc, fx = task.first_choice, task.first_context
    chosen = np.array([[fx + 1, fc + 3, 1], [fx, 1, 0], [fx + 7, fc + 15, 1]])
    rejected = np.array([[fx + 1, fc, 1], [fx, fc + 2, 1], [fx + 7, fc + 2, 1]])
    pairs = {"chosen_tokens": chosen, "rejected_tokens": rejected}
    x, c, r, keep = control.bandit_pairs(pairs, np.arange(3), task)
    assert keep.tolist() == [True, False, True]
    assert x.tolist() == [1, 7] and c.tolist() == [3, 15] and r.tolist() == [0, 2]


def _iso_record(seed, tv_online):
    arm = {"tv_to_label_optimal": 0.2, "choice_mass": 0.99, "gold_reward": 0.7}
    fit = {"iterations": 9, "grad_norm": 1e-12, "converged": True, "objective": 1.0}
    return {
        "tv_rl_dpo": 1e-16 * (seed + 1),
        "tv_rl_dpo_max": 3e-16,
        "rm_fit": fit,
        "dpo_fit": fit,
        "pairs_used": 1000,
        "gold_reward_rl": 0.8,
        "gold_reward_dpo": 0.8,
        "gold_reward_ref": 0.4,
        "gold_reward_label_optimal": 0.85,
        "tv_rl_to_label_optimal": 0.1,
        "tv_dpo_to_label_optimal": 0.1,
        "arms": {
            "offline_dpo": arm | {"tv_to_exact": 0.1, "tv_to_offline_dpo": 0.0},
            "online_dpo": arm | {"tv_to_exact": 0.1 + tv_online[seed], "tv_to_offline_dpo": 0.05},
        },
    }


def test_report_section_and_control_verdicts():
    from rlft.experiments.report.render import render_report  # noqa: PLC0415
    from rlft.experiments.report.schema import validate_results  # noqa: PLC0415
    from rlft.experiments.report.summary import build_results  # noqa: PLC0415
    from tests.report_records import make_records  # noqa: PLC0415

    records = make_records(gain={"keyed": 0.1, "bandit": 0.0})
    tv_online = {0: 0.01, 1: -0.01, 2: 0.005}
    for d in records["diagnostics"]:
        if d["task"] == "bandit":
            d["isomorphic"] = _iso_record(d["seed"], tv_online)
    results = build_results({"dpo": {"beta": 1.0}}, records)  # no plots: fast
    validate_results(results)
    iso = results["isomorphic"]
    assert {r["task"] for r in iso} == {"bandit"} and all(r["all_converged"] for r in iso)
    assert iso[0]["tv_rl_dpo_max"] == 3e-16 and set(iso[0]["arms"]) == {"offline_dpo", "online_dpo"}
    rows = [r for r in results["hypotheses"] if r["id"] == "control"]
    exact = [r for r in rows if r["quantity"].startswith("exact tabular")]
    assert exact and all(r["verdict"] == "supported" for r in exact)
    arm_rows = [
        r for r in rows if "online_dpo - offline_dpo" in r["quantity"] and "TV" in r["quantity"]
    ]
    # Theorem 2.2 predicts no difference: an interval covering 0 supports it.
    assert arm_rows and all(r["verdict"] == "not contradicted" for r in arm_rows)
    text = render_report(results)
    assert "## Isomorphic control: both roads to convergence" in text
    assert "| online_dpo | 0.102 |" in text  # seed mean of 0.1 + (0.01 - 0.01 + 0.005) / 3
