"""`rlft sample` and `rlft eval` through the console entry, on a tiny SFT workdir: log-probs
recomputed by the trainer's helper, the Wilson interval on a hand-made judgments case, a policy
against itself (KL 0, every item a tie), counted EOS shares, and one-line errors (exit 2)."""

import json
import math
import os
import shutil

import numpy as np
import pytest

from rlft.cli import main
from rlft.data.arrays import pack_sequences
from rlft.data.synthetic import EOS, PAD, SyntheticConfig, gold_reward, make_datasets
from rlft.data.tldr.fixtures import train_tokenizer
from rlft.experiments.evaluate import HELD_OUT_SEED, wilson_interval
from rlft.models import ModelConfig
from rlft.models.params_io import load_params, read_meta
from rlft.objectives.logprobs import sequence_logprobs
from rlft.parallel import make_mesh
from rlft.rollout.scoring import load_reward_model, reward_model_config, rm_scores
from tests.helpers import REPO_CONFIGS

L = 7  # max_new_tokens: the synthetic task's response length (6 content tokens + EOS)


def _write(path, rows) -> str:
    with open(path, "w") as f:
        f.writelines((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)
    return str(path)


def _read(path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def sft(tmp_path_factory):
    """A tiny SFT policy, 30 steps on the synthetic task, checkpoints at steps 15 and 30."""
    wd = str(tmp_path_factory.mktemp("sft") / "sft")
    argv = ["train", f"--config={os.path.join(REPO_CONFIGS, 'sft.py')}:tiny", f"--workdir={wd}"]
    argv += ["--config.total_steps=30", "--config.checkpoint_every=15", "--noprogress"]
    assert main(argv) == 0
    return wd


def _held_out_prompts(n: int, seed: int = 0) -> list[list[int]]:
    """The synthetic task's held-out prompts, drawn here as eval documents it (docs/eval.md)."""
    cfg = SyntheticConfig(num_examples=n, seed=SyntheticConfig().seed + HELD_OUT_SEED + seed)
    p = make_datasets(cfg)["prompts"]
    return [t[m].tolist() for t, m in zip(p["prompt_tokens"], p["prompt_mask"], strict=True)]


def _sample(sft, tmp_path, prompts, k: int, name: str = "s") -> list[dict]:
    src = _write(tmp_path / f"{name}.jsonl", [{"prompt_ids": p} for p in prompts])
    out = tmp_path / f"{name}_out.jsonl"
    argv = ["sample", f"--workdir={sft}", f"--prompts={src}", f"--out={out}"]
    assert main([*argv, f"--num_samples={k}", f"--max_new_tokens={L}"]) == 0
    return _read(out)


def test_sample_rows_and_logprobs_match_the_trainer(sft, tmp_path):
    prompts = [[5, 9, 12, 2], [7, 2], [40, 41, 42, 43, 44, 45, 2]]  # ragged: left padding
    rows = _sample(sft, tmp_path, prompts, k=3)
    assert [(r["id"], r["sample"]) for r in rows] == [
        (str(b), k) for b in range(3) for k in range(3)
    ]
    _, meta = read_meta(sft)
    cfg = ModelConfig(**meta["models"]["policy"]["config"])
    params = load_params(sft, "policy", "lm", cfg, make_mesh())
    seq = pack_sequences([r["prompt_ids"] for r in rows], [r["response_ids"] for r in rows],
                         7, L, PAD)  # fmt: skip
    trainer_N = np.asarray(
        sequence_logprobs(cfg, params, seq["tokens"], seq["mask"], seq["loss_mask"])
    )
    np.testing.assert_allclose([r["logp_sum"] for r in rows], trainer_N, atol=1e-4, rtol=0)
    for r in rows:
        resp = r["response_ids"]
        assert r["length"] == len(resp) and 1 <= len(resp) <= L
        assert r["finished"] == (resp[-1] == EOS) and EOS not in resp[:-1]
        assert r["logp_sum"] < 0 and "response" not in r  # no tokenizer: ids only


def test_eval_of_a_policy_against_itself(sft, tmp_path, capsys):
    """Same params, same keys: the same responses, so KL 0, every item a tie (win rate 0.5);
    the EOS share and gold score match a count over `rlft sample` of the task's prompts."""
    n, k = 16, 2
    out = tmp_path / "eval.json"
    argv = ["eval", f"--workdir={sft}", f"--reference={sft}", "--judge=gold:synthetic"]
    argv += [f"--num_prompts={n}", f"--num_samples={k}", f"--max_new_tokens={L}", f"--out={out}"]
    assert main(argv) == 0
    assert "95% Wilson interval" in capsys.readouterr().out
    ev = json.loads(out.read_text())
    assert abs(ev["kl_to_reference"]["mean"]) < 1e-4
    w = ev["win_rate"]
    assert (w["value"], w["n"], w["ties"], w["wins"], w["losses"]) == (0.5, n * k, n * k, 0, 0)
    half = 1.959964 / (1 + 1.959964**2 / 32) * math.sqrt(0.25 / 32 + 1.959964**2 / (4 * 32**2))
    assert w["lo"] == pytest.approx(0.5 - half, abs=1e-9) and w["interval"] == "wilson_95"
    rows = _sample(sft, tmp_path, _held_out_prompts(n), k)
    no_eos = sum(not r["finished"] for r in rows) / len(rows)
    assert ev["no_eos_share"] == {"policy": no_eos, "reference": no_eos}
    gold = np.mean([gold_reward(r["prompt_ids"], r["response_ids"]) for r in rows])
    assert ev["judge_score"]["policy"]["mean"] == pytest.approx(gold, abs=1e-12)
    assert ev["length"]["policy"]["mean"] == pytest.approx(np.mean([r["length"] for r in rows]))


def test_win_rate_interval_on_hand_made_judgments(sft, tmp_path):
    """10 items: 7 wins, 2 ties, 1 loss -> 0.8; Wilson 95% [0.49016, 0.94332] (by hand: centre
    (0.8 + 0.192073) / 1.384146 = 0.716740, half 1.415988 * sqrt(0.016 + 0.009604) = 0.226577).
    Reference responses: 4 of 10 without EOS."""
    prompts = _write(
        tmp_path / "p.jsonl", [{"id": f"q{i}", "prompt_ids": [3 + i, 2]} for i in range(10)]
    )
    refs = [{"id": f"q{i}", "response_ids": [4, 5] if i < 4 else [4, EOS]} for i in range(10)]
    verdicts = ["policy"] * 7 + ["tie"] * 2 + ["reference"]
    judgments = [{"id": f"q{i}", "winner": v} for i, v in enumerate(verdicts)]
    argv = ["eval", f"--workdir={sft}", f"--prompts={prompts}", f"--out={tmp_path / 'e.json'}"]
    argv += [f"--reference_responses={_write(tmp_path / 'r.jsonl', refs)}"]
    argv += [f"--judge=file:{_write(tmp_path / 'j.jsonl', judgments)}", f"--max_new_tokens={L}"]
    assert main(argv) == 0
    ev = json.loads((tmp_path / "e.json").read_text())
    w = ev["win_rate"]
    assert (w["wins"], w["ties"], w["losses"]) == (7, 2, 1) and w["value"] == pytest.approx(0.8)
    assert w["lo"] == pytest.approx(0.490163, abs=1e-5) and w["hi"] == pytest.approx(
        0.943317, abs=1e-5
    )
    assert ev["no_eos_share"]["reference"] == pytest.approx(0.4)
    assert ev["length"]["reference"]["mean"] == 2.0
    assert ev["kl_to_reference"] is None and ev["judge_score"] is None


def test_wilson_interval_edges():
    assert wilson_interval(np.ones(1)) == pytest.approx((1.0, 0.206549, 1.0), abs=1e-6)
    with pytest.raises(ValueError):
        wilson_interval(np.zeros(0))


BAD_PROMPTS = {  # file line -> what the one-line error must name
    "not json": ("not valid JSON",),
    json.dumps({"text": "x"}): ("exactly one of",),
    json.dumps({"prompt": "hello"}): ("field 'prompt'", "tokenizer"),
    json.dumps({"prompt_ids": [5, 99]}): ("field 'prompt_ids'", "99"),
    json.dumps({"prompt_ids": [5, "a"]}): ("field 'prompt_ids'", "integers"),
    json.dumps({"prompt_ids": [5], "id": 3}): ("field 'id'",),
}


@pytest.mark.parametrize("line", list(BAD_PROMPTS))
def test_bad_prompt_rows_are_one_line_errors(sft, tmp_path, capsys, line):
    path = _write(tmp_path / "bad.jsonl", [{"prompt_ids": [5, 2]}, line])
    rc = main(["sample", f"--workdir={sft}", f"--prompts={path}", f"--out={tmp_path / 'o'}"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert f"{path}:2:" in err and all(s in err for s in BAD_PROMPTS[line]), err


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--prompts=p", "--out=o", "--temprature=1"], "did you mean --temperature"),
        (["--prompts=p"], "--out required"),
        (["--prompts=p", "--out=o", "--num_samples=two"], "expected int"),
        (["--prompts=p", "--out=o", "--top_p=1.5"], "top_p"),
    ],
)
def test_bad_sample_flags(tmp_path, capsys, args, needle):
    assert main(["sample", f"--workdir={tmp_path}", *args]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1, err


def test_bad_eval_inputs(sft, tmp_path, capsys):
    prompts = _write(tmp_path / "p.jsonl", [{"id": "a", "prompt_ids": [5, 2]}])
    base = ["eval", f"--workdir={sft}", f"--prompts={prompts}"]
    refs = _write(tmp_path / "r.jsonl", [{"id": "b", "response_ids": [4]}])
    judgments = _write(tmp_path / "j.jsonl", [{"id": "z", "winner": "tie"}])
    cases = [
        ([f"--reference={sft}", "--judge=bogus:x"], "expected reward:RM_WORKDIR"),
        (["--judge=gold:synthetic"], "exactly one of --reference"),
        ([f"--reference_responses={refs}", "--judge=gold:synthetic"], "r.jsonl:1: field 'id'"),
        ([f"--reference={sft}", f"--judge=file:{judgments}"], "no judgment for 1 id(s)"),
    ]  # fmt: skip
    for args, needle in cases:
        assert main([*base, *args, f"--max_new_tokens={L}"]) == 2, args
        err = capsys.readouterr().err
        assert needle in err and err.count("\n") == 1, err


@pytest.mark.slow  # trains a reward model: ~80 s on 2 busy cores
def test_reward_judge_scores_like_the_scorer(sft, tmp_path):
    """`reward:` scores each response with the reward stage's model and class: against itself
    every item ties, and the mean score equals rm_scores on `rlft sample`'s rows."""
    rm = str(tmp_path / "rm")
    argv = ["train", f"--config={os.path.join(REPO_CONFIGS, 'reward.py')}:tiny"]
    argv += [f"--config.init.policy={sft}", "--config.total_steps=4", f"--workdir={rm}"]
    assert main([*argv, "--noprogress"]) == 0
    prompts = [[5, 9, 12, 2], [7, 2], [40, 41, 2]]
    src = _write(tmp_path / "p.jsonl", [{"prompt_ids": p} for p in prompts])
    out = tmp_path / "e.json"
    argv = ["eval", f"--workdir={sft}", f"--reference={sft}", f"--judge=reward:{rm}"]
    argv += [f"--prompts={src}", f"--max_new_tokens={L}", "--num_samples=2", f"--out={out}"]
    assert main(argv) == 0
    ev = json.loads(out.read_text())
    assert ev["win_rate"]["ties"] == 6 and ev["win_rate"]["value"] == 0.5
    rows = _sample(sft, tmp_path, prompts, k=2)
    cfg = reward_model_config(rm)
    params, model_class = load_reward_model(rm, cfg, make_mesh())
    seq = pack_sequences([r["prompt_ids"] for r in rows], [r["response_ids"] for r in rows],
                         4, L, PAD)  # fmt: skip
    direct = rm_scores(cfg, params, seq, make_mesh(), model_class=model_class)
    score = ev["judge_score"]["policy"]["mean"]
    assert score == ev["judge_score"]["reference"]["mean"]
    assert score == pytest.approx(float(np.mean(direct)), abs=1e-5)


@pytest.mark.slow  # a second tiny policy with a text-sized vocabulary: ~65 s
def test_text_prompts_with_a_tokenizer(tmp_path):
    """`prompt` text is encoded with --tokenizer and responses decoded; rows keep the ids."""
    tok = train_tokenizer(tmp_path / "tok")
    wd = str(tmp_path / "sft")
    argv = ["train", f"--config={os.path.join(REPO_CONFIGS, 'sft.py')}:tiny", f"--workdir={wd}"]
    assert main([*argv, "--config.total_steps=2", "--config.model.vocab_size=448"]) == 0
    src = _write(tmp_path / "p.jsonl", [{"id": "t", "prompt": "my cat ate the homework TL;DR:"}])
    out = tmp_path / "s.jsonl"
    argv = ["sample", f"--workdir={wd}", f"--prompts={src}", f"--out={out}", f"--tokenizer={tok}"]
    assert main([*argv, "--max_new_tokens=5"]) == 0
    (row,) = _read(out)
    assert row["prompt"] == "my cat ate the homework TL;DR:" and isinstance(row["response"], str)
    assert 1 <= row["length"] <= 5 and len(row["response_ids"]) == row["length"]


@pytest.mark.parametrize("command", ["sample", "eval"])
def test_help_shows_flags_and_examples(command, capsys):
    assert main([command, "--help"]) == 0
    text = capsys.readouterr().out
    assert f"usage: rlft {command}" in text and "example" in text and "--max_new_tokens" in text
    assert main(["--help"]) == 0 and f"  {command} " in capsys.readouterr().out


def test_sample_skips_a_checkpoint_that_does_not_restore(sft, tmp_path, capsys):
    """Step 30's params are gone: sampling warns, reads step 15, and leaves the workdir alone."""
    wd = tmp_path / "copy"
    shutil.copytree(sft, wd)
    shutil.rmtree(wd / "checkpoints" / "30" / "params")
    src = _write(tmp_path / "p.jsonl", [{"prompt_ids": [5, 2]}])
    argv = ["sample", f"--workdir={wd}", f"--prompts={src}", f"--out={tmp_path / 'o.jsonl'}"]
    assert main([*argv, f"--max_new_tokens={L}"]) == 0
    captured = capsys.readouterr()
    assert "checkpoint step 15" in captured.out
    assert "checkpoint step 30 does not restore" in captured.err
    assert f"left in place at {wd / 'checkpoints' / '30'}" in captured.err
    assert sorted(os.listdir(wd / "checkpoints")) == ["15", "30"]


def test_loading_a_policy_reads_the_step_record_once(sft, monkeypatch):
    """load_policy reads the checkpoint's meta once and hands it to load_params."""
    from rlft.experiments import sample
    from rlft.models import params_io

    calls = []

    def counted(workdir, step=None):
        calls.append(step)
        return read_meta(workdir, step)

    monkeypatch.setattr(sample, "read_meta", counted)
    monkeypatch.setattr(params_io, "read_meta", counted)
    policy = sample.load_policy(sft)
    assert policy.step == 30 and calls == [30]


def test_kl_to_an_earlier_checkpoint_matches_a_recomputation(sft, tmp_path):
    """Reference: the same run at step 15 (step 30 removed from a copy). KL is the mean over the
    policy's samples of its summed log-prob minus the reference's, recomputed here with the
    trainer's sequence_logprobs on `rlft sample`'s rows of the same prompts and seed."""
    ref = tmp_path / "step15"
    shutil.copytree(sft, ref)
    shutil.rmtree(ref / "checkpoints" / "30")
    prompts = [[5, 9, 12, 2], [7, 2], [40, 41, 42, 2], [8, 8, 9, 2]]
    src = _write(tmp_path / "p.jsonl", [{"prompt_ids": p} for p in prompts])
    out = tmp_path / "e.json"
    argv = ["eval", f"--workdir={sft}", f"--reference={ref}", "--judge=gold:synthetic"]
    argv += [f"--prompts={src}", "--num_samples=3", f"--max_new_tokens={L}", f"--out={out}"]
    assert main(argv) == 0
    ev = json.loads(out.read_text())
    assert ev["reference"]["step"] == 15 and ev["policy"]["step"] == 30
    rows = _sample(sft, tmp_path, prompts, k=3)
    cfg = ModelConfig(**read_meta(sft)[1]["models"]["policy"]["config"])
    ref_params = load_params(str(ref), "policy", "lm", cfg, make_mesh())
    seq = pack_sequences([r["prompt_ids"] for r in rows], [r["response_ids"] for r in rows],
                         4, L, PAD)  # fmt: skip
    ref_N = np.asarray(
        sequence_logprobs(cfg, ref_params, seq["tokens"], seq["mask"], seq["loss_mask"])
    )
    kl = np.mean([r["logp_sum"] for r in rows] - ref_N)
    assert abs(kl) > 1e-2  # the two checkpoints differ
    assert ev["kl_to_reference"]["mean"] == pytest.approx(kl, abs=1e-4)


def test_text_prompts_are_cut_to_the_runs_prompt_length(tmp_path):
    """A text prompt longer than the run's prompt length is cut as training cut it: at its
    last newline that fits (rlft.data.tldr.format.truncated_text), keeping the beginning."""
    from rlft.data.tldr.fixtures import train_tokenizer
    from rlft.experiments.sample import read_prompts, text_tokenizer

    tok = text_tokenizer(train_tokenizer(tmp_path / "tok.json"), 512)
    text = "TITLE: my cat\nPOST: she sleeps all day\nand all night long, every night"
    path = tmp_path / "prompts.jsonl"
    path.write_text(json.dumps({"prompt": text}) + "\n")
    whole = tok.encode(text)
    head = tok.encode("TITLE: my cat\nPOST: she sleeps all day")
    _, (uncut,) = read_prompts(str(path), tok, 512)
    assert uncut == whole
    _, (cut,) = read_prompts(str(path), tok, 512, max_len=len(head))
    assert cut == head and len(whole) > len(head)


def test_a_unit_without_a_data_section_reads_as_empty(tmp_path):
    """A `rlft reproduce` unit records `data: null` (its data are arrays): `rlft eval` and
    `rlft sample` read it as no data section, not crash (then --tokenizer names the tokenizer)."""
    from rlft.experiments.sample import recorded_data

    assert recorded_data(str(tmp_path), {"resolved": {"data": None}}) == {}
    (tmp_path / "run_config.json").write_text(json.dumps({"resolved": {"data": None}}))
    assert recorded_data(str(tmp_path), {}) == {}
