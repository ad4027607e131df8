"""The arms of the comparison, defined once: what each trains, from where, on which pairs.

Pure Python (no JAX): the report reads arm names and their properties from here, and the
pipeline can build its stages from the same table. An arm's `start` is the policy it starts
from and also the reference its KL term and DPO log-ratios are taken against (PAPER.md
section 4: online DPO from the offline-DPO policy uses that policy as start and reference).
Iterated online DPO starts each round from the current policy but keeps the SFT reference.
"""

import dataclasses

KINDS = ("sft", "dpo", "ppo")
STARTS = ("sft", "offline_dpo")
PAIRS = ("labels", "online", None)  # labels: the budget's labelled pairs; online: best/worst of K
SCORERS = ("rm", "gold", None)  # who picks best/worst of K (or scores PPO's rollouts)
PROMPTS = ("budget", "more")  # one prompt per label, or more_prompts_factor times as many (H3)
# The held-out objective each kind's checkpoint selection maximises (no gold inside).
SELECTION_RULES = {
    "sft": None,
    "dpo": "heldout_dpo_loglik",  # mean log sigmoid(beta * implicit margin), held-out pairs
    "ppo": "heldout_rm_minus_beta_kl",  # held-out RM score - beta * KL(pi || pi_ref)
}


@dataclasses.dataclass(frozen=True)
class Arm:
    """One arm. Raises ValueError on a value outside the enumerations above."""

    name: str
    kind: str  # KINDS: the training objective
    start: str  # STARTS: starting policy and reference (iterated online DPO: reference only)
    pairs: str | None  # PAIRS: the preference pairs DPO trains on (None: SFT, PPO)
    scorer: str | None  # SCORERS: scorer of online samples (None: no online scoring)
    prompts: str  # PROMPTS
    rounds: int  # online DPO rounds of (sample K, score, DPO); 0 for arms without any

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
        online = self.pairs == "online"
        if online != (self.rounds >= 1) or self.rounds < 0:
            raise ValueError(f"arm {self.name!r}: rounds {self.rounds} with pairs {self.pairs!r}")

    @property
    def selection_rule(self) -> str | None:
        """The held-out objective that picks this arm's checkpoint (None: no selection)."""
        return SELECTION_RULES[self.kind]


def _arms(*arms: Arm) -> dict[str, Arm]:
    return {a.name: a for a in arms}


ARMS: dict[str, Arm] = _arms(
    Arm("sft", "sft", "sft", None, None, "budget", 0),
    Arm("offline_dpo", "dpo", "sft", "labels", None, "budget", 0),
    Arm("online_dpo", "dpo", "sft", "online", "rm", "budget", 1),
    Arm("online_dpo_from_dpo", "dpo", "offline_dpo", "online", "rm", "budget", 1),
    Arm("iterated_online_dpo", "dpo", "sft", "online", "rm", "budget", 3),
    Arm("ppo", "ppo", "sft", None, "rm", "budget", 0),
    Arm("oracle_online_dpo", "dpo", "sft", "online", "gold", "budget", 1),
    Arm("online_dpo_more_prompts", "dpo", "sft", "online", "rm", "more", 1),
)
EXTRA_ARMS = ("online_dpo_more_prompts",)  # run only by variants that ask (H3)
DEFAULT_ARMS = tuple(a for a in ARMS if a not in EXTRA_ARMS)
