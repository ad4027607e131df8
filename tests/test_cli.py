"""`rlft train` end to end: every tiny config trains through the CLI, chained, and learns; the
other reward-model classes (`reward.model_class`) train, score and drive PPO on the same chain."""

import math
import os

import pytest

from rlft.cli import main
from rlft.config import load_config, parse_config
from rlft.data.sources import bundle_from_config
from rlft.errors import CheckpointError
from rlft.models.params_io import load_params, read_meta
from rlft.parallel import make_mesh
from rlft.rollout.scoring import NORMALIZE_ROWS, load_reward_model, rm_scores
from rlft.train.metrics import read_metrics
from tests.helpers import REPO_CONFIGS


def _cfg(name: str) -> str:
    return f"--config={os.path.join(REPO_CONFIGS, name)}.py:tiny"


def _tiny_reward():
    return parse_config(load_config(os.path.join(REPO_CONFIGS, "reward.py"), "tiny"))


def _mean(rows, key):
    return sum(r[key] for r in rows) / len(rows)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Train the tiny chain once: sft -> reward -> dpo and ppo, through the console entry."""
    root = tmp_path_factory.mktemp("runs")
    wd = {name: str(root / name) for name in ("sft", "reward", "dpo", "ppo")}
    argv = {
        "sft": [_cfg("sft")],
        "reward": [_cfg("reward"), f"--config.init.policy={wd['sft']}"],
        "dpo": [_cfg("dpo"), f"--config.init.policy={wd['sft']}"],
        "ppo": [
            _cfg("ppo"),
            f"--config.init.policy={wd['sft']}",
            f"--config.init.reward={wd['reward']}",
            "--config.total_steps=16",
            "--config.log_every=4",
        ],
    }
    for name in ("sft", "reward", "dpo", "ppo"):
        assert main(["train", *argv[name], f"--workdir={wd[name]}", "--noprogress"]) == 0, name
    return wd


@pytest.mark.parametrize("stage", ["sft", "reward", "dpo"])
def test_tiny_config_loss_falls(runs, stage):
    rows = read_metrics(runs[stage])
    assert _mean(rows[-2:], "loss") < _mean(rows[:2], "loss") - 0.01, [r["loss"] for r in rows]


def test_tiny_ppo_learns(runs):
    rows = read_metrics(runs["ppo"])
    assert len(rows) == 4
    assert rows[-1]["loss/value_avg"] < rows[0]["loss/value_avg"]  # the critic fits the returns
    # the policy climbs the RM: 4 logged rollouts of 8 prompts are noisy, so two against two
    assert _mean(rows[-2:], "objective/scores") > _mean(rows[:2], "objective/scores")
    assert rows[-1]["objective/kl"] > 0


def test_metrics_carry_trl_names(runs):
    """metrics.jsonl and TensorBoard use the names TRL's trainers log (TRL_NAMES)."""
    dpo = read_metrics(runs["dpo"])[-1]
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"):
        assert key in dpo, sorted(dpo)
    assert "logps/chosen" in dpo and "logps/rejected" in dpo and "margin" not in dpo
    margin = dpo["rewards/chosen"] - dpo["rewards/rejected"]
    assert dpo["rewards/margins"] == pytest.approx(margin, abs=1e-5)
    assert 0 <= dpo["rewards/accuracies"] <= 1
    assert "mean_token_accuracy" in read_metrics(runs["sft"])[-1]
    ppo = read_metrics(runs["ppo"])[-1]
    for key in ("objective/kl", "objective/scores", "objective/rlhf_reward", "policy/clipfrac_avg"):
        assert key in ppo, sorted(ppo)
    assert not any(k.startswith("rollout/s") or k == "pg_loss" for k in ppo)


def test_reward_model_is_normalised(runs):
    assert "reward_offset" in read_metrics(runs["reward"])[-1]


LR = {"sum": 5e-4, "bilinear": 5e-2}  # a zero-initialised table wants a larger step


@pytest.fixture(scope="module")
def rm_classes(runs, tmp_path_factory):
    """Reward models of the `sum` and `bilinear` classes on the chain's SFT policy, and PPO
    against the bilinear one (its critic takes the SFT backbone: the RM has none)."""
    root = tmp_path_factory.mktemp("rm_classes")
    wd = {name: str(root / name) for name in ("sum", "bilinear", "ppo")}
    for pooling in ("sum", "bilinear"):
        argv = [_cfg("reward"), f"--config.init.policy={runs['sft']}", "--config.total_steps=16"]
        argv += [
            f"--config.reward.model_class={pooling}",
            f"--config.optim.learning_rate={LR[pooling]}",
        ]
        assert main(["train", *argv, f"--workdir={wd[pooling]}", "--noprogress"]) == 0, pooling
    argv = [
        _cfg("ppo"),
        f"--config.init.policy={runs['sft']}",
        f"--config.init.reward={wd['bilinear']}",
    ]
    argv += ["--config.total_steps=2", "--config.log_every=1"]
    assert main(["train", *argv, f"--workdir={wd['ppo']}", "--noprogress"]) == 0
    return wd


@pytest.mark.parametrize("pooling", ["sum", "bilinear"])
def test_reward_classes_train_and_score(runs, rm_classes, pooling):
    """The class trains (that it learns: tests/test_reward_classes.py), is normalised on the
    reference (its mean score there is 0), and the scorer of Best-of-N, online DPO and the
    diagnostics reads it from its checkpoint."""
    last = read_metrics(rm_classes[pooling])[-1]
    assert math.isfinite(last["loss"]) and "reward_offset" in last
    run = _tiny_reward()
    params, read_as = load_reward_model(rm_classes[pooling], run.model, make_mesh())
    assert read_as == pooling
    sft = bundle_from_config(run.data, progress=False).sft
    reference = {k: v[:NORMALIZE_ROWS] for k, v in sft.items()}
    scores = rm_scores(run.model, params, reference, make_mesh(), model_class=pooling)
    assert abs(float(scores.mean())) < 1e-4 and scores.std() > 0.01


@pytest.mark.parametrize("model_class", ["sum", "bilinear"])
def test_reward_checkpoint_records_its_class(rm_classes, model_class):
    """The class is resolved once, at training, into the meta that PPO and the scorers read."""
    _, meta = read_meta(rm_classes[model_class])
    assert meta["models"]["reward"]["model_class"] == model_class
    # The resolved typed config is recorded too: defaults filled in, the class in its hparams.
    assert meta["resolved"]["hparams"] == {"model_class": model_class}
    assert meta["resolved"]["optim"]["eps"] == 1e-5 and "raw" not in meta["resolved"]


def test_tiny_ppo_runs_on_a_bilinear_reward_model(rm_classes):
    rows = read_metrics(rm_classes["ppo"])
    assert len(rows) == 2 and all(math.isfinite(r["loss"]) for r in rows)
    assert rows[-1]["objective/scores"] != rows[0]["objective/scores"]


def test_reward_model_kind_is_checked(rm_classes):
    with pytest.raises(CheckpointError, match="'bilinear' model, a 'scalar' model was expected"):
        load_params(rm_classes["bilinear"], "reward", "scalar", _tiny_reward().model, make_mesh())


def test_unknown_override_is_rejected(tmp_path, capsys):
    rc = main(["train", _cfg("sft"), "--config.optim.lr=1", f"--workdir={tmp_path}"])
    assert rc == 2
    assert "lr" in capsys.readouterr().err


def test_missing_init_checkpoint_names_the_path(tmp_path, capsys):
    missing = tmp_path / "no_sft_here"
    rc = main(
        [
            "train",
            _cfg("dpo"),
            f"--config.init.policy={missing}",
            f"--workdir={tmp_path / 'dpo'}",
            "--noprogress",
        ]
    )
    assert rc == 1
    err = capsys.readouterr().err
    assert "no checkpoint under" in err and "no_sft_here" in err


def test_missing_required_flags(capsys):
    assert main(["train", _cfg("sft")]) == 2
    assert "--workdir" in capsys.readouterr().err
