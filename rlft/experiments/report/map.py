"""The map: when does online win? One point per (cell, budget), outcome against precondition.

A map cell is one (cell, label budget) of the records; cells differ by task family, response
length, reward-model class, pair source and budget. For each (issue 7, point 5):

- precondition (premise.precondition): RM - DPO held-out accuracy (x) and log-likelihood,
  paired by seed, and the oracle best-of-K headroom, each with its 95% interval;
- outcome (y): online_dpo - offline_dpo gold reward at matched KL (K*) on the primary
  evaluation, paired by seed, or "not applicable" with the reason.

How well x predicts y (`fit`): weighted least squares y = a + b x with weights 1 / var(y_i),
var(y_i) = (half-width_i / t_{0.975, n_i - 1})^2 the squared standard error behind cell i's
interval; slope interval b ± t_{0.975, N-2} se(b) with se from s^2 (X'WX)^-1,
s^2 = sum w_i r_i^2 / (N - 2) (residual scatter beyond the cells' own noise widens it);
weighted R^2 = 1 - sum w r^2 / sum w (y - ybar_w)^2; Spearman's rho over the cells (average
ranks for ties). Needs MIN_CELLS cells with an outcome and an interval.
"""

import math
from collections.abc import Mapping

import numpy as np
from numpy.typing import ArrayLike

from rlft.experiments.report import stats
from rlft.experiments.report.comparisons import HEADLINE, find
from rlft.experiments.report.markdown import eval_name, fmt_diff, num, table

MIN_CELLS = 3


def _outcome(results: Mapping, cell: str, budget: int) -> dict:
    ev = results["settings"]["primary_eval"]
    c = find(results["comparisons"], cell, budget, *HEADLINE, ev, "matched_kl")
    if c is None:
        why = f"no {' and '.join(HEADLINE)} runs"
        return {"mean": None, "ci95": [None, None], "n_seeds": 0, "kl": None, "reason": why}
    reason = c["reason"] if not c["applicable"] else ("" if c["mean"] is not None else c["sign"])
    return {"mean": c["mean"], "ci95": c["ci95"], "n_seeds": c["n_seeds"], "kl": c["kl"]} | {
        "reason": reason
    }


def map_cells(results: Mapping) -> list[dict]:
    """One row per (cell, budget) of the diagnostics or the headline comparisons, in order."""
    keys = [(d["task"], d["label_budget"]) for d in results["diagnostics"]]
    keys += [(c["task"], c["label_budget"]) for c in results["comparisons"]]
    order = list(results["tasks"])
    diags = {(d["task"], d["label_budget"]): d for d in results["diagnostics"]}
    rows = []
    for cell, budget in sorted(set(keys), key=lambda k: (order.index(k[0]), k[1])):
        meta = results["tasks"][cell]
        row = {"task": cell, "label_budget": budget, "family": meta["family"]}
        row |= {"task_entry": meta["task"], "response_len": meta["response_len"]}
        row |= {"content_len": meta["response_len"] - 1, "reward_class": meta["reward_class"]}
        row |= {"label_source": meta["label_source"]}
        pre = diags[cell, budget]["precondition"] if (cell, budget) in diags else None
        for name in ("accuracy", "loglik", "headroom"):
            est = pre[name] if pre else {"mean": None, "ci95": [None, None]}
            row[name] = {"mean": est["mean"], "ci95": est["ci95"]}
        row["outcome"] = _outcome(results, cell, budget)
        rows.append(row)
    return rows


def _var(ci, n: int) -> float:
    """Squared standard error behind a Student-t 95% interval of n seeds (NaN without one)."""
    if n < 2 or ci is None or None in ci:
        return math.nan
    return ((ci[1] - ci[0]) / 2 / stats.t975(n - 1)) ** 2


def spearman(x: ArrayLike, y: ArrayLike) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN if either is constant."""

    def ranks(v):
        v = np.asarray(v, dtype=np.float64)
        order = np.argsort(v, kind="stable")
        r = np.empty(v.size)
        r[order] = np.arange(v.size, dtype=np.float64)
        for value in np.unique(v):  # ties share their mean rank
            r[v == value] = r[v == value].mean()
        return r

    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def wls_fit(x: ArrayLike, y: ArrayLike, var: ArrayLike) -> dict:
    """Weighted least squares y = a + b x, weights 1/var (module docstring for the formulas).

    x, y, var: [N] with N >= 3 and var > 0. Returns {"a", "b", "b_ci95", "a_ci95", "r2",
    "spearman_rho", "n"}. Raises ValueError for N < 3, a non-positive variance or constant x.
    """
    x, y, var = (np.asarray(v, dtype=np.float64) for v in (x, y, var))
    n = x.size
    if n < 3 or (var <= 0).any() or not np.isfinite([x, y, var]).all():
        raise ValueError(f"WLS needs >= 3 finite points with var > 0, got {n}")
    if np.ptp(x) == 0:
        raise ValueError("WLS needs x that varies across points")
    w = 1.0 / var
    X = np.stack([np.ones(n), x], axis=1)
    xtwx = X.T @ (w[:, None] * X)
    coef = np.linalg.solve(xtwx, X.T @ (w * y))
    resid = y - X @ coef
    s2 = float(np.sum(w * resid**2) / (n - 2))
    se = np.sqrt(np.diag(s2 * np.linalg.inv(xtwx)))
    t = stats.t975(n - 2)
    ybar = np.sum(w * y) / np.sum(w)
    tss = float(np.sum(w * (y - ybar) ** 2))
    r2 = 1.0 - float(np.sum(w * resid**2)) / tss if tss > 0 else math.nan
    a, b = (float(v) for v in coef)
    return {"a": a, "b": b, "a_ci95": [a - t * se[0], a + t * se[0]]} | {
        "b_ci95": [b - t * se[1], b + t * se[1]],
        "r2": r2,
        "spearman_rho": spearman(x, y),
        "n": n,
    }


def build_map(results: Mapping) -> dict:
    """results.json["map"]: {"eval", "x", "y", "cells", "fit"}; the fit is {"applicable":
    False, "reason"} unless MIN_CELLS cells have an outcome, an interval and a precondition."""
    cells = map_cells(results)
    used = []
    for c in cells:
        o, x = c["outcome"], c["accuracy"]["mean"]
        why = o["reason"] or ("" if o["mean"] is not None else "no outcome")
        if not why and x is None:
            why = "no precondition measured (diagnostics)"
        if not why and not _var(o["ci95"], o["n_seeds"]) > 0:
            why = "the outcome has no interval (1 seed or zero spread): no weight"
        c["in_fit"], c["fit_note"] = not why, why
        used += [c] if not why else []
    out = {"eval": results["settings"]["primary_eval"], "cells": cells}
    out |= {"x": "RM - DPO held-out accuracy", "y": "online_dpo - offline_dpo gold reward, K*"}
    with_outcome = sum(c["outcome"]["mean"] is not None for c in cells)
    if len(used) < MIN_CELLS:
        why = (
            f"{with_outcome} map cell(s) have an outcome and {len(used)} can be weighted; "
            f"the fit needs {MIN_CELLS}"
        )
        return out | {"fit": {"applicable": False, "reason": why}}
    x = [c["accuracy"]["mean"] for c in used]
    y = [c["outcome"]["mean"] for c in used]
    var = [_var(c["outcome"]["ci95"], c["outcome"]["n_seeds"]) for c in used]
    try:
        fit = wls_fit(x, y, var)
    except ValueError as e:
        return out | {"fit": {"applicable": False, "reason": str(e)}}
    weights = "1/var(y), var = (CI half-width / t_{0.975, n-1})^2 of each cell's outcome"
    return out | {"fit": {"applicable": True, "reason": "", "weights": weights, **fit}}


def finding(m: Mapping, settings: Mapping) -> str:
    """The map's finding in one sentence, generated from results.json["map"]."""
    fit = m["fit"]
    if not fit["applicable"]:
        return f"No fit: {fit['reason']}."
    lo, hi = fit["b_ci95"]
    excl = "excludes 0" if lo > 0 or hi < 0 else "covers 0"
    rho = "n/a" if fit["spearman_rho"] is None else num(fit["spearman_rho"], "+.2f")
    r2 = "n/a" if fit["r2"] is None else f"{fit['r2']:.2f}"
    return (
        f"Across {fit['n']} cells, online_dpo - offline_dpo gold reward at matched KL "
        f"({eval_name(settings, m['eval'])}) changes by {fmt_diff(fit['b'], fit['b_ci95'])} "
        "per unit of the RM's held-out accuracy lead over DPO (weighted least squares, weights "
        f"1/var of each cell's outcome; the slope's interval {excl}), R^2 = {r2}, Spearman "
        f"rho = {rho}."
    )


def map_markdown(results: Mapping, plot_links: str = "") -> str:
    """The report's map section: the finding, the figure and a table of the cells."""
    m = results["map"]
    out = ["## The map: when does online win?", "", finding(m, results["settings"]), ""]
    out += [plot_links, ""] if plot_links else []
    header = ["cell", "family", "L", "RM class", "labels", "RM - DPO accuracy"]
    header += ["RM - DPO loglik", "oracle headroom", "outcome at K*", "K*", "in fit"]
    body = [
        [c["task"], c["family"], c["content_len"], c["reward_class"], c["label_budget"]]
        + [fmt_diff(c[k]["mean"], c[k]["ci95"]) for k in ("accuracy", "loglik", "headroom")]
        + [fmt_diff(c["outcome"]["mean"], c["outcome"]["ci95"]), num(c["outcome"]["kl"])]
        + ["yes" if c["in_fit"] else f"no: {c['fit_note']}"]
        for c in m["cells"]
    ]
    out += [table(header, body), ""] if body else ["No cells.", ""]
    out += [
        "L: content tokens per response (response length minus the EOS). Outcome: paired by "
        "seed at the largest KL both arms reach in every seed (K*, nats).",
        "",
    ]
    return "\n".join(out)
