"""Arm-versus-arm differences in gold reward, paired by seed, at three checkpoint choices.

Every arm is compared with offline DPO, and the arms that add online data (iterated online DPO,
more prompts) also with online DPO (COMPARED_TO). Each comparison is made on both evaluations
(near-greedy and T = 1 samples: gold_reward_greedy, gold_reward) and at

- matched KL: the per-seed difference of the interpolated gold reward at K* and at K*/2
  (frontier.matched_kl: K* is the largest KL both arms reach in every paired seed);
- the selected checkpoints (frontier.select: each arm's own held-out objective);
- the final checkpoints.

A row holds the per-seed differences, their mean and Student-t 95% interval, and says when it
does not apply and why (no common KL range; an arm without a selection objective).
"""

import math
from collections.abc import Mapping

from rlft.experiments.report import frontier, stats
from rlft.experiments.report.cells import arm_runs, sorted_keys
from rlft.experiments.report.schema import EVAL_SUFFIX, EVALS

BASELINE = "offline_dpo"
# Arms compared with online DPO as well: they add online data or rounds (H3).
COMPARED_TO = {"iterated_online_dpo": (BASELINE, "online_dpo")}
COMPARED_TO |= {"online_dpo_more_prompts": (BASELINE, "online_dpo")}
HEADLINE = ("online_dpo", BASELINE)  # the comparison the H6 family of verdicts reads


def gold_metric(eval_name: str) -> str:
    """The frontier field of the gold reward under an evaluation ("greedy" or "sample")."""
    return "gold_reward" + EVAL_SUFFIX[eval_name]


def _row(key: tuple, arm: str, base: str, eval_name: str, checkpoint: str) -> dict:
    cell, budget = key
    return {"task": cell, "label_budget": budget, "arm": arm, "baseline": base} | {
        "eval": eval_name,
        "metric": gold_metric(eval_name),
        "checkpoint": checkpoint,
        "level": None,
        "kl": None,
        "kl_range": [None, None],
        "applicable": True,
        "reason": "",
        "n_seeds": 0,
        "seeds": [],
        "per_seed": [],
        "mean": None,
        "ci95": [None, None],
        "sign": "",
    }


def _fill(row: dict, seeds: list, diffs: list[float]) -> dict:
    """Mean, interval and sign of the per-seed differences into the row."""
    row |= {"n_seeds": len(diffs), "seeds": list(seeds), "per_seed": list(diffs)}
    if not diffs:
        return row | {"applicable": False, "reason": row["reason"] or "no seed ran both arms"}
    if not all(math.isfinite(d) for d in diffs):
        return (
            row
            | {"per_seed": [d if math.isfinite(d) else None for d in diffs]}
            | {"sign": "non-finite values"}
        )
    mean, lo, hi = stats.mean_ci95(diffs)
    ci = [None, None] if math.isnan(lo) else [lo, hi]
    return row | {"mean": mean, "ci95": ci, "sign": stats.sign_verdict(lo, hi)}


def _matched_rows(key, arm, base, ev, a: dict, b: dict) -> list[dict]:
    fa, fb = ({s: r["frontier"] for s, r in runs.items()} for runs in (a, b))
    m = frontier.matched_kl(fa, fb, gold_metric(ev), names=(arm, base))
    rng = m["range"]
    krange = [None if math.isnan(x) else x for x in (rng["lo"], rng["hi"])]
    row = _row(key, arm, base, ev, "matched_kl") | {"level": "K*", "kl_range": krange}
    if not m["levels"]:
        return [_fill(row | {"reason": rng["reason"]}, [], [])]
    return [
        _fill(row | {"level": lv["level"], "kl": lv["kl"]}, m["seeds"], lv["per_seed"])
        for lv in m["levels"]
    ]


def _checkpoint_row(key, arm, base, ev, which: str, a: dict, b: dict) -> dict:
    row = _row(key, arm, base, ev, which)
    metric, seeds, diffs, steps, lacking = gold_metric(ev), [], [], [], []
    for s in sorted(set(a) & set(b)):
        pa, pb = (frontier.checkpoint(runs[s]["frontier"], which) for runs in (a, b))
        if pa is None or pb is None:
            lacking.append(s)
            continue
        seeds.append(s)
        diffs.append(float(pa[metric]) - float(pb[metric]))
        steps.append([pa["step"], pb["step"]])
    row["steps"] = steps  # per seed: [arm's step, baseline's step]
    if lacking:
        without = [n for n, runs in ((arm, a), (base, b)) if not _selects(runs)]
        why = (
            f"{' and '.join(without)} has no selection objective (selection null at every "
            "checkpoint)"
            if without
            else f"no selected checkpoint in seed(s) {lacking}"
        )
        row["reason"] = why
        if not seeds:
            return _fill(row, [], [])
    return _fill(row, seeds, diffs)


def _selects(runs: Mapping) -> bool:
    return any(frontier.select(r["frontier"]) is not None for r in runs.values())


def compare(index: Mapping, key: tuple, arm: str, base: str, evals: tuple = EVALS) -> list[dict]:
    """Rows of `arm` - `base` at (cell, budget) = key: matched KL (K*, K*/2), selected, final,
    for each evaluation. index: {(cell, budget, arm): {seed: run}}."""
    a, b = (arm_runs(index, *key, name) for name in (arm, base))
    rows = []
    for ev in evals:
        rows += _matched_rows(key, arm, base, ev, a, b)
        rows += [_checkpoint_row(key, arm, base, ev, w, a, b) for w in ("selected", "final")]
    return rows


def comparison_rows(index: Mapping, order: list[str]) -> list[dict]:
    """Every arm against offline DPO (and COMPARED_TO's arms against online DPO) in every
    (cell, budget) where both ran, in cell, budget and arm-table order."""
    keys = sorted_keys({(c, b) for c, b, _ in index}, order)
    rows = []
    for key in keys:
        arms = sorted_keys({k for k in index if k[:2] == key}, order)
        present = [k[2] for k in arms]
        if "sft" not in present and arm_runs(index, *key, "sft"):
            present.insert(0, "sft")
        for arm in present:
            for base in COMPARED_TO.get(arm, (BASELINE,)):
                if arm != base and base in present:
                    rows += compare(index, key, arm, base)
    return rows


def find(
    rows: list,
    cell: str,
    budget: int,
    arm: str,
    base: str,
    ev: str,
    checkpoint: str,
    level: str | None = None,
) -> dict | None:
    """The comparison row with these keys (level "K*" for matched KL unless given), or None."""
    if checkpoint == "matched_kl" and level is None:
        level = "K*"
    for r in rows:
        if (r["task"], r["label_budget"], r["arm"], r["baseline"]) != (cell, budget, arm, base):
            continue
        if (r["eval"], r["checkpoint"]) == (ev, checkpoint) and (
            checkpoint != "matched_kl" or r["level"] == level
        ):
            return r
    return None
