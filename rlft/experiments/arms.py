"""The arms of `rlft reproduce`, defined once (pure Python: the pipeline and the report read it).

An arm is a way to turn the same preference data into a policy. `kind` is how it trains (sft:
not at all; dpo: the DPO loss on pairs; ppo: RL against a scorer), `start` the policy it starts
from (for DPO arms also the reference of the first round; iterated online DPO keeps the SFT
reference in every round), `pairs` where its DPO pairs come from (the labelled pairs, or online:
best and worst of K samples of the current policy by `scorer`), `scorer` the reward it uses
(the global reward model or the gold verifier), `prompts` the prompts it samples on (the label
budget's, or more: online.more_prompts_factor x as many); an `iterated` arm resamples and
retrains for config.online.rounds rounds, each from the policy the last one ended with.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Arm:
    name: str
    kind: str  # sft | dpo | ppo
    start: str = "sft"  # sft | offline_dpo
    pairs: str | None = None  # labels | online | None
    scorer: str | None = None  # rm | gold | None
    prompts: str = "budget"  # budget | more
    iterated: bool = False  # rounds of (sample, score, DPO from the current policy)


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
EXTRA_ARMS = ("online_dpo_more_prompts",)  # H3; compared against online_dpo by the report
DEFAULT_ARMS = tuple(name for name in ARMS if name not in EXTRA_ARMS)


def uses_reward_model(name: str) -> bool:
    """Whether the arm's training depends on the cell's reward-model class."""
    return ARMS[name].scorer == "rm"
