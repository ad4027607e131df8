"""The isomorphic control in the pipeline: the exact tabular solution next to the trained arms.

On a bandit budget (`measure`): the budget's training pairs, read as (context, chosen choice,
rejected choice), and the SFT policy's choice distribution as pi_ref go to
`isomorphic.solve`, which runs both roads of Theorem 2.2 to convergence in tabular classes.
Each trained arm's first-token distribution over the contexts (restricted to choice tokens,
renormalised) is then compared with that exact solution, with the label optimum
pi_ref exp(bt_scale r / beta) both roads tend to, and with the trained offline DPO policy.
Pairs with a non-choice response (an SFT sample that opened with EOS, say) are left out of the
tabular problem and counted. The per-seed records go into the diagnostics records under
"isomorphic"; rlft/experiments/report/control.py summarises and renders them (pure numpy).
"""

from collections.abc import Mapping

import numpy as np

from rlft.experiments import isomorphic

LAM = 1e-3  # ridge of both tabular roads (isomorphic.py: the same function of r and of u)


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
