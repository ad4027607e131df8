"""The precondition of the generation-verification gap (docs/paper.md section 2, Thm 3.1), measured.

Online PFT can only win through a reward model that is easier to learn than the policy: here,
the global RM must rank held-out pairs better than DPO's implicit (local) reward, and
reranking samples must have room to help (oracle best-of-K headroom: the gold-best of K SFT
samples minus a random one). `precondition` measures both per (cell, budget), paired by seed;
`gap_premise` says whether H6's premise holds (both intervals above 0) and, if not, why, with
the numbers. The map (map.py) plots the outcome against the same precondition, and H5
(`h5_rows`) judges the same differences, with Best-of-N reranking, as its own hypothesis.
"""

import math
from collections.abc import Mapping, Sequence

from rlft.experiments.report import stats
from rlft.experiments.report.judge import judge, not_run, verdict_row
from rlft.experiments.report.markdown import fmt_diff

PARTS = {
    "accuracy": ("rm_heldout_accuracy", "dpo_heldout_accuracy"),  # fraction of pairs, 0..1
    "loglik": ("rm_heldout_loglik", "dpo_heldout_loglik"),  # mean log sigmoid(margin), nats
}


def _est(values: list[float]) -> dict:
    if not values or not all(math.isfinite(v) for v in values):
        return {"mean": None, "ci95": [None, None], "per_seed": values}
    mean, lo, hi = stats.mean_ci95(values)
    ci = [None, None] if math.isnan(lo) else [lo, hi]
    return {"mean": mean, "ci95": ci, "per_seed": values}


def precondition(per_seed: Sequence[Mapping]) -> dict:
    """RM - DPO held-out accuracy and log-likelihood (paired by seed) and the oracle best-of-K
    headroom, each {"mean", "ci95", "per_seed"}, from one (cell, budget)'s diagnostics records
    (seed order). Non-finite values give mean None."""
    out = {"n_seeds": len(per_seed)}
    for name, (rm, dpo) in PARTS.items():
        out[name] = _est([float(d[rm]) - float(d[dpo]) for d in per_seed])
    out["headroom"] = _est([float(d["oracle_best_of_k_gain"]) for d in per_seed])
    return out


def _above_zero(est: Mapping) -> bool:
    return est["mean"] is not None and est["ci95"][0] is not None and est["ci95"][0] > 0


def gap_premise(pre: Mapping) -> tuple[bool, str]:
    """(holds, reason). Holds when the RM - DPO held-out accuracy interval and the oracle
    best-of-K headroom interval both lie above 0; the reason names the measured numbers."""
    acc, room = pre["accuracy"], pre["headroom"]
    numbers = (
        f"RM - DPO held-out accuracy {fmt_diff(acc['mean'], acc['ci95'])}, oracle best-of-K "
        f"headroom {fmt_diff(room['mean'], room['ci95'])}, {pre['n_seeds']} seed(s)"
    )
    if _above_zero(acc) and _above_zero(room):
        return True, f"premise measured: {numbers}"
    failed = [
        n
        for n, e in (("the RM's accuracy lead", acc), ("the headroom", room))
        if not _above_zero(e)
    ]
    return False, f"premise not measured ({' and '.join(failed)} not shown above 0): {numbers}"


def _best_of_n_diffs(per_seed: list) -> tuple:
    """(largest N both RM rankers reached in every seed, per-seed global - local gold reward)."""
    tables = [{(p["ranker"], p["n"]): p["gold_reward"] for p in d["best_of_n"]} for d in per_seed]
    common = set.intersection(*({n for r, n in t if r == "global_rm"} for t in tables))
    common &= set.intersection(*({n for r, n in t if r == "local_rm"} for t in tables))
    if not common:
        return None, []
    n = max(common)
    return n, [t["global_rm", n] - t["local_rm", n] for t in tables]


def h5_rows(results: Mapping) -> list[dict]:
    """H5 per (cell, budget): the global RM - DPO's implicit reward on held-out accuracy and
    log-likelihood (precondition), and as a Best-of-N ranker at the largest common N; each
    predicted positive, paired by seed."""
    rows = []
    for d in results["diagnostics"]:
        key = (d["task"], d["label_budget"])
        for what in ("accuracy", "loglik"):
            est = d["precondition"][what]
            mean, ci, verdict, note = judge(est["per_seed"], "positive")
            rows.append(
                verdict_row(
                    "H5",
                    *key,
                    f"global RM - DPO held-out {what}",
                    mean,
                    ci,
                    len(est["per_seed"]),
                    verdict,
                    note,
                )
            )
        n, diffs = _best_of_n_diffs(d["per_seed"])
        if diffs:
            mean, ci, verdict, note = judge(diffs, "positive")
            quantity = f"Best-of-{n} gold reward, global RM - local RM ranker"
            rows.append(verdict_row("H5", *key, quantity, mean, ci, len(diffs), verdict, note))
    return rows or [not_run("H5", "no diagnostics records")]
