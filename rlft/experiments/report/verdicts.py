"""Each hypothesis' verdict from the seed-paired comparisons, applied only where it applies.

`hypotheses(results)` reads results.json's comparisons (comparisons.py), diagnostics and
isomorphic sections and gives one row per hypothesis and measurement: quantity, mean, Student-t
95% interval, seeds and a verdict (judge.py). The rules (docs/paper.md section 3, issue 7):

- H6, gap cell: online_dpo - offline_dpo > 0 at matched KL (K*) on the primary evaluation;
  K*/2, selected and final checkpoints are extra rows. Only where its premise was measured
  (premise.gap_premise: RM beats DPO on held-out accuracy, oracle headroom > 0); elsewhere the
  row is "not applicable" and its note (and `paper_verdict`) still judges the paper's empirical
  finding, online beats offline, on the same numbers.
- H6a: the advantage on the gap cell minus that on the short cell > 0 (Welch), only where the
  gap cell's advantage is positive (interval above 0).
- H6b, hard-verifier cell: online_dpo - offline_dpo not > 0.
- budget: advantage at the smallest minus the largest budget > 0 (paired by seed), only where
  the smallest budget's advantage is positive.
- H5: global RM - DPO's implicit reward on held-out accuracy, log-likelihood, Best-of-N.
- H2: only where an online advantage was measured; the arm table states each reference.
- H3: arms with more online data (iterated, more prompts) - online_dpo not > 0.
- H4: cells split by pair source, online_dpo - offline_dpo > 0.
- control (isomorphic bandit): online_dpo - offline_dpo = 0; exact tabular rows (control.py).
"""

from collections.abc import Mapping

import numpy as np

from rlft.experiments.arms import ARMS
from rlft.experiments.report import control
from rlft.experiments.report.cells import h4_cells, role_cells
from rlft.experiments.report.comparisons import BASELINE, COMPARED_TO, HEADLINE, find
from rlft.experiments.report.judge import (
    NOT_APPLICABLE,
    cells_rows,
    family,
    judge,
    not_run,
    pair_keys,
    verdict_row,
)
from rlft.experiments.report.markdown import fmt_diff, num
from rlft.experiments.report.premise import gap_premise, h5_rows


def _positive(c: Mapping | None) -> bool:
    return bool(c and c["applicable"] and c["ci95"][0] is not None and c["ci95"][0] > 0)


def _advantage_text(c: Mapping | None, cell: str) -> str:
    if c is None:
        return f"no online_dpo - offline_dpo comparison on `{cell}`"
    if not c["applicable"]:
        return f"no matched-KL comparison on `{cell}` ({c['reason']})"
    return f"online_dpo - offline_dpo on `{cell}` at matched KL: {fmt_diff(c['mean'], c['ci95'])}"


def _h6(results: Mapping) -> list[dict]:
    rows = []
    diags = {(d["task"], d["label_budget"]): d for d in results["diagnostics"]}
    for cell in role_cells("gap", results["tasks"]):
        comps, ev = results["comparisons"], results["settings"]["primary_eval"]
        for key in pair_keys(comps, cell, HEADLINE):
            measured = family("H6", comps, key, HEADLINE, ev, "positive")
            holds, why = (False, "premise not measured: no diagnostics for this cell")
            if key in diags:
                holds, why = gap_premise(diags[key]["precondition"])
            if not holds:  # the theory's prediction does not apply; the paper's finding does
                measured = [
                    r
                    | {
                        "verdict": NOT_APPLICABLE,
                        "paper_verdict": r["verdict"],
                        "note": f"{why}; the paper's finding (online beats offline), judged "
                        f"without the premise: {r['verdict']}",
                    }
                    for r in measured
                ]
            rows += measured
    return rows or [not_run("H6", "no gap cell (`keyed`) with online and offline DPO")]


def _headline(results: Mapping, cell: str, budget: int) -> dict | None:
    ev = results["settings"]["primary_eval"]
    return find(results["comparisons"], cell, budget, *HEADLINE, ev, "matched_kl")


def _na(hid: str, cell: str, budget, quantity: str, why: str, ev: str) -> dict:
    return verdict_row(hid, cell, budget, quantity, None, None, 0, NOT_APPLICABLE, why, eval=ev)


def _short_vs_gap(results: Mapping) -> list[dict]:
    ev = results["settings"]["primary_eval"]
    rows = []
    for gap in role_cells("gap", results["tasks"]):
        for short in role_cells("short", results["tasks"]):
            budgets = [k[1] for k in pair_keys(results["comparisons"], gap, HEADLINE)]
            for b in (b for b in budgets if _headline(results, short, b)):
                g, s = _headline(results, gap, b), _headline(results, short, b)
                quantity = f"advantage on {gap} - advantage on {short}, each at its matched KL"
                note = f"{_advantage_text(g, gap)}; {_advantage_text(s, short)}"
                if not _positive(g):
                    why = f"no online advantage on `{gap}` to shrink: {_advantage_text(g, gap)}"
                    rows.append(_na("H6a", gap, b, quantity, why, ev))
                elif not s["applicable"]:
                    rows.append(_na("H6a", gap, b, quantity, note, ev))
                else:
                    mean, ci, verdict, why = judge(g["per_seed"], "positive", s["per_seed"])
                    n = f"{len(g['per_seed'])}+{len(s['per_seed'])}"
                    note = "; ".join(x for x in (note, "Welch (different cells)", why) if x)
                    rows.append(
                        verdict_row("H6a", gap, b, quantity, mean, ci, n, verdict, note, eval=ev)
                    )
    why = "no budget with online and offline DPO on both the gap and the short cell"
    return rows or [not_run("H6a", why)]


def _budget_trend(results: Mapping) -> list[dict]:
    ev = results["settings"]["primary_eval"]
    rows = []
    for gap in role_cells("gap", results["tasks"]):
        budgets = [k[1] for k in pair_keys(results["comparisons"], gap, HEADLINE)]
        if len(budgets) < 2:
            continue
        small, large = (_headline(results, gap, b) for b in (budgets[0], budgets[-1]))
        quantity = f"advantage at {budgets[0]} - advantage at {budgets[-1]} labels, matched KL"
        heads = [(b, _headline(results, gap, b)) for b in budgets]
        trend = "; ".join(
            f"{b}: {fmt_diff(c['mean'], c['ci95'])}" for b, c in heads if c["applicable"]
        )
        if not _positive(small):
            why = f"no positive advantage at the smallest budget: {_advantage_text(small, gap)}"
            rows.append(_na("budget", gap, None, quantity, why, ev))
        elif not large["applicable"]:
            why = f"largest budget: {_advantage_text(large, gap)}"
            rows.append(_na("budget", gap, None, quantity, why, ev))
        else:
            a, b = (dict(zip(c["seeds"], c["per_seed"], strict=True)) for c in (small, large))
            diffs = [a[s] - b[s] for s in sorted(set(a) & set(b))]
            mean, ci, verdict, why = judge(diffs, "positive")
            paired = "paired by seed: a seed's budgets share its SFT policy"
            note = "; ".join(x for x in (f"advantage by budget: {trend}", paired, why) if x)
            row = verdict_row("budget", gap, None, quantity, mean, ci, len(diffs), verdict, note)
            rows.append(row | {"eval": ev})
    return rows or [not_run("budget", "fewer than two label budgets on the gap cell")]


def references() -> str:
    """Each arm's start and reference, from the arm table (its name, kind and start only)."""
    by_start = {}
    for arm in ARMS.values():
        if arm.kind != "sft":
            by_start.setdefault(arm.start, []).append(arm.name)
    parts = [f"{start} policy: {', '.join(names)}" for start, names in by_start.items()]
    out = "start and reference by arm (arm table): " + "; ".join(parts)
    if "iterated_online_dpo" in ARMS:
        start = ARMS["iterated_online_dpo"].start
        out += (
            ". iterated_online_dpo starts each round from the current policy and keeps the "
            f"{start} reference"
        )
    return out


def _same_regularisation(results: Mapping, h6: list) -> dict:
    beta = results["settings"]["beta"]
    heads = [r for r in h6 if r["headline"] and r["verdict"] != "not run in this variant"]
    if not heads:
        return not_run("H2", "no H6 measurement to hold the regularisation against")
    quantity = (
        f"online_dpo - offline_dpo at matched KL, both with beta = {beta:g} (settings.beta) and "
        f"the {ARMS['online_dpo'].start} policy as reference"
    )
    measured = [
        c for r in heads if _positive(c := _headline(results, r["task"], r["label_budget"]))
    ]
    if not measured:
        texts = "; ".join(
            _advantage_text(_headline(results, r["task"], r["label_budget"]), r["task"])
            + f" ({r['label_budget']} labels)"
            for r in heads
        )
        why = f"no online advantage measured to explain: {texts}; {references()}"
        return _na("H2", heads[0]["task"], None, quantity, why, results["settings"]["primary_eval"])
    c = measured[0]
    note = f"the advantage persists at identical beta and reference; {references()}"
    args = (c["task"], c["label_budget"], quantity, c["mean"], c["ci95"], c["n_seeds"])
    extra = {"checkpoint": "matched_kl", "eval": c["eval"], "kl": c["kl"]}
    return verdict_row("H2", *args, "supported", note, **extra)


def _extra_arms(results: Mapping) -> list[dict]:
    comps, ev = results["comparisons"], results["settings"]["primary_eval"]
    rows = []
    for arm in (a for a, bases in COMPARED_TO.items() if "online_dpo" in bases):
        for cell in results["tasks"]:
            for key in pair_keys(comps, cell, (arm, "online_dpo")):
                rows += family("H3", comps, key, (arm, "online_dpo"), ev, "not positive")
    arms = ", ".join(a for a, bases in COMPARED_TO.items() if "online_dpo" in bases)
    return rows or [not_run("H3", f"no arm with more online data ({arms})")]


def _distance_note(results: Mapping, cell: str, budget: int) -> str:
    """Seed-mean first-token TV distances of each arm (runs' policy_distance), if recorded."""
    keys = ("tv_to_offline_dpo", "tv_to_soft_optimal")
    parts = []
    for arm in ARMS:
        dists = [
            r.get("policy_distance")
            for r in results["runs"]
            if (r["task"], r["label_budget"], r["arm"]) == (cell, budget, arm)
        ]
        if arm != BASELINE and dists and None not in dists:
            means = [num(float(np.mean([d[k] for d in dists]))) for k in keys if k in dists[0]]
            parts.append(f"{arm} {' / '.join(means)}")
    return (
        "first-token TV to offline_dpo / to the soft optimum: " + ", ".join(parts) if parts else ""
    )


def _control(results: Mapping) -> list[dict]:
    cells = role_cells("control", results["tasks"])
    rows = cells_rows("control", results, cells, HEADLINE, "zero", "no isomorphic bandit cell")
    for r in rows:
        if r["headline"] and r["task"] is not None:
            r["note"] = "; ".join(
                x for x in (r["note"], _distance_note(results, r["task"], r["label_budget"])) if x
            )
    exact = [e for cell in cells for e in control.exact_rows(results["diagnostics"], cell)]
    measured = [r for r in rows if r["task"] is not None]
    return measured + exact or rows


def hypotheses(results: Mapping) -> list[dict]:
    """Every verdict row, hypothesis by hypothesis (module docstring), from results.json's
    comparisons, diagnostics, isomorphic records, settings and tasks."""
    h6 = _h6(results)
    rows = [*h6, *_short_vs_gap(results)]
    rows += cells_rows(
        "H6b",
        results,
        role_cells("hard_verifier", results["tasks"]),
        HEADLINE,
        "not positive",
        "no hard-verifier cell (`rouge`, or TL;DR judged by ROUGE-L)",
    )
    rows += _budget_trend(results)
    rows += h5_rows(results)
    rows.append(_same_regularisation(results, h6))
    rows += _extra_arms(results)
    rows += cells_rows(
        "H4",
        results,
        h4_cells(list(results["tasks"])),
        HEADLINE,
        "positive",
        "no cells suffixed _narrow or _wide",
    )
    rows += _control(results)
    return rows
