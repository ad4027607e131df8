"""Judges for real data: ROUGE-L, a reward-model judge, and judgments read from a file.

A pairwise judge is a callable `(prompts, responses_a, responses_b) -> p_a` with p_a[i] in
[0, 1] the probability that A is better (1 win, 0.5 tie, 0 loss). `win_rate` compares policy
responses with reference responses, showing the policy first on a seeded, balanced half of
the items so that a judge's position bias cancels. Ties count half.

Judgments file (JSONL, one judgment a line, written by a judge run outside rlft):

    {"id": "t3_2vwp1w", "winner": "policy"}        # or "reference" or "tie"
    {"id": "t3_1ov8e0", "p_policy": 0.8}          # or a probability that the policy is better

Exactly one of `winner` / `p_policy` per line; other fields (judge, rationale, ...) are kept
out of the way. `write_judge_requests` writes the matching requests file, with the A/B order
already randomised and `policy_is` telling the external run which side is the policy.
"""

import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from rlft.data.jsonl import jsonl_rows

PairwiseJudge = Callable[[Sequence[Any], Sequence[Any], Sequence[Any]], np.ndarray]
ScoreFn = Callable[[Sequence[Any], Sequence[Any]], Any]  # (prompts, responses) -> scores [N]
WINNERS = {"policy": 1.0, "tie": 0.5, "reference": 0.0}


# ROUGE-L ------------------------------------------------------------------------------------


def rouge_tokens(text: str | Sequence[int]) -> list:
    """Lowercased whitespace tokens of a string; token ids pass through unchanged."""
    return text.lower().split() if isinstance(text, str) else list(text)


def lcs_length(a: Sequence, b: Sequence) -> int:
    """Length of the longest common subsequence (dynamic programming, one row kept)."""
    if len(a) < len(b):
        a, b = b, a
    row = [0] * (len(b) + 1)
    for x in a:
        diag = 0  # row[j-1] of the previous row
        for j, y in enumerate(b, 1):
            diag, row[j] = row[j], diag + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def rouge_l(candidate: str | Sequence[int], reference: str | Sequence[int], beta: float = 1.0):
    """ROUGE-L F-measure: P = LCS/|cand|, R = LCS/|ref|, F = (1+b^2) P R / (R + b^2 P)."""
    c, r = rouge_tokens(candidate), rouge_tokens(reference)
    lcs = lcs_length(c, r)
    if lcs == 0:
        return 0.0
    p, rec = lcs / len(c), lcs / len(r)
    return (1 + beta**2) * p * rec / (rec + beta**2 * p)


def rouge_l_batch(candidates: Sequence, references: Sequence, beta: float = 1.0) -> np.ndarray:
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates but {len(references)} references")
    return np.array([rouge_l(c, r, beta) for c, r in zip(candidates, references, strict=True)])


# Reward-model judge -------------------------------------------------------------------------


class RewardModelJudge:
    """Scores (prompt, response) batches with `score_fn`; compares two responses by score.

    `batch_size` feeds score_fn fixed-size batches (the last one padded by repeating its final
    item, the padding's scores discarded) so a jitted scorer compiles once. `soft` compares by
    the Bradley-Terry probability sigmoid(r_a - r_b) instead of win 1 / tie 0.5 / loss 0.
    """

    def __init__(self, score_fn: ScoreFn, batch_size: int | None = None, soft: bool = False):
        self.score_fn, self.batch_size, self.soft = score_fn, batch_size, soft

    def scores(self, prompts: Sequence, responses: Sequence) -> np.ndarray:
        n = _same_length(prompts, responses)
        size = self.batch_size or max(n, 1)
        out = []
        for start in range(0, n, size):
            idx = list(range(start, min(n, start + size)))
            pad = idx + [idx[-1]] * (size - len(idx)) if self.batch_size else idx
            s = np.asarray(self.score_fn([prompts[i] for i in pad], [responses[i] for i in pad]))
            if s.shape != (len(pad),):
                raise ValueError(f"score_fn returned shape {s.shape} for {len(pad)} items")
            out.append(s[: len(idx)].astype(np.float64))
        scores = np.concatenate(out) if out else np.zeros(0)
        if not np.all(np.isfinite(scores)):
            raise ValueError("score_fn returned non-finite scores")
        return scores

    def __call__(self, prompts: Sequence, responses_a: Sequence, responses_b: Sequence):
        d = self.scores(prompts, responses_a) - self.scores(prompts, responses_b)
        return 1 / (1 + np.exp(-d)) if self.soft else (np.sign(d) + 1) / 2


# Win rate -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class WinRate:
    win_rate: float  # mean P(policy better), ties half
    stderr: float  # standard error of that mean over items
    n: int
    wins: int  # items with P(policy better) > 0.5
    ties: int  # == 0.5
    losses: int  # < 0.5

    @classmethod
    def from_p_policy(cls, p_policy: np.ndarray) -> "WinRate":
        p = np.asarray(p_policy, np.float64)
        if p.ndim != 1 or len(p) == 0:
            raise ValueError(f"need a non-empty 1-D array of judgments; got shape {p.shape}")
        stderr = float(p.std(ddof=1) / math.sqrt(len(p))) if len(p) > 1 else float("nan")
        return cls(
            float(p.mean()),
            stderr,
            len(p),
            int((p > 0.5).sum()),
            int((p == 0.5).sum()),
            int((p < 0.5).sum()),
        )


def policy_first(n: int, seed: int) -> np.ndarray:
    """Bool [n]: show the policy's response as A. Balanced (floor or ceil of n/2) and seeded."""
    rng = np.random.default_rng(seed)
    return rng.permutation(n) < (n + int(rng.integers(2))) // 2


def _same_length(*seqs: Sequence) -> int:
    lengths = {len(s) for s in seqs}
    if len(lengths) != 1:
        raise ValueError(f"inputs have different lengths: {[len(s) for s in seqs]}")
    return lengths.pop()


def win_rate(
    judge: PairwiseJudge,
    prompts: Sequence,
    policy: Sequence,
    reference: Sequence,
    seed: int = 0,
) -> WinRate:
    """Win rate of policy over reference responses under a pairwise judge, A/B order random."""
    n = _same_length(prompts, policy, reference)
    first = policy_first(n, seed)
    a = [p if f else r for p, r, f in zip(policy, reference, first, strict=True)]
    b = [r if f else p for p, r, f in zip(policy, reference, first, strict=True)]
    p_a = np.asarray(judge(prompts, a, b), np.float64)
    if p_a.shape != (n,) or not np.all((p_a >= 0) & (p_a <= 1)):
        raise ValueError(f"judge must return {n} probabilities in [0, 1]; got {p_a!r:.200}")
    return WinRate.from_p_policy(np.where(first, p_a, 1 - p_a))


# Judgments file -----------------------------------------------------------------------------


def _judgment(obj: dict, where: str) -> tuple[str, float]:
    if not isinstance(obj.get("id"), str):
        raise ValueError(f"{where}: expected an object with a string 'id'")
    has_winner, has_p = "winner" in obj, "p_policy" in obj
    if has_winner == has_p:
        raise ValueError(f"{where}: expected exactly one of 'winner' and 'p_policy'")
    if has_winner:
        if obj["winner"] not in WINNERS:
            raise ValueError(
                f"{where}: 'winner' must be one of {list(WINNERS)}; got {obj['winner']!r}"
            )
        return obj["id"], WINNERS[obj["winner"]]
    p = obj["p_policy"]
    if isinstance(p, bool) or not isinstance(p, int | float) or not 0 <= p <= 1:
        raise ValueError(f"{where}: 'p_policy' must be a number in [0, 1]; got {p!r}")
    return obj["id"], float(p)


def read_judgments(path: str) -> dict[str, float]:
    """{id: P(policy better)} from a judgments JSONL; malformed lines raise naming file:line."""
    out: dict[str, float] = {}
    first_line: dict[str, int] = {}
    for line_no, obj in jsonl_rows(path, example='{"id": "t3_x", "winner": "policy"}'):
        where = f"{path}:{line_no}"
        key, p = _judgment(obj, where)
        if key in out:
            raise ValueError(f"{where}: duplicate id {key!r} (first on line {first_line[key]})")
        out[key], first_line[key] = p, line_no
    return out


class JudgmentsFileJudge:
    """Judgments of policy vs reference made elsewhere, looked up by id."""

    def __init__(self, path: str):
        self.path = path
        self.p_policy = read_judgments(path)

    def __call__(self, ids: Sequence[str]) -> np.ndarray:
        missing = [i for i in ids if i not in self.p_policy]
        if missing:
            raise KeyError(
                f"{self.path} has no judgment for {len(missing)} id(s), e.g. {missing[:5]}"
            )
        return np.array([self.p_policy[i] for i in ids], np.float64)

    def win_rate(self, ids: Sequence[str] | None = None) -> WinRate:
        return WinRate.from_p_policy(self(list(self.p_policy) if ids is None else ids))


def write_judge_requests(
    path: str,
    ids: Sequence[str],
    prompts: Sequence[str],
    policy: Sequence[str],
    reference: Sequence[str],
    seed: int = 0,
) -> None:
    """JSONL of {id, prompt, response_a, response_b, policy_is: "A"|"B"} for an outside judge.

    The order is `policy_first(n, seed)`, as in `win_rate`; the outside run maps its A/B
    verdict back through `policy_is` and writes the judgments file.
    """
    n = _same_length(ids, prompts, policy, reference)
    if len(set(ids)) != n:
        raise ValueError("ids must be unique")
    first = policy_first(n, seed)
    with open(path, "w") as f:
        for i in range(n):
            a, b = (policy[i], reference[i]) if first[i] else (reference[i], policy[i])
            row = {
                "id": ids[i],
                "prompt": prompts[i],
                "response_a": a,
                "response_b": b,
                "policy_is": "A" if first[i] else "B",
            }
            f.write(json.dumps(row) + "\n")
