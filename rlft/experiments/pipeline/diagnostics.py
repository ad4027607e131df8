"""Measuring the gap before comparing arms: global vs local reward models, Best-of-N headroom.

Held-out pairs are the budget's held-out labelled pairs (two responses per prompt from its pair
source, Bradley-Terry labels). Accuracy is against the gold order (pairs with equal gold reward
are left out); log-likelihood is the mean log sigmoid(margin) of the drawn labels, the quantity
each reward model was fitted to. The local reward is DPO's implicit
r = beta * (log pi_dpo - log pi_sft) of the final offline-DPO policy.

On tasks whose response is one content token (then EOS) the first-token distribution
pi(y_1 | x) is the whole policy, so arms can be compared as distributions, exactly:
`policy_distances` gives each arm's mean total-variation distance to offline DPO and, on the
bandit, to the soft-optimal policy (the isomorphic control's common target).
"""

import functools

import jax
import numpy as np

from rlft.experiments.pipeline.arm_runs import Budget, arm_dir, policy_dir
from rlft.experiments.pipeline.evaluate import load_policy
from rlft.experiments.pipeline.isomorphic import total_variation
from rlft.experiments.pipeline.pairs import informative_frac
from rlft.models import ModelConfig, lm_logits
from rlft.rollout.scoring import FORWARD_BATCH, forward_dataset, logprob_scores
from rlft.tasks import BanditTask, log_sigmoid


def pair_metrics(margin_N: np.ndarray, gold_c_N: np.ndarray, gold_r_N: np.ndarray) -> dict:
    """Accuracy against the gold order (ties left out) and mean log sigmoid(margin)."""
    decided = gold_c_N != gold_r_N
    agree = (margin_N > 0) == (gold_c_N > gold_r_N)
    return {
        "accuracy": float(np.mean(agree[decided])) if decided.any() else float("nan"),
        "loglik": float(np.mean(log_sigmoid(margin_N))),
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


def measure(b: Budget, model_class: str) -> dict:
    """Diagnostics of one budget and reward class (offline DPO must be trained)."""
    cfg, mesh, beta, sft = b.spec.model, b.mesh, b.spec.beta, b.sft
    dpo_params = load_policy(arm_dir(b, "offline_dpo", None), cfg, mesh)
    val = {k: v[b.val_rows] for k, v in b.pairs.items()}
    rm = b.rms[model_class]

    def local(arrays, prefix=""):
        return beta * (
            logprob_scores(cfg, dpo_params, arrays, mesh, prefix)
            - logprob_scores(cfg, sft.params, arrays, mesh, prefix)
        )

    def glob(arrays, prefix=""):
        return rm.scores(cfg, arrays, mesh, prefix)

    gold_c, gold_r = val["chosen_gold"], val["rejected_gold"]
    rm_pairs = pair_metrics(glob(val, "chosen_") - glob(val, "rejected_"), gold_c, gold_r)
    dpo_pairs = pair_metrics(local(val, "chosen_") - local(val, "rejected_"), gold_c, gold_r)
    gold_NxK = sft.bon_gold_NxK
    k = gold_NxK.shape[1]
    curves = []
    for ranker, scores in (
        ("global_rm", glob(sft.bon_samples)),
        ("local_rm", local(sft.bon_samples)),
        ("gold", gold_NxK.reshape(-1)),
    ):
        ranked = best_of_n(np.reshape(scores, (-1, k)), gold_NxK, b.spec.eval.best_of_n)
        curves += [{"ranker": ranker, **row} for row in ranked]
    return {
        "rm_heldout_accuracy": rm_pairs["accuracy"],
        "rm_heldout_loglik": rm_pairs["loglik"],
        "dpo_heldout_accuracy": dpo_pairs["accuracy"],
        "dpo_heldout_loglik": dpo_pairs["loglik"],
        "oracle_best_of_k_gain": float(np.mean(gold_NxK.max(axis=1)) - np.mean(gold_NxK)),
        "informative_label_frac": informative_frac(b.pairs, b.train_rows),
        # Of the held-out labels whose responses differ in gold (ties are coin flips).
        "label_agreement_with_gold": float(np.mean((gold_c > gold_r)[gold_c != gold_r])),
        "best_of_n": curves,
        "sft_fit": sft.fit,
    }


@functools.lru_cache(maxsize=8)
def _first_token_fn(cfg: ModelConfig):
    def fn(params, batch):
        logits_BxPxV = lm_logits(cfg, params, batch["prompt_tokens"], batch["prompt_mask"])
        # Prompts are left-padded, so the last position is the last prompt token everywhere.
        return {"probs": jax.nn.softmax(logits_BxPxV[:, -1].astype(np.float32), axis=-1)}

    return jax.jit(fn)


def first_token_probs(cfg: ModelConfig, params, prompts: dict, mesh) -> np.ndarray:
    """pi(y_1 | x) [N, V] at temperature 1: the next-token softmax after each prompt."""
    return forward_dataset(_first_token_fn(cfg), params, prompts, FORWARD_BATCH, mesh)["probs"]


def bandit_contexts(task: BanditTask) -> dict:
    """Every bandit context once, as prompt arrays [C, 1] (row c is context c)."""
    c = task.cfg.num_contexts
    return {
        "prompt_tokens": (task.first_context + np.arange(c, dtype=np.int32))[:, None],
        "prompt_mask": np.ones((c, 1), bool),
    }


def choices(task: BanditTask, probs_NxV: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the policy restricted to the bandit's choice tokens and renormalised [N, M], mass [N])."""
    ids = task.first_choice + np.arange(task.cfg.num_choices)
    p_NxM = np.asarray(probs_NxV[:, ids], np.float64)
    mass_N = p_NxM.sum(-1)
    return p_NxM / mass_N[:, None], mass_N


def policy_params(b: Budget, arm: str, model_class: str | None):
    """The arm's final policy (SFT's params for sft)."""
    return (
        b.sft.params
        if arm == "sft"
        else load_policy(policy_dir(b, arm, model_class), b.spec.model, b.mesh)
    )


def policy_distances(b: Budget, arm_names, model_class: str) -> dict[str, dict]:
    """{arm: mean TV of its first-token distribution to offline DPO's (and the soft optimum)}.

    Over the eval prompts, one forward pass per policy. On the bandit, `tv_to_soft_optimal`
    compares the arm restricted to the choice tokens and renormalised with the soft optimum for
    the SFT reference restricted the same way: pi*(y | x) ~ pi_sft(y | x) exp(s r(x, y) / beta)
    with s = labels.bt_scale (the labels identify s r), the optimum of the KL-regularised
    objective every arm shares (the reward ignores later tokens, so the first token is all).
    `choice_mass` is the probability the arm puts on choice tokens at all.
    """
    cfg, mesh, beta, prompts = b.spec.model, b.mesh, b.spec.beta, b.data.eval_prompts

    def probs(arm, at=prompts):
        return first_token_probs(cfg, policy_params(b, arm, model_class), at, mesh)

    offline = probs("offline_dpo")
    target = None
    if isinstance(b.data.task, BanditTask):
        task, contexts = b.data.task, bandit_contexts(b.data.task)
        scale = b.spec.labels.bt_scale
        optimal_CxM = task.optimal_policy(beta / scale, choices(task, probs("sft", contexts))[0])
        target = optimal_CxM[prompts["prompt_tokens"][:, -1] - task.first_context]
    out = {}
    for arm in arm_names:
        p = probs(arm)
        row = {"tv_to_offline_dpo": float(np.mean(total_variation(p, offline)))}
        if target is not None:
            choice_NxM, mass_N = choices(b.data.task, p)
            row["tv_to_soft_optimal"] = float(np.mean(total_variation(choice_NxM, target)))
            row["choice_mass"] = float(np.mean(mass_N))
        out[arm] = row
    return out
