"""The isomorphic control in the report: per-seed exact-solution records to rows and a table.

The pipeline (rlft/experiments/pipeline/control.py, `measure`) keeps, per bandit budget and
seed, the exact tabular solution of both roads of Theorem 2.2 and each trained arm's first-token
distance to it, under "isomorphic" in the diagnostics records. `summarize` averages those
records over seeds into results.json's "isomorphic" rows; `markdown` renders the report's table;
`exact_rows` gives the control's verdict rows against the exact solution.
"""

from collections.abc import Mapping

import numpy as np

from rlft.experiments.report.judge import judge, verdict_row
from rlft.experiments.report.markdown import num, table

ARM_FIELDS = ("tv_to_exact", "tv_to_label_optimal", "tv_to_offline_dpo", "choice_mass")
EXACT_TV_TOL = 1e-6  # the tabular roads "coincide" when TV(pi_RL, pi_DPO) is below this


def summarize(diag_rows: list, order: list[str]) -> list[dict]:
    """One row per (task, budget) with isomorphic records: seed means (and max of the TVs)."""
    cells = {}
    for d in diag_rows:
        if d.get("isomorphic"):
            cells.setdefault((d["task"], d["label_budget"]), []).append(d["isomorphic"])
    rows = []
    for (task, budget), recs in sorted(
        cells.items(), key=lambda kv: (order.index(kv[0][0]), kv[0][1])
    ):
        fits = [rec[k] for rec in recs for k in ("rm_fit", "dpo_fit")]
        row = {"task": task, "label_budget": budget, "n_seeds": len(recs)}
        row |= {
            "tv_rl_dpo_mean": float(np.mean([rec["tv_rl_dpo"] for rec in recs])),
            "tv_rl_dpo_max": float(max(rec["tv_rl_dpo_max"] for rec in recs)),
            "max_iterations": int(max(f["iterations"] for f in fits)),
            "max_grad_norm": float(max(f["grad_norm"] for f in fits)),
            "all_converged": all(f["converged"] for f in fits),
            "pairs_used_mean": float(np.mean([rec["pairs_used"] for rec in recs])),
        }
        for key in recs[0]:
            if key.startswith(("gold_reward_", "tv_rl_to", "tv_dpo_to")):
                row[f"{key}_mean"] = float(np.mean([rec[key] for rec in recs]))
        arm_names = list(dict.fromkeys(a for rec in recs for a in rec["arms"]))
        row["arms"] = {
            arm: {
                f"{k}_mean": float(np.mean([rec["arms"][arm][k] for rec in recs]))
                for k in (*ARM_FIELDS, "gold_reward")
            }
            for arm in arm_names
            if all(arm in rec["arms"] for rec in recs)
        }
        rows.append(row)
    return rows


def markdown(results: Mapping) -> str:
    """The control's table: exact tabular roads, then each trained arm against them."""
    rows = results.get("isomorphic") or []
    if not rows:
        return ""
    out = ["## Isomorphic control: both roads to convergence", ""]
    for row in rows:
        out += [
            f"**`{row['task']}`, {row['label_budget']} labels, {row['n_seeds']} seed(s)** "
            f"(exact tabular solve on {row['pairs_used_mean']:.0f} pairs on average; Newton, "
            f"at most {row['max_iterations']} iterations, final max |grad| "
            f"{row['max_grad_norm']:.1e}, converged: {row['all_converged']})",
            "",
            f"- tabular TV(pi_RL, pi_DPO): mean {row['tv_rl_dpo_mean']:.1e}, "
            f"max over contexts and seeds {row['tv_rl_dpo_max']:.1e}",
            "- tabular TV to the label optimum pi_ref exp(bt_scale r / beta): RM + RL "
            f"{row['tv_rl_to_label_optimal_mean']:.3f}, "
            f"DPO {row['tv_dpo_to_label_optimal_mean']:.3f}; "
            f"gold reward RM + RL {row['gold_reward_rl_mean']:.3f}, "
            f"DPO {row['gold_reward_dpo_mean']:.3f}, "
            f"label optimum {row['gold_reward_label_optimal_mean']:.3f}, "
            f"pi_ref {row['gold_reward_ref_mean']:.3f}",
            "",
        ]
        header = ["arm", "TV to exact", "TV to label optimum", "TV to offline DPO"]
        header += ["choice mass", "gold reward"]
        body = [
            [arm] + [f"{v[f'{k}_mean']:.3f}" for k in (*ARM_FIELDS, "gold_reward")]
            for arm, v in row["arms"].items()
        ]
        out += [table(header, body), ""]
    out += [
        "Trained arms: first-token distribution over the contexts, restricted to choice tokens "
        "and renormalised; seed means. *Exact* is the tabular optimum of both roads on the "
        "same pairs (identical to float precision); offline DPO's TV to it is the trained "
        "DPO road's own parametrisation and optimisation error, the floor against which the "
        "online arms' distances read.",
        "",
    ]
    return "\n".join(out)


def exact_rows(diag_rows: list, cell: str) -> list[dict]:
    """The control against its exact tabular solution, per budget where it was recorded.

    diag_rows: results.json "diagnostics" rows (their per_seed records hold "isomorphic").
    One row: the tabular roads' TV(pi_RL, pi_DPO), supported when below EXACT_TV_TOL in every
    seed. Then per trained online arm: its first-token TV to the exact optimum minus offline
    DPO's, paired by seed; Theorem 2.2 predicts zero (neither road ends closer).
    """
    rows = []
    for diag in (d for d in diag_rows if d["task"] == cell):
        recs = [d.get("isomorphic") for d in diag["per_seed"]]
        if not recs or None in recs:
            continue
        budget = diag["label_budget"]
        tvs = [r["tv_rl_dpo"] for r in recs]
        worst = max(r["tv_rl_dpo_max"] for r in recs)
        grad = max(r[k]["grad_norm"] for r in recs for k in ("rm_fit", "dpo_fit"))
        mean, ci, _, _ = judge(tvs, "zero")
        rows.append(
            verdict_row(
                "control",
                cell,
                budget,
                "exact tabular TV(pi_RL, pi_DPO), same pairs, both roads converged",
                mean,
                ci,
                len(tvs),
                "supported" if worst < EXACT_TV_TOL else "contradicted",
                f"max over contexts and seeds {worst:.1e} (tolerance {EXACT_TV_TOL:.0e}); "
                f"Newton, final max |grad| {grad:.1e}",
                headline=False,
            )
        )
        for arm in (a for a in recs[0]["arms"] if a not in ("sft", "offline_dpo")):
            if not all(arm in r["arms"] for r in recs):
                continue
            mine = [r["arms"][arm]["tv_to_exact"] for r in recs]
            base = [r["arms"]["offline_dpo"]["tv_to_exact"] for r in recs]
            diffs = [a - b for a, b in zip(mine, base, strict=True)]
            mean, ci, verdict, note = judge(diffs, "zero")
            to_off = np.mean([r["arms"][arm]["tv_to_offline_dpo"] for r in recs])
            note = "; ".join(
                x
                for x in (
                    f"TV to exact: {arm} {num(np.mean(mine))}, offline_dpo {num(np.mean(base))}",
                    f"TV({arm}, offline_dpo) {num(to_off)}",
                    note,
                )
                if x
            )
            quantity = f"first-token TV to the exact optimum, {arm} - offline_dpo"
            rows.append(
                verdict_row(
                    "control",
                    cell,
                    budget,
                    quantity,
                    mean,
                    ci,
                    len(mine),
                    verdict,
                    note,
                    headline=False,
                )
            )
    return rows
