"""From the reproduce pipeline's raw records to results.json, report.md and plots/.

`write_outputs(workdir, config, records)` is the one entry point the pipeline calls. It checks
the records, averages every (task, label budget, arm) cell over seeds with Student-t 95%
intervals (stats.py), decides each hypothesis' verdict from those numbers (arms paired by
seed), validates the result and writes

    workdir/results.json   config, raw runs, summaries, diagnostics, comparisons, verdicts,
                           and on the bandit the exact tabular control ("isomorphic", control.py)
    workdir/report.md      tables, verdicts and plots (relative links)
    workdir/plots/*.png

The record and results.json schema and its validation live in results_schema.py, the seed
averages and comparisons (`build_results`) in summary.py, the hypotheses' verdicts in
verdicts.py and the plots in plots.py. Their public names are
re-exported here (`__all__`), so callers (the pipeline, tests, notebook) import from here.

Pure numpy and matplotlib (an Agg canvas, no pyplot state): no JAX, runs anywhere.
"""

import json
import os
from collections.abc import Mapping

from rlft.experiments.report import control, verdicts
from rlft.experiments.report.plots import make_plots
from rlft.experiments.report.schema import (
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
    _tasks,
    validate_records,
    validate_results,
)
from rlft.experiments.report.summary import build_results
from rlft.experiments.report.verdicts import (
    CLAIMS,
    NOT_RUN,
    TITLES,
    _fmt_diff,
    _num,
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
