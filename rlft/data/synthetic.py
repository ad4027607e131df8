"""A small in-process prompt/response/preference task for smoke runs and the tiny configs.

Task "reverse": the prompt is a few content tokens then SEP; the ideal response is those tokens
reversed, then EOS. The gold reward is the fraction of ideal positions the response matches.
Demonstrations are the ideal response with each token corrupted with probability `noise` (a
noisy "human"); preference pairs are two demonstrations of different quality labelled by the
Bradley-Terry model of the gold reward. The task family of `rlft reproduce` lives elsewhere.
"""

import dataclasses

import numpy as np

from rlft.data.arrays import pack_pairs, pack_prompts, pack_sequences
from rlft.data.bundle import DataBundle

PAD, EOS, SEP = 0, 1, 2
FIRST_CONTENT = 3


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    vocab_size: int = 64  # must not exceed model.vocab_size
    num_examples: int = 2048  # prompts (SFT demos and preference pairs each get this many)
    max_items: int = 6  # content tokens per prompt (at least 2)
    noise: float = 0.15  # per-token corruption of demonstrations
    pair_noise_max: float = 0.6  # each pair response gets noise ~ U(0, pair_noise_max)
    bt_scale: float = 8.0  # Bradley-Terry: P(a > b) = sigmoid(bt_scale * (r_a - r_b))
    seed: int = 1234  # the dataset's own seed (independent of the run seed)

    @property
    def prompt_len(self) -> int:
        return self.max_items + 1

    @property
    def response_len(self) -> int:
        return self.max_items + 1


def _prompts(cfg: SyntheticConfig, rng: np.random.Generator) -> list[list[int]]:
    lengths = rng.integers(2, cfg.max_items + 1, cfg.num_examples)
    return [list(rng.integers(FIRST_CONTENT, cfg.vocab_size, n)) + [SEP] for n in lengths]


def ideal_response(prompt: list[int]) -> list[int]:
    return [t for t in reversed(prompt) if t >= FIRST_CONTENT] + [EOS]


def _corrupt(response: list[int], noise: float, vocab: int, rng: np.random.Generator):
    out = list(response)
    for i in range(len(out) - 1):  # EOS stays; content tokens flip with prob `noise`
        if rng.random() < noise:
            out[i] = int(rng.integers(FIRST_CONTENT, vocab))
    return out


def gold_reward(prompt: list[int], response: list[int]) -> float:
    """Fraction of the ideal response's positions that the response matches."""
    ideal = ideal_response(prompt)
    hits = sum(1 for i, t in enumerate(ideal) if i < len(response) and response[i] == t)
    return hits / len(ideal)


def make_datasets(cfg: SyntheticConfig) -> dict[str, dict[str, np.ndarray]]:
    """{'sft': sequences, 'pairs': preference pairs, 'prompts': prompts alone}."""
    if cfg.vocab_size <= FIRST_CONTENT + 1 or cfg.max_items < 2:
        raise ValueError("data.vocab_size must exceed 4 and data.max_items must be >= 2")
    rng = np.random.default_rng(cfg.seed)
    prompts = _prompts(cfg, rng)
    demos = [_corrupt(ideal_response(p), cfg.noise, cfg.vocab_size, rng) for p in prompts]
    chosen, rejected = [], []
    for p in prompts:
        a, b = (
            _corrupt(ideal_response(p), rng.uniform(0, cfg.pair_noise_max), cfg.vocab_size, rng)
            for _ in range(2)
        )
        p_a = 1.0 / (1.0 + np.exp(-cfg.bt_scale * (gold_reward(p, a) - gold_reward(p, b))))
        a_wins = rng.random() < p_a
        chosen.append(a if a_wins else b)
        rejected.append(b if a_wins else a)
    p_len, r_len = cfg.prompt_len, cfg.response_len
    prompt_tokens, prompt_mask = pack_prompts(prompts, p_len, PAD)
    return {
        "sft": pack_sequences(prompts, demos, p_len, r_len, PAD),
        "pairs": pack_pairs(prompts, chosen, rejected, p_len, r_len, PAD),
        "prompts": {"prompt_tokens": prompt_tokens, "prompt_mask": prompt_mask},
    }


def synthetic_bundle(cfg: SyntheticConfig) -> DataBundle:
    data = make_datasets(cfg)
    return DataBundle(
        eos_id=EOS,
        pad_id=PAD,
        vocab_size=cfg.vocab_size,
        sft=data["sft"],
        pairs=data["pairs"],
        prompts=data["prompts"],
    )
