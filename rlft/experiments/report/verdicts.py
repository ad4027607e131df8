"""Each hypothesis' verdict from seed-paired numbers, and the markdown that shows them.

`hypotheses(runs_index, diag_index, order, config)` gives one row per hypothesis and
measurement (task, label budget): the quantity, its mean and Student-t 95% interval
(stats.py) and a verdict. `verdicts_markdown(results)` renders those rows, one table per
hypothesis under the claim it tests; its table and number formats are shared with report.py.
"""

import math
from collections.abc import Mapping

import numpy as np

from rlft.experiments.report import stats
from rlft.experiments.report.schema import (
    ARMS,
    H4_SUFFIXES,
    TASK_ROLES,
    _arm_key,
    _clean,
    _sorted_cells,
)

NOT_RUN = "not run in this variant"
CLAIMS = {
    "H6": "Generation-verification gap: on the gap task `{gap}` online DPO beats offline DPO "
    "in gold reward (online_dpo - offline_dpo > 0, paired by seed).",
    "H6a": "Short responses shrink the gap: the online advantage on `{short}` is smaller than on "
    "`{gap}` (advantage on {gap} - advantage on {short} > 0, Welch).",
    "H6b": "Hard verification removes the gap: on `{hard_verifier}` online DPO does not beat "
    "offline DPO (online_dpo - offline_dpo <= 0; 'consistent' when the interval covers 0).",
    "budget": "Label budget: on `{gap}` the online advantage is largest at the smallest budget "
    "(advantage at the smallest - advantage at the largest budget > 0, paired by seed: a seed's "
    "budgets share its SFT policy and nest their labels).",
    "H5": "Global reward models generalise better than local ones: the global RM beats DPO's "
    "implicit reward on held-out pairs (accuracy; log-likelihood of the drawn labels) and as a "
    "Best-of-N reranker of SFT samples at the largest N (differences paired by seed).",
    "H2": "Offline DPO regularises badly: every DPO arm is run with the same beta and reference, "
    "so a remaining online-offline gap cannot come from regularisation.",
    "H3": "Online is just an easier optimisation: extra arms (such as more online prompts) "
    "against online_dpo (paper: barely any gain).",
    "H4": "The RM sees wider data: tasks suffixed _narrow / _wide, online_dpo - offline_dpo "
    "(paper: online still better).",
    "control": "Isomorphic control `{control}`: reward and policy classes correspond one to one, "
    "so online and offline DPO should coincide up to optimisation error (interval covers 0).",
}


def _role(role: str, config: Mapping) -> str:
    """The task playing `role`. A run split by pair source (config.labels.sources, e.g. sft and
    wide) records `{task}_narrow` / `{task}_wide`; the narrow copy holds the usual SFT pairs."""
    labels = config.get("labels") if isinstance(config, Mapping) else None
    sources = labels.get("sources", ["sft"]) if isinstance(labels, Mapping) else ["sft"]
    sources = [sources] if isinstance(sources, str) else list(sources)
    split = "sft" in sources and sources != ["sft"]
    return f"{TASK_ROLES[role]}_narrow" if split else TASK_ROLES[role]


def _paired_diffs(index: dict, cell_a: tuple, cell_b: tuple, metric: str) -> list[float]:
    """Per-seed differences a - b of one metric over the seeds both cells ran ([] if none)."""
    a, b = index.get(cell_a, {}), index.get(cell_b, {})
    return [float(a[s][metric]) - float(b[s][metric]) for s in sorted(set(a) & set(b))]


def _judge(diffs, predicted: str, welch_b=None) -> tuple:
    """((mean, lo, hi), verdict) of paired diffs, or of mean(diffs) - mean(welch_b)."""
    values = [*diffs, *(welch_b or [])]
    if not diffs or welch_b == []:
        return (math.nan,) * 3, "inconclusive (no seed ran both arms)"
    if not all(math.isfinite(v) for v in values):
        return (math.nan,) * 3, "inconclusive (non-finite values)"
    est = stats.mean_ci95(diffs) if welch_b is None else stats.welch_difference_ci(diffs, welch_b)
    return est, stats.verdict(est[1], est[2], predicted)


def _row(hid, task, budget, quantity, est, verdict, n, note="") -> dict:
    return {"id": hid, "task": task, "label_budget": budget, "quantity": quantity} | {
        "mean": _clean(est[0]),
        "ci95": [_clean(est[1]), _clean(est[2])],
        "n": str(n),
        "verdict": verdict,
        "note": note,
    }


def _not_run(hid: str, why: str) -> dict:
    return _row(hid, None, None, "", (None,) * 3, NOT_RUN, 0, why)


def _budgets(index: dict, task: str, arm: str = "online_dpo", base: str = "offline_dpo") -> list:
    return sorted(b for t, b, a in index if t == task and a == arm and (t, b, base) in index)


def _advantage_by_seed(index: dict, task: str, budget: int) -> dict[int, float]:
    """{seed: online_dpo - offline_dpo gold reward} over the seeds that ran both."""
    on, off = (
        index.get((task, budget, "online_dpo"), {}),
        index.get((task, budget, "offline_dpo"), {}),
    )
    return {s: float(on[s]["gold_reward"]) - float(off[s]["gold_reward"]) for s in on if s in off}


def _advantage(index: dict, task: str, budget: int) -> list[float]:
    return [d for _, d in sorted(_advantage_by_seed(index, task, budget).items())]


def _paired_rows(hid: str, index: dict, task: str, predicted: str) -> list[dict]:
    """online_dpo - offline_dpo gold reward at each budget of `task`, judged against `predicted`."""
    rows = []
    for budget in _budgets(index, task):
        diffs = _advantage(index, task, budget)
        if not diffs:
            continue
        est, verdict = _judge(diffs, predicted)
        note = ""
        if hid == "control":
            note = f"|online - offline| = {abs(est[0]):.3f}" + _distance_note(index, task, budget)
        quantity = "online_dpo - offline_dpo, gold reward"
        rows.append(_row(hid, task, budget, quantity, est, verdict, len(diffs), note))
    why = f"no seed ran both online_dpo and offline_dpo on task `{task}`"
    return rows or [_not_run(hid, why)]


def _distance_note(index: dict, task: str, budget: int) -> str:
    """Seed-mean first-token TV distances of each arm (runs' policy_distance), if recorded."""
    keys = ("tv_to_offline_dpo", "tv_to_soft_optimal")
    parts = []
    for arm in sorted((a for t, b, a in index if (t, b) == (task, budget)), key=_arm_key):
        dists = [r.get("policy_distance") for r in index[task, budget, arm].values()]
        if arm != "offline_dpo" and dists and None not in dists:
            means = [_num(np.mean([d[k] for d in dists])) for k in keys if k in dists[0]]
            parts.append(f"{arm} {' / '.join(means)}")
    if not parts:
        return ""
    return "; first-token TV to offline_dpo / to the soft optimum: " + ", ".join(parts)


def _short_vs_gap(index: dict, config: Mapping) -> list[dict]:
    gap, short = _role("gap", config), _role("short", config)
    rows = []
    for budget in sorted(set(_budgets(index, gap)) & set(_budgets(index, short))):
        dg, ds = _advantage(index, gap, budget), _advantage(index, short, budget)
        if not dg or not ds:
            continue
        est, verdict = _judge(dg, "positive", welch_b=ds)
        note = f"advantage on {gap} {np.mean(dg):+.3f}, on {short} {np.mean(ds):+.3f}"
        quantity = f"advantage on {gap} - advantage on {short}"
        rows.append(_row("H6a", gap, budget, quantity, est, verdict, f"{len(dg)}+{len(ds)}", note))
    why = f"no label budget with online and offline DPO on both `{gap}` and `{short}`"
    return rows or [_not_run("H6a", why)]


def _budget_trend(index: dict, config: Mapping) -> list[dict]:
    gap = _role("gap", config)
    budgets = _budgets(index, gap)
    if len(budgets) < 2:
        return [_not_run("budget", f"fewer than two label budgets on `{gap}`")]
    # Paired by seed: a seed's budgets share its SFT policy and nest their label sets.
    small, large = (_advantage_by_seed(index, gap, b) for b in (budgets[0], budgets[-1]))
    diffs = [small[s] - large[s] for s in sorted(set(small) & set(large))]
    if not diffs:
        return [_not_run("budget", f"no seed ran both the smallest and largest budget on `{gap}`")]
    est, verdict = _judge(diffs, "positive")
    trend = ", ".join(f"{b}: {np.mean(_advantage(index, gap, b)):+.3f}" for b in budgets)
    quantity = f"advantage at {budgets[0]} - advantage at {budgets[-1]} labels"
    note = f"advantage by budget: {trend}"
    return [_row("budget", gap, None, quantity, est, verdict, len(diffs), note)]


def _best_of_n_diffs(diags: list) -> tuple:
    """(largest N both RM rankers reached in every seed, per-seed global - local gold reward)."""
    tables = [{(p["ranker"], p["n"]): p["gold_reward"] for p in d["best_of_n"]} for d in diags]
    common = set.intersection(*({n for r, n in t if r == "global_rm"} for t in tables))
    common &= set.intersection(*({n for r, n in t if r == "local_rm"} for t in tables))
    if not common:
        return None, []
    n = max(common)
    return n, [t["global_rm", n] - t["local_rm", n] for t in tables]


def _global_vs_local(diag_index: dict, order: list[str]) -> list[dict]:
    rows = []
    for task, budget in _sorted_cells(diag_index, order):
        diags = [diag_index[task, budget][s] for s in sorted(diag_index[task, budget])]
        for what in ("accuracy", "loglik"):
            diffs = [d[f"rm_heldout_{what}"] - d[f"dpo_heldout_{what}"] for d in diags]
            est, verdict = _judge(diffs, "positive")
            quantity = f"global RM - DPO held-out {what}"
            rows.append(_row("H5", task, budget, quantity, est, verdict, len(diffs)))
        n, diffs = _best_of_n_diffs(diags)
        if diffs:
            est, verdict = _judge(diffs, "positive")
            quantity = f"Best-of-{n} gold reward, global RM - local RM ranker"
            rows.append(_row("H5", task, budget, quantity, est, verdict, len(diffs)))
    return rows or [_not_run("H5", "no diagnostics records")]


def _same_regularisation(h6_rows: list, config: Mapping) -> dict:
    dpo = config.get("dpo") if isinstance(config, Mapping) else None
    beta = dpo.get("beta") if isinstance(dpo, Mapping) else None
    quantity = (
        f"beta = {beta} (config.dpo.beta) " if beta is not None else "one beta (config.dpo.beta) "
    ) + "and SFT reference for every arm (PPO's KL coefficient too; online_dpo_from_dpo starts "
    "from the offline DPO policy)"
    measured = [r for r in h6_rows if r["verdict"] != NOT_RUN]
    if not measured:
        return _not_run("H2", "no H6 measurement to hold the regularisation against")
    if any(r["verdict"] == "supported" for r in measured):
        verdict = "rejected: the online advantage persists at identical beta and reference"
    else:
        verdict = "untested: no online advantage to explain in this run"
    return _row("H2", measured[0]["task"], None, quantity, (None,) * 3, verdict, "")


def _extra_arms(index: dict, order: list[str]) -> list[dict]:
    words = {"zero": "no detectable difference", "no CI": "inconclusive (1 seed, no CI)"}
    rows = []
    for task, budget, arm in _sorted_cells(index, order):
        if arm in ARMS or (task, budget, "online_dpo") not in index:
            continue
        diffs = _paired_diffs(
            index, (task, budget, arm), (task, budget, "online_dpo"), "gold_reward"
        )
        if diffs:
            est = stats.mean_ci95(diffs)
            sign = stats.sign_verdict(est[1], est[2])
            verdict = words.get(sign, f"{arm} {'better' if sign == 'positive' else 'worse'}")
            quantity = f"{arm} - online_dpo, gold reward"
            rows.append(_row("H3", task, budget, quantity, est, verdict, len(diffs)))
    return rows or [_not_run("H3", "no extra arms (such as online_dpo_more_prompts)")]


def hypotheses(runs_index: dict, diag_index: dict, order: list[str], config=None) -> list[dict]:
    """One row per hypothesis and measurement (task, budget), each with its verdict."""
    config = config or {}
    rows = _paired_rows("H6", runs_index, _role("gap", config), "positive")
    h6 = list(rows)
    rows += _short_vs_gap(runs_index, config)
    rows += _paired_rows("H6b", runs_index, _role("hard_verifier", config), "not positive")
    rows += _budget_trend(runs_index, config)
    rows += _global_vs_local(diag_index, order)
    rows.append(_same_regularisation(h6, config))
    rows += _extra_arms(runs_index, order)
    h4_tasks = [t for t in order if t.endswith(H4_SUFFIXES)]
    rows += [r for t in h4_tasks for r in _paired_rows("H4", runs_index, t, "positive")] or [
        _not_run("H4", "no tasks suffixed _narrow or _wide")
    ]
    control = _role("control", config)
    rows += _paired_rows("control", runs_index, control, "zero")
    rows += _exact_control_rows(diag_index, control)
    return rows


EXACT_TV_TOL = 1e-6  # the tabular roads "coincide" when TV(pi_RL, pi_DPO) is below this


def _exact_control_rows(diag_index: dict, task: str) -> list[dict]:
    """The control against its exact tabular solution (control.py), where it was recorded.

    One row: the tabular roads' TV(pi_RL, pi_DPO), supported when below EXACT_TV_TOL in every
    seed. Then per trained online arm: its first-token TV to the exact optimum minus offline
    DPO's, paired by seed; Theorem 2.2 predicts zero (neither road ends closer).
    """
    rows = []
    for budget in sorted(b for t, b in diag_index if t == task):
        recs = [d.get("isomorphic") for _, d in sorted(diag_index[task, budget].items())]
        if not recs or None in recs:
            continue
        tvs = [r["tv_rl_dpo"] for r in recs]
        worst = max(r["tv_rl_dpo_max"] for r in recs)
        grad = max(r[k]["grad_norm"] for r in recs for k in ("rm_fit", "dpo_fit"))
        verdict = "supported" if worst < EXACT_TV_TOL else "contradicted"
        note = f"max over contexts and seeds {worst:.1e}; Newton, final max |grad| {grad:.1e}"
        quantity = "exact tabular TV(pi_RL, pi_DPO), same pairs, both roads converged"
        rows.append(
            _row("control", task, budget, quantity, stats.mean_ci95(tvs), verdict, len(tvs), note)
        )
        arms = [a for a in recs[0]["arms"] if a not in ("sft", "offline_dpo")]
        for arm in arms:
            if not all(arm in r["arms"] for r in recs):
                continue
            mine = [r["arms"][arm]["tv_to_exact"] for r in recs]
            base = [r["arms"]["offline_dpo"]["tv_to_exact"] for r in recs]
            est, verdict = _judge([a - b for a, b in zip(mine, base, strict=True)], "zero")
            to_off = np.mean([r["arms"][arm]["tv_to_offline_dpo"] for r in recs])
            note = (
                f"TV to exact: {arm} {_num(np.mean(mine))}, offline_dpo {_num(np.mean(base))}; "
                f"TV({arm}, offline_dpo) {_num(to_off)}"
            )
            quantity = f"first-token TV to the exact optimum, {arm} - offline_dpo"
            rows.append(_row("control", task, budget, quantity, est, verdict, len(mine), note))
    return rows


# ----------------------------------------------------------------------------- markdown

TITLES = {
    "H6": "H6: generation-verification gap (main prediction)",
    "H6a": "H6(a): short responses (generation as easy as verification)",
    "H6b": "H6(b): hard verifier (verification as hard as generation)",
    "budget": "H6, label budget: the online advantage shrinks as labels grow",
    "H5": "H5: global vs local reward models",
    "H2": "H2: identical beta and reference",
    "H3": "H3: more online data (extra arms)",
    "H4": "H4: narrow vs wide data",
    "control": "Isomorphic control",
}


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    cells = [[str(c).replace("|", "\\|") for c in row] for row in rows]  # a | would split a cell
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def _num(x: float, spec: str = ".3f") -> str:
    return format(round(x, 3) + 0.0, spec)  # + 0.0: no "-0.000"


def _fmt_diff(mean, ci) -> str:
    """'+0.120 [+0.050, +0.190]': a difference with its 95% interval."""
    if mean is None:
        return "n/a"
    if ci is None or ci[0] is None or ci[1] is None:
        return f"{_num(mean, '+.3f')} (1 seed, no CI)"
    return f"{_num(mean, '+.3f')} [{_num(ci[0], '+.3f')}, {_num(ci[1], '+.3f')}]"


def _plots_md(results: Mapping, section: str) -> str:
    lines = [f"![{p['caption']}]({p['path']})" for p in results["plots"] if p["section"] == section]
    lines += [
        f"*Plot `{s['name']}` skipped: {s['note']}*"
        for s in results["plots_skipped"]
        if s["section"] == section
    ]
    return "\n\n".join(lines)


def verdicts_markdown(results: Mapping, plots: bool = True) -> str:
    """The verdict of each hypothesis as measured here, one table per hypothesis."""
    out = ["## Verdicts as measured here", ""]
    for hid, title in TITLES.items():
        rows = [r for r in results["hypotheses"] if r["id"] == hid]
        out += [f"### {title}", "", CLAIMS[hid].format(**TASK_ROLES), ""]
        if not rows or all(r["verdict"] == NOT_RUN for r in rows):
            why = rows[0]["note"] if rows else ""
            out += [f"**{NOT_RUN}**" + (f" ({why})." if why else "."), ""]
            continue
        body = [
            [
                r["task"] or "",
                "" if r["label_budget"] is None else r["label_budget"],
                r["quantity"],
                _fmt_diff(r["mean"], r["ci95"]) if r["mean"] is not None else "",
                r["n"],
                f"**{r['verdict']}**",
                r.get("note", ""),
            ]
            for r in rows
        ]
        header = ["task", "labels", "quantity", "mean [95% CI]", "seeds", "verdict", "note"]
        out += [_table(header, body), ""]
        links = _plots_md(results, f"verdict:{hid}") if plots else ""
        out += [links, ""] if links else []
    return "\n".join(out)
