"""`bandit`: the isomorphic control of Theorem 2.2 (reward class = policy class).

Vocabulary: PAD, EOS, SEP (unused), `num_contexts` context tokens, then `num_choices` choice
tokens. Prompt: [x], one context token: its fixed length shows where the response starts.
Response: [y, EOS], one choice token.
Verifier: reward = r[x, y] with r a free table, r ~ U(0, 1) fixed by `seed`. Only the first
response token is read: if it is not a choice token (EOS straight away, PAD, a context token)
the reward is 0, the table's floor; later tokens, and whether an EOS follows, are ignored, so
the reward is exactly a table over (x, first token).
Demonstrator: y ~ pi_ref(. | x) = softmax(l[x]), logits l ~ N(0, ref_logit_std^2) by `seed`.
"""

import dataclasses

import numpy as np

from rlft.tasks.base import EOS_ID, NUM_RESERVED, Task


@dataclasses.dataclass(frozen=True)
class BanditConfig:
    num_contexts: int = 8  # context tokens x
    num_choices: int = 16  # choice tokens y
    ref_logit_std: float = 1.0  # spread of the demonstrator's softmax logits
    seed: int = 0  # hidden reward table and demonstrator logits


def soft_optimal(ref_probs_CxM: np.ndarray, reward_CxM: np.ndarray, beta: float) -> np.ndarray:
    """pi*(y | x) = pi_ref(y | x) exp(r(x, y) / beta) / Z(x), the KL-regularised optimum."""
    if beta <= 0:
        raise ValueError("beta must be positive")
    logits = np.log(np.asarray(ref_probs_CxM, np.float64)) + np.asarray(reward_CxM) / beta
    logits = logits - logits.max(-1, keepdims=True)
    probs = np.exp(logits)
    return probs / probs.sum(-1, keepdims=True)


class BanditTask(Task):
    name = "bandit"

    def __init__(self, cfg: BanditConfig):
        if cfg.num_contexts < 1 or cfg.num_choices < 2 or cfg.ref_logit_std < 0:
            raise ValueError("bandit: need num_contexts >= 1, num_choices >= 2, std >= 0")
        super().__init__(cfg)
        rng = np.random.default_rng([cfg.seed, 0x62616E])
        self.reward_CxM = rng.uniform(0.0, 1.0, (cfg.num_contexts, cfg.num_choices))
        logits = rng.normal(0.0, cfg.ref_logit_std, (cfg.num_contexts, cfg.num_choices))
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        self.ref_probs_CxM = probs / probs.sum(-1, keepdims=True)
        self.first_context = NUM_RESERVED
        self.first_choice = NUM_RESERVED + cfg.num_contexts

    @property
    def vocab_size(self) -> int:
        return NUM_RESERVED + self.cfg.num_contexts + self.cfg.num_choices

    @property
    def prompt_len(self) -> int:
        return 1

    @property
    def response_len(self) -> int:
        return 2

    def sample_prompts(self, n: int, rng: np.random.Generator) -> list[list[int]]:
        return [[self.first_context + int(x)] for x in rng.integers(self.cfg.num_contexts, size=n)]

    def _context(self, prompt) -> int:
        x = prompt[-1] - self.first_context
        if len(prompt) != 1 or not 0 <= x < self.cfg.num_contexts:
            raise ValueError(f"not a bandit prompt [context]: {prompt}")
        return x

    def demonstrate(self, prompts, rng: np.random.Generator) -> list[list[int]]:
        out = []
        for prompt in prompts:
            y = rng.choice(self.cfg.num_choices, p=self.ref_probs_CxM[self._context(prompt)])
            out.append([self.first_choice + int(y), EOS_ID])
        return out

    def score_one(self, prompt, content, has_eos) -> dict:
        x = self._context(prompt)
        y = content[0] - self.first_choice if content else -1
        valid = 0 <= y < self.cfg.num_choices
        return {
            "reward": float(self.reward_CxM[x, y]) if valid else 0.0,
            "valid": float(valid),
            "has_eos": float(has_eos),
        }

    def optimal_policy(self, beta: float, ref_probs_CxM: np.ndarray | None = None) -> np.ndarray:
        """[C, M] soft-optimal policy over choices for this task's reward (default ref: demos)."""
        ref = self.ref_probs_CxM if ref_probs_CxM is None else ref_probs_CxM
        return soft_optimal(ref, self.reward_CxM, beta)

    def expected_reward(self, probs_CxM: np.ndarray) -> float:
        """Gold reward of a policy over choices, averaged over (uniform) contexts."""
        return float(np.mean(np.sum(np.asarray(probs_CxM) * self.reward_CxM, -1)))

    def describe(self) -> str:
        return (
            "bandit: one context token, one choice token, a free reward table r[x, y]. The "
            "policy class (a softmax over choices per context) and the reward class (any table) "
            "are in one-to-one correspondence: every reward is some policy's local reward "
            "beta * log(pi / pi_ref) up to a per-context constant, which Bradley-Terry cannot "
            "see. This is Theorem 2.2's isomorphic case: online (RM then RL) and offline (DPO) "
            "PFT have the same optima, so there is no generation-verification gap and the arms "
            "should coincide up to optimisation; optimal_policy(beta) is the target both should "
            "approach. Networks only approximate free tables, and a reward head and a policy "
            "head can still learn at different rates from finite data (the prototypes saw that "
            "on a 1-token task), so any difference between arms here measures those "
            "parametrisation and optimisation effects, not a gap."
        )
