"""The Task interface of `rlft reproduce`: prompts, a noisy demonstrator and a gold verifier.

A task is configured by a frozen dataclass of knobs (each documented where it is defined). The
knob `seed` fixes the task's hidden tables (reward tables, grammar, reference process); the
`rng` passed to `sample_prompts` / `demonstrate` fixes the draws. Same seed, same rng state,
same data.

Token ids 0 (PAD), 1 (EOS) and 2 (SEP, "the response starts here") are reserved at the bottom of
every synthetic task's vocabulary; a dataset task (rlft/tasks/tldr.py) sets `pad_id` / `eos_id`
from its tokenizer, and the pipeline reads them from the task, never from these constants.

Every task shows the models where the response starts. Left padding and positions counted from
the first real token mean a model sees only the real tokens of prompt ++ response, one row; a
prompt of variable length must therefore end with a marker that cannot end a shorter prompt
(SEP here, "TL;DR:" in TL;DR), or a fixed length (the bandit's one token). Otherwise a model
cannot tell (prompt, response) from (shorter prompt, longer response) while the verifier can,
and the gold reward is not a function of what the models see. tests/test_task_boundary.py
checks this for every task in the registry. Arrays use
rlft's batch layout (rlft/data/arrays.py): prompts left-padded to P, responses right-padded to
R, where R counts the EOS. The verifier reads a response as its masked tokens up to the first
EOS: the "content" is what precedes that EOS, and a response with no EOS (it ran out of slots)
is scored by the same function on all its masked tokens, with `has_eos` False; each task says
what that costs. Tokens after the first EOS are ignored.
"""

import abc
from collections.abc import Sequence

import numpy as np

from rlft.data.arrays import pack_prompts, pack_sequences

PAD_ID, EOS_ID, SEP_ID = 0, 1, 2
NUM_RESERVED = 3  # ids below this are PAD, EOS and SEP in every synthetic task


def split_response(tokens: Sequence[int], eos_id: int = EOS_ID) -> tuple[list[int], bool]:
    """(content tokens before the first EOS, whether an EOS was present)."""
    tokens = [int(t) for t in tokens]
    if eos_id in tokens:
        return tokens[: tokens.index(eos_id)], True
    return tokens, False


def split_sequences(tokens_NxT: np.ndarray, mask_NxT: np.ndarray, prompt_len: int) -> tuple:
    """Packed prompt ++ response rows -> (prompt_NxP, prompt_mask_NxP, resp_NxR, resp_mask_NxR).

    Works on sampler output too (any response width T - P): the mask marks real tokens.
    """
    tokens_NxT, mask_NxT = np.asarray(tokens_NxT), np.asarray(mask_NxT, bool)
    p = prompt_len
    return tokens_NxT[:, :p], mask_NxT[:, :p], tokens_NxT[:, p:], mask_NxT[:, p:]


class Task(abc.ABC):
    """A prompt/response task whose gold reward is a verifier (a program, or a judge on data)."""

    name: str = "task"
    pad_id: int = PAD_ID
    eos_id: int = EOS_ID

    def __init__(self, cfg):
        self.cfg = cfg

    @property
    @abc.abstractmethod
    def vocab_size(self) -> int: ...

    @property
    @abc.abstractmethod
    def prompt_len(self) -> int:
        """P: the longest prompt (prompts are left-padded to it)."""

    @property
    @abc.abstractmethod
    def response_len(self) -> int:
        """R: the most response tokens, including the EOS."""

    @abc.abstractmethod
    def sample_prompts(self, n: int, rng: np.random.Generator) -> list[list[int]]: ...

    def sample_eval_prompts(self, n: int, rng: np.random.Generator) -> list[list[int]]:
        """Held-out prompts for evaluation: fresh draws here; a dataset task uses its eval split."""
        return self.sample_prompts(n, rng)

    @abc.abstractmethod
    def demonstrate(self, prompts, rng: np.random.Generator) -> list[list[int]]:
        """The noisy "human" demonstrator: one response per prompt, each ending with EOS."""

    @abc.abstractmethod
    def score_one(self, prompt: list[int], content: list[int], has_eos: bool) -> dict:
        """Reward parts of one response (see `gold_reward_parts`); must include 'reward'."""

    @abc.abstractmethod
    def describe(self) -> str:
        """One paragraph: why the generation-verification gap is present or absent here."""

    def gold_reward_parts(
        self, prompt_NxP, prompt_mask_NxP, response_NxR, response_mask_NxR
    ) -> dict[str, np.ndarray]:
        """The verifier's terms and diagnostics, each [N]; 'reward' is the gold reward."""
        rows = zip(
            np.asarray(prompt_NxP),
            np.asarray(prompt_mask_NxP, bool),
            np.asarray(response_NxR),
            np.asarray(response_mask_NxR, bool),
            strict=True,
        )
        parts = [
            self.score_one([int(t) for t in p[m]], *split_response(r[rm], self.eos_id))
            for p, m, r, rm in rows
        ]
        if not parts:
            return {"reward": np.zeros(0)}
        return {k: np.array([row[k] for row in parts], np.float64) for k in parts[0]}

    def gold_reward(self, prompt_NxP, prompt_mask_NxP, response_NxR, response_mask_NxR):
        """The gold reward [N] of packed prompts and responses."""
        parts = self.gold_reward_parts(prompt_NxP, prompt_mask_NxP, response_NxR, response_mask_NxR)
        return parts["reward"]

    def score(self, prompts, responses) -> np.ndarray:
        """The gold reward [N] of token lists (packed first, so it is the batched verifier)."""
        return self.score_parts(prompts, responses)["reward"]

    def score_parts(self, prompts, responses) -> dict[str, np.ndarray]:
        seq = pack_sequences(prompts, responses, self.prompt_len, self.response_len, self.pad_id)
        return self.gold_reward_parts(*split_sequences(seq["tokens"], seq["mask"], self.prompt_len))


def make_sft_arrays(task: Task, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """n demonstrations in the sequence layout: {'tokens', 'mask', 'loss_mask'} [n, P+R]."""
    prompts = task.sample_prompts(n, rng)
    demos = task.demonstrate(prompts, rng)
    return pack_sequences(prompts, demos, task.prompt_len, task.response_len, task.pad_id)


def make_prompt_arrays(
    task: Task, n: int, rng: np.random.Generator, held_out: bool = False
) -> dict[str, np.ndarray]:
    """n prompts, left-padded: {'prompt_tokens', 'prompt_mask'} [n, P]; `held_out`: eval ones."""
    draw = task.sample_eval_prompts if held_out else task.sample_prompts
    tokens, mask = pack_prompts(draw(n, rng), task.prompt_len, task.pad_id)
    return {"prompt_tokens": tokens, "prompt_mask": mask}
