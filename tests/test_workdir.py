"""A stage workdir is a record of one run: run_config.json says what made it, and a rerun with
another objective or config stops with one line naming the differing fields, touching nothing."""

import json
import os

import pytest

from rlft.cli import main
from rlft.models.params_io import read_meta
from rlft.train.workdir import (
    CONFIG_FILE,
    LOCK_FILE,
    code_version,
    differences,
    source_hash,
    workdir_lock,
)
from tests.helpers import REPO_CONFIGS

SFT = f"--config={os.path.join(REPO_CONFIGS, 'sft.py')}:tiny"
DPO = f"--config={os.path.join(REPO_CONFIGS, 'dpo.py')}:tiny"
SHORT = ["--config.total_steps=2", "--config.checkpoint_every=2", "--noprogress"]


@pytest.fixture(scope="module")
def sft_workdir(tmp_path_factory):
    wd = str(tmp_path_factory.mktemp("sft"))
    assert main(["train", SFT, *SHORT, f"--workdir={wd}"]) == 0
    return wd


def _snapshot(wd):
    with open(os.path.join(wd, "metrics.jsonl")) as f:
        return f.read(), read_meta(wd)[0]


def test_run_config_is_recorded(sft_workdir):
    with open(os.path.join(sft_workdir, CONFIG_FILE)) as f:
        record = json.load(f)
    assert record["resolved"]["objective"] == "sft" and record["resolved"]["total_steps"] == 2
    assert (
        record["as_given"]["optim"]["learning_rate"] == record["resolved"]["optim"]["learning_rate"]
    )
    assert record["code"] == code_version() and len(record["code"]["source_sha256"]) == 16


def test_source_hash_follows_code_not_docs(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("x = 1\n")
    (tmp_path / "b.py").write_text("y = 2\n")
    before = source_hash(str(tmp_path))
    (tmp_path / "notes.md").write_text("docs change\n")
    assert source_hash(str(tmp_path)) == before
    (tmp_path / "pkg" / "a.py").write_text("x = 3\n")
    assert source_hash(str(tmp_path)) != before
    (tmp_path / "pkg" / "a.py").write_text("x = 1\n")
    (tmp_path / "pkg" / "a.py").rename(tmp_path / "pkg" / "c.py")  # same bytes, other file
    assert source_hash(str(tmp_path)) != before


@pytest.mark.parametrize(
    "argv,named",
    [
        ([DPO, "--config.init.policy={wd}"], ["config.objective: 'sft' -> 'dpo'"]),
        ([SFT, "--config.optim.learning_rate=0.5"], ["config.optim.learning_rate:", "-> 0.5"]),
        ([SFT, "--config.seed=7"], ["config.seed:", "-> 7"]),
        ([SFT, "--config.model.num_layers=3"], ["config.model.num_layers:", "-> 3"]),
    ],
)
def test_a_rerun_with_another_config_stops_and_touches_nothing(sft_workdir, argv, named, capsys):
    before = _snapshot(sft_workdir)
    argv = [a.replace("{wd}", sft_workdir) for a in argv]
    rc = main(["train", *argv, *SHORT, f"--workdir={sft_workdir}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1, err
    for part in [*named, "Use a new --workdir", CONFIG_FILE]:
        assert part in err[0], (part, err[0])
    assert _snapshot(sft_workdir) == before


def test_more_steps_continue_the_same_run(tmp_path):
    wd = str(tmp_path)
    assert main(["train", SFT, *SHORT, f"--workdir={wd}"]) == 0
    longer = ["--config.total_steps=4", "--config.checkpoint_every=2", "--noprogress"]
    assert main(["train", SFT, *longer, f"--workdir={wd}"]) == 0
    assert read_meta(wd)[0] == 4


def test_differences_by_hand():
    saved = {"objective": "dpo", "total_steps": 10, "hparams": {"beta": 0.1}, "mesh": {"data": 1}}
    now = {"objective": "dpo", "total_steps": 20, "hparams": {"beta": 0.5}, "mesh": {"data": 2}}
    assert differences(saved, now, "dpo") == ["config.dpo.beta: 0.1 -> 0.5"]
    assert differences(saved, saved, "dpo") == []
    assert differences({"a": 1}, {"b": 2}, "x") == [
        "config.a: 1 -> '(absent)'",
        "config.b: '(absent)' -> 2",
    ]


def test_a_workdir_in_use_is_refused_with_its_holder(tmp_path, capsys):
    wd = str(tmp_path / "busy")
    with workdir_lock(wd):  # this process holds it, as a running `rlft train` would
        rc = main(["train", SFT, *SHORT, f"--workdir={wd}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1, err
    assert f"is in use by another rlft process (pid {os.getpid()}" in err[0]
    assert "kill -TERM" in err[0] and not os.path.exists(os.path.join(wd, "metrics.jsonl"))


def test_a_lock_file_left_by_a_dead_process_does_not_block(tmp_path):
    wd = tmp_path / "stale"
    wd.mkdir()
    (wd / LOCK_FILE).write_text("pid 999999 on elsewhere, since 2020-01-01: rlft train ...")
    assert main(["train", SFT, *SHORT, f"--workdir={wd}"]) == 0
    assert f"pid {os.getpid()}" in (wd / LOCK_FILE).read_text()
