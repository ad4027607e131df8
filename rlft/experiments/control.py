"""The isomorphic control in the pipeline: the exact tabular solution next to the trained arms.

On a bandit budget (`measure`): the budget's training pairs, read as (context, chosen choice,
rejected choice), and the SFT policy's choice distribution as pi_ref go to
`isomorphic.solve`, which runs both roads of Theorem 2.2 to convergence in tabular classes.
Each trained arm's first-token distribution over the contexts (restricted to choice tokens,
renormalised) is then compared with that exact solution, with the label optimum
pi_ref exp(bt_scale r / beta) both roads tend to, and with the trained offline DPO policy.
Pairs with a non-choice response (an SFT sample that opened with EOS, say) are left out of the
tabular problem and counted. `summarize` and `markdown` turn the per-seed records (kept in the
diagnostics records under "isomorphic") into results.json's "isomorphic" rows and a report
table. Pure numpy except `measure`, which needs the policies (JAX).
"""

from collections.abc import Mapping

import numpy as np

from rlft.experiments import isomorphic
from rlft.experiments.verdicts import _table

LAM = 1e-3  # ridge of both tabular roads (isomorphic.py: the same function of r and of u)
ARM_FIELDS = ("tv_to_exact", "tv_to_label_optimal", "tv_to_offline_dpo", "choice_mass")


def bandit_pairs(pairs: Mapping, rows, task) -> tuple[np.ndarray, ...]:
    """(x, chosen, rejected) choice indices of the rows whose responses are choice tokens, and
    the mask of those rows. Prompt length is 1, so token 0 is x and token 1 the first reply."""
    x = np.asarray(pairs["chosen_tokens"])[rows, 0] - task.first_context
    c = np.asarray(pairs["chosen_tokens"])[rows, 1] - task.first_choice
    r = np.asarray(pairs["rejected_tokens"])[rows, 1] - task.first_choice
    m = task.cfg.num_choices
    keep = (c >= 0) & (c < m) & (r >= 0) & (r < m)
    return x[keep], c[keep], r[keep], keep


def measure(b, arm_names) -> dict:
    """Exact tabular roads on a bandit budget (a `budget.Budget`), and each arm's distance."""
    from rlft.experiments import arms, diagnostics  # noqa: PLC0415  (JAX: policies)

    ts, task = b.ts, b.ts.task
    cfg, mesh, beta, scale = ts.spec.model, ts.mesh, ts.spec.dpo.beta, ts.spec.labels.bt_scale
    contexts = diagnostics.bandit_contexts(task)

    def choice_probs(arm):
        params = ts.sft_params if arm == "sft" else arms.load_policy(b.arm_dir(arm), cfg, mesh)
        return diagnostics.choices(task, diagnostics.first_token_probs(cfg, params, contexts, mesh))

    ref, _ = choice_probs("sft")
    x, c, r, keep = bandit_pairs(b.pairs, b.train_rows, task)
    sol = isomorphic.solve(x, c, r, ref, beta, LAM)
    gold = isomorphic.against_gold(sol, ref, task.reward_CxM, beta, scale)
    label_opt = isomorphic.rl_optimum(ref, scale * task.reward_CxM, beta)
    b.dpo_dir()  # offline DPO is the trained reference point whether or not it is an arm
    offline, _ = choice_probs("offline_dpo")
    out_arms = {}
    for arm in dict.fromkeys(("offline_dpo", *arm_names)):
        p, mass = choice_probs(arm)
        out_arms[arm] = {
            "tv_to_exact": float(isomorphic.total_variation(p, sol["pi_dpo"]).mean()),
            "tv_to_label_optimal": float(isomorphic.total_variation(p, label_opt).mean()),
            "tv_to_offline_dpo": float(isomorphic.total_variation(p, offline).mean()),
            "choice_mass": float(mass.mean()),
            "gold_reward": task.expected_reward(p),
        }
    return {
        "lam": LAM,
        "beta": beta,
        "bt_scale": scale,
        "pairs_used": int(keep.sum()),
        "pairs_dropped": int((~keep).sum()),
        "tv_rl_dpo": sol["tv_rl_dpo"],
        "tv_rl_dpo_max": float(sol["tv_rl_dpo_per_context"].max()),
        "rm_fit": sol["rm_fit"],
        "dpo_fit": sol["dpo_fit"],
        **gold,
        "pi_exact": sol["pi_dpo"].tolist(),
        "arms": out_arms,
    }


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
        out += [_table(header, body), ""]
    out += [
        "Trained arms: first-token distribution over the contexts, restricted to choice tokens "
        "and renormalised; seed means. *Exact* is the tabular optimum of both roads on the "
        "same pairs (identical to float precision); offline DPO's TV to it is the trained "
        "DPO road's own parametrisation and optimisation error, the floor against which the "
        "online arms' distances read.",
        "",
    ]
    return "\n".join(out)
