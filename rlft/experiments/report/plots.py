"""The report's plots: `make_plots(results, plot_dir)` draws every plot the results allow.

Matplotlib on an Agg canvas (`Figure`, no pyplot state), so it runs headless anywhere. A plot
the results cannot support is skipped with a note that report.md shows in its place. This
module holds the registry and the summary plots (online advantage, Best-of-N, learning
curves); frontier_plots.py and map_plot.py hold the others.
"""

import os
from collections.abc import Mapping

from matplotlib.figure import Figure

from rlft.experiments.report.comparisons import HEADLINE
from rlft.experiments.report.frontier_plots import plot_frontier, plot_rm_vs_gold
from rlft.experiments.report.map_plot import plot_map
from rlft.experiments.report.markdown import eval_name
from rlft.experiments.report.plot_style import axes, log_x, yerr

CHECKPOINT_STYLE = {"matched_kl": ("o", "matched KL (K*)"), "selected": ("s", "selected")}
CHECKPOINT_STYLE |= {"final": ("^", "final")}


def plot_advantage(results: Mapping) -> Figure | str:
    """online_dpo - offline_dpo gold reward (primary eval), paired 95% CI, per cell and budget,
    at matched KL, selected and final checkpoints."""
    ev = results["settings"]["primary_eval"]
    rows = [
        c
        for c in results["comparisons"]
        if (c["arm"], c["baseline"]) == HEADLINE
        and c["eval"] == ev
        and c["mean"] is not None
        and c["level"] in (None, "K*")
    ]
    if not rows:
        return "no cell has a measured online_dpo - offline_dpo difference"
    keys = list(dict.fromkeys((c["task"], c["label_budget"]) for c in rows))
    fig, ax_grid = axes(1, width=max(5.0, 0.9 * len(keys) + 2))
    ax = ax_grid[0][0]
    for j, (checkpoint, (marker, label)) in enumerate(CHECKPOINT_STYLE.items()):
        pts = [c for c in rows if c["checkpoint"] == checkpoint]
        x = [keys.index((c["task"], c["label_budget"])) + 0.2 * (j - 1) for c in pts]
        if pts:
            ax.errorbar(
                x,
                [c["mean"] for c in pts],
                yerr=yerr(pts, "mean", "ci95"),
                fmt=marker,
                capsize=3,
                color=f"C{j}",
                label=label,
            )
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_xticks(range(len(keys)), [f"{c}\n{b}" for c, b in keys], fontsize=8)
    ax.set_ylabel(f"online - offline DPO gold, {eval_name(results['settings'], ev)}")
    ax.set_title("Online advantage (paired by seed, 95% CI)")
    ax.legend(fontsize=7)
    return fig


def plot_best_of_n(results: Mapping, cell: str) -> Figure | str:
    """Gold reward of the Best-of-N pick against N, one line per ranker, a panel per budget."""
    rows = [
        r for r in results["best_of_n"] if r["task"] == cell and r["gold_reward_mean"] is not None
    ]
    if not rows:
        return "no Best-of-N records"
    budgets = sorted({r["label_budget"] for r in rows})
    fig, ax_grid = axes(len(budgets))
    for ax, budget in zip(ax_grid[0], budgets, strict=True):
        for i, ranker in enumerate(dict.fromkeys(r["ranker"] for r in rows)):
            pts = sorted(
                (r for r in rows if (r["ranker"], r["label_budget"]) == (ranker, budget)),
                key=lambda r: r["n"],
            )
            ax.errorbar(
                [r["n"] for r in pts],
                [r["gold_reward_mean"] for r in pts],
                yerr=yerr(pts, "gold_reward_mean", "gold_reward_ci95"),
                marker="o",
                capsize=3,
                color=f"C{i}",
                label=ranker,
            )
        log_x(ax, [r["n"] for r in rows])
        ax.set_xlabel("N (SFT samples reranked)")
        ax.set_ylabel("gold reward of the pick")
        ax.set_title(f"{cell}, {budget} labels: Best-of-N")
        ax.legend(fontsize=7)
    return fig


def plot_curves(results: Mapping) -> Figure | str:
    """RM and DPO held-out pair accuracy against the number of training pairs, per cell."""
    rows = results["curves_summary"]
    if not rows:
        return "no learning-curve records"
    cells = list(dict.fromkeys(r["task"] for r in rows))
    fig, ax_grid = axes(len(cells))
    for ax, cell in zip(ax_grid[0], cells, strict=True):
        pts = [r for r in rows if r["task"] == cell]
        for i, (m, label) in enumerate((("rm", "global RM"), ("dpo", "DPO implicit reward"))):
            mean, ci = f"{m}_heldout_accuracy_mean", f"{m}_heldout_accuracy_ci95"
            ok = [r for r in pts if r[mean] is not None]
            ax.errorbar(
                [r["n_pairs"] for r in ok],
                [r[mean] for r in ok],
                yerr=yerr(ok, mean, ci),
                marker="o",
                capsize=3,
                color=f"C{i}",
                label=label,
            )
        ax.axhline(0.5, color="grey", lw=0.8, ls=":")
        log_x(ax, [r["n_pairs"] for r in pts])
        ax.set_xlabel("preference pairs N")
        ax.set_ylabel("held-out pair accuracy")
        ax.set_title(f"{cell}: learning curves")
        ax.legend(fontsize=7)
    return fig


def slug(name: str) -> str:
    """A file-name-safe version of a cell name."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def wanted_plots(results: Mapping) -> list[tuple]:
    """(name, report section, caption, draw) of every plot, the online advantage first."""
    wanted = [
        ("online_advantage", "verdict:H6", "online advantage", lambda: plot_advantage(results)),
        ("map", "map", "outcome against precondition", lambda: plot_map(results)),
    ]
    for cell in results["tasks"]:
        s = slug(cell)
        wanted += [
            (
                f"frontier_{s}",
                f"cell:{cell}",
                f"{cell}: gold reward vs KL",
                lambda c=cell: plot_frontier(results, c),
            ),
            (
                f"rm_vs_gold_{s}",
                "overoptimisation",
                f"{cell}: RM score vs gold reward",
                lambda c=cell: plot_rm_vs_gold(results, c),
            ),
            (
                f"best_of_n_{s}",
                "best_of_n",
                f"{cell}: Best-of-N",
                lambda c=cell: plot_best_of_n(results, c),
            ),
        ]
    wanted.append(("curves", "curves", "RM and DPO learning curves", lambda: plot_curves(results)))
    return wanted


def make_plots(results: Mapping, plot_dir: str) -> tuple[list, list]:
    """Render every plot the results allow into plot_dir: (made, skipped) lists for the report.

    made: {"name", "section", "caption", "path"} with the path relative to plot_dir's parent;
    skipped: {"name", "section", "note"}.
    """
    os.makedirs(plot_dir, exist_ok=True)
    made, skipped = [], []
    for name, section, caption, draw in wanted_plots(results):
        fig = draw()
        if isinstance(fig, str):
            skipped.append({"name": name, "section": section, "note": fig})
            continue
        fig.savefig(os.path.join(plot_dir, f"{name}.png"), dpi=100)
        path = f"{os.path.basename(os.path.normpath(plot_dir))}/{name}.png"
        made.append({"name": name, "section": section, "caption": caption, "path": path})
    return made, skipped
