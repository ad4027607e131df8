"""Shared plot helpers: an Agg figure without pyplot state, arm colours, error bars, log axes."""

from collections.abc import Iterable

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from rlft.experiments.report.cells import arm_key


def color(arm: str) -> str:
    """One colour per arm, fixed by the arm table's order."""
    return f"C{arm_key(arm)[0] % 10}"


def yerr(rows: list, mean: str, ci: str) -> np.ndarray:
    """[2, N] asymmetric error bars from [lo, hi] intervals; 0 where a row has no interval."""
    lo = [r[mean] - r[ci][0] if r[ci][0] is not None else 0.0 for r in rows]
    hi = [r[ci][1] - r[mean] if r[ci][1] is not None else 0.0 for r in rows]
    return np.array([lo, hi])


def axes(ncols: int, width: float = 4.8, height: float = 3.6, nrows: int = 1) -> tuple:
    """(figure, [nrows, ncols] axes) on an Agg canvas."""
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def log_x(ax: Axes, values: Iterable[float]) -> None:
    """Log x axis labelled at the values themselves (budgets, N), not at powers of ten."""
    values = sorted(set(values))
    ax.set_xscale("log")
    ax.set_xticks(values, [str(v) for v in values])
    ax.minorticks_off()
