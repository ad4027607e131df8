"""The arms of `rlft reproduce`, defined once (pure Python: the pipeline and the report read it).

An arm is a way to turn the same preference data into a policy. `kind` is how it trains (sft:
not at all; dpo: the DPO loss on pairs; ppo: RL against a scorer); `start` the policy it starts
from, which is also the reference of its DPO log-ratios (docs/paper.md section 4: online DPO from
the offline-DPO policy uses that policy as start and reference; KL is always measured to SFT);
`pairs` where its DPO pairs come from (the labelled pairs, or online: best and worst of K
samples of the current policy by `scorer`); `scorer` the reward it uses (the global reward model
or the gold verifier); `prompts` the prompts it samples on (the label budget's, or more:
online.more_prompts_factor x as many); an `iterated` arm resamples and retrains for
config.online.rounds rounds, each from the policy the last one ended with, keeping the SFT
reference.
"""

import dataclasses

KINDS = ("sft", "dpo", "ppo")
STARTS = ("sft", "offline_dpo")
PAIRS = ("labels", "online", None)  # labels: the budget's labelled pairs; online: best/worst of K
SCORERS = ("rm", "gold", None)  # who picks best/worst of K (or scores PPO's rollouts)
PROMPTS = ("budget", "more")  # one prompt per label, or more_prompts_factor times as many (H3)
# The held-out objectives that pick an arm's checkpoint (no gold inside), higher is better:
# DPO: mean log sigmoid(beta * implicit margin) on held-out pairs of the arm's own kind;
# PPO and iterated online DPO (its rounds train on different pairs): held-out RM score minus
# beta * KL(pi || pi_sft), the KL-regularised objective both optimise.
SELECTION_RULES = ("heldout_dpo_loglik", "heldout_rm_minus_beta_kl")


@dataclasses.dataclass(frozen=True)
class Arm:
    """One arm. Raises ValueError on a value outside the enumerations above."""

    name: str
    kind: str  # KINDS
    start: str = "sft"  # STARTS
    pairs: str | None = None  # PAIRS (None: SFT, PPO)
    scorer: str | None = None  # SCORERS (None: no scoring)
    prompts: str = "budget"  # PROMPTS
    iterated: bool = False  # rounds of (sample, score, DPO from the current policy)

    def __post_init__(self):
        for field, allowed in (
            ("kind", KINDS),
            ("start", STARTS),
            ("pairs", PAIRS),
            ("scorer", SCORERS),
            ("prompts", PROMPTS),
        ):
            if getattr(self, field) not in allowed:
                raise ValueError(
                    f"arm {self.name!r}: {field} {getattr(self, field)!r} not in {allowed}"
                )
        if (self.kind == "dpo") != (self.pairs is not None) or (
            self.iterated and self.pairs != "online"
        ):
            raise ValueError(f"arm {self.name!r}: kind {self.kind!r} with pairs {self.pairs!r}")

    @property
    def selection_rule(self) -> str | None:
        """The held-out objective that picks this arm's checkpoint (None: SFT, no training)."""
        if self.kind == "sft":
            return None
        return (
            "heldout_dpo_loglik" if self.kind == "dpo" and not self.iterated else SELECTION_RULES[1]
        )


_ARMS = (
    Arm("sft", "sft"),
    Arm("offline_dpo", "dpo", pairs="labels"),
    Arm("online_dpo", "dpo", pairs="online", scorer="rm"),
    Arm("online_dpo_from_dpo", "dpo", start="offline_dpo", pairs="online", scorer="rm"),
    Arm("iterated_online_dpo", "dpo", pairs="online", scorer="rm", iterated=True),
    Arm("ppo", "ppo", scorer="rm"),
    Arm("oracle_online_dpo", "dpo", pairs="online", scorer="gold"),
    Arm("online_dpo_more_prompts", "dpo", pairs="online", scorer="rm", prompts="more"),
)
ARMS: dict[str, Arm] = {a.name: a for a in _ARMS}
EXTRA_ARMS = ("online_dpo_more_prompts",)  # H3; run only by variants that ask for it
DEFAULT_ARMS = tuple(name for name in ARMS if name not in EXTRA_ARMS)


def uses_reward_model(name: str) -> bool:
    """Whether the arm's training depends on the cell's reward-model class."""
    return ARMS[name].scorer == "rm"
