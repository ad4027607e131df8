"""The numbers of results.json: each (task, budget, arm) cell averaged over seeds with Student-t
95% intervals (stats.py), frontiers, diagnostics, Best-of-N, learning curves and the paired
comparisons with offline DPO. `build_results` assembles them; report.py renders and writes.
"""

import math
from collections.abc import Mapping

from rlft.experiments.report import control, stats
from rlft.experiments.report.schema import (
    DIAG_METRICS,
    METRICS,
    RANKERS,
    TASK_ROLES,
    _clean,
    _sorted_cells,
    validate_records,
)
from rlft.experiments.report.verdicts import (
    _paired_diffs,
    hypotheses,
)

# ----------------------------------------------------------------------------- aggregating


def _agg(values) -> tuple:
    """(mean, [lo, hi]) over the values that are not None; (None, [None, None]) if none are."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None, [None, None]
    mean, lo, hi = stats.mean_ci95(vals)
    return _clean(mean), [_clean(lo), _clean(hi)]


def _task_order(records: Mapping) -> list[str]:
    order = list(records["tasks"])
    for row in [*records["runs"], *records["diagnostics"], *records["curves"]]:
        if row["task"] not in order:
            order.append(row["task"])
    return order


def _index(rows, key_fields: tuple, what: str) -> dict:
    """{key tuple: {seed: row}}, refusing two rows for one seed of a cell."""
    index = {}
    for row in rows:
        cell = index.setdefault(tuple(row[k] for k in key_fields), {})
        if row["seed"] in cell:
            cell_name = ", ".join(f"{k}={row[k]!r}" for k in key_fields)
            raise ValueError(f"two {what} records for {cell_name}, seed {row['seed']}")
        cell[row["seed"]] = row
    return index


def _summarize_runs(runs_index: dict, order: list[str]) -> list[dict]:
    """One row per (task, budget, arm): seed means and intervals, RM score, gold parts."""
    rows = []
    for task, budget, arm in _sorted_cells(runs_index, order):
        by_seed = runs_index[task, budget, arm]
        runs = [by_seed[s] for s in sorted(by_seed)]
        row = {"task": task, "label_budget": budget, "arm": arm, "n_seeds": len(runs)}
        row["seeds"] = sorted(by_seed)
        for m in (*METRICS, "rm_score", "wall_s"):
            row[f"{m}_mean"], row[f"{m}_ci95"] = _agg(r.get(m) for r in runs)
        parts = sorted({k for r in runs for k in r.get("gold_parts") or {}})
        row["gold_parts_mean"] = {
            k: _agg((r.get("gold_parts") or {}).get(k) for r in runs)[0] for k in parts
        }
        rows.append(row)
    return rows


def _summarize_frontier(runs_index: dict, order: list[str]) -> list[dict]:
    """Seed-averaged reward-KL frontier of each cell, one point per checkpoint step."""
    rows = []
    for task, budget, arm in _sorted_cells(runs_index, order):
        by_step = {}
        for run in runs_index[task, budget, arm].values():
            for point in run.get("frontier") or []:
                by_step.setdefault(point["step"], []).append(point)
        points = [
            {"step": step, "n_seeds": len(ps)}
            | {f"{m}_mean": _agg(p[m] for p in ps)[0] for m in METRICS}
            for step, ps in sorted(by_step.items())
        ]
        if points:
            rows.append({"task": task, "label_budget": budget, "arm": arm, "points": points})
    return rows


def _summarize_diagnostics(diag_index: dict, order: list[str]) -> list[dict]:
    """One row per (task, budget): seed means and intervals, with the per-seed rows."""
    rows = []
    for task, budget in _sorted_cells(diag_index, order):
        per_seed = [diag_index[task, budget][s] for s in sorted(diag_index[task, budget])]
        row = {"task": task, "label_budget": budget, "n_seeds": len(per_seed)}
        for m in DIAG_METRICS:
            row[f"{m}_mean"], row[f"{m}_ci95"] = _agg(d[m] for d in per_seed)
        rows.append(row | {"per_seed": _clean(per_seed)})
    return rows


def _summarize_best_of_n(diag_index: dict, order: list[str]) -> list[dict]:
    cells = {}
    for task, budget in _sorted_cells(diag_index, order):
        for diag in diag_index[task, budget].values():
            for point in diag["best_of_n"]:
                key = (task, budget, point["ranker"], point["n"])
                cells.setdefault(key, []).append(point["gold_reward"])
    rows = []
    for (task, budget, ranker, n), values in cells.items():
        mean, ci = _agg(values)
        rows.append(
            {"task": task, "label_budget": budget, "ranker": ranker, "n": n}
            | {"n_seeds": len(values), "gold_reward_mean": mean, "gold_reward_ci95": ci}
        )
    rank = {r: i for i, r in enumerate(RANKERS)}
    return sorted(
        rows,
        key=lambda r: (order.index(r["task"]), r["label_budget"], rank.get(r["ranker"], 9), r["n"]),
    )


def _summarize_curves(curves: list, order: list[str]) -> list[dict]:
    cells = {}
    for c in curves:
        cells.setdefault((c["task"], c["n_pairs"]), []).append(c)
    rows = []
    for task, n_pairs in sorted(cells, key=lambda k: (order.index(k[0]), k[1])):
        cs = cells[task, n_pairs]
        row = {"task": task, "n_pairs": n_pairs, "n_seeds": len(cs)}
        for m in ("rm_heldout_accuracy", "dpo_heldout_accuracy"):
            row[f"{m}_mean"], row[f"{m}_ci95"] = _agg(c[m] for c in cs)
        rows.append(row)
    return rows


def _compare_to_offline(runs_index: dict, order: list[str]) -> list[dict]:
    """Every arm minus offline DPO in gold reward, paired by seed, per task and budget."""
    rows = []
    for task, budget, arm in _sorted_cells(runs_index, order):
        if arm == "offline_dpo" or (task, budget, "offline_dpo") not in runs_index:
            continue
        diffs = _paired_diffs(
            runs_index, (task, budget, arm), (task, budget, "offline_dpo"), "gold_reward"
        )
        if diffs:
            mean, lo, hi = stats.mean_ci95(diffs)
            sign = stats.sign_verdict(lo, hi) if math.isfinite(mean) else "non-finite values"
            rows.append(
                {"task": task, "label_budget": budget, "arm": arm, "baseline": "offline_dpo"}
                | {"metric": "gold_reward", "n_seeds": len(diffs), "mean": _clean(mean)}
                | {"ci95": [_clean(lo), _clean(hi)], "sign": sign}
            )
    return rows


def build_results(config, records: Mapping) -> dict:
    """The results.json object (JSON-safe: NaN written as null), verdicts included."""
    validate_records(records)
    order = _task_order(records)
    runs_index = _index(records["runs"], ("task", "label_budget", "arm"), "run")
    diag_index = _index(records["diagnostics"], ("task", "label_budget"), "diagnostics")
    results = {
        "config": _clean(config) if config is not None else {},
        "runs": _clean(records["runs"]),
        "summary": _summarize_runs(runs_index, order),
        "comparisons": _compare_to_offline(runs_index, order),
        "frontier": _summarize_frontier(runs_index, order),
        "diagnostics": _summarize_diagnostics(diag_index, order),
        "best_of_n": _summarize_best_of_n(diag_index, order),
        "curves": _clean(records["curves"]),
        "curves_summary": _summarize_curves(records["curves"], order),
        "tasks": _clean(records["tasks"]),
        "task_roles": dict(TASK_ROLES),
        "wall_time_s": float(records["wall_time_s"]),
        "isomorphic": control.summarize(records["diagnostics"], order),
    }
    results["hypotheses"] = hypotheses(runs_index, diag_index, order, results["config"])
    results["plots"], results["plots_skipped"] = [], []
    return results
