"""`rlft train` end to end: every tiny config trains through the CLI, chained, and learns."""

import os

import pytest

from rlft.cli import main
from rlft.config import REPO_CONFIGS
from rlft.train.metrics import read_metrics


def _cfg(name: str) -> str:
    return f"--config={os.path.join(REPO_CONFIGS, name)}.py:tiny"


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
    assert rows[-1]["vf_loss"] < rows[0]["vf_loss"]  # the critic fits the returns
    assert rows[-1]["rollout/score"] > rows[0]["rollout/score"]  # the policy climbs the RM
    assert rows[-1]["rollout/kl"] > 0


def test_reward_model_is_normalised(runs):
    assert "reward_offset" in read_metrics(runs["reward"])[-1]


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
