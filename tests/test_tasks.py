"""Task family and labelling: hand-checked verifiers, demonstrators, determinism, BT labels."""

import math

import numpy as np
import pytest

from rlft.data.arrays import pack_prompts, pack_sequences
from rlft.tasks import (
    EOS_ID,
    PAD_ID,
    SEP_ID,
    TASKS,
    KeyedConfig,
    KeyedTask,
    RougeConfig,
    RougeTask,
    best_worst,
    bradley_terry_labels,
    lcs_length,
    make_preference_pairs,
    make_prompt_arrays,
    make_sft_arrays,
    make_task,
    pairs_from_samples,
    rouge_l_prf,
    sigmoid,
    soft_optimal,
    split_sequences,
)
from rlft.tasks.keyed import KeyedTables
from rlft.tasks.rouge import RougeTables

SIMPLE = dict(rtol=1e-5, atol=1e-5)

# ---------------------------------------------------------------- keyed, on a hand-made grammar
# 2 topics, 4 content tokens, L = 3. Ids: PAD 0, EOS 1, SEP 2, topics 3-4, content c0..c3 = 5..8.
# Grammar (successors): c0 -> {c1, c2}, c1 -> {c2, c3}, c2 -> {c3, c0}, c3 -> {c0, c1}.
# W[topic 0] = (+1, -1, +1, -1), W[topic 1] = -W[topic 0].
C0, C1, C2, C3 = 5, 6, 7, 8
T0, T1 = 3, 4
W = np.array([[1.0, -1.0, 1.0, -1.0], [-1.0, 1.0, -1.0, 1.0]])
STYLE = np.array([[0, 0.5, 0.5, 0], [0, 0, 0.7, 0.3], [0.2, 0, 0, 0.8], [0.5, 0.5, 0, 0]])


def hand_keyed(response_len=4, **knobs) -> KeyedTask:
    sizes = dict(num_topics=2, num_content=4, out_degree=2, prompt_len=4, min_context=1)
    cfg = KeyedConfig(**sizes, response_len=response_len, **knobs)
    return KeyedTask(cfg, KeyedTables(W, STYLE))


def score(task, prompts, responses, width=None):
    """The batched verifier on hand-packed arrays (response width may exceed R)."""
    width = width or task.response_len
    seq = pack_sequences(prompts, responses, task.prompt_len, width, PAD_ID)
    return task.gold_reward_parts(*split_sequences(seq["tokens"], seq["mask"], task.prompt_len))


def test_keyed_verifier_hand_cases():
    task, prompt = hand_keyed(), [T0, C0, SEP_ID]  # topic 0, walk starts from c0
    cases = [  # (response, reward, validity, table): reward = mean over 3 slots of W or -1
        ([C2, C3, C0, EOS_ID], 1 / 3, 1.0, 1 / 3),  # all valid: (+1 - 1 + 1) / 3
        ([C2, C0, C2, EOS_ID], 1 / 3, 2 / 3, 2 / 3),  # c2 repeats: (+1 + 1 - 1) / 3
        ([C3, C0, C2, EOS_ID], 1 / 3, 2 / 3, 2 / 3),  # c0 -> c3 not allowed: (-1 + 1 + 1) / 3
        ([C2, EOS_ID], -1 / 3, 1 / 3, 1 / 3),  # early EOS, 2 slots missing: (+1 - 1 - 1) / 3
        ([C2, C3, C0, C1], -1 / 3, 2 / 3, 0.0),  # no EOS: last slot invalid: (+1 - 1 - 1) / 3
        ([T0, C1, C2, EOS_ID], -1 / 3, 1 / 3, 1 / 3),  # topic token, then no predecessor
        ([EOS_ID], -1.0, 0.0, 0.0),  # empty response
    ]
    parts = score(task, [prompt] * len(cases), [c[0] for c in cases])
    np.testing.assert_allclose(parts["reward"], [c[1] for c in cases], **SIMPLE)
    np.testing.assert_allclose(parts["validity"], [c[2] for c in cases], **SIMPLE)
    np.testing.assert_allclose(parts["table"], [c[3] for c in cases], **SIMPLE)
    np.testing.assert_allclose(parts["reward"], parts["table"] - (1 - parts["validity"]), **SIMPLE)
    # Diagnostics: the repeat case sees W = +1 three times and one repeat in three tokens.
    assert parts["table_all"][1] == pytest.approx(1.0)
    assert parts["repeat_frac"][1] == pytest.approx(1 / 3)
    np.testing.assert_array_equal(parts["has_eos"], [1, 1, 1, 1, 0, 1, 1])
    # Topic 1 flips W: the all-valid response scores (-1 + 1 - 1) / 3.
    flipped = score(task, [[T1, C0, SEP_ID]], [[C2, C3, C0, EOS_ID]])
    assert flipped["reward"][0] == pytest.approx(-1 / 3)
    # Only the last context token matters, and tokens after the first EOS are ignored.
    wide = score(task, [[T0, C3, C0, SEP_ID]], [[C2, C3, C0, EOS_ID, C1, C1]], width=6)
    assert wide["reward"][0] == pytest.approx(1 / 3)


def test_keyed_best_valid_response_hand_case():
    # Simple paths of 3 from c0 under topic 0 (W sums): c1c2c3 -1, c1c2c0 +1, c1c3c0 -1,
    # c2c3c0 +1, c2c3c1 -1, c2c0c1 +1 (c1c3c1, c2c0c2 repeat). Best mean = 1/3.
    task = hand_keyed()
    best, response = task.best_valid_response([T0, C0, SEP_ID])
    assert best == pytest.approx(1 / 3)
    assert task.score([[T0, C0, SEP_ID]], [response])[0] == pytest.approx(1 / 3)


def test_keyed_short_variant_same_verifier():
    task = hand_keyed(response_len=2)  # L = 1: the response's one slot is also its last
    prompts = [[T0, C0, SEP_ID]] * 4
    responses = [[C2, EOS_ID], [C1, EOS_ID], [C3, EOS_ID], [C2, C3]]
    # c2: +1; c1: valid, W = -1; c3: not a successor of c0; no EOS after the slot: invalid.
    np.testing.assert_allclose(task.score(prompts, responses), [1, -1, -1, -1], **SIMPLE)
    assert make_task("keyed_short").response_len == 2


def test_keyed_demonstrations_valid_and_errors():
    task = make_task("keyed", error_rate=0.0)
    rng = np.random.default_rng(0)
    prompts = task.sample_prompts(300, rng)
    demos = task.demonstrate(prompts, rng)
    assert all(d[-1] == EOS_ID and len(d) == task.response_len for d in demos)
    parts = task.score_parts(prompts, demos)
    np.testing.assert_array_equal(parts["validity"], 1.0)
    np.testing.assert_array_equal(parts["repeat_frac"], 0.0)
    for p in prompts:  # the prompt's context is a walk of the grammar
        assert p[-1] == SEP_ID  # the response starts after the marker
        ctx = np.array(p[1:-1]) - task.first_content
        assert task.allowed_MxM[ctx[:-1], ctx[1:]].all()
    noisy = make_task("keyed", error_rate=0.3)
    invalid = 1 - noisy.score_parts(prompts, noisy.demonstrate(prompts, rng))["validity"].mean()
    assert 0.1 < invalid < 0.5  # an error is invalid unless it lands on a fresh successor


def test_keyed_optimum_far_from_demonstrations():
    """The structural claim of the gap task, at default knobs: the best valid response is
    far above what the topic-blind demonstrator shows, and grammar-blind greedy fails."""
    task = make_task("keyed")
    rng = np.random.default_rng(1)
    prompts = task.sample_prompts(200, rng)
    demo = task.score(prompts, task.demonstrate(prompts, rng)).mean()
    best = np.mean([task.best_valid_response(p)[0] for p in prompts])
    top = [  # the L distinct highest-W tokens of the topic, ignoring the grammar
        [task.first_content + int(y) for y in np.argsort(-task.table_TxM[topic])[:6]] + [1]
        for topic in (p[0] - task.first_topic for p in prompts)
    ]
    greedy = task.score(prompts, top).mean()
    assert best > demo + 0.5 and greedy < demo


# ---------------------------------------------------------------- rouge
def test_lcs_hand_cases():
    assert lcs_length("ABCBDAB", "BDCABA") == 4  # CLRS: BCBA
    assert lcs_length("abc", "abc") == 3
    assert lcs_length("abc", "cba") == 1
    assert lcs_length([1, 2, 3, 4], [2, 4]) == 2
    assert lcs_length([], [1, 2]) == 0
    assert lcs_length([1, 1, 1], [1]) == 1


def test_rouge_l_hand_cases():
    # LCS([1,2,3], [1,3,4,5]) = 2: P = 2/3, R = 1/2, F = (2/3) / (7/6) = 4/7.
    np.testing.assert_allclose(
        rouge_l_prf([1, 2, 3], [1, 3, 4, 5]), [2 / 3, 1 / 2, 4 / 7], **SIMPLE
    )
    assert rouge_l_prf([], [1, 2]) == (0.0, 0.0, 0.0)
    assert rouge_l_prf([7, 8], [1, 2]) == (0.0, 0.0, 0.0)
    assert rouge_l_prf([1, 2], [1, 2])[2] == pytest.approx(1.0)


def hand_rouge() -> RougeTask:
    # Ids: PAD 0, EOS 1, SEP 2, keys 3-4, content c0..c4 = 5..9. Key 0: c -> c+1 mod 5, reversed;
    # key 1: c -> 4-c, evens then odds.
    cfg = RougeConfig(num_keys=2, num_content=5, min_items=1, max_items=4)
    subst = np.array([[1, 2, 3, 4, 0], [4, 3, 2, 1, 0]])
    return RougeTask(cfg, RougeTables(subst, ("reverse", "evens_then_odds")))


def test_rouge_reference_hand_cases():
    task = hand_rouge()
    # key 0, items (0, 1, 3): mixed (0, 1+0, 3+1) = (0, 1, 4); substituted (1, 2, 0);
    # reversed (0, 2, 1) -> ids (5, 7, 6).
    assert task.reference([3, 5, 6, 8, SEP_ID]) == [5, 7, 6]
    # key 1, items (2, 2, 4, 0): mixed (2, 4, 6%5=1, 4) -> (2, 0, 3, 0); evens then odds
    # (2, 3, 0, 0) -> ids (7, 8, 5, 5).
    assert task.reference([4, 7, 7, 9, 5, SEP_ID]) == [7, 8, 5, 5]
    with pytest.raises(ValueError, match="not a rouge prompt"):
        task.reference([3, 5, 6, 8])  # no response-start marker


def test_rouge_verifier_hand_cases():
    task, prompt = hand_rouge(), [3, 5, 6, 8, SEP_ID]  # reference (5, 7, 6)
    responses = [[5, 7, 6, EOS_ID], [6, 7, EOS_ID], [5, 7, 6, 8, 8], [EOS_ID], [3, 0, EOS_ID]]
    # exact: 1; LCS((6,7), (5,7,6)) = 1: P 1/2, R 1/3, F = (1/3) / (5/6) = 2/5;
    # no EOS, 5 tokens: LCS 3, P 3/5, R 1, F = (6/5) / (8/5) = 3/4; empty: 0; junk: 0.
    got = score(task, [prompt] * 5, responses)
    np.testing.assert_allclose(got["reward"], [1, 0.4, 0.75, 0, 0], **SIMPLE)
    np.testing.assert_array_equal(got["has_eos"], [1, 1, 0, 1, 1])


def test_rouge_demonstrations():
    rng = np.random.default_rng(0)
    clean = make_task("rouge", noise=0.0, drop=0.0)
    prompts = clean.sample_prompts(200, rng)
    demos = clean.demonstrate(prompts, rng)
    for p, d in zip(prompts, demos, strict=True):
        assert d[:-1] == clean.reference(p) and d[-1] == EOS_ID
    np.testing.assert_allclose(clean.score(prompts, demos), 1.0)
    noisy = make_task("rouge")
    demos = noisy.demonstrate(prompts, rng)
    assert all(d[-1] == EOS_ID and min(d[:-1], default=99) >= noisy.first_content for d in demos)
    assert 0.5 < noisy.score(prompts, demos).mean() < 0.95


# ---------------------------------------------------------------- bandit
def test_bandit_verifier_and_demonstrator():
    task = make_task("bandit")
    task.reward_CxM = np.arange(8 * 16).reshape(8, 16) / 1000.0  # a known table: r = (16x+y)/1000
    x2, y3, y5 = task.first_context + 2, task.first_choice + 3, task.first_choice + 5
    responses = [[y3, EOS_ID], [y5, y3], [EOS_ID], [x2, EOS_ID]]
    # r[2,3] = 0.035; no EOS reads the first token: r[2,5] = 0.037; empty and non-choice: 0.
    np.testing.assert_allclose(task.score([[x2]] * 4, responses), [0.035, 0.037, 0, 0], **SIMPLE)
    rng = np.random.default_rng(0)
    n = 20000
    demos = task.demonstrate([[x2]] * n, rng)
    assert all(len(d) == 2 and d[1] == EOS_ID for d in demos)
    freq = np.bincount([d[0] - task.first_choice for d in demos], minlength=16) / n
    p = task.ref_probs_CxM[2]
    assert np.all(np.abs(freq - p) < 4 * np.sqrt(p * (1 - p) / n) + 1e-12)


def test_soft_optimal_hand_case_and_local_reward():
    # ref (1/4, 3/4), r (1, 0), beta = 1/ln 3: exp(r/beta) = (3, 1) -> (3/4, 3/4) -> (1/2, 1/2).
    got = soft_optimal(np.array([[0.25, 0.75]]), np.array([[1.0, 0.0]]), 1 / math.log(3))
    np.testing.assert_allclose(got, [[0.5, 0.5]], **SIMPLE)
    task = make_task("bandit")
    for beta in (0.05, 0.3, 2.0):
        pi = task.optimal_policy(beta)
        np.testing.assert_allclose(pi.sum(-1), 1.0, **SIMPLE)
        # Theorem 2.2's correspondence: the local reward beta log(pi/ref) is r up to a per-x shift.
        shift = beta * np.log(pi / task.ref_probs_CxM) - task.reward_CxM
        np.testing.assert_allclose(shift - shift[:, :1], 0.0, atol=1e-9)
    gains = [task.expected_reward(task.optimal_policy(b)) for b in (2.0, 0.3, 0.05)]
    assert gains == sorted(gains) and gains[0] > task.expected_reward(task.ref_probs_CxM)


# ---------------------------------------------------------------- labels
def test_bradley_terry_frequencies():
    rng = np.random.default_rng(1234)
    n, scale = 20000, 2.0
    for p in (0.03, 0.2, 0.5, 0.75, 0.95):
        diff = math.log(p / (1 - p)) / scale  # sigmoid(scale * diff) = p
        reward_a = rng.uniform(-1, 1, n)
        labels = bradley_terry_labels(reward_a, reward_a - diff, scale, rng)
        assert labels.dtype == bool and labels.shape == (n,)
        assert abs(labels.mean() - p) < 4 * math.sqrt(p * (1 - p) / n), p
    assert sigmoid(np.array([-1000.0, 0.0, 1000.0])).tolist() == [0.0, 0.5, 1.0]


def test_best_worst_ties_and_degenerate():
    scores = np.array([[1, 3, 3, 0, 0], [2, 2, 2, 2, 2], [5, 1, 5, 1, 0], [0, 0, 0, 0, 1]])
    best, worst, degenerate = best_worst(scores)
    np.testing.assert_array_equal(best, [1, 0, 0, 4])  # first argmax
    np.testing.assert_array_equal(worst, [3, 0, 4, 0])  # first argmin
    np.testing.assert_array_equal(degenerate, [False, True, False, False])
    with pytest.raises(ValueError, match="NaN"):
        best_worst(np.array([[0.0, np.nan]]))


def test_pairs_from_samples():
    n, k, t = 3, 3, 4
    tokens = np.arange(n * k)[:, None] * 10 + np.arange(t)  # row r holds 10r .. 10r+3
    mask = np.ones((n * k, t), bool)
    loss_mask = np.zeros((n * k, t), bool)
    loss_mask[:, 2:] = True
    scores = np.array([0.1, 0.9, 0.5, 0.7, 0.7, 0.7, 0.3, 0.2, 0.3])  # prompt 1 is degenerate
    gold = np.arange(n * k) / 100.0
    out = pairs_from_samples(tokens, mask, loss_mask, scores, k, extras={"gold": gold})
    np.testing.assert_array_equal(out["prompt_index"], [0, 2])
    # prompt 0: best sample 1 (row 1), worst sample 0 (row 0); prompt 2: best row 6, worst 7.
    np.testing.assert_array_equal(out["chosen_tokens"][:, 0], [10, 60])
    np.testing.assert_array_equal(out["rejected_tokens"][:, 0], [0, 70])
    np.testing.assert_allclose(out["chosen_score"], [0.9, 0.3])
    np.testing.assert_allclose(out["rejected_gold"], [0.0, 0.07])
    assert out["chosen_loss_mask"].shape == (2, t) and out["chosen_mask"].all()
    kept = pairs_from_samples(tokens, mask, loss_mask, scores, k, drop_degenerate=False)
    np.testing.assert_array_equal(kept["degenerate"], [False, True, False])


def test_make_preference_pairs_layout():
    task = make_task("keyed")
    rng = np.random.default_rng(0)
    prompts = task.sample_prompts(64, rng)
    a, b = task.demonstrate(prompts, rng), task.demonstrate(prompts, rng)
    out = make_preference_pairs(task, prompts, a, b, scale=1e6, rng=rng)
    p, r = task.prompt_len, task.response_len
    for side in ("chosen", "rejected"):
        assert out[f"{side}_tokens"].shape == (64, p + r)
        np.testing.assert_array_equal(out[f"{side}_loss_mask"][:, :p], False)
        # The gold reward recorded for a side is the verifier's score of that side's arrays.
        parts = split_sequences(out[f"{side}_tokens"], out[f"{side}_mask"], p)
        np.testing.assert_allclose(task.gold_reward(*parts), out[f"{side}_gold"], **SIMPLE)
    prompt_tokens, prompt_mask = pack_prompts(prompts, p, PAD_ID)
    np.testing.assert_array_equal(out["chosen_tokens"][:, :p], prompt_tokens)  # left-padded
    np.testing.assert_array_equal(out["chosen_mask"][:, :p], prompt_mask)
    resp_mask = out["chosen_loss_mask"][:, p:]
    assert resp_mask[:, 0].all() and not np.any(~resp_mask[:, :-1] & resp_mask[:, 1:])  # right-pad
    chosen = [a_i if w else b_i for a_i, b_i, w in zip(a, b, out["a_preferred"], strict=True)]
    again = make_preference_pairs(task, prompts, chosen, chosen, 1.0, rng)
    np.testing.assert_array_equal(out["chosen_tokens"], again["chosen_tokens"])
    # scale 1e6: the better response always wins unless the rewards tie (then a coin flip).
    differ = out["chosen_gold"] != out["rejected_gold"]
    assert differ.any() and np.all(out["chosen_gold"][differ] > out["rejected_gold"][differ])
    np.testing.assert_allclose(out["label_prob"][differ], 1.0)
    np.testing.assert_allclose(out["label_prob"][~differ], 0.5)


# ---------------------------------------------------------------- the family
@pytest.mark.parametrize("name", sorted(set(TASKS) - {"tldr"}))  # tldr: test_tldr_reproduce.py
def test_task_contract(name):
    task = make_task(name)
    assert task.vocab_size <= 128 and task.prompt_len <= 16 and task.response_len <= 16
    assert task.pad_id == PAD_ID and task.eos_id == EOS_ID and len(task.describe()) > 200
    sft = make_sft_arrays(task, 32, np.random.default_rng(3))
    again = make_sft_arrays(make_task(name), 32, np.random.default_rng(3))
    for key in ("tokens", "mask", "loss_mask"):  # deterministic given task seed and rng seed
        np.testing.assert_array_equal(sft[key], again[key])
    assert sft["tokens"].shape == (32, task.prompt_len + task.response_len)
    assert sft["tokens"].max() < task.vocab_size
    last = np.max(np.where(sft["loss_mask"], np.arange(sft["tokens"].shape[1]), -1), axis=1)
    np.testing.assert_array_equal(sft["tokens"][np.arange(32), last], EOS_ID)  # demos end in EOS
    prompts = make_prompt_arrays(task, 32, np.random.default_rng(3))
    np.testing.assert_array_equal(prompts["prompt_tokens"], sft["tokens"][:, : task.prompt_len])
    assert prompts["prompt_mask"][:, -1].all()  # left-padded: the last slot is real
    other = make_sft_arrays(make_task(name, seed=1), 32, np.random.default_rng(3))
    differs = not np.array_equal(other["tokens"], sft["tokens"])
    assert differs or name == "bandit"  # bandit prompts don't depend on the task seed
    with pytest.raises(TypeError):
        make_task(name, no_such_knob=1)


def test_hidden_tables_depend_on_seed_only():
    a, b, c = (make_task("keyed", seed=s) for s in (0, 0, 1))
    np.testing.assert_array_equal(a.table_TxM, b.table_TxM)
    assert not np.array_equal(a.table_TxM, c.table_TxM)
    r0, r1 = make_task("bandit", seed=0), make_task("bandit", seed=1)
    assert not np.array_equal(r0.reward_CxM, r1.reward_CxM)
    with pytest.raises(ValueError, match="unknown task"):
        make_task("nope")
    with pytest.raises(ValueError, match="keyed prompt"):
        make_task("keyed").score([[9, 9]], [[EOS_ID]])
