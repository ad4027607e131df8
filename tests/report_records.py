"""Synthetic pipeline records for the report tests, with answers known in closed form.

Along each arm's training the KL to SFT rises linearly over FRONTIER_POINTS checkpoints to
MAX_KL[arm] * (1 + 0.05 seed), and the gold reward is exactly linear in KL:
    gold(kl) = SFT_GOLD + rate * kl,   gold_greedy(kl) = SFT_GOLD_GREEDY + GREEDY * rate * kl,
with rate = RATE[arm] (online arms: offline's rate + the cell's gain, plus seed noise). So the
online - offline difference at matched KL is (rate_on - rate_off) * K* with K* = MAX_KL of
offline DPO in seed 0 (= 2.0), and the selected checkpoint is point SELECTED_POINT (the
selection objective peaks there). online_dpo_from_dpo starts at offline DPO's final point.
"""

import math

import numpy as np

from rlft.experiments.arms import ARMS

SEEDS = (0, 1, 2)
BUDGETS = (250, 1000)
FRONTIER_POINTS = 5
SELECTED_POINT = 2
SFT_GOLD, SFT_GOLD_GREEDY, GREEDY = 0.1, 0.2, 1.5
RATE = {"offline_dpo": 0.1, "online_dpo_from_dpo": 0.02, "ppo": 0.08, "oracle_online_dpo": 0.2}
MAX_KL = {"offline_dpo": 2.0, "online_dpo": 5.0, "online_dpo_from_dpo": 1.5, "ppo": 3.0}
MAX_KL |= {"oracle_online_dpo": 4.0, "iterated_online_dpo": 4.0, "online_dpo_more_prompts": 5.0}
ONLINE = ("online_dpo", "iterated_online_dpo", "online_dpo_more_prompts")
# Online advantage in gold per nat of KL: x K* = 2 gives the advantage at matched KL.
GAIN = {"keyed": 0.1, "keyed_short": 0.01}
CELLS = {
    "keyed": {"family": "keyed", "response_len": 7, "reward_class": "last"},
    "keyed_short": {"family": "keyed_short", "response_len": 2, "reward_class": "last"},
    "rouge": {"family": "rouge", "response_len": 9, "reward_class": "mean"},
    "bandit": {"family": "bandit", "response_len": 2, "reward_class": "bilinear"},
}
SETTINGS = {"beta": 0.05, "greedy_temperature": 0.01, "sample_temperature": 1.0}


def point(step, kl, rate, selection, start=(0.0, SFT_GOLD, SFT_GOLD_GREEDY)) -> dict:
    kl0, g0, gg0 = start
    gold, greedy = g0 + rate * (kl - kl0), gg0 + GREEDY * rate * (kl - kl0)
    return {
        "step": step,
        "kl_to_ref": kl,
        "gold_reward": gold,
        "gold_reward_greedy": greedy,
        "win_rate_vs_sft": 0.5 + gold - SFT_GOLD,
        "win_rate_vs_sft_greedy": 0.5 + greedy - SFT_GOLD_GREEDY,
        "rm_score": gold + 0.5 * kl,  # the RM keeps rising: over-optimisation
        "rm_score_greedy": greedy + 0.5 * kl,
        "selection": selection,
        "gold_parts": {"validity": 0.9, "repeat_frac": 0.1 + 0.01 * kl},
        "gold_parts_greedy": {"validity": 0.95, "repeat_frac": 0.05},
    }


def frontier(arm: str, seed: int, rate: float, start=None) -> list[dict]:
    if arm == "sft":
        return [point(0, 0.0, 0.0, None)]
    top = MAX_KL[arm] * (1 + 0.05 * seed)
    kl0 = start["kl_to_ref"] if start else 0.0
    origin = (kl0, start["gold_reward"], start["gold_reward_greedy"]) if start else None
    pts = []
    for i in range(FRONTIER_POINTS):
        kl = kl0 + top * i / (FRONTIER_POINTS - 1)
        selection = -0.7 - 0.01 * abs(i - SELECTED_POINT)  # peaks at SELECTED_POINT
        pts.append(point(10 * i, kl, rate, selection, *([origin] if origin else [])))
    return pts


def run(cell, budget, seed, arm, rate, start=None) -> dict:
    return {
        "task": cell,
        "label_budget": budget,
        "seed": seed,
        "arm": arm,
        "selection_rule": ARMS[arm].selection_rule,
        "num_pairs": None if arm in ("sft", "ppo") else budget,
        "num_prompts": None if arm == "sft" else budget,
        "wall_s": 1.5,
        "frontier": frontier(arm, seed, rate, start),
    }


def diag(cell, budget, seed, rng, rm_lead=0.2, headroom=0.4) -> dict:
    bon = [
        {"ranker": ranker, "n": n, "gold_reward": 0.3 + g * math.log(n) + rng.normal(0, 0.01)}
        for ranker, g in (("global_rm", 0.1), ("local_rm", 0.05), ("gold", 0.2))
        for n in (1, 2, 5)
    ]
    noise = rng.normal(0, 0.01, size=6)
    return {
        "task": cell,
        "label_budget": budget,
        "seed": seed,
        "rm_heldout_accuracy": 0.6 + rm_lead + noise[0],
        "dpo_heldout_accuracy": 0.6 + noise[1],
        "rm_heldout_loglik": -0.6 + rm_lead + noise[2],
        "dpo_heldout_loglik": -0.6 + noise[3],
        "oracle_best_of_k_gain": headroom + noise[4],
        "informative_label_frac": 0.7 + noise[5],
        "label_agreement_with_gold": 0.8,
        "best_of_n": bon,
        "sft_fit": {
            "demo_gold": 0.05,
            "sft_gold": SFT_GOLD,
            "sft_gold_greedy": SFT_GOLD_GREEDY,
            "heldout_nll_per_token": 1.2,
        },
    }


def make_records(
    gain=None,
    noise=0.01,
    seeds=SEEDS,
    budgets=BUDGETS,
    arms=tuple(ARMS),
    rm_lead=0.2,
    headroom=0.4,
    primary="greedy",
    extra_rate=None,
) -> dict:
    """Records for the cells in `gain` ({cell: online gain per nat, or per budget as a dict});
    extra_rate: {arm: gold per nat added to that arm's rate}."""
    rng = np.random.default_rng(0)
    gain = GAIN if gain is None else gain
    runs, diags, curves, tasks = [], [], [], {}
    for cell, g in gain.items():
        base = cell.removesuffix("_narrow").removesuffix("_wide")
        meta = CELLS.get(base, CELLS["keyed"])
        tasks[cell] = {"task": base, "knobs": {}, "description": f"synthetic {cell}"} | meta
        tasks[cell] |= {"vocab_size": 38, "prompt_len": 8}
        tasks[cell] |= {"label_source": "wide" if cell.endswith("_wide") else "sft"}
        for budget in budgets:
            gb = g[budget] if isinstance(g, dict) else g
            for seed in seeds:
                extra = rng.normal(0, noise)
                rates = RATE | dict.fromkeys(ONLINE, RATE["offline_dpo"] + gb + extra)
                rates = {a: r + (extra_rate or {}).get(a, 0.0) for a, r in rates.items()}
                done = {}
                for arm in arms:
                    start = (
                        done["offline_dpo"]["frontier"][-1]
                        if arm == "online_dpo_from_dpo"
                        else None
                    )
                    done[arm] = run(cell, budget, seed, arm, rates.get(arm, 0.0), start)
                    runs.append(done[arm])
                diags.append(diag(cell, budget, seed, rng, rm_lead, headroom))
        for seed in seeds:
            for n in (100, 400):
                acc = {"rm_heldout_accuracy": 0.7, "dpo_heldout_accuracy": 0.6}
                curves.append({"task": cell, "seed": seed, "n_pairs": n} | acc)
    settings = SETTINGS | {"primary_eval": primary}
    return {"settings": settings, "tasks": tasks, "runs": runs, "diagnostics": diags} | {
        "curves": curves,
        "wall_time_s": 12.0,
    }
