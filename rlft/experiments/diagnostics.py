"""Measuring the gap before comparing arms: global vs local reward models, Best-of-N headroom.

Held-out pairs are two SFT samples per prompt with a Bradley-Terry label. Accuracy is against
the gold ordering (pairs with equal gold reward are left out); log-likelihood is the mean
log sigmoid(margin) of the drawn labels, the quantity each reward model was fitted to. The
local reward is DPO's implicit r = beta * (log pi_dpo - log pi_sft).
"""

import numpy as np

from rlft.experiments import arms, policy_ops


def _log_sigmoid(x):
    return -np.logaddexp(0.0, -x)


def pair_metrics(margin_N: np.ndarray, gold_c_N: np.ndarray, gold_r_N: np.ndarray) -> dict:
    decided = gold_c_N != gold_r_N
    agree = (margin_N > 0) == (gold_c_N > gold_r_N)
    return {
        "accuracy": float(np.mean(agree[decided])) if decided.any() else float("nan"),
        "loglik": float(np.mean(_log_sigmoid(margin_N))),
    }


def best_of_n(scores_NxK: np.ndarray, gold_NxK: np.ndarray, ns) -> list[dict]:
    """Mean gold reward of the sample the scores rank first among the first n of K."""
    rows = np.arange(gold_NxK.shape[0])
    return [
        {
            "n": int(n),
            "gold_reward": float(np.mean(gold_NxK[rows, np.argmax(scores_NxK[:, :n], axis=1)])),
        }
        for n in ns
    ]


def measure(b) -> dict:
    """Diagnostics of one budget (a `reproduce.Budget` whose RM and offline DPO are trained)."""
    ts = b.ts
    cfg, mesh, beta = ts.spec.model, ts.mesh, ts.spec.dpo.beta
    dpo_params = arms.load_policy(b.dpo_dir(), cfg, mesh)
    val = {k: v[b.val_rows] for k, v in ts.pairs.items()}

    def local(arrays, prefix=""):
        return beta * (
            policy_ops.sequence_logprobs(cfg, dpo_params, arrays, mesh, prefix)
            - policy_ops.sequence_logprobs(cfg, ts.sft_params, arrays, mesh, prefix)
        )

    def rm(arrays, prefix=""):
        return policy_ops.rm_scores(cfg, b.rm_params, arrays, mesh, prefix, ts.spec.reward.pooling)

    gold_c, gold_r = val["chosen_gold"], val["rejected_gold"]
    rm_pairs = pair_metrics(rm(val, "chosen_") - rm(val, "rejected_"), gold_c, gold_r)
    dpo_pairs = pair_metrics(local(val, "chosen_") - local(val, "rejected_"), gold_c, gold_r)
    k = ts.sft_gold_NxK.shape[1]
    gold_NxK = ts.sft_gold_NxK
    ns = ts.spec.eval.best_of_n
    curves = []
    for ranker, scores in (
        ("global_rm", rm(ts.sft_samples)),
        ("local_rm", local(ts.sft_samples)),
        ("gold", gold_NxK.reshape(-1)),
    ):
        curves += [
            {"ranker": ranker, **row}
            for row in best_of_n(np.reshape(scores, (-1, k)), gold_NxK, ns)
        ]
    return {
        "rm_heldout_accuracy": rm_pairs["accuracy"],
        "rm_heldout_loglik": rm_pairs["loglik"],
        "dpo_heldout_accuracy": dpo_pairs["accuracy"],
        "dpo_heldout_loglik": dpo_pairs["loglik"],
        "oracle_best_of_k_gain": float(np.mean(gold_NxK.max(axis=1)) - np.mean(gold_NxK)),
        "label_agreement_with_gold": float(np.mean(gold_c >= gold_r)),
        "best_of_n": curves,
    }
