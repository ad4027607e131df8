"""`rouge`: ROUGE-L overlap with a hidden reference (verification as hard as generation).

Vocabulary: PAD, EOS, SEP, `num_keys` key tokens, then `num_content` content tokens.
Prompt: [key, c_1, ..., c_n, SEP], n in [min_items, max_items] uniform content tokens; SEP marks
where the response starts (the reference depends on n, so a model must see it).
Hidden reference g(prompt), a composition of three key-dependent rules (content indices mod M):

    m_i = c_i + c_{i-1} (mod M) for i > 1 when `mix`, else c_i     (neighbour mixing)
    d_i = S_key[m_i]                                                 (a secret permutation)
    reference = ORDER_key(d_1..d_n)                                  (one of ORDERS, per key)

Verifier: ROUGE-L F1 of the response's content tokens (those before the first EOS; all masked
tokens if there is no EOS, which then only costs precision) against the reference:

    P = LCS / len(response),  R = LCS / len(reference),  F = 2PR / (P + R)   (0 if LCS = 0)

Demonstrations are noisy references: each token replaced by a uniform content token with
probability `noise`, then dropped with probability `drop`, then EOS.
"""

import dataclasses

import numpy as np

from rlft.data.judges import lcs_length
from rlft.tasks.base import EOS_ID, NUM_RESERVED, SEP_ID, Task


def rouge_l_prf(candidate, reference) -> tuple[float, float, float]:
    """(precision, recall, F1) of ROUGE-L over token ids; all zero when either side is empty or
    LCS is 0. (The F-measure alone over text or ids, with beta: rlft.data.judges.rouge_l.)"""
    lcs = lcs_length(candidate, reference)  # rlft.data.judges: the one LCS implementation
    if lcs == 0:
        return 0.0, 0.0, 0.0
    # F = 2PR / (P + R) = 2 LCS / (len(candidate) + len(reference)), one exact-ish division so
    # equal F values compare equal.
    return lcs / len(candidate), lcs / len(reference), 2 * lcs / (len(candidate) + len(reference))


def _evens_then_odds(d):
    return d[0::2] + d[1::2]


ORDERS = {  # position rules a key can use
    "identity": lambda d: list(d),
    "reverse": lambda d: list(reversed(d)),
    "rotate": lambda d: list(d[1:]) + list(d[:1]),
    "evens_then_odds": lambda d: _evens_then_odds(list(d)),
}


@dataclasses.dataclass(frozen=True)
class RougeConfig:
    num_keys: int = 4  # key tokens; the prompt's first token picks the substitution and order
    num_content: int = 24  # content tokens
    min_items: int = 3  # fewest content tokens in a prompt
    max_items: int = 6  # most; P = max_items + 2 (key, items, SEP), R = max_items + 1
    mix: bool = True  # reference token i also depends on prompt token i-1 (hash-like)
    noise: float = 0.2  # demonstrator: per-token chance of a uniform content token
    drop: float = 0.1  # demonstrator: per-token chance of deletion
    seed: int = 0  # hidden substitution tables and orders


@dataclasses.dataclass(frozen=True)
class RougeTables:
    subst_KxM: np.ndarray  # per key, a permutation of content indices
    orders: tuple[str, ...]  # per key, a name in ORDERS


def random_tables(cfg: RougeConfig) -> RougeTables:
    rng = np.random.default_rng([cfg.seed, 0x726F75])
    subst = np.stack([rng.permutation(cfg.num_content) for _ in range(cfg.num_keys)])
    names = sorted(ORDERS)
    return RougeTables(
        subst, tuple(names[int(i)] for i in rng.integers(len(names), size=cfg.num_keys))
    )


class RougeTask(Task):
    name = "rouge"

    def __init__(self, cfg: RougeConfig, tables: RougeTables | None = None):
        if not 1 <= cfg.min_items <= cfg.max_items or cfg.num_keys < 1 or cfg.num_content < 2:
            raise ValueError("rouge: need 1 <= min_items <= max_items, num_keys >= 1, M >= 2")
        if not (0 <= cfg.noise <= 1 and 0 <= cfg.drop <= 1):
            raise ValueError("rouge: noise and drop must be probabilities")
        super().__init__(cfg)
        self.tables = tables if tables is not None else random_tables(cfg)
        if (
            np.shape(self.tables.subst_KxM) != (cfg.num_keys, cfg.num_content)
            or len(self.tables.orders) != cfg.num_keys
        ):
            raise ValueError("rouge tables need subst [num_keys, num_content], one order per key")
        if any(o not in ORDERS for o in self.tables.orders):
            raise ValueError(f"rouge: orders must be among {sorted(ORDERS)}")
        self.first_key = NUM_RESERVED
        self.first_content = NUM_RESERVED + cfg.num_keys

    @property
    def vocab_size(self) -> int:
        return NUM_RESERVED + self.cfg.num_keys + self.cfg.num_content

    @property
    def prompt_len(self) -> int:
        return self.cfg.max_items + 2

    @property
    def response_len(self) -> int:
        return self.cfg.max_items + 1

    def sample_prompts(self, n: int, rng: np.random.Generator) -> list[list[int]]:
        cfg, prompts = self.cfg, []
        for _ in range(n):
            key = int(rng.integers(cfg.num_keys))
            items = rng.integers(
                cfg.num_content, size=int(rng.integers(cfg.min_items, cfg.max_items + 1))
            )
            content = [self.first_content + int(c) for c in items]
            prompts.append([self.first_key + key, *content, SEP_ID])
        return prompts

    def reference(self, prompt) -> list[int]:
        """The hidden reference response (content tokens, no EOS) of one prompt."""
        key, m = prompt[0] - self.first_key, self.cfg.num_content
        items = [t - self.first_content for t in prompt[1:-1]]
        ok = prompt[-1] == SEP_ID and items and min(items) >= 0 and max(items) < m
        if not (ok and 0 <= key < self.cfg.num_keys):
            raise ValueError(f"not a rouge prompt (key, items..., SEP): {prompt}")
        if self.cfg.mix:
            items = items[:1] + [(c + prev) % m for prev, c in zip(items, items[1:], strict=False)]
        subst = self.tables.subst_KxM[key]
        ordered = ORDERS[self.tables.orders[key]]([int(subst[c]) for c in items])
        return [self.first_content + d for d in ordered]

    def demonstrate(self, prompts, rng: np.random.Generator) -> list[list[int]]:
        out = []
        for prompt in prompts:
            demo = []
            for token in self.reference(prompt):
                if rng.random() < self.cfg.noise:
                    token = self.first_content + int(rng.integers(self.cfg.num_content))
                if rng.random() >= self.cfg.drop:
                    demo.append(token)
            out.append(demo + [EOS_ID])
        return out

    def score_one(self, prompt, content, has_eos) -> dict:
        p, r, f = rouge_l_prf(content, self.reference(prompt))
        return {
            "reward": f,
            "precision": p,
            "recall": r,
            "length": float(len(content)),
            "has_eos": float(has_eos),
        }

    def describe(self) -> str:
        return (
            "rouge: the gold reward is ROUGE-L F1 against a hidden reference that a key-dependent "
            "composition of rules (neighbour mixing, a secret substitution, a reordering) makes "
            "from the prompt. To score a response a verifier must know the reference, i.e. "
            "compute the very map g(prompt) a generator must compute; given g, generating is "
            "just writing g(prompt) down. The reward class {LCS-overlap with g(x)} and the "
            "soft-optimal policy class {policies concentrated on g(x)} are indexed by the same "
            "g, so neither road learns in a smaller class: proper learning buys nothing and the "
            "gap is absent by construction (the paper's ROUGE-L arm). That online and offline "
            "then coincide is to be measured, not assumed."
        )
