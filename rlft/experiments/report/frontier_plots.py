"""Plots along training: gold reward against KL (the frontier) and RM score against gold.

One figure per cell, a panel per label budget, one line per arm through its checkpoints' seed
means (results.json["frontier"]); the frontier marks each arm's selected checkpoint (x) and
the cell's matched KL K* (dashed). Gold reward on the primary evaluation.
"""

from collections.abc import Mapping

from matplotlib.figure import Figure

from rlft.experiments.report.cells import budgets_of, cell_rows
from rlft.experiments.report.markdown import eval_name
from rlft.experiments.report.plot_style import axes, color

SUFFIX = {"greedy": "_greedy", "sample": ""}


def _points(row: Mapping, x: str, y: str) -> list:
    return [(p[x], p[y]) for p in row["points"] if p[x] is not None and p[y] is not None]


def plot_frontier(results: Mapping, cell: str) -> Figure | str:
    """Gold reward (primary eval) vs KL per arm; a string saying why when there is nothing."""
    primary = results["settings"]["primary_eval"]
    gold = "gold_reward" + SUFFIX[primary]
    budgets = budgets_of(results, cell)
    if not any(cell_rows(results, cell, b, "frontier") for b in budgets):
        return "no frontier checkpoints"
    fig, ax_grid = axes(len(budgets))
    for ax, budget in zip(ax_grid[0], budgets, strict=True):
        for row in cell_rows(results, cell, budget, "frontier"):
            pts = _points(row, "kl_to_ref_mean", f"{gold}_mean")
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, marker=".", color=color(row["arm"]), label=row["arm"])
        summary = cell_rows(results, cell, budget)
        for r in summary:
            x, y = r["selected_kl_to_ref_mean"], r[f"selected_{gold}_mean"]
            if x is not None and y is not None:
                ax.plot(x, y, marker="x", ms=9, mew=2, color=color(r["arm"]), ls="none")
        kl = next((r["matched_kl"] for r in summary if r["matched_kl"] is not None), None)
        if kl is not None:
            ax.axvline(kl, color="grey", ls="--", lw=1, label=f"K* = {kl:.2f}")
        ax.set_xlabel("KL(pi || pi_sft), nats per response")
        ax.set_ylabel(f"gold reward, {eval_name(results['settings'], primary)}")
        ax.set_title(f"{cell}, {budget} labels (x: selected)", fontsize=9)
        ax.legend(fontsize=6)
    return fig


def plot_rm_vs_gold(results: Mapping, cell: str) -> Figure | str:
    """RM score vs gold reward along training per arm (over-optimisation: RM up, gold down)."""
    primary = results["settings"]["primary_eval"]
    sfx = SUFFIX[primary]
    budgets = budgets_of(results, cell)
    rows = [r for b in budgets for r in cell_rows(results, cell, b, "frontier")]
    if not any(_points(r, f"rm_score{sfx}_mean", f"gold_reward{sfx}_mean") for r in rows):
        return "no RM scores along training"
    fig, ax_grid = axes(len(budgets))
    for ax, budget in zip(ax_grid[0], budgets, strict=True):
        for row in cell_rows(results, cell, budget, "frontier"):
            pts = _points(row, f"rm_score{sfx}_mean", f"gold_reward{sfx}_mean")
            if not pts:
                continue
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, marker=".", color=color(row["arm"]), label=row["arm"])
            ax.plot(xs[0], ys[0], marker="o", mfc="none", color=color(row["arm"]), ls="none")
        ax.set_xlabel("RM score")
        ax.set_ylabel(f"gold reward, {eval_name(results['settings'], primary)}")
        ax.set_title(f"{cell}, {budget} labels: RM vs gold (o: start)", fontsize=9)
        ax.legend(fontsize=6)
    return fig
