"""Measuring the gap before comparing arms: global vs local reward models, Best-of-N headroom.

Held-out pairs are two responses per prompt from the budget's pair source (two SFT samples by
default) with a Bradley-Terry label. Accuracy is against the gold ordering (pairs with equal
gold reward are left out); log-likelihood is the mean log sigmoid(margin) of the drawn labels,
the quantity each reward model was fitted to. The local reward is DPO's implicit
r = beta * (log pi_dpo - log pi_sft).

On tasks whose response is one content token (then EOS) the first-token distribution
pi(y_1 | x) is the whole policy, so arms can be compared as distributions, exactly:
`policy_distances` gives each arm's mean total-variation distance to offline DPO and, on the
bandit, to the soft-optimal policy (the isomorphic control's common target).
"""

import functools

import jax
import numpy as np

from rlft.experiments import arms
from rlft.experiments.isomorphic import total_variation
from rlft.models import ModelConfig, lm_logits
from rlft.rollout import scoring
from rlft.tasks import BanditTask, log_sigmoid


def pair_metrics(margin_N: np.ndarray, gold_c_N: np.ndarray, gold_r_N: np.ndarray) -> dict:
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


def measure(b) -> dict:
    """Diagnostics of one budget (a `budget.Budget` whose RM and offline DPO are trained)."""
    ts = b.ts
    cfg, mesh, beta = ts.spec.model, ts.mesh, ts.spec.dpo.beta
    dpo_params = arms.load_policy(b.dpo_dir(), cfg, mesh)
    val = {k: v[b.val_rows] for k, v in b.pairs.items()}

    def local(arrays, prefix=""):
        return beta * (
            scoring.logprob_scores(cfg, dpo_params, arrays, mesh, prefix)
            - scoring.logprob_scores(cfg, ts.sft_params, arrays, mesh, prefix)
        )

    def rm(arrays, prefix=""):
        return scoring.rm_scores(cfg, b.rm_params, arrays, mesh, prefix, ts.spec.reward.pooling)

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


@functools.lru_cache(maxsize=8)
def _first_token_fn(cfg: ModelConfig):
    def fn(params, batch):
        logits_BxPxV = lm_logits(cfg, params, batch["prompt_tokens"], batch["prompt_mask"])
        # Prompts are left-padded, so the last position is the last prompt token everywhere.
        return {"probs": jax.nn.softmax(logits_BxPxV[:, -1].astype(np.float32), axis=-1)}

    return jax.jit(fn)


def first_token_probs(cfg: ModelConfig, params, prompts: dict, mesh) -> np.ndarray:
    """pi(y_1 | x) [N, V] at temperature 1: the next-token softmax after each prompt."""
    return scoring.forward_dataset(
        _first_token_fn(cfg), params, prompts, scoring.FORWARD_BATCH, mesh
    )["probs"]


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


def policy_distances(b, arm_names) -> dict[str, dict]:
    """{arm: mean TV of its first-token distribution to offline DPO's (and the soft optimum)}.

    Over the eval prompts, one forward pass per policy (a `budget.Budget` whose arms are
    trained). On the bandit, `tv_to_soft_optimal` compares the arm restricted to the choice
    tokens and renormalised with the soft optimum for the SFT reference restricted the same
    way: pi*(y | x) ~ pi_sft(y | x) exp(s r(x, y) / beta) with s = labels.bt_scale (the labels
    identify s r), the optimum of the KL-regularised objective every arm shares (the reward
    ignores later tokens, so the first token is all).
    `choice_mass` is the probability the arm puts on choice tokens at all.
    """
    ts = b.ts
    cfg, mesh, beta, prompts = ts.spec.model, ts.mesh, ts.spec.dpo.beta, ts.eval_prompts

    def probs(arm, at=prompts):
        params = ts.sft_params if arm == "sft" else arms.load_policy(b.arm_dir(arm), cfg, mesh)
        return first_token_probs(cfg, params, at, mesh)

    b.dpo_dir()  # offline DPO is the reference point whether or not it is among the arms
    offline = probs("offline_dpo")
    target = None
    if isinstance(ts.task, BanditTask):
        task, contexts = ts.task, bandit_contexts(ts.task)
        # Bradley-Terry labels at scale s identify the reward s * r, so the KL-regularised
        # optimum every arm estimates is pi_sft exp(s r / beta): beta / s in r's units.
        scale = ts.spec.labels.bt_scale
        optimal_CxM = task.optimal_policy(beta / scale, choices(task, probs("sft", contexts))[0])
        target = optimal_CxM[prompts["prompt_tokens"][:, -1] - task.first_context]
    out = {}
    for arm in arm_names:
        p = probs(arm)
        row = {"tv_to_offline_dpo": float(np.mean(total_variation(p, offline)))}
        if target is not None:
            choice_NxM, mass_N = choices(ts.task, p)
            row["tv_to_soft_optimal"] = float(np.mean(total_variation(choice_NxM, target)))
            row["choice_mass"] = float(np.mean(mass_N))
        out[arm] = row
    return out
