"""Seed averages of the measurements made before comparing arms (the pipeline's diagnostics).

Per (cell, budget): RM and DPO held-out accuracy and log-likelihood, their paired differences
(premise.py), oracle best-of-K headroom, the fraction of informative labels (not decided by a
tie in gold reward), the labels' agreement with the gold order and the SFT fit; Best-of-N per
ranker and N; the RM and DPO learning curves. Means with Student-t 95% intervals (stats.py).
"""

from collections.abc import Mapping

from rlft.experiments.report import premise, stats
from rlft.experiments.report.schema import DIAG_METRICS, RANKERS, SFT_FIT, json_safe


def _put(row: dict, name: str, values) -> None:
    mean, ci, _ = stats.estimate(values)
    row[f"{name}_mean"], row[f"{name}_ci95"] = mean, ci


def diagnostic_rows(diag_index: Mapping, order: list[str]) -> list[dict]:
    """One row per (cell, budget): seed means and intervals, the precondition, per-seed rows."""
    rows = []
    for cell, budget in sorted(diag_index, key=lambda k: (order.index(k[0]), k[1])):
        per_seed = [diag_index[cell, budget][s] for s in sorted(diag_index[cell, budget])]
        row = {"task": cell, "label_budget": budget, "n_seeds": len(per_seed)}
        for m in DIAG_METRICS:
            _put(row, m, [d[m] for d in per_seed])
        for k in SFT_FIT:
            _put(row, f"sft_fit_{k}", [d["sft_fit"][k] for d in per_seed])
        pre = premise.precondition(per_seed)
        for name in ("accuracy", "loglik"):
            row[f"rm_minus_dpo_{name}_mean"] = pre[name]["mean"]
            row[f"rm_minus_dpo_{name}_ci95"] = pre[name]["ci95"]
        row["precondition"] = pre
        rows.append(row | {"per_seed": json_safe(per_seed)})
    return rows


def best_of_n_rows(diag_index: Mapping, order: list[str]) -> list[dict]:
    """Gold reward of the Best-of-N pick per (cell, budget, ranker, N), over seeds."""
    cells = {}
    for (cell, budget), by_seed in diag_index.items():
        for diag in by_seed.values():
            for point in diag["best_of_n"]:
                key = (cell, budget, point["ranker"], point["n"])
                cells.setdefault(key, []).append(point["gold_reward"])
    rank = {r: i for i, r in enumerate(RANKERS)}
    rows = []
    for (cell, budget, ranker, n), values in sorted(
        cells.items(), key=lambda kv: (order.index(kv[0][0]), kv[0][1], rank[kv[0][2]], kv[0][3])
    ):
        row = {"task": cell, "label_budget": budget, "ranker": ranker, "n": n}
        row["n_seeds"] = len(values)
        _put(row, "gold_reward", values)
        rows.append(row)
    return rows


def curve_rows(curves: list, order: list[str]) -> list[dict]:
    """RM and DPO held-out accuracy per (cell, number of training pairs), over seeds."""
    cells = {}
    for c in curves:
        cells.setdefault((c["task"], c["n_pairs"]), []).append(c)
    rows = []
    for cell, n_pairs in sorted(cells, key=lambda k: (order.index(k[0]), k[1])):
        cs = cells[cell, n_pairs]
        row = {"task": cell, "n_pairs": n_pairs, "n_seeds": len(cs)}
        for m in ("rm_heldout_accuracy", "dpo_heldout_accuracy"):
            _put(row, m, [c[m] for c in cs])
        rows.append(row)
    return rows
