"""The isomorphic control solved exactly: both roads of Theorem 2.2 in tabular classes.

Data: labelled pairs (x_n, c_n, r_n) (context, chosen choice, rejected choice), a reference
policy pi_ref[C, M] and beta. Both roads use the sum over pairs and one ridge term `lam`:

  road 1 (RM + RL). A reward w in a class given by `cell[x, y]` (which parameter scores
  (x, y): "table" = a free r[x, y]; "choice" = r[y] only, the broken correspondence) fitted by
      J_RM(w) = sum_n -log sigmoid(w[cell[x, c]] - w[cell[x, r]]) + lam / 2 ||w||^2,
  then the KL-regularised RL optimum in closed form, pi_RL = pi_ref exp(r_hat / beta) / Z.

  road 2 (DPO). Free policy logits theta[C, M], pi = softmax(theta), fitted by
      J_DPO(theta) = sum_n -log sigmoid(beta [log pi/pi_ref (c | x) - log pi/pi_ref (r | x)])
                     + lam / 2 ||beta (theta - log pi_ref)||^2.

Gauge and unseen cells. Bradley-Terry sees only differences within a context, so without the
ridge r_hat is free up to a per-context constant (harmless: Z absorbs it) and entirely free on
(x, y) that no pair mentions (harmful: pi_RL there is arbitrary), and separable pairs push it to
infinity. The ridge makes both problems strictly convex. It must be the *same* function of the
local reward u = beta (theta - log pi_ref) as of r: then J_DPO(theta) = J_RM(u), the minimisers
satisfy u* = r_hat, and pi_DPO = softmax(log pi_ref + r_hat / beta) = pi_RL exactly. Unseen cells
keep r_hat = u* = 0, i.e. pi_ref's odds, on both roads. Anchoring DPO's ridge at theta = 0
instead (`anchor="zero"`, a ridge toward the uniform policy) breaks this wherever the data are
thin, which is why the choice is documented and tested.

Both problems are solved by damped Newton (exact Hessians: the DPO margin is linear in theta,
the log-normaliser cancels between chosen and rejected; Armijo backtracking, full steps once
the predicted decrease is below the objective's rounding) until ||grad||_inf <= tol = 1e-10.
Pure numpy, float64.
"""

import numpy as np

from rlft.tasks.bandit import soft_optimal
from rlft.tasks.labels import log_sigmoid

TOL = 1e-10  # stop when the gradient's largest entry is at most this
MAX_ITER = 200


def _nll(m):
    """-log sigmoid(m) in float64, without overflow."""
    return -log_sigmoid(m)


def _sigmoid(m):
    return np.exp(-_nll(m))


def _log_softmax(z_CxM):
    z = z_CxM - z_CxM.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def aggregate_pairs(x_N, c_N, r_N) -> tuple[np.ndarray, np.ndarray]:
    """(unique (x, c, r) rows [U, 3], their counts [U]): the losses only need counts."""
    rows = np.stack([np.asarray(x_N), np.asarray(c_N), np.asarray(r_N)], 1).astype(np.int64)
    if len(rows) == 0:
        return rows.reshape(0, 3), np.zeros(0)
    uniq, counts = np.unique(rows, axis=0, return_counts=True)
    return uniq, counts.astype(np.float64)


def newton(fgh, w0, tol: float = TOL, max_iter: int = MAX_ITER) -> tuple[np.ndarray, dict]:
    """Minimise a smooth strictly convex f by Newton steps with Armijo backtracking.

    fgh(w) -> (f, grad, hessian). Returns (w, {iterations, grad_norm, converged, objective}),
    grad_norm being the largest |gradient| entry at the returned w.
    """
    w = np.asarray(w0, np.float64).copy()
    f, g, h = fgh(w)
    it = 0
    while np.max(np.abs(g), initial=0.0) > tol and it < max_iter:
        step = -np.linalg.solve(h, g)
        slope, t = float(g @ step), 1.0
        it += 1
        if -slope <= 1e-12 * max(1.0, abs(f)):
            # The predicted decrease is below f's rounding: Armijo cannot see it, but this
            # close to the optimum the full Newton step is the right one (quadratic region).
            w = w + step
            f, g, h = fgh(w)
            continue
        while True:  # Armijo: f(w + t step) <= f(w) + 1e-4 t slope
            f_new, g_new, h_new = fgh(w + t * step)
            if f_new <= f + 1e-4 * t * slope or t < 1e-12:
                break
            t *= 0.5
        if f_new > f:  # no descent left at float precision
            break
        w, f, g, h = w + t * step, f_new, g_new, h_new
    grad_norm = float(np.max(np.abs(g), initial=0.0))
    info = {"iterations": it, "grad_norm": grad_norm, "converged": grad_norm <= tol}
    return w, info | {"objective": float(f)}


def reward_cells(num_contexts: int, num_choices: int, reward_class: str = "table") -> np.ndarray:
    """cell[x, y]: the reward parameter that scores (x, y) in the given reward class."""
    if reward_class == "table":
        return np.arange(num_contexts * num_choices).reshape(num_contexts, num_choices)
    if reward_class == "choice":  # r(x, y) = r(y): cannot represent a per-context table
        return np.tile(np.arange(num_choices), (num_contexts, 1))
    raise ValueError(f"unknown reward class {reward_class!r}; use table or choice")


def _difference_matrix(rows_Ux3, cell_CxM, num_params: int) -> np.ndarray:
    """[U, P]: +1 at the chosen response's parameter, -1 at the rejected one's."""
    x, c, r = rows_Ux3.T
    a = np.zeros((len(rows_Ux3), num_params))
    np.add.at(a, (np.arange(len(x)), cell_CxM[x, c]), 1.0)
    np.add.at(a, (np.arange(len(x)), cell_CxM[x, r]), -1.0)
    return a


def bt_objective(w, a_UxP, counts_U, lam: float):
    """J_RM(w) = sum_n -log sigmoid(margin_n) + lam / 2 ||w||^2, its gradient and Hessian."""
    m = a_UxP @ w
    s = _sigmoid(-m)  # d(-log sigmoid(m)) / dm = -sigmoid(-m)
    f = counts_U @ _nll(m) + 0.5 * lam * w @ w
    g = -a_UxP.T @ (counts_U * s) + lam * w
    h = (a_UxP.T * (counts_U * s * (1.0 - s))) @ a_UxP + lam * np.eye(len(w))
    return f, g, h


def fit_reward(x_N, c_N, r_N, num_contexts, num_choices, lam, reward_class="table", tol=TOL):
    """Road 1, stage 1: Bradley-Terry MLE (ridge lam) of a reward; returns (r_hat[C, M], info)."""
    cell = reward_cells(num_contexts, num_choices, reward_class)
    rows, counts = aggregate_pairs(x_N, c_N, r_N)
    a = _difference_matrix(rows, cell, int(cell.max()) + 1)
    w, info = newton(lambda w: bt_objective(w, a, counts, lam), np.zeros(a.shape[1]), tol)
    return w[cell], info


# Road 1, stage 2: argmax E_pi[r] - beta KL(pi || pi_ref) = pi_ref exp(r / beta) / Z.


def dpo_objective(theta, rows_Ux3, counts_U, log_ref_CxM, beta: float, lam: float, anchor):
    """J_DPO(theta) through the policy's log-softmax, its gradient and (exact) Hessian."""
    num_c, num_m = log_ref_CxM.shape
    log_pi = _log_softmax(theta.reshape(num_c, num_m))
    x, c, r = rows_Ux3.T
    ratio = log_pi - log_ref_CxM
    m = beta * (ratio[x, c] - ratio[x, r])
    # d log pi(y | x) / d theta[x] = onehot(y) - pi(. | x): the pi terms cancel in the margin.
    pi = np.exp(log_pi)
    dm = np.zeros((len(x), num_c, num_m))
    dm[np.arange(len(x)), x] -= pi[x]
    dm[np.arange(len(x)), x, c] += 1.0
    dm[np.arange(len(x)), x] += pi[x]
    dm[np.arange(len(x)), x, r] -= 1.0
    dm = beta * dm.reshape(len(x), -1)
    s = _sigmoid(-m)
    dev = theta - (log_ref_CxM.reshape(-1) if anchor == "reference" else 0.0)
    f = counts_U @ _nll(m) + 0.5 * lam * beta**2 * dev @ dev
    g = -dm.T @ (counts_U * s) + lam * beta**2 * dev
    h = (dm.T * (counts_U * s * (1.0 - s))) @ dm + lam * beta**2 * np.eye(len(theta))
    return f, g, h


def fit_dpo(x_N, c_N, r_N, ref_probs_CxM, beta, lam, anchor="reference", tol=TOL):
    """Road 2: free logits by DPO (ridge on beta (theta - anchor)); returns (pi_DPO[C, M], info)."""
    if anchor not in ("reference", "zero"):
        raise ValueError(f"unknown anchor {anchor!r}; use reference or zero")
    log_ref = np.log(np.asarray(ref_probs_CxM, np.float64))
    rows, counts = aggregate_pairs(x_N, c_N, r_N)

    def fgh(theta):
        return dpo_objective(theta, rows, counts, log_ref, beta, lam, anchor)

    theta, info = newton(fgh, log_ref.reshape(-1), tol)  # start at the reference, like SFT init
    return np.exp(_log_softmax(theta.reshape(log_ref.shape))), info


def total_variation(p_CxM, q_CxM) -> np.ndarray:
    """TV per context [C]: 1/2 sum_y |p - q|."""
    return 0.5 * np.abs(np.asarray(p_CxM, np.float64) - np.asarray(q_CxM, np.float64)).sum(-1)


def solve(x_N, c_N, r_N, ref_probs_CxM, beta, lam=1e-3, reward_class="table", anchor="reference"):
    """Both roads to convergence on the same pairs: policies, fit info and TV(pi_RL, pi_DPO)."""
    num_c, num_m = np.shape(ref_probs_CxM)
    r_hat, rm_info = fit_reward(x_N, c_N, r_N, num_c, num_m, lam, reward_class)
    pi_rl = soft_optimal(ref_probs_CxM, r_hat, beta)
    pi_dpo, dpo_info = fit_dpo(x_N, c_N, r_N, ref_probs_CxM, beta, lam, anchor)
    tv = total_variation(pi_rl, pi_dpo)
    return {
        "pi_rl": pi_rl,
        "pi_dpo": pi_dpo,
        "reward": r_hat,
        "rm_fit": rm_info,
        "dpo_fit": dpo_info,
        "tv_rl_dpo_per_context": tv,
        "tv_rl_dpo": float(tv.mean()),
    }


def against_gold(sol: dict, ref_probs_CxM, reward_CxM, beta: float, bt_scale: float) -> dict:
    """Each road's TV to the soft optima and gold reward (contexts uniform).

    `soft_optimal`: pi_ref exp(r_true / beta), the gold reward's KL-regularised optimum.
    `label_optimal`: pi_ref exp(bt_scale r_true / beta), what both roads tend to as labels grow
    (Bradley-Terry identifies the labeller's reward bt_scale * r_true, not r_true itself).
    """
    reward_CxM = np.asarray(reward_CxM, np.float64)
    targets = {
        "soft_optimal": soft_optimal(ref_probs_CxM, reward_CxM, beta),
        "label_optimal": soft_optimal(ref_probs_CxM, bt_scale * reward_CxM, beta),
    }
    out = {"gold_reward_ref": float(np.mean(np.sum(ref_probs_CxM * reward_CxM, -1)))}
    for name, pi in (("rl", sol["pi_rl"]), ("dpo", sol["pi_dpo"])):
        out[f"gold_reward_{name}"] = float(np.mean(np.sum(pi * reward_CxM, -1)))
        for t, target in targets.items():
            out[f"tv_{name}_to_{t}"] = float(total_variation(pi, target).mean())
    for t, target in targets.items():
        out[f"gold_reward_{t}"] = float(np.mean(np.sum(target * reward_CxM, -1)))
    return out
