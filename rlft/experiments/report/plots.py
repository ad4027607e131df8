"""The report's plots: `make_plots(results, plot_dir)` draws every plot the results allow.

Matplotlib on an Agg canvas (`Figure`, no pyplot state), so it runs headless anywhere. A plot
the results cannot support is skipped with a note that report.md shows in its place.
"""

import os
from collections.abc import Mapping

import numpy as np
from matplotlib.figure import Figure

from rlft.experiments.report.schema import ARMS, _arm_key, _budgets_of, _cell_rows, _tasks


def _color(arm: str) -> str:
    return f"C{_arm_key(arm)[0] % 10}" if arm in ARMS else f"C{(len(ARMS) + len(arm)) % 10}"


def _yerr(rows: list, mean: str, ci: str) -> np.ndarray:
    """Asymmetric error bars from [lo, hi] intervals; 0 where a cell has no interval."""
    lo = [r[mean] - r[ci][0] if r[ci][0] is not None else 0.0 for r in rows]
    hi = [r[ci][1] - r[mean] if r[ci][1] is not None else 0.0 for r in rows]
    return np.array([lo, hi])


def _axes(ncols: int, width: float = 4.8, height: float = 3.6) -> tuple:
    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    return fig, fig.subplots(1, ncols, squeeze=False)[0]


def _log_x(ax, values) -> None:
    """Log x axis labelled at the values themselves (budgets, N), not at powers of ten."""
    values = sorted(set(values))
    ax.set_xscale("log")
    ax.set_xticks(values, [str(v) for v in values])
    ax.minorticks_off()


def _usable(rows: list, mean: str) -> list:
    return [r for r in rows if r[mean] is not None]


def _plot_gold_vs_budget(results: Mapping, task: str):
    """Gold reward per arm against the label budget (arms side by side for a single budget)."""
    rows = _usable([r for r in results["summary"] if r["task"] == task], "gold_reward_mean")
    budgets = _budgets_of(results, task)
    if not rows:
        return "no finite gold reward"
    fig, (ax,) = _axes(1, width=6.0)
    if len(budgets) == 1:
        cell = _usable(_cell_rows(results, task, budgets[0]), "gold_reward_mean")
        for i, r in enumerate(cell):
            yerr = _yerr([r], "gold_reward_mean", "gold_reward_ci95")
            ax.errorbar(
                i, r["gold_reward_mean"], yerr=yerr, fmt="o", capsize=4, color=_color(r["arm"])
            )
        ax.set_xticks(range(len(cell)), [r["arm"] for r in cell], rotation=30, ha="right")
        ax.set_title(f"{task}: gold reward, {budgets[0]} labels")
    else:
        for arm in sorted({r["arm"] for r in rows}, key=_arm_key):
            arm_rows = sorted((r for r in rows if r["arm"] == arm), key=lambda r: r["label_budget"])
            if not {r["label_budget"] for r in arm_rows} & set(budgets):  # SFT run once
                ax.axhline(arm_rows[0]["gold_reward_mean"], color=_color(arm), ls="--", label=arm)
                continue
            x = [r["label_budget"] for r in arm_rows]
            y = [r["gold_reward_mean"] for r in arm_rows]
            yerr = _yerr(arm_rows, "gold_reward_mean", "gold_reward_ci95")
            ax.errorbar(x, y, yerr=yerr, marker="o", capsize=3, color=_color(arm), label=arm)
        _log_x(ax, budgets)
        ax.set_xlabel("label budget (preference pairs)")
        ax.set_title(f"{task}: gold reward vs label budget")
        ax.legend(fontsize=7)
    ax.set_ylabel("gold reward (95% CI over seeds)")
    return fig


def _plot_advantage(results: Mapping):
    """online_dpo - offline_dpo gold reward with its paired 95% CI, per task and budget."""
    rows = [r for r in results["comparisons"] if r["arm"] == "online_dpo" and r["mean"] is not None]
    if not rows:
        return "no task ran both online_dpo and offline_dpo"
    fig, (ax,) = _axes(1, width=max(5.0, 0.7 * len(rows) + 2))
    ax.errorbar(
        range(len(rows)),
        [r["mean"] for r in rows],
        yerr=_yerr(rows, "mean", "ci95"),
        fmt="o",
        capsize=4,
        color="C2",
    )
    ax.axhline(0.0, color="grey", lw=0.8)
    ticks = [f"{r['task']}\n{r['label_budget']}" for r in rows]
    ax.set_xticks(range(len(rows)), ticks, fontsize=8)
    ax.set_ylabel("online - offline DPO gold reward")
    ax.set_title("Online advantage (paired by seed, 95% CI)")
    return fig


def _plot_best_of_n(results: Mapping, task: str):
    rows = _usable([r for r in results["best_of_n"] if r["task"] == task], "gold_reward_mean")
    budgets = sorted({r["label_budget"] for r in rows})
    if not rows:
        return "no Best-of-N records"
    fig, axes = _axes(len(budgets))
    for ax, budget in zip(axes, budgets, strict=True):
        for i, ranker in enumerate(dict.fromkeys(r["ranker"] for r in rows)):
            pts = sorted(
                (r for r in rows if r["ranker"] == ranker and r["label_budget"] == budget),
                key=lambda r: r["n"],
            )
            ax.errorbar(
                [r["n"] for r in pts],
                [r["gold_reward_mean"] for r in pts],
                yerr=_yerr(pts, "gold_reward_mean", "gold_reward_ci95"),
                marker="o",
                capsize=3,
                color=f"C{i}",
                label=ranker,
            )
        _log_x(ax, [r["n"] for r in rows])
        ax.set_xlabel("N (SFT samples reranked)")
        ax.set_ylabel("gold reward of the pick")
        ax.set_title(f"{task}, {budget} labels: Best-of-N")
        ax.legend(fontsize=7)
    return fig


def _plot_frontier(results: Mapping, task: str):
    cells = [c for c in results["frontier"] if c["task"] == task]
    budgets = sorted({c["label_budget"] for c in cells})
    if not cells:
        return "no frontier checkpoints"
    fig, axes = _axes(len(budgets))
    for ax, budget in zip(axes, budgets, strict=True):
        for cell in (c for c in cells if c["label_budget"] == budget):
            pts = [
                p
                for p in cell["points"]
                if None not in (p["kl_to_ref_mean"], p["gold_reward_mean"])
            ]
            ax.plot(
                [p["kl_to_ref_mean"] for p in pts],
                [p["gold_reward_mean"] for p in pts],
                marker=".",
                color=_color(cell["arm"]),
                label=cell["arm"],
            )
        for r in _usable(_cell_rows(results, task, budget), "kl_to_ref_mean"):
            if r["gold_reward_mean"] is not None:
                ax.plot(
                    r["kl_to_ref_mean"],
                    r["gold_reward_mean"],
                    marker="*",
                    ms=11,
                    color=_color(r["arm"]),
                    ls="none",
                )
        ax.set_xlabel("KL to reference (nats)")
        ax.set_ylabel("gold reward")
        ax.set_title(f"{task}, {budget} labels: reward vs KL (star: final)")
        ax.legend(fontsize=7)
    return fig


def _plot_curves(results: Mapping):
    rows = results["curves_summary"]
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    if not rows:
        return "no learning-curve records (quick variant)"
    fig, axes = _axes(len(tasks))
    for ax, task in zip(axes, tasks, strict=True):
        pts = [r for r in rows if r["task"] == task]
        for i, (m, label) in enumerate((("rm", "global RM"), ("dpo", "DPO implicit reward"))):
            pts_m = _usable(pts, f"{m}_heldout_accuracy_mean")
            ax.errorbar(
                [r["n_pairs"] for r in pts_m],
                [r[f"{m}_heldout_accuracy_mean"] for r in pts_m],
                yerr=_yerr(pts_m, *(f"{m}_heldout_accuracy_{s}" for s in ("mean", "ci95"))),
                marker="o",
                capsize=3,
                color=f"C{i}",
                label=label,
            )
        ax.axhline(0.5, color="grey", lw=0.8, ls=":")
        _log_x(ax, [r["n_pairs"] for r in pts])
        ax.set_xlabel("preference pairs N")
        ax.set_ylabel("held-out pair accuracy")
        ax.set_title(f"{task}: learning curves")
        ax.legend(fontsize=7)
    return fig


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def make_plots(results: Mapping, plot_dir: str) -> tuple[list, list]:
    """Render every plot the results allow into plot_dir: (made, skipped) lists for the report."""
    wanted = [
        ("online_advantage", "verdict:H6", "online advantage", lambda: _plot_advantage(results))
    ]
    for task in _tasks(results):
        s = _slug(task)
        wanted += [
            (
                f"gold_vs_budget_{s}",
                f"task:{task}",
                f"{task}: gold reward per arm",
                lambda t=task: _plot_gold_vs_budget(results, t),
            ),
            (
                f"best_of_n_{s}",
                "best_of_n",
                f"{task}: Best-of-N",
                lambda t=task: _plot_best_of_n(results, t),
            ),
            (
                f"frontier_{s}",
                "frontier",
                f"{task}: reward vs KL frontier",
                lambda t=task: _plot_frontier(results, t),
            ),
        ]
    wanted.append(("curves", "curves", "RM and DPO learning curves", lambda: _plot_curves(results)))
    os.makedirs(plot_dir, exist_ok=True)
    made, skipped = [], []
    for name, section, caption, draw in wanted:
        fig = draw()
        if isinstance(fig, str):
            skipped.append({"name": name, "section": section, "note": fig})
            continue
        fig.savefig(os.path.join(plot_dir, f"{name}.png"), dpi=100)
        path = f"{os.path.basename(os.path.normpath(plot_dir))}/{name}.png"
        made.append({"name": name, "section": section, "caption": caption, "path": path})
    return made, skipped
