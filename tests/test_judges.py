"""Judges: ROUGE-L against hand-computed cases, RM judge, judgments file, seeded win rate."""

import json
import math

import numpy as np
import pytest

from rlft.data.judges import (
    JudgmentsFileJudge,
    RewardModelJudge,
    WinRate,
    lcs_length,
    policy_first,
    read_judgments,
    rouge_l,
    rouge_l_batch,
    win_rate,
    write_judge_requests,
)


def _lcs_brute(a, b):
    """Longest common subsequence by trying every subsequence of the shorter list."""
    from itertools import combinations

    short, long_ = (a, b) if len(a) <= len(b) else (b, a)
    for k in range(len(short), 0, -1):
        for sub in combinations(short, k):
            it = iter(long_)
            if all(x in it for x in sub):
                return k
    return 0


@pytest.mark.parametrize(
    "cand, ref, lcs, f",
    [
        # LCS "the cat": P = 2/3, R = 2/5, F = 2PR/(P+R) = (8/15)/(16/15) = 1/2.
        ("the cat sat", "the cat on the mat", 2, 0.5),
        # Case-insensitive, identical: F = 1.
        ("The Cat", "the cat", 2, 1.0),
        # LCS "a c e" (3): P = 3/4, R = 3/5, F = 2 * 9/20 / (27/20) = 2/3.
        ("a b c e", "a c d e f", 3, 2 / 3),
        # Nothing shared.
        ("dog", "the cat", 0, 0.0),
        # Order matters: LCS of "a b" and "b a" is 1: P = R = 1/2, F = 1/2.
        ("a b", "b a", 1, 0.5),
    ],
)
def test_rouge_l_hand_cases(cand, ref, lcs, f):
    assert lcs_length(cand.lower().split(), ref.lower().split()) == lcs
    assert rouge_l(cand, ref) == pytest.approx(f, abs=1e-12)


def test_rouge_l_token_ids_beta_and_batch():
    # Ids [1, 2, 3, 4] vs [1, 3, 4, 4, 5, 6]: LCS 3, P = 3/4, R = 1/2.
    p, r = 3 / 4, 1 / 2
    assert rouge_l([1, 2, 3, 4], [1, 3, 4, 4, 5, 6]) == pytest.approx(2 * p * r / (p + r))
    assert rouge_l([1, 2, 3, 4], [1, 3, 4, 4, 5, 6], beta=2.0) == pytest.approx(
        5 * p * r / (r + 4 * p)
    )
    assert rouge_l("", "the cat") == 0.0
    np.testing.assert_allclose(
        rouge_l_batch(["the cat sat", "x"], ["the cat on the mat", "x"]), [0.5, 1.0]
    )
    with pytest.raises(ValueError, match="2 candidates but 1 references"):
        rouge_l_batch(["a", "b"], ["a"])


def test_lcs_matches_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(200):
        a, b = (list(rng.integers(0, 4, rng.integers(0, 8))) for _ in range(2))
        assert lcs_length(a, b) == _lcs_brute(a, b), (a, b)


def test_policy_first_is_seeded_and_balanced():
    for n in (1, 2, 7, 100, 101):
        first = policy_first(n, seed=3)
        assert first.sum() in (n // 2, (n + 1) // 2)
        np.testing.assert_array_equal(first, policy_first(n, seed=3))
    assert not np.array_equal(policy_first(100, 0), policy_first(100, 1))


def test_win_rate_order_and_ties():
    # Judge: the longer response wins, equal lengths tie. It sees A/B only.
    def judge(prompts, a, b):
        la, lb = np.array([len(x) for x in a]), np.array([len(x) for x in b])
        return (np.sign(la - lb) + 1) / 2

    policy = ["long answer", "tie", "x", "long answer"]
    reference = ["short", "TIE", "longer", "short"]
    result = win_rate(judge, ["p"] * 4, policy, reference, seed=0)
    assert (result.wins, result.ties, result.losses, result.n) == (2, 1, 1, 4)
    assert result.win_rate == pytest.approx((2 + 0.5) / 4)
    assert result.stderr == pytest.approx(np.std([1, 0.5, 0, 1], ddof=1) / 2)

    # A judge with pure position bias (always A) scores 1/2 under the balanced order.
    always_a = lambda prompts, a, b: np.ones(len(a))  # noqa: E731
    assert win_rate(always_a, ["p"] * 10, ["a"] * 10, ["b"] * 10, seed=5).win_rate == 0.5

    seen = []
    win_rate(
        lambda p, a, b: seen.append(list(a)) or np.full(len(a), 0.5),
        ["p"] * 6,
        list("PPPPPP"),
        list("RRRRRR"),
        seed=7,
    )
    np.testing.assert_array_equal(np.array(seen[0]) == "P", policy_first(6, 7))

    with pytest.raises(ValueError, match="probabilities in"):
        win_rate(lambda p, a, b: np.full(len(a), 2.0), ["p"], ["a"], ["b"])


def test_reward_model_judge_batches_and_compares():
    calls = []

    def score_fn(prompts, responses):
        calls.append(len(responses))
        return np.array([float(len(r)) for r in responses])

    judge = RewardModelJudge(score_fn, batch_size=4)
    np.testing.assert_array_equal(
        judge.scores(["p"] * 5, ["a", "bb", "c", "dddd", "ee"]), [1, 2, 1, 4, 2]
    )
    assert calls == [4, 4]  # fixed batch size, the last batch padded
    np.testing.assert_array_equal(
        judge(["p"] * 3, ["aa", "a", "a"], ["a", "a", "aa"]), [1.0, 0.5, 0.0]
    )
    soft = RewardModelJudge(score_fn, soft=True)
    assert soft(["p"], ["aaa"], ["a"])[0] == pytest.approx(1 / (1 + math.exp(-2)))
    result = win_rate(judge, ["p"] * 3, ["aaa", "a", "a"], ["a", "a", "aaa"], seed=1)
    assert (result.wins, result.ties, result.losses) == (1, 1, 1)
    with pytest.raises(ValueError, match="score_fn returned shape"):
        RewardModelJudge(lambda p, r: np.zeros((len(r), 2))).scores(["p"], ["a"])


def _write(path, lines):
    path.write_text("".join(x if isinstance(x, str) else json.dumps(x) + "\n" for x in lines))
    return str(path)


def test_judgments_file(tmp_path):
    path = _write(
        tmp_path / "judgments.jsonl",
        [
            {"id": "a", "winner": "policy", "rationale": "more concise"},
            {"id": "b", "winner": "reference"},
            "\n",
            {"id": "c", "winner": "tie"},
            {"id": "d", "p_policy": 0.8},
        ],
    )
    assert read_judgments(path) == {"a": 1.0, "b": 0.0, "c": 0.5, "d": 0.8}
    judge = JudgmentsFileJudge(path)
    np.testing.assert_array_equal(judge(["d", "a"]), [0.8, 1.0])
    result = judge.win_rate()
    assert result.win_rate == pytest.approx(2.3 / 4) and (result.wins, result.ties) == (2, 1)
    assert judge.win_rate(["a", "c"]) == WinRate.from_p_policy(np.array([1.0, 0.5]))
    with pytest.raises(KeyError, match="judgments.jsonl has no judgment for 1 id"):
        judge(["a", "zz"])


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"id": "x", "winner": "policy"\n', r"bad\.jsonl:2: not valid JSON"),
        ({"id": "x", "winner": "A"}, r"bad\.jsonl:2: 'winner' must be one of"),
        ({"id": "x"}, r"bad\.jsonl:2: expected exactly one of 'winner' and 'p_policy'"),
        ({"id": "x", "winner": "tie", "p_policy": 0.5}, r"bad\.jsonl:2: expected exactly one"),
        ({"id": "x", "p_policy": 1.5}, r"bad\.jsonl:2: 'p_policy' must be a number in \[0, 1\]"),
        ({"id": 3, "winner": "tie"}, r"bad\.jsonl:2: expected an object with a string 'id'"),
        (["x", "policy"], r"bad\.jsonl:2: expected a JSON object, got list, e\.g\. \{.id.: "),
        ({"id": "ok", "winner": "tie"}, r"bad\.jsonl:2: duplicate id 'ok' \(first on line 1\)"),
    ],
)
def test_judgments_file_errors(tmp_path, line, message):
    path = _write(tmp_path / "bad.jsonl", [{"id": "ok", "winner": "policy"}, line])
    with pytest.raises(ValueError, match=message):
        read_judgments(path)


def test_judge_requests_round_trip(tmp_path):
    path = tmp_path / "requests.jsonl"
    ids, policy, reference = (
        ["a", "b", "c"],
        ["pol a", "pol b", "pol c"],
        ["ref a", "ref b", "ref c"],
    )
    write_judge_requests(str(path), ids, ["q"] * 3, policy, reference, seed=4)
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    first = policy_first(3, 4)
    for row, p, r, f in zip(rows, policy, reference, first, strict=True):
        assert row["policy_is"] == ("A" if f else "B")
        assert (row["response_a"], row["response_b"]) == ((p, r) if f else (r, p))
    with pytest.raises(ValueError, match="ids must be unique"):
        write_judge_requests(str(path), ["a", "a"], ["q"] * 2, ["x"] * 2, ["y"] * 2)
