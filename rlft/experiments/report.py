"""From the reproduce pipeline's raw records to results.json, report.md and plots/.

`write_outputs(workdir, config, records)` is the one entry point the pipeline calls. It checks
the records, averages every (task, label budget, arm) cell over seeds with Student-t 95%
intervals (stats.py), decides each hypothesis' verdict from those numbers (arms paired by
seed), validates the result and writes

    workdir/results.json   config, raw runs, summaries, diagnostics, comparisons, verdicts,
                           and on the bandit the exact tabular control ("isomorphic", control.py)
    workdir/report.md      tables, verdicts and plots (relative links)
    workdir/plots/*.png

The record and results.json schema and its validation live in results_schema.py, the
hypotheses' verdicts in verdicts.py and the plots in plots.py. Their public names are
re-exported here (`__all__`), so callers (the pipeline, tests, notebook) import from here.

Pure numpy and matplotlib (an Agg canvas, no pyplot state): no JAX, runs anywhere.
"""

import json
import math
import os
from collections.abc import Mapping

from rlft.experiments import control, stats, verdicts
from rlft.experiments.plots import make_plots
from rlft.experiments.results_schema import (
    ARMS,
    BON_FIELDS,
    CI,
    CURVE_FIELDS,
    DIAG_FIELDS,
    DIAG_METRICS,
    DICT,
    FRONTIER_FIELDS,
    H4_SUFFIXES,
    INT,
    KEYS,
    LIST,
    METRICS,
    NUM,
    OPT,
    RANKERS,
    RECORD_FIELDS,
    RESULT_FIELDS,
    RESULT_SECTIONS,
    RUN_FIELDS,
    RUN_OPTIONAL,
    STR,
    TASK_ROLES,
    _budgets_of,
    _cell_rows,
    _clean,
    _sorted_cells,
    _tasks,
    validate_records,
    validate_results,
)
from rlft.experiments.verdicts import (
    CLAIMS,
    NOT_RUN,
    TITLES,
    _fmt_diff,
    _num,
    _paired_diffs,
    _plots_md,
    _table,
    hypotheses,
)

__all__ = ["build_results", "render_report", "summary_markdown", "write_outputs"]
__all__ += ["CLAIMS", "NOT_RUN", "TITLES", "hypotheses", "verdicts_markdown", "make_plots"]
__all__ += ["ARMS", "RANKERS", "TASK_ROLES", "H4_SUFFIXES", "METRICS", "DIAG_METRICS"]
__all__ += ["validate_records", "validate_results", "RECORD_FIELDS", "RESULT_FIELDS"]
__all__ += ["RESULT_SECTIONS", "RUN_FIELDS", "RUN_OPTIONAL", "FRONTIER_FIELDS", "DIAG_FIELDS"]
__all__ += ["BON_FIELDS", "CURVE_FIELDS", "KEYS", "NUM", "INT", "STR", "LIST", "DICT", "OPT", "CI"]

# An assignment, not an import: the notebook imports it from here, and test_report looks for
# the notebook's names among this module's definitions.
verdicts_markdown = verdicts.verdicts_markdown


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


# ----------------------------------------------------------------------------- markdown


def _fmt_mean(mean, ci) -> str:
    """'0.412 ± 0.031' (Student-t 95% half-width); a bare mean without an interval (1 seed)."""
    if mean is None:
        return "n/a"
    if ci is None or ci[0] is None or ci[1] is None:
        return _num(mean)
    return f"{_num(mean)} ± {_num((ci[1] - ci[0]) / 2)}"


def _seeds(n) -> str:
    return "1 (no CI)" if n == 1 else str(n)


def summary_markdown(results: Mapping, plots: bool = True) -> str:
    """Per task and label budget: each arm's gold reward, win rate vs SFT and KL, over seeds.

    plots=False leaves out the plot links (relative to workdir), e.g. for a notebook.
    """
    out = ["## Results per task and label budget", ""]
    header = ["arm", "gold reward", "win rate vs SFT", "KL to reference", "seeds"]
    for task in _tasks(results):
        desc = results["tasks"].get(task, {}).get("description", "")
        out += [f"### `{task}`", ""] + ([desc, ""] if desc else [])
        for budget in _budgets_of(results, task):
            body = [
                [r["arm"]]
                + [_fmt_mean(r[f"{m}_mean"], r[f"{m}_ci95"]) for m in METRICS]
                + [_seeds(r["n_seeds"])]
                for r in _cell_rows(results, task, budget)
            ]
            out += [f"**{budget} labels**", "", _table(header, body), ""]
        links = _plots_md(results, f"task:{task}") if plots else ""
        out += [links, ""] if links else []
    return "\n".join(out)


def _comparisons_markdown(results: Mapping) -> str:
    out = ["## Every arm against offline DPO (gold reward, paired by seed)", ""]
    body = [
        [r["task"], r["label_budget"], f"{r['arm']} - offline_dpo", _fmt_diff(r["mean"], r["ci95"])]
        + [_seeds(r["n_seeds"]), r["sign"]]
        for r in results["comparisons"]
    ]
    if not body:
        return "\n".join(out + ["No cell has offline DPO and another arm.", ""])
    header = ["task", "labels", "difference", "mean [95% CI]", "seeds", "sign"]
    return "\n".join(out + [_table(header, body), ""])


def _diagnostics_markdown(results: Mapping) -> str:
    out = ["## Diagnostics: can the reward be learnt from these labels?", ""]
    names = ["RM accuracy", "DPO accuracy", "RM loglik", "DPO loglik", "oracle best-of-K gain"]
    body = [
        [r["task"], r["label_budget"]]
        + [_fmt_mean(r[f"{m}_mean"], r[f"{m}_ci95"]) for m in DIAG_METRICS]
        + [_seeds(r["n_seeds"])]
        for r in results["diagnostics"]
    ]
    if body:
        out += [_table(["task", "labels", *names, "seeds"], body), ""]
        out += [
            "Accuracy: held-out pairs ordered as the gold verifier orders them. Loglik: mean",
            "log sigmoid(margin) of the drawn labels (global vs local validation likelihood).",
            "",
        ]
    else:
        out += ["No diagnostics records.", ""]
    cells = list(dict.fromkeys((r["task"], r["label_budget"]) for r in results["best_of_n"]))
    for task, budget in cells:
        rows = [r for r in results["best_of_n"] if (r["task"], r["label_budget"]) == (task, budget)]
        ns = sorted({r["n"] for r in rows})
        rankers = list(dict.fromkeys(r["ranker"] for r in rows))
        body = [
            [ranker]
            + [
                next(
                    (
                        _fmt_mean(r["gold_reward_mean"], r["gold_reward_ci95"])
                        for r in rows
                        if r["ranker"] == ranker and r["n"] == n
                    ),
                    "",
                )
                for n in ns
            ]
            for ranker in rankers
        ]
        out += [f"**Best-of-N gold reward, `{task}`, {budget} labels**", ""]
        out += [_table(["ranker", *(f"N={n}" for n in ns)], body), ""]
    for section in ("best_of_n", "curves"):
        plots = _plots_md(results, section)
        out += [plots, ""] if plots else []
    return "\n".join(out)


def _overoptimisation_markdown(results: Mapping) -> str:
    out = ["## Over-optimisation: KL, reward-model score and gold reward", ""]
    for task in _tasks(results):
        for budget in _budgets_of(results, task):
            rows = _cell_rows(results, task, budget)
            parts = sorted({k for r in rows for k in r.get("gold_parts_mean") or {}})
            body = [
                [r["arm"], _fmt_mean(r["kl_to_ref_mean"], r["kl_to_ref_ci95"])]
                + [_fmt_mean(r.get("rm_score_mean"), r.get("rm_score_ci95"))]
                + [_fmt_mean(r["gold_reward_mean"], r["gold_reward_ci95"])]
                + [_fmt_part((r.get("gold_parts_mean") or {}).get(k)) for k in parts]
                for r in rows
            ]
            header = ["arm", "KL to reference", "RM score", "gold reward", *parts]
            out += [f"**`{task}`, {budget} labels**", "", _table(header, body), ""]
    plots = _plots_md(results, "frontier")
    out += [plots, ""] if plots else []
    return "\n".join(out)


def _fmt_part(v) -> str:
    return "n/a" if v is None else _num(v)


def render_report(results: Mapping) -> str:
    """report.md: verdicts first, then the tables they rest on, then how to read them."""
    wall = results["wall_time_s"]
    head = [
        "# Reproduction report: All Roads Lead to Likelihood, miniature",
        "",
        f"{len(results['runs'])} runs over {len(_tasks(results))} task(s), wall time "
        f"{wall / 60:.1f} min. Means over seeds ± the Student-t 95% half-width; differences "
        "between arms are paired by seed (same SFT policy and labels) as mean [95% CI]. A "
        "verdict is *supported* or *contradicted* only when the interval excludes 0; otherwise "
        "*inconclusive* (*consistent* where the prediction is 'no difference'). One seed gives "
        "no interval and no verdict.",
        "",
    ]
    notes = [
        "## Configuration",
        "",
        "```",
        *(f"{k}: {json.dumps(v)}" for k, v in sorted(results["config"].items())),
        "```",
        "",
    ]
    sections = [
        "\n".join(head),
        verdicts_markdown(results),
        control.markdown(results),
        summary_markdown(results),
        _comparisons_markdown(results),
        _diagnostics_markdown(results),
        _overoptimisation_markdown(results),
        "\n".join(notes),
    ]
    return "\n".join(s for s in sections if s)  # control.markdown is empty off the bandit


# ----------------------------------------------------------------------------- writing


def _write_json(obj, path: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, allow_nan=False)
    os.replace(tmp, path)


def write_outputs(workdir: str, config, records: Mapping) -> dict:
    """Write results.json, plots/*.png and report.md into workdir; return the results object."""
    results = build_results(config, records)
    validate_results(results)
    os.makedirs(workdir, exist_ok=True)
    _write_json(results, os.path.join(workdir, "results.json"))  # kept even if a plot fails
    results["plots"], results["plots_skipped"] = make_plots(results, os.path.join(workdir, "plots"))
    _write_json(results, os.path.join(workdir, "results.json"))
    with open(os.path.join(workdir, "report.md"), "w") as f:
        f.write(render_report(results))
    return results
