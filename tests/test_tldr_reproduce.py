"""TL;DR through `rlft reproduce`: the `tldr` task adapter (reference lookup, ROUGE-L gold with
the tokenizer's EOS, held-out prompts) on hand-made pools, and configs/tldr_pythia.py's
`smoke:reproduce` end to end through the CLI on the fixture files."""

import json
import math
import os

import numpy as np
import pytest

from rlft.config import load_config
from rlft.data.arrays import pack_sequences
from rlft.experiments.arms import DEFAULT_ARMS
from rlft.experiments.pipeline.spec import parse_reproduce
from rlft.tasks import TldrTask, TldrTaskConfig, make_prompt_arrays, make_sft_arrays, make_task
from rlft.tasks.tldr import TldrData, draw
from tests.helpers import REPO_CONFIGS

CONFIG = os.path.join(REPO_CONFIGS, "tldr_pythia.py")
WORDS = ["<eos>", "the", "cat", "sat", "on", "mat", "dog", "ran", "TL;DR:", "x"]  # ids 0..9
EOS, PAD = 0, 10  # as the fixture BPE and Pythia: EOS is id 0, [PAD] the id after the vocab


def _decode(ids):
    return " ".join(WORDS[i] for i in ids)


def _task(**knobs) -> TldrTask:
    train = ([[8, 2], [8, 6], [8, 9]], [[1, 2, 3, EOS], [6, 7, EOS], [9, EOS]])
    held_out = ([[8, 5]], [[1, 5, EOS]])
    data = TldrData(train, held_out, _decode, vocab_size=11, pad_id=PAD, eos_id=EOS)
    return TldrTask(TldrTaskConfig(max_query_len=3, response_len=5, **knobs), data)


def test_reference_lookup_and_prompt_pools():
    task = _task()
    assert (task.eos_id, task.pad_id, task.vocab_size) == (EOS, PAD, 11)
    assert task.demonstrate([[8, 6], [8, 5]], np.random.default_rng(0)) == [[6, 7, EOS], [1, 5, 0]]
    rng = np.random.default_rng(0)
    train = task.sample_prompts(6, rng)  # two epochs: each post twice, none held out
    assert sorted(map(tuple, train)) == sorted(2 * [(8, 2), (8, 6), (8, 9)])
    assert sorted(map(tuple, train[:3])) == [(8, 2), (8, 6), (8, 9)]  # no repeat within a pool
    assert task.sample_eval_prompts(2, rng) == [[8, 5], [8, 5]]
    prompts = make_prompt_arrays(task, 4, rng, held_out=True)
    np.testing.assert_array_equal(prompts["prompt_tokens"], [[PAD, 8, 5]] * 4)  # left-padded
    sft = make_sft_arrays(task, 3, np.random.default_rng(1))
    assert sft["tokens"].shape == (3, 3 + 5)
    for row, mask in zip(sft["tokens"], sft["mask"].astype(bool), strict=True):
        assert row[3:][mask[3:]].tolist() == task.reference(row[:3][mask[:3]])  # demo = reference
    assert sorted(draw(3, 7, np.random.default_rng(2))[:3]) == [0, 1, 2]


def test_unknown_prompt_and_bad_knobs_raise():
    with pytest.raises(ValueError, match="not a query of the 'train' or 'validation' pools"):
        _task().demonstrate([[8, 3]], np.random.default_rng(0))
    with pytest.raises(ValueError, match="needs gold_rm"):
        TldrTaskConfig(judge="rm")
    with pytest.raises(ValueError, match="judge='bleu'"):
        TldrTaskConfig(judge="bleu")


def test_rouge_gold_by_hand_with_the_tokenizer_eos():
    task = _task()
    prompts = [[8, 2], [8, 2], [8, 2], [8, 6]]
    responses = [
        [1, 2, 4, EOS],  # "the cat on" vs "the cat sat": LCS 2, P = R = 2/3, F = 2/3
        [1, 2, 3, EOS, 5],  # exact, then a token after EOS that must be ignored: F = 1
        [3, 4, 5],  # no EOS: scored on every token, "sat on mat": LCS 1, P = R = 1/3
        [7, 1, EOS],  # "ran the" vs "dog ran": LCS 1, P = R = 1/2
    ]
    parts = task.score_parts(prompts, responses)
    np.testing.assert_allclose(parts["reward"], [2 / 3, 1.0, 1 / 3, 1 / 2], atol=1e-12)
    np.testing.assert_array_equal(parts["rouge_l"], parts["reward"])
    np.testing.assert_array_equal(parts["has_eos"], [1, 1, 0, 1])
    np.testing.assert_array_equal(parts["length"], [3, 3, 3, 2])
    seq = pack_sequences(prompts, responses, 3, 5, PAD)
    assert (seq["tokens"][:, :1] == PAD).all()  # the pad id really is 10 in these rows


def test_paper_settings_of_the_reproduce_variant():
    spec = parse_reproduce(load_config(CONFIG, "1.4b:reproduce"))
    assert spec.tasks == ("tldr",) and spec.arms == DEFAULT_ARMS
    assert (spec.online.num_samples, spec.online.temperature) == (25, 0.1)  # dpo.temperature too
    d, r, s = spec.stages["dpo"], spec.stages["reward"], spec.stages["sft"]
    assert (spec.beta, d["dpo"]["beta"], d["optim"]["learning_rate"], d["batch_size"]) == (
        0.05,
        0.05,
        3e-7,
        128,
    )
    assert spec.epochs.dpo == spec.epochs.reward == spec.epochs.sft == 1.0
    assert spec.reward_classes == ("last",) and r["optim"]["learning_rate"] == 3e-6
    assert (s["optim"]["learning_rate"], s["batch_size"]) == (3e-6, 64)
    assert spec.sft_init == "checkpoints/pythia-1.4b-deduped"
    assert spec.stages["ppo"]["ppo"]["temperature"] == 0.7 and spec.model.num_layers == 24
    assert spec.eval.greedy_temperature == 0.01 and spec.eval.primary == "greedy"
    knobs = spec.task_knobs["tldr"]
    assert (knobs["max_query_len"], knobs["response_len"], knobs["judge"]) == (512, 53, "rouge")
    with pytest.raises(ValueError, match=r"rlft reproduce --config=configs/tldr_pythia.py:2.8b"):
        load_config(CONFIG, "2.8b:online_dpo")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    for module in ("tensorflow_datasets", "array_record", "tokenizers"):
        pytest.importorskip(module)
    from rlft.cli import main

    root = tmp_path_factory.mktemp("tldr")
    argv = [f"--config={CONFIG}:smoke:reproduce:{root}", f"--workdir={root / 'work'}"]
    assert main(["reproduce", *argv, "--noprogress"]) == 0
    return root


@pytest.mark.slow  # 2 cores: ~80 s with a warm compilation cache, ~220 s cold
def test_smoke_reproduce_runs_every_arm(smoke_run):
    with open(smoke_run / "work" / "results.json") as f:
        results = json.load(f)
    assert {r["arm"] for r in results["runs"]} == set(DEFAULT_ARMS)
    for r in results["runs"]:
        assert r["task"] == "tldr", r["arm"]
        for p in r["frontier"]:
            assert (
                0.0 <= p["gold_reward"] <= 1.0 and 0.0 <= p["gold_reward_greedy"] <= 1.0
            )  # ROUGE-L
            assert math.isfinite(p["kl_to_ref"]) and math.isfinite(p["rm_score"])
            assert p["gold_parts"]["rouge_l"] == pytest.approx(p["gold_reward"])
        assert r["arm"] in ("sft", "ppo") or r["num_pairs"] > 0
    assert results["tasks"]["tldr"]["prompt_len"] == 64
    report = (smoke_run / "work" / "report.md").read_text()
    assert "### `tldr`" in report and "| online_dpo |" in report


@pytest.mark.slow
def test_gold_reward_model_judge(smoke_run):
    """judge="rm": the smoke run's reward model as the gold judge, ROUGE-L kept as a part."""
    knobs = dict(load_config(CONFIG, f"smoke:reproduce:{smoke_run}").task_knobs["tldr"])
    rm_dir = str(smoke_run / "work" / "tldr" / "seed0" / "n16" / "last" / "reward")
    task = make_task("tldr", **{**knobs, "judge": "rm", "gold_rm": rm_dir})
    rouge = make_task("tldr", **knobs)
    sft = make_sft_arrays(task, 8, np.random.default_rng(0))  # the references themselves
    p = task.prompt_len
    args = (sft["tokens"][:, :p], sft["mask"][:, :p], sft["tokens"][:, p:], sft["mask"][:, p:])
    parts, plain = task.gold_reward_parts(*args), rouge.gold_reward_parts(*args)
    np.testing.assert_array_equal(plain["reward"], 1.0)  # a reference scores itself 1
    np.testing.assert_array_equal(parts["rouge_l"], plain["reward"])
    assert np.isfinite(parts["reward"]).all() and np.ptp(parts["reward"]) > 0  # the RM's scores
