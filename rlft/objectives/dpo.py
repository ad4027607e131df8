"""Direct preference optimisation: Bradley–Terry MLE on the policy's own local reward.

With h = (log pi(y+) - log pi(y-)) - (log ref(y+) - log ref(y-)), sequence log-probs summed
over the response tokens, the per-pair losses are

    sigmoid: -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h)   (eps: label smoothing)
    ipo:     (h - 1 / (2 beta))^2

and the implicit (local) reward of a response is beta * (log pi(y) - log ref(y)).
Reference log-probs arrive in the batch; `reference_free` treats them as 0.
"""

import dataclasses

import jax
import jax.numpy as jnp

from rlft.errors import ConfigError, check_ranges
from rlft.objectives.base import LossOut, Models, pair_rows, split_pair_rows
from rlft.objectives.logprobs import sequence_logprobs

LOSS_TYPES = ("sigmoid", "ipo")
# The pairs [B, T] (as the reward objective reads them) and the reference log-probs [B].
BATCH_KEYS = (
    *(f"{side}_{k}" for side in ("chosen", "rejected") for k in ("tokens", "mask", "loss_mask")),
    "ref_chosen_logp",
    "ref_rejected_logp",
)


@dataclasses.dataclass(frozen=True)
class DpoHparams:
    beta: float = 0.1  # strength of the KL tie to the reference
    loss_type: str = "sigmoid"  # "sigmoid" (DPO) or "ipo"
    reference_free: bool = False  # the paper's reference-free local RM: ref log-probs = 0
    temperature: float = 1.0  # log-probs from logits / temperature (online DPO samples)
    label_smoothing: float = 0.0  # conservative DPO: assumed label-flip rate, sigmoid only

    def __post_init__(self):
        """Raises ConfigError naming the field and its range (dpo.beta = -1.0: must be > 0)."""
        check_ranges(
            "dpo",
            vars(self),
            {
                "beta": ("> 0", "the KL coefficient; the paper uses 0.05"),
                "temperature": ("> 0", "log-probs from logits / temperature; 1 offline"),
            },
        )
        _check(self.loss_type, self.label_smoothing)


def _check(loss_type: str, label_smoothing: float) -> None:
    """Raises ConfigError for an unknown loss_type or a label smoothing outside [0, 0.5)."""
    if loss_type not in LOSS_TYPES:
        raise ConfigError(f"dpo.loss_type={loss_type!r} is unknown; choose one of {LOSS_TYPES}.")
    rule = ("[0, 0.5)", "the assumed label-flip rate; 0.5 would make every label noise")
    check_ranges("dpo", {"label_smoothing": label_smoothing}, {"label_smoothing": rule})
    if label_smoothing and loss_type != "sigmoid":
        raise ConfigError(
            f"dpo.label_smoothing={label_smoothing} only applies to loss_type='sigmoid', "
            f"not {loss_type!r}; set it to 0."
        )


def dpo_losses(
    policy_chosen_logp_B: jax.Array,
    policy_rejected_logp_B: jax.Array,
    ref_chosen_logp_B: jax.Array,
    ref_rejected_logp_B: jax.Array,
    *,
    beta: float,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    reference_free: bool = False,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per-pair losses and the implicit rewards (chosen_B, rejected_B); see the module doc."""
    _check(loss_type, label_smoothing)
    if reference_free:
        ref_chosen_logp_B = jnp.zeros_like(ref_chosen_logp_B)
        ref_rejected_logp_B = jnp.zeros_like(ref_rejected_logp_B)
    chosen_ratio_B = policy_chosen_logp_B - ref_chosen_logp_B
    rejected_ratio_B = policy_rejected_logp_B - ref_rejected_logp_B
    h_B = chosen_ratio_B - rejected_ratio_B
    if loss_type == "sigmoid":
        losses_B = -(1.0 - label_smoothing) * jax.nn.log_sigmoid(beta * h_B)
        losses_B -= label_smoothing * jax.nn.log_sigmoid(-beta * h_B)
    else:  # ipo
        losses_B = (h_B - 1.0 / (2.0 * beta)) ** 2
    return losses_B, beta * chosen_ratio_B, beta * rejected_ratio_B


def loss_fn(params: dict, batch: dict, models: Models, hp: DpoHparams) -> LossOut:
    """Sum of per-pair DPO losses; chosen and rejected share one [2B, T] policy forward
    (`pair_rows`), their first `models.pair_prefix_len` columns (the prompt) run once per pair."""
    b = batch["chosen_tokens"].shape[0]

    logp_2B = sequence_logprobs(
        models.policy,
        params["policy"],
        pair_rows(batch, "tokens"),
        pair_rows(batch, "mask"),
        pair_rows(batch, "loss_mask"),
        hp.temperature,
        prefix_len=models.pair_prefix_len,
        copies=2,
    )
    policy_chosen_B, policy_rejected_B = split_pair_rows(logp_2B)
    losses_B, chosen_reward_B, rejected_reward_B = dpo_losses(
        policy_chosen_B,
        policy_rejected_B,
        batch["ref_chosen_logp"],
        batch["ref_rejected_logp"],
        beta=hp.beta,
        loss_type=hp.loss_type,
        label_smoothing=hp.label_smoothing,
        reference_free=hp.reference_free,
    )
    metrics = {
        "accuracy": jnp.sum(chosen_reward_B > rejected_reward_B).astype(jnp.float32),
        "margin": jnp.sum(chosen_reward_B - rejected_reward_B),
        "chosen_reward": jnp.sum(chosen_reward_B),
        "rejected_reward": jnp.sum(rejected_reward_B),
        "policy_chosen_logp": jnp.sum(policy_chosen_B),
        "policy_rejected_logp": jnp.sum(policy_rejected_B),
    }
    return LossOut(jnp.sum(losses_B), jnp.asarray(b, jnp.float32), metrics)
