"""`keyed`: a topic-keyed token preference that must be spoken in a grammar (the gap task).

Vocabulary: PAD, EOS, SEP, `num_topics` topic tokens, then `num_content` content tokens. A hidden
grammar gives every content token `out_degree` allowed successors (never itself); a hidden table
W[topic, token] in [-1, 1] says which content tokens each topic likes.

Prompt: [topic, c_1, ..., c_k, SEP], the context c a walk of the grammar (k in
[min_context, P-2]); SEP marks where the response starts (without it a model sees one walk and
cannot tell k from the response length, which the verifier depends on: tests/test_task_boundary).
Response: L = R - 1 content tokens that continue the walk from c_k, then EOS.

Verifier. Slot t = 1..L of the response is *valid* iff it holds a content token y_t that is an
allowed successor of y_{t-1} (y_0 = c_k), does not repeat an earlier response token, and, for
the last slot, is followed by EOS (a response must be exactly L tokens then EOS). Then

    table    = (1/L) * sum over valid slots of W[topic, y_t]          in [-validity, validity]
    validity = (number of valid slots) / L                             in [0, 1]
    reward   = table - (1 - validity)                                  in [-1, 1]

i.e. each slot earns W[topic, y_t] if valid and -1 (W's minimum) if not, averaged over L slots.
Missing slots (early EOS) are invalid; a response with no EOS is scored the same way, so its
last slot is invalid; a non-content token (PAD, a topic, EOS cannot occur) is invalid and has no
allowed successor, so the slot after it is invalid too. `table_all` (W averaged over the
first L tokens, ignoring validity: what a topic x token model sees) and `repeat_frac` are
diagnostics for reward hacking, not terms of the reward.

Demonstrator: a topic-blind Markov chain over the grammar with its own style (Dirichlet
transition weights), avoiding repeats, with per-slot errors at `error_rate`.
"""

import dataclasses
import math

import numpy as np

from rlft.tasks.base import EOS_ID, NUM_RESERVED, SEP_ID, Task


@dataclasses.dataclass(frozen=True)
class KeyedConfig:
    num_topics: int = 4  # topic tokens; the prompt's first token picks the row of W
    num_content: int = 32  # content tokens: the grammar's alphabet
    out_degree: int = 4  # allowed successors per content token (lower: harder to generate)
    prompt_len: int = 9  # P: the topic, up to P-2 context tokens, then SEP
    min_context: int = 2  # fewest context tokens in a prompt
    response_len: int = 7  # R: L = R-1 content tokens then EOS; 2 or 3 gives the short variant
    table_levels: int = 2  # W's values, evenly spaced in [-1, 1] (2: +-1)
    style_alpha: float = 0.5  # Dirichlet concentration of the demonstrator's transition style
    topic_weight: float = 0.0  # demonstrator's tilt exp(topic_weight * W) (0: topic-blind)
    error_rate: float = 0.05  # per-slot chance the demonstrator emits a uniform content token
    seed: int = 0  # hidden tables (W, grammar, style)


@dataclasses.dataclass(frozen=True)
class KeyedTables:
    table_TxM: np.ndarray  # W[topic, content token], in [-1, 1]
    style_MxM: np.ndarray  # demonstrator transitions; nonzero exactly on allowed successors


def random_tables(cfg: KeyedConfig) -> KeyedTables:
    rng = np.random.default_rng([cfg.seed, 0x6B6579])
    levels = np.linspace(-1.0, 1.0, cfg.table_levels)
    table = rng.choice(levels, size=(cfg.num_topics, cfg.num_content))
    style = np.zeros((cfg.num_content, cfg.num_content))
    for a in range(cfg.num_content):
        others = np.delete(np.arange(cfg.num_content), a)
        succ = rng.choice(others, cfg.out_degree, replace=False)
        style[a, succ] = rng.dirichlet(np.full(cfg.out_degree, cfg.style_alpha))
    return KeyedTables(table, style)


class KeyedTask(Task):
    name = "keyed"

    def __init__(self, cfg: KeyedConfig, tables: KeyedTables | None = None):
        _check(cfg)
        super().__init__(cfg)
        t = tables if tables is not None else random_tables(cfg)
        self.table_TxM = np.asarray(t.table_TxM, np.float64)
        style = np.asarray(t.style_MxM, np.float64)
        self.allowed_MxM = style > 0
        self.style_MxM = style / np.maximum(style.sum(1, keepdims=True), 1e-300)
        shapes = (self.table_TxM.shape, self.style_MxM.shape)
        if shapes != ((cfg.num_topics, cfg.num_content), (cfg.num_content,) * 2):
            raise ValueError(f"keyed tables have shapes {shapes}; the config needs T x M, M x M")
        if np.any(np.diag(self.allowed_MxM)) or not self.allowed_MxM.any(1).all():
            raise ValueError("keyed grammar: every token needs a successor and none itself")
        self.first_topic = NUM_RESERVED
        self.first_content = NUM_RESERVED + cfg.num_topics
        self._best_cache: dict[tuple[int, int], tuple[float, tuple[int, ...]]] = {}

    @property
    def vocab_size(self) -> int:
        return NUM_RESERVED + self.cfg.num_topics + self.cfg.num_content

    @property
    def prompt_len(self) -> int:
        return self.cfg.prompt_len

    @property
    def response_len(self) -> int:
        return self.cfg.response_len

    @property
    def num_slots(self) -> int:
        """L: content tokens in a well-formed response."""
        return self.cfg.response_len - 1

    def _walk(self, prev, length, rng, topic=None, no_repeat=False, error_rate=0.0):
        """`length` content indices continuing from content index `prev` (None: a fresh start).

        Returns None at a dead end (every allowed successor already used, with no_repeat).
        """
        out, m = [], self.cfg.num_content
        for _ in range(length):
            if prev is not None and rng.random() < error_rate:
                prev = int(rng.integers(m))
            else:
                probs = np.full(m, 1.0 / m) if prev is None else self.style_MxM[prev].copy()
                if topic is not None and self.cfg.topic_weight:
                    probs *= np.exp(self.cfg.topic_weight * self.table_TxM[topic])
                if no_repeat:
                    probs[out] = 0.0
                if probs.sum() == 0:
                    return None
                prev = int(rng.choice(m, p=probs / probs.sum()))
            out.append(prev)
        return out

    def sample_prompts(self, n: int, rng: np.random.Generator) -> list[list[int]]:
        cfg, prompts = self.cfg, []
        for _ in range(n):
            topic = int(rng.integers(cfg.num_topics))
            k = int(rng.integers(cfg.min_context, cfg.prompt_len - 1))
            context = [self.first_content + c for c in self._walk(None, k, rng)]
            prompts.append([self.first_topic + topic, *context, SEP_ID])
        return prompts

    def demonstrate(self, prompts, rng: np.random.Generator) -> list[list[int]]:
        out = []
        for prompt in prompts:
            topic, prev = self._topic_and_start(prompt)
            for _ in range(1000):  # rejection on (rare) dead ends
                walk = self._walk(prev, self.num_slots, rng, topic, True, self.cfg.error_rate)
                if walk is not None:
                    break
            else:
                raise RuntimeError("keyed: demonstrator keeps hitting dead ends; raise out_degree")
            out.append([self.first_content + c for c in walk] + [EOS_ID])
        return out

    def _topic_and_start(self, prompt) -> tuple[int, int]:
        topic, last = prompt[0] - self.first_topic, prompt[-2] - self.first_content
        ok = len(prompt) >= 3 and prompt[-1] == SEP_ID
        if not (ok and 0 <= topic < self.cfg.num_topics and 0 <= last < self.cfg.num_content):
            raise ValueError(f"not a keyed prompt (topic, context..., SEP): {prompt}")
        return topic, last

    def score_one(self, prompt, content, has_eos) -> dict:
        topic, prev = self._topic_and_start(prompt)
        num_slots, m = self.num_slots, self.cfg.num_content
        ids = [t - self.first_content for t in content]
        earned, seen_w, seen = [], [], []  # W of valid slots; W of every content token
        for t in range(num_slots):
            y = ids[t] if t < len(ids) else None
            is_content = y is not None and 0 <= y < m
            ok = is_content and prev is not None and bool(self.allowed_MxM[prev, y])
            ok = ok and y not in seen
            if t == num_slots - 1:
                ok = ok and has_eos and len(ids) == num_slots
            if ok:
                earned.append(self.table_TxM[topic, y])
            if is_content:
                seen_w.append(self.table_TxM[topic, y])
                seen.append(y)
            prev = y if is_content else None
        invalid = num_slots - len(earned)
        repeats = len(seen) - len(set(seen))
        # fsum and rounding make equal rewards reached by different sums compare equal: ties
        # matter to best-of-K selection and to Bradley-Terry labels.
        table = round(math.fsum(earned) / num_slots, 9)
        return {
            "reward": round((math.fsum(earned) - invalid) / num_slots, 9),
            "table": table,
            "validity": len(earned) / num_slots,
            "table_all": math.fsum(seen_w) / num_slots,
            "repeat_frac": repeats / max(len(seen), 1),
            "length": float(len(ids)),
            "has_eos": float(has_eos),
        }

    def _best_from(self, topic: int, start: int) -> tuple[float, tuple[int, ...]]:
        """Exhaustive search over simple grammar paths of length L from content index `start`."""
        if (topic, start) in self._best_cache:  # only T * M distinct searches per task
            return self._best_cache[topic, start]
        best = (-np.inf, ())

        def dfs(prev, path, total):
            nonlocal best
            if len(path) == self.num_slots:
                best = max(best, (total, tuple(path)))
                return
            for y in np.flatnonzero(self.allowed_MxM[prev]):
                if y not in path:
                    dfs(int(y), path + [int(y)], total + self.table_TxM[topic, y])

        dfs(start, [], 0.0)
        # No simple path of length L at all: report the floor, -1.
        result = (round(best[0] / self.num_slots, 9), best[1]) if best[1] else (-1.0, ())
        self._best_cache[topic, start] = result
        return result

    def best_valid_response(self, prompt) -> tuple[float, list[int]]:
        """(the highest gold reward of a fully valid response, one such response).

        This is the maximum over all responses whenever it is >= (L-2)/L: a response with an
        invalid slot scores at most ((L-1) * 1 - 1) / L, since W <= 1 and invalid slots earn -1.
        """
        reward, path = self._best_from(*self._topic_and_start(prompt))
        return reward, [self.first_content + y for y in path] + [EOS_ID] if path else [EOS_ID]

    def describe(self) -> str:
        cfg, length = self.cfg, self.num_slots
        head = (
            f"keyed (L={length} response tokens, {cfg.num_content} content tokens, out-degree "
            f"{cfg.out_degree}, {cfg.num_topics} topics): the verifier is a mean of per-slot "
            "terms, each a function of (topic, previous token, token, whether the token already "
            "occurred): a topic x token table W gated by grammar validity, so a reward model only "
            "has to learn W and the grammar, a small class. "
        )
        tail = " Whether the gap shows is measured (RM vs DPO held-out accuracy, oracle best-of-K)."
        if length <= 2:
            return head + (
                "Short variant: with one or two response tokens the soft-optimal policy "
                "pi_ref * exp(r / beta) is (almost) a per-(topic, last context token) reweighting "
                "of the demonstrator by the same table, so the policy's local reward and the "
                "reward model describe the same small table: generation is as easy as "
                "verification and the gap is (nearly) removed, with the verifier unchanged." + tail
            )
        return head + (
            "The soft-optimal policy pi_ref * exp(r / beta) must in addition carry, at every "
            "step, the soft value of the rest of the walk: which high-W tokens are still "
            "reachable through the sparse grammar without repeats, for each topic, token and "
            "position. That is a search over paths, not a per-token choice (greedy high-W tokens "
            "break the grammar; a per-step tilt of the demonstrator ignores what comes next), and "
            "the topic-blind demonstrator shows none of it, so Pi(R_sim) is much richer than "
            "R_sim: the gap is present by construction." + tail
        )


def _check(cfg: KeyedConfig) -> None:
    if cfg.num_topics < 1 or cfg.table_levels < 2:
        raise ValueError("keyed: need num_topics >= 1 and table_levels >= 2")
    if not 1 <= cfg.out_degree < cfg.num_content:
        raise ValueError("keyed: out_degree must be in [1, num_content - 1]")
    if not 1 <= cfg.min_context <= cfg.prompt_len - 2:
        raise ValueError("keyed: need 1 <= min_context <= prompt_len - 2 (topic, context, SEP)")
    if not 2 <= cfg.response_len <= cfg.num_content + 1:
        raise ValueError("keyed: response_len must be in [2, num_content + 1] (L >= 1 tokens)")
    if not 0.0 <= cfg.error_rate <= 1.0 or cfg.style_alpha <= 0:
        raise ValueError("keyed: error_rate must be in [0, 1] and style_alpha > 0")
