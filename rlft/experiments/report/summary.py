"""The numbers of results.json: `build_results(config, records)` assembles every section.

Per (cell, budget, arm), `arm_rows` gives the seed mean and Student-t 95% interval (stats.py)
of every frontier metric at three checkpoint choices: the final checkpoint, the selected one
(frontier.select, with the chosen step of each seed) and the cell's matched KL (the K* at which
online and offline DPO are compared, comparisons.HEADLINE, so every arm of a cell is read at
one KL). `frontier_rows` averages each step's checkpoint over seeds for the plots. Comparisons,
diagnostics, verdicts and the map come from their own modules.
"""

from collections.abc import Mapping

from rlft.experiments.arms import uses_reward_model
from rlft.experiments.report import control, diagnostics, frontier, stats
from rlft.experiments.report.cells import TASK_ROLES, arm_runs, cell_order, index_rows, sorted_keys
from rlft.experiments.report.comparisons import HEADLINE, comparison_rows, find
from rlft.experiments.report.map import build_map
from rlft.experiments.report.schema import POINT_METRICS, json_safe, validate_records
from rlft.experiments.report.verdicts import hypotheses

MATCHED_METRICS = tuple(m for m in POINT_METRICS if m not in ("kl_to_ref", "selection"))


def _put(row: dict, prefix: str, metric: str, values) -> None:
    mean, ci, _ = stats.estimate(values)
    row[f"{prefix}_{metric}_mean"], row[f"{prefix}_{metric}_ci95"] = mean, ci


def _parts(points: list, key: str) -> dict:
    names = sorted({k for p in points for k in p[key]})
    return {k: stats.estimate(p[key].get(k) for p in points)[0] for k in names}


def _at_checkpoint(row: dict, runs: list, which: str) -> None:
    points = [frontier.checkpoint(r["frontier"], which) for r in runs]
    if which == "selected":
        row["selected_steps"] = [None if p is None else p["step"] for p in points]
    points = [p for p in points if p is not None]
    row[f"{which}_n_seeds"] = len(points)
    for m in POINT_METRICS:
        _put(row, which, m, [p[m] for p in points])
    for key in ("gold_parts", "gold_parts_greedy"):
        row[f"{which}_{key}_mean"] = _parts(points, key)


def _at_matched_kl(row: dict, runs: dict, level: dict) -> None:
    """Each metric interpolated at the cell's K* in every seed; n/a if a seed does not reach it."""
    row["matched_kl"], row["matched_kl_note"] = None, level["reason"]
    for m in MATCHED_METRICS:
        row[f"matched_{m}_mean"], row[f"matched_{m}_ci95"] = None, [None, None]
    if level["kl"] is None:
        return
    kl = level["kl"]
    ranges = {s: frontier.kl_range(r["frontier"]) for s, r in sorted(runs.items())}
    short = [(s, (lo, hi)) for s, (lo, hi) in ranges.items() if not lo <= kl <= hi]
    row["matched_kl"] = kl
    if short:
        s, (lo, hi) = short[0]
        row["matched_kl_note"] = f"seed {s} covers KL [{lo:.3f}, {hi:.3f}] only"
        return
    for m in MATCHED_METRICS:
        values = [frontier.interpolate(r["frontier"], kl, m)[0] for _, r in sorted(runs.items())]
        _put(row, "matched", m, values)


def cell_level(comparisons: list, cell: str, budget: int, primary: str) -> dict:
    """{"kl": K* of the headline comparison (online vs offline DPO) or None, "reason": why not}."""
    row = find(comparisons, cell, budget, *HEADLINE, primary, "matched_kl")
    if row is None:
        return {"kl": None, "reason": f"no {' and '.join(HEADLINE)} runs to match KL with"}
    if not row["applicable"]:
        return {"kl": None, "reason": row["reason"]}
    return {"kl": row["kl"], "reason": ""}


def arm_rows(index: Mapping, order: list[str], comparisons: list, primary: str) -> list[dict]:
    """One row per (cell, budget, arm): final, selected and matched-KL seed means and CIs."""
    rows = []
    for cell, budget, arm in sorted_keys(index, order):
        runs = arm_runs(index, cell, budget, arm)
        seeds = sorted(runs)
        row = {"task": cell, "label_budget": budget, "arm": arm, "n_seeds": len(seeds)}
        row |= {"seeds": seeds, "selection_rule": runs[seeds[0]]["selection_rule"]}
        for which in frontier.CHECKPOINTS:
            _at_checkpoint(row, [runs[s] for s in seeds], which)
        _at_matched_kl(row, runs, cell_level(comparisons, cell, budget, primary))
        for m in ("wall_s", "num_pairs", "num_prompts"):
            _put(row, "run", m, [runs[s][m] for s in seeds])
        rows.append(row)
    return rows


def frontier_rows(index: Mapping, order: list[str]) -> list[dict]:
    """Per (cell, budget, arm): each checkpoint step's metrics averaged over the seeds that
    evaluated that step ({"step", "n_seeds", "<metric>_mean"})."""
    rows = []
    for cell, budget, arm in sorted_keys(index, order):
        by_step = {}
        for run in index[cell, budget, arm].values():
            for point in run["frontier"]:
                by_step.setdefault(point["step"], []).append(point)
        points = [
            {"step": step, "n_seeds": len(ps)}
            | {f"{m}_mean": stats.estimate(p[m] for p in ps)[0] for m in POINT_METRICS}
            for step, ps in sorted(by_step.items())
        ]
        rows.append({"task": cell, "label_budget": budget, "arm": arm, "points": points})
    return rows


def arms_wall_s(records: Mapping) -> float:
    """Seconds the arms took to train and evaluate when they ran, summed over distinct units (an
    arm that does not use the reward model appears in every class's cell but ran once)."""
    units = {}
    for r in records["runs"]:
        cell = records["tasks"][r["task"]]
        model_class = cell["reward_class"] if uses_reward_model(r["arm"]) else None
        key = (
            cell["task"],
            cell["label_source"],
            r["seed"],
            r["label_budget"],
            r["arm"],
            model_class,
        )
        units[key] = float(r.get("wall_s") or 0.0)
    return sum(units.values())


def build_results(config: Mapping | None, records: Mapping) -> dict:
    """The results.json object (JSON-safe: NaN written as null), verdicts and map included.

    Raises ValueError (schema.validate_records) on malformed records, and on two records for
    one seed of a (cell, budget, arm) or (cell, budget).
    """
    validate_records(records)
    order = cell_order(records)
    primary = records["settings"]["primary_eval"]
    index = index_rows(records["runs"], ("task", "label_budget", "arm"), "run")
    diag_index = index_rows(records["diagnostics"], ("task", "label_budget"), "diagnostics")
    comparisons = comparison_rows(index, order)
    results = {
        "config": json_safe(config) if config is not None else {},
        "settings": json_safe(records["settings"]),
        "tasks": json_safe(records["tasks"]),
        "task_roles": dict(TASK_ROLES),
        "wall_time_s": float(records["wall_time_s"]),
        "arms_wall_s": arms_wall_s(records),
        "runs": json_safe(records["runs"]),
        "summary": json_safe(arm_rows(index, order, comparisons, primary)),
        "frontier": json_safe(frontier_rows(index, order)),
        "comparisons": json_safe(comparisons),
        "diagnostics": json_safe(diagnostics.diagnostic_rows(diag_index, order)),
        "best_of_n": json_safe(diagnostics.best_of_n_rows(diag_index, order)),
        "curves": json_safe(records["curves"]),
        "curves_summary": json_safe(diagnostics.curve_rows(records["curves"], order)),
        "isomorphic": json_safe(control.summarize(records["diagnostics"], order)),
    }
    results["hypotheses"] = json_safe(hypotheses(results))
    results["map"] = json_safe(build_map(results))
    results["plots"], results["plots_skipped"] = [], []
    return results
