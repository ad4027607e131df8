"""From the reproduce pipeline's records to results.json, report.md and plots/.

`write_outputs(workdir, config, records)` is the one entry point the pipeline calls. It checks
the records (schema.py), builds the results (summary.build_results: seed means with Student-t
95% intervals, comparisons paired by seed at matched KL, selected and final checkpoints,
verdicts, the map), validates them and writes

    workdir/results.json   settings, config, raw runs, summaries, comparisons, diagnostics,
                           verdicts ("hypotheses"), the map, the isomorphic control
    workdir/report.md      every result sentence generated from results.json, with tables
    workdir/plots/*.png

results.json keeps the records themselves (runs, per-seed diagnostics, curves, tasks,
settings), so `python -m rlft.experiments.report.render WORKDIR` renders a workdir's report
again from its results.json alone (`records_from_results`), e.g. after the report code changed.

Pure numpy and matplotlib (an Agg canvas, no pyplot state): no JAX, runs anywhere.
"""

import json
import os
import sys
from collections.abc import Mapping

from rlft.experiments.report import control
from rlft.experiments.report.claims import verdicts_markdown
from rlft.experiments.report.diag_markdown import diagnostics_markdown
from rlft.experiments.report.map import map_markdown
from rlft.experiments.report.markdown import eval_name, plots_md
from rlft.experiments.report.plots import make_plots
from rlft.experiments.report.schema import validate_results
from rlft.experiments.report.summary import build_results
from rlft.experiments.report.tables import (
    comparisons_markdown,
    overoptimisation_markdown,
    summary_markdown,
)

TITLE = "# Reproduction report: a reward model plus online RL against direct likelihood (DPO)"


def _head(results: Mapping) -> str:
    s, n_cells = results["settings"], len(results["tasks"])
    seeds = sorted({r["seed"] for r in results["runs"]})
    return "\n".join(
        [
            TITLE,
            "",
            f"{len(results['runs'])} runs over {n_cells} cell(s) and {len(seeds)} seed(s). Wall "
            f"time of the invocation that wrote this report {results['wall_time_s'] / 60:.1f} "
            "min (a rerun reads finished units from disk); the arms' own training and "
            f"evaluation, summed over units, {results['arms_wall_s'] / 60:.1f} min. Headline "
            "verdicts use the primary "
            f"evaluation, {eval_name(s, s['primary_eval'])}; tables also give "
            f"{eval_name(s, 'sample' if s['primary_eval'] == 'greedy' else 'greedy')}. "
            f"beta = {s['beta']:g}. Means over seeds ± the Student-t 95% half-width; differences "
            "between arms are paired by seed (same SFT policy and labels) as mean [95% CI]. A "
            "verdict is *supported* or *contradicted* only when the interval excludes 0; a "
            "prediction of no improvement or no difference whose interval covers 0 is *not "
            "contradicted* (an interval cannot show a null: fewer seeds would make that "
            "easier); *not applicable* when the rule's premise was not measured. One seed "
            "gives no interval and no verdict.",
            "",
        ]
    )


def _config(results: Mapping) -> str:
    lines = [f"{k}: {json.dumps(v)}" for k, v in sorted(results["config"].items())]
    settings = [f"{k}: {json.dumps(v)}" for k, v in results["settings"].items()]
    return "\n".join(["## Settings and configuration", "", "```", *settings, *lines, "```", ""])


def render_report(results: Mapping) -> str:
    """report.md: verdicts first, then the map and the tables they rest on."""
    sections = [
        _head(results),
        verdicts_markdown(results),
        map_markdown(results, plots_md(results, "map")),
        summary_markdown(results),
        comparisons_markdown(results),
        diagnostics_markdown(results),
        overoptimisation_markdown(results),
        control.markdown(results),
        _config(results),
    ]
    return "\n".join(s for s in sections if s)  # control.markdown is empty off the bandit


def _write_json(obj, path: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, allow_nan=False)
    os.replace(tmp, path)


def write_outputs(workdir: str, config: Mapping | None, records: Mapping) -> dict:
    """Write results.json, plots/*.png and report.md into workdir; return the results object.

    Raises ValueError on malformed records (schema.validate_records) before writing anything.
    """
    results = build_results(config, records)
    validate_results(results)
    os.makedirs(workdir, exist_ok=True)
    _write_json(results, os.path.join(workdir, "results.json"))  # kept even if a plot fails
    results["plots"], results["plots_skipped"] = make_plots(results, os.path.join(workdir, "plots"))
    _write_json(results, os.path.join(workdir, "results.json"))
    with open(os.path.join(workdir, "report.md"), "w") as f:
        f.write(render_report(results))
    return results


def records_from_results(results: Mapping) -> dict:
    """The pipeline's records, read back from a results.json (its raw sections)."""
    return {
        "settings": results["settings"],
        "tasks": results["tasks"],
        "runs": results["runs"],
        "diagnostics": [d for row in results["diagnostics"] for d in row["per_seed"]],
        "curves": results["curves"],
        "wall_time_s": results["wall_time_s"],
    }


def rerender(workdir: str) -> dict:
    """Write `workdir`'s results.json, report.md and plots again from its results.json."""
    with open(os.path.join(workdir, "results.json")) as f:
        results = json.load(f)
    return write_outputs(workdir, results["config"], records_from_results(results))


if __name__ == "__main__":  # python -m rlft.experiments.report.render WORKDIR
    rerender(sys.argv[1])
