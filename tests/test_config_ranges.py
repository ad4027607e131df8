"""Every out-of-range hyperparameter stops `rlft train` with one line naming the field and its
range (issue 10), through the path the CLI takes: the config file, a --config.x=y override,
then parse_config inside train()."""

import os
import re

import pytest

from rlft.cli import main
from rlft.config import load_config, parse_config
from rlft.errors import ConfigError, check_ranges
from tests.helpers import REPO_CONFIGS

# (config file, override, what the message must say)
BAD = [
    ("dpo", "dpo.beta=-1.0", r"config\.dpo\.beta = -1\.0: must be > 0 \(the KL coefficient"),
    ("dpo", "dpo.beta=0", r"config\.dpo\.beta = 0\.0: must be > 0"),
    ("dpo", "dpo.temperature=0", r"config\.dpo\.temperature = 0\.0: must be > 0"),
    ("dpo", "dpo.label_smoothing=0.5", r"config\.dpo\.label_smoothing = 0\.5: must be in \[0, 0"),
    ("dpo", "dpo.label_smoothing=-0.1", r"config\.dpo\.label_smoothing = -0\.1: must be in"),
    ("dpo", "dpo.loss_type=hinge", r"config\.dpo\.loss_type='hinge'.*'sigmoid', 'ipo'"),
    ("ppo", "ppo.clip_eps=0", r"config\.ppo\.clip_eps = 0\.0: must be > 0"),
    ("ppo", "ppo.vf_clip=-0.2", r"config\.ppo\.vf_clip = -0\.2: must be > 0"),
    ("ppo", "ppo.vf_coef=-1", r"config\.ppo\.vf_coef = -1\.0: must be >= 0"),
    ("ppo", "ppo.ent_coef=-0.01", r"config\.ppo\.ent_coef = -0\.01: must be >= 0"),
    ("ppo", "ppo.temperature=0", r"config\.ppo\.temperature = 0\.0: must be > 0"),
    ("ppo", "rollout.top_p=0", r"config\.rollout\.top_p = 0\.0: must be in \(0, 1\]"),
    ("ppo", "rollout.top_p=1.5", r"config\.rollout\.top_p = 1\.5: must be in \(0, 1\]"),
    ("ppo", "rollout.gamma=1.5", r"config\.rollout\.gamma = 1\.5: must be in \[0, 1\]"),
    ("ppo", "rollout.lam=-0.1", r"config\.rollout\.lam = -0\.1: must be in \[0, 1\]"),
    ("ppo", "rollout.kl_coef=-0.05", r"config\.rollout\.kl_coef = -0\.05: must be >= 0"),
    ("ppo", "rollout.no_eos_penalty=-inf", r"config\.rollout\.no_eos_penalty = -inf: must be a"),
    ("ppo", "rollout.response_len=0", r"config\.rollout\.response_len = 0: must be >= 1"),
    ("ppo", "rollout.ppo_epochs=0", r"config\.rollout\.ppo_epochs = 0: must be >= 1"),
    ("ppo", "rollout.num_minibatches=0", r"config\.rollout\.num_minibatches = 0: must be >= 1"),
    ("ppo", "rollout.kl_estimator=k2", r"config\.rollout\.kl_estimator='k2'.*'k1', 'k3'"),
    ("sft", "sft.temperature=-1", r"config\.sft\.temperature = -1\.0: must be > 0"),
    ("reward", "reward.model_class=max", r"config\.reward\.model_class='max'"),
    ("sft", "optim.learning_rate=-0.001", r"config\.optim\.learning_rate = -0\.001: must be >= 0"),
    ("sft", "optim.learning_rate=nan", r"config\.optim\.learning_rate = nan: must be a finite"),
    ("sft", "optim.warmup_steps=-1", r"config\.optim\.warmup_steps = -1: must be >= 0"),
    ("sft", "optim.end_lr_frac=1.5", r"config\.optim\.end_lr_frac = 1\.5: must be in \[0, 1\]"),
    ("sft", "optim.b1=1.0", r"config\.optim\.b1 = 1\.0: must be in \[0, 1\)"),
    ("sft", "optim.b2=-0.1", r"config\.optim\.b2 = -0\.1: must be in \[0, 1\)"),
    ("sft", "optim.eps=0", r"config\.optim\.eps = 0\.0: must be > 0"),
    ("sft", "optim.weight_decay=-0.1", r"config\.optim\.weight_decay = -0\.1: must be >= 0"),
    ("sft", "optim.max_grad_norm=-1", r"config\.optim\.max_grad_norm = -1\.0: must be >= 0"),
    ("sft", "optim.accum_steps=0", r"config\.optim\.accum_steps = 0: must be >= 1"),
    ("sft", "optim.accum_steps=5", r"config\.batch_size=32 is not divisible by .*accum_steps=5"),
    ("sft", "optim.schedule=step", r"config\.optim\.schedule='step'.*'constant'"),
    ("sft", "total_steps=0", r"config\.total_steps = 0: must be >= 1"),
    ("sft", "batch_size=-4", r"config\.batch_size = -4: must be >= 1"),
    ("sft", "checkpoint_every=0", r"config\.checkpoint_every = 0: must be >= 1"),
    ("sft", "log_every=0", r"config\.log_every = 0: must be >= 1"),
    ("sft", "mesh.data=0", r"config\.mesh\.data = 0: must be -1 .* or a positive integer"),
    ("sft", "mesh.fsdp=-2", r"config\.mesh\.fsdp = -2: must be -1"),
]


def _config(name: str) -> str:
    return f"--config={os.path.join(REPO_CONFIGS, name)}.py:tiny"


@pytest.mark.parametrize("name,override,says", BAD, ids=[o for _, o, _ in BAD])
def test_bad_value_is_one_line_naming_field_and_range(name, override, says, tmp_path, capsys):
    workdir = tmp_path / "run"
    rc = main(["train", _config(name), f"--config.{override}", f"--workdir={workdir}"])
    err = capsys.readouterr().err
    assert rc == 1, err
    assert err.count("\n") == 1 and err.startswith("rlft train: error: config."), err
    assert re.search(says, err), err
    assert not workdir.exists()  # rejected before anything is written


@pytest.mark.parametrize("name", ["sft", "reward", "dpo", "ppo"])
def test_shipped_configs_are_in_range(name):
    for size in ("", "tiny"):
        parse_config(load_config(os.path.join(REPO_CONFIGS, f"{name}.py"), size))


def test_edges_of_each_kind_of_range():
    """Closed ends admit their bound, open ends do not; ints reject floats; bools are not
    numbers."""
    rules = {
        "open": ("> 0", "w"),
        "closed": (">= 0", "w"),
        "interval": ("[0, 0.5)", "w"),
        "count": ("int >= 1", "w"),
        "any": ("finite", "w"),
    }
    good = {"open": 1e-9, "closed": 0, "interval": 0.0, "count": 1, "any": -3.0}
    check_ranges("s", good, rules)
    bad = [
        ("open", 0.0, "must be > 0"),
        ("closed", -1e-9, "must be >= 0"),
        ("interval", 0.5, r"must be in \[0, 0\.5\)"),
        ("count", 2.0, "must be an integer >= 1"),
        ("count", True, "must be an integer >= 1"),
        ("open", "0.1", "must be a finite number > 0"),
        ("open", float("inf"), "must be a finite number > 0"),
        ("any", float("nan"), r"must be a finite number \(w\)$"),
    ]
    for field, value, says in bad:
        with pytest.raises(ConfigError, match=rf"^s\.{field} = .*: {says}"):
            check_ranges("s", {**good, field: value}, rules)
