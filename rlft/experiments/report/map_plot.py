"""The map figure: outcome against precondition, one point per (cell, budget), and the fit.

x: RM - DPO held-out accuracy, y: online_dpo - offline_dpo gold reward at matched KL (primary
evaluation), both with their 95% intervals as error bars. Markers by task family, colours by
reward-model class, each point labelled with its content length L and label budget. The
weighted least-squares line (map.py) is drawn when the fit applies.
"""

from collections.abc import Mapping

import numpy as np
from matplotlib.figure import Figure

from rlft.experiments.report.markdown import eval_name
from rlft.experiments.report.plot_style import axes
from rlft.experiments.report.schema import REWARD_CLASSES

MARKERS = "osD^v<>Ph*"


def _err(est: Mapping) -> list:
    lo, hi = est["ci95"]
    return [
        [est["mean"] - lo if lo is not None else 0.0],
        [hi - est["mean"] if hi is not None else 0.0],
    ]


def plot_map(results: Mapping) -> Figure | str:
    """The figure, or a string saying why it cannot be drawn."""
    m = results["map"]
    cells = [
        c
        for c in m["cells"]
        if c["outcome"]["mean"] is not None and c["accuracy"]["mean"] is not None
    ]
    if not cells:
        return "no map cell has both an outcome and a precondition"
    families = list(dict.fromkeys(c["family"] for c in cells))
    classes = [*REWARD_CLASSES, *sorted({c["reward_class"] for c in cells} - set(REWARD_CLASSES))]
    fig, ax_grid = axes(1, width=6.4, height=4.8)
    ax = ax_grid[0][0]
    seen = set()
    for c in cells:
        x, y = c["accuracy"], c["outcome"]
        fam, cls = families.index(c["family"]), classes.index(c["reward_class"])
        label = None if (fam, cls) in seen else f"{c['family']}, {c['reward_class']} RM"
        seen.add((fam, cls))
        ax.errorbar(
            x["mean"],
            y["mean"],
            xerr=_err(x),
            yerr=_err(y),
            fmt=MARKERS[fam % len(MARKERS)],
            color=f"C{cls % 10}",
            capsize=3,
            label=label,
            mfc="none" if not c["in_fit"] else None,
        )
        ax.annotate(
            f"L={c['content_len']}, N={c['label_budget']}",
            (x["mean"], y["mean"]),
            fontsize=6,
            xytext=(4, 4),
            textcoords="offset points",
        )
    fit = m["fit"]
    if fit["applicable"]:
        xs = np.linspace(
            min(c["accuracy"]["mean"] for c in cells), max(c["accuracy"]["mean"] for c in cells), 50
        )
        ax.plot(
            xs,
            fit["a"] + fit["b"] * xs,
            color="black",
            lw=1,
            label=f"WLS slope {fit['b']:+.2f} [{fit['b_ci95'][0]:+.2f}, {fit['b_ci95'][1]:+.2f}]",
        )
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.axvline(0.0, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("precondition: RM - DPO held-out accuracy (95% CI)")
    ax.set_ylabel(f"online - offline DPO gold at K*, {eval_name(results['settings'], m['eval'])}")
    ax.set_title("When does online win? (hollow: not in the fit)", fontsize=9)
    ax.legend(fontsize=6)
    return fig
