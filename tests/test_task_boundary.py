"""Every task's gold reward is a function of what the models see.

A model sees one row: the real tokens of prompt ++ response (left padding is masked and
positions count from the first real token, so the padding amount is invisible). If two
(prompt, response) pairs give the same row but different gold rewards, no policy, reward model
or critic can learn the verifier, and a comparison of arms measures that artefact. The check:
generate many pairs, including the adversarial ones that move the prompt/response boundary
inside one row (a prompt that is a proper prefix of another prompt, with the difference moved
into the response), group them by the visible row, and fail if one row carries two gold rewards.

The negative control rebuilds `keyed` as it was before it had a response-start marker (prompts
without SEP, same verifier) and asserts that the check finds the flaw there.
"""

import collections

import numpy as np
import pytest

from rlft.data.arrays import pack_sequences
from rlft.tasks import SEP_ID, TASKS, KeyedConfig, KeyedTask, Task, make_task

NUM_PROMPTS = 1500
RANDOM_PER_PROMPT = 3


def visible_row(task: Task, prompt, response) -> tuple[int, ...]:
    """The token row the trainer feeds a model: tokens where the packed mask is set."""
    seq = pack_sequences([prompt], [response], task.prompt_len, task.response_len, task.pad_id)
    return tuple(int(t) for t in seq["tokens"][0][seq["mask"][0]])


def _through_eos(tokens: list[int], eos_id: int) -> list[int]:
    """What the sampler keeps: tokens up to and including the first EOS."""
    return tokens[: tokens.index(eos_id) + 1] if eos_id in tokens else tokens


def candidate_pairs(task: Task, rng: np.random.Generator) -> list[tuple[list, list]]:
    """Prompts from both pools with demonstrations, random responses and boundary shifts."""
    prompts = task.sample_prompts(NUM_PROMPTS, rng) + task.sample_eval_prompts(NUM_PROMPTS, rng)
    pairs = []
    for prompt, demo in zip(prompts, task.demonstrate(prompts, rng), strict=True):
        pairs.append((prompt, demo))
        for _ in range(RANDOM_PER_PROMPT):
            length = int(rng.integers(0, task.response_len + 1))
            tokens = rng.integers(0, task.vocab_size, length).tolist()
            pairs.append((prompt, _through_eos(tokens, task.eos_id)))
    # Boundary shifts: (p[:j], p[j:] + r) sits in the same row as (p, r) whenever p[:j] is a
    # prompt too. Only pairs that still fit the response slots are kept.
    known = {tuple(p) for p in prompts}
    shifted = []
    for prompt, response in pairs:
        for j in range(1, len(prompt)):
            if tuple(prompt[:j]) in known:
                moved = prompt[j:] + response
                if len(moved) <= task.response_len:
                    shifted.append((prompt[:j], moved))
    return pairs + shifted


def ambiguous_rows(task: Task, pairs) -> dict[tuple, set[float]]:
    """{visible row: the distinct gold rewards it carries} for rows that carry more than one."""
    prompts, responses = zip(*pairs, strict=True)
    gold = task.score(list(prompts), list(responses))
    by_row = collections.defaultdict(set)
    for prompt, response, g in zip(prompts, responses, gold, strict=True):
        by_row[visible_row(task, prompt, response)].add(round(float(g), 9))
    return {row: golds for row, golds in by_row.items() if len(golds) > 1}


@pytest.mark.parametrize("name", sorted(set(TASKS) - {"tldr"}))
def test_gold_is_a_function_of_the_visible_row(name):
    task = make_task(name)
    pairs = candidate_pairs(task, np.random.default_rng(0))
    bad = ambiguous_rows(task, pairs)
    example = next(iter(bad.items()), None)
    assert not bad, f"{name}: {len(bad)} visible rows carry several gold rewards, e.g. {example}"


class UnmarkedKeyed(KeyedTask):
    """`keyed` as it was: prompts [topic, c_1..c_k] with no response-start marker."""

    @property
    def prompt_len(self) -> int:
        return self.cfg.prompt_len - 1

    def sample_prompts(self, n, rng):
        return [p[:-1] for p in super().sample_prompts(n, rng)]

    def demonstrate(self, prompts, rng):
        return super().demonstrate([p + [SEP_ID] for p in prompts], rng)

    def score_one(self, prompt, content, has_eos):
        return super().score_one(list(prompt) + [SEP_ID], content, has_eos)


def test_the_check_finds_the_missing_boundary_of_the_old_keyed_task():
    task = UnmarkedKeyed(KeyedConfig())
    bad = ambiguous_rows(task, candidate_pairs(task, np.random.default_rng(0)))
    assert len(bad) > 50  # many rows; e.g. (x, [EOS]) vs (x[:-1], [x[-1], EOS]) score -1 vs more


def test_tldr_formatting_shows_the_boundary(tmp_path):
    """TL;DR queries end with the "TL;DR:" marker; checked on the fixture posts, tokenised by a
    BPE trained on them, through the same query formatting and truncation as the real data."""
    pytest.importorskip("tokenizers")
    from rlft.data.sources import NO_VOCAB_LIMIT  # noqa: PLC0415
    from rlft.data.tldr import fixtures  # noqa: PLC0415
    from rlft.data.tldr.format import TextTokenizer, encode_queries, encode_responses  # noqa
    from rlft.models.hf_files import load_tokenizer  # noqa: PLC0415
    from rlft.tasks.tldr import TldrData, TldrTask, TldrTaskConfig  # noqa: PLC0415

    file = fixtures.train_tokenizer(tmp_path)
    hf_tok = load_tokenizer(file, vocab_size=NO_VOCAB_LIMIT)
    tok = TextTokenizer.from_hf(hf_tok)
    max_query_len, response_len = 96, 24

    def pool(rows):
        queries = encode_queries(rows, tok, max_query_len)
        refs = [r[:response_len] for r in encode_responses([r["summary"] for r in rows], tok)]
        return queries, refs

    data = TldrData(
        pool(fixtures.SFT["train"] + fixtures.SFT["test"]),
        pool(fixtures.SFT["valid"]),
        tok.decode,
        vocab_size=hf_tok.get_vocab_size(),
        pad_id=tok.pad_id,
        eos_id=tok.eos_id,
    )
    task = TldrTask(TldrTaskConfig(max_query_len=max_query_len, response_len=response_len), data)
    assert not ambiguous_rows(task, candidate_pairs(task, np.random.default_rng(0)))
