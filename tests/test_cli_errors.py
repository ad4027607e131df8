"""Bad command lines and configs through the real entry point: each gets one line on stderr that
names the file or field and the fix, with exit status 2 (usage) or 1 (the run failed); help,
--version and `python -m rlft` answer on stdout with status 0."""

import os
import subprocess
import sys

import pytest

from rlft.cli import main
from rlft.config import load_config, parse_config
from rlft.models.params_io import load_params, read_meta
from rlft.parallel import make_mesh
from tests.helpers import REPO, REPO_CONFIGS

SFT = f"--config={os.path.join(REPO_CONFIGS, 'sft.py')}:tiny"
DPO = f"--config={os.path.join(REPO_CONFIGS, 'dpo.py')}:tiny"
PPO = f"--config={os.path.join(REPO_CONFIGS, 'ppo.py')}:tiny"
SHORT = ["--config.total_steps=2", "--config.checkpoint_every=2", "--noprogress"]
TLDR = os.path.join(REPO_CONFIGS, "tldr_pythia.py")

# (argv, exit status, substrings of the one stderr line); {wd} is a fresh workdir
CASES = {
    "missing config file": (
        ["train", "--config=configs/nosuch.py", "--workdir={wd}"],
        2,
        ["no config file configs/nosuch.py", "run from the repository root"],
    ),
    "unknown variant": (
        ["train", DPO.replace(":tiny", ":huge"), "--workdir={wd}"],
        2,
        ["dpo.py: unknown size 'huge'", "'tiny'"],
    ),
    "typo in a field": (
        ["train", DPO, "--config.dpo.bta=0.1", "--workdir={wd}"],
        2,
        ["--config.dpo.bta=0.1", "no field 'bta'", "did you mean config.dpo.beta?"],
    ),
    "unknown section": (
        ["train", SFT, "--config.optimizer.lr=1", "--workdir={wd}"],
        2,
        ["config has no field 'optimizer'", "did you mean config.optim?"],
    ),
    "unknown model field": (
        ["train", SFT, "--config.model.nosuch=1", "--workdir={wd}"],
        2,
        ["config.model has no field 'nosuch'", "ModelConfig field"],
    ),
    "value of the wrong type": (
        ["train", DPO, "--config.dpo.beta=abc", "--workdir={wd}"],
        2,
        ["--config.dpo.beta=abc", "could not convert", "--help"],
    ),
    "missing workdir": (["train", SFT], 2, ["--workdir=DIR", "required"]),
    "two workdirs": (
        ["train", SFT, "--workdir={wd}", "--workdir={wd}2"],
        2,
        ["--workdir=DIR", "each required once"],
    ),
    "misspelt flag": (["train", SFT, "--wrkdir=x"], 2, ["unknown flag '--wrkdir=x'", "--help"]),
    "unknown command": (["tarin"], 2, ["unknown command 'tarin'", "did you mean 'train'?"]),
    "stage run through train": (
        ["train", f"--config={TLDR}:smoke:online_dpo", "--workdir={wd}"],
        2,
        ["online DPO samples its pairs between stages", "rlft reproduce"],
    ),
    "missing init checkpoint": (
        ["train", DPO, "--config.init.policy={wd}/no_sft", "--workdir={wd}", "--noprogress"],
        1,
        ["no checkpoint under", "no_sft", "rlft train --config=configs/sft.py:tiny"],
    ),
    "unknown task in reproduce": (
        [
            "reproduce",
            f"--config={os.path.join(REPO_CONFIGS, 'reproduce.py')}:quick",
            "--config.tasks=nosuch",
            "--workdir={wd}",
        ],
        1,
        ["config.tasks: unknown task 'nosuch'", "config.task_knobs"],
    ),
    "a label budget of zero": (
        [
            "reproduce",
            f"--config={os.path.join(REPO_CONFIGS, 'reproduce.py')}:quick",
            "--config.label_budgets=(0,)",
            "--workdir={wd}",
        ],
        1,
        ["config.label_budgets=(0,)", "integer >= 2"],
    ),
    "convert without --out": (
        ["convert", "--from-hf", "{wd}"],
        2,
        ["required: --out", "rlft convert --help"],
    ),
    "convert of a directory that is not a checkpoint": (
        ["convert", "--from-hf", "{wd}", "--out", "{wd}/out"],
        1,
        ["is not an HF checkpoint directory", "config.json"],
    ),
    "workdir under a file": (
        ["train", SFT, "--workdir={wd}/a_file/run"],
        1,
        ["Not a directory", "a_file/run"],
    ),
    "vocabulary larger than the model's": (
        ["train", SFT, "--config.model.vocab_size=32", "--workdir={wd}"],
        1,
        ["config.data.vocab_size=64 exceeds config.model.vocab_size=32"],
    ),
    "rows longer than max_len": (
        ["train", SFT, "--config.data.max_items=200", "--workdir={wd}"],
        1,
        ["exceed config.model.max_len = 256", "config.data"],
    ),
    "empty dataset": (
        ["train", SFT, "--config.data.num_examples=0", "--workdir={wd}"],
        1,
        ["`sft` data has no rows", "config.data", "num_examples"],
    ),
    "batch that accumulation cannot split": (
        ["train", SFT, "--config.batch_size=30", "--config.optim.accum_steps=4", "--workdir={wd}"],
        1,
        ["config.batch_size", "accum_steps"],
    ),
    "negative beta": (
        ["train", DPO, "--config.dpo.beta=-1", "--workdir={wd}"],
        1,
        ["config.dpo.beta", "must be > 0"],
    ),
    # Against a trained SFT workdir ({sft}), which must still restore afterwards:
    "policy workdir as a reward model": (
        [
            "train",
            PPO,
            "--config.init.policy={sft}",
            "--config.init.reward={sft}",
            "--workdir={wd}",
        ],
        1,
        ["no 'reward' model", "reward stage"],
    ),
    "init of another model size": (
        [
            "train",
            DPO,
            "--config.init.policy={sft}",
            "--config.model.num_layers=3",
            "--workdir={wd}",
        ],
        1,
        ["model.num_layers: checkpoint 2 vs config 3", "make config.model match"],
    ),
    "another objective on a trained workdir": (
        ["train", DPO, "--config.init.policy={sft}", "--workdir={sft}"],
        1,
        ["config.objective: 'sft' -> 'dpo'", "Use a new --workdir"],
    ),
    "another seed on a trained workdir": (
        ["train", SFT, *SHORT, "--config.seed=5", "--workdir={sft}"],
        1,
        ["config.seed:", "-> 5"],
    ),
}


@pytest.fixture(scope="module")
def sft(tmp_path_factory):
    """A trained tiny SFT workdir (2 steps): some cases point at it."""
    wd = str(tmp_path_factory.mktemp("sft"))
    assert main(["train", SFT, *SHORT, f"--workdir={wd}"]) == 0
    return wd


@pytest.mark.parametrize("case", CASES)
def test_bad_input_gets_one_line(case, tmp_path, capsys, request):
    argv, status, parts = CASES[case]
    wd = str(tmp_path / "w")
    os.makedirs(wd)
    (tmp_path / "w" / "a_file").write_text("")
    trained = request.getfixturevalue("sft") if any("{sft}" in a for a in argv) else None
    before = _record(trained) if trained else None
    argv = [a.replace("{wd}", wd).replace("{sft}", str(trained)) for a in argv]
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse (rlft convert) exits itself
        rc = e.code
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert rc == status, out.err
    assert len(lines) == 1, out.err
    for part in parts:
        assert part in lines[0], (part, lines[0])
    if trained:  # the trained workdir is untouched and its last checkpoint restores
        assert _record(trained) == before
        model = parse_config(load_config(SFT.split("=")[1].split(":")[0], "tiny")).model
        params = load_params(trained, "policy", "lm", model, make_mesh())
        assert params["backbone"]["embed_in"]["embedding"].shape[0] == model.vocab_size


def _record(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return f.read(), read_meta(workdir)[0]


def test_debug_shows_the_traceback(monkeypatch):
    monkeypatch.setenv("RLFT_DEBUG", "1")
    with pytest.raises(Exception, match="unknown size 'huge'"):
        main(["train", DPO.replace(":tiny", ":huge"), "--workdir=x"])


@pytest.mark.parametrize(
    "argv,expected",
    [
        (["train", "--help"], ["--config.FIELD=VALUE", "--config.optim.learning_rate=1e-4"]),
        (["train", "-h", DPO], ["exit status", "variants of", "size: (none) | tiny"]),
        (
            ["reproduce", "--help", f"--config={os.path.join(REPO_CONFIGS, 'reproduce.py')}"],
            ["default | paper | quick | map"],
        ),
        (
            ["train", "--help", f"--config={TLDR}"],
            ["size: 1.4b | 2.8b | 410m | smoke", "reproduce"],
        ),
        ([], ["commands:", "reproduce", "convert"]),
    ],
)
def test_help_answers_on_stdout(argv, expected, capsys):
    assert main(argv) == 0
    out = capsys.readouterr().out
    for part in expected:
        assert part in out, (part, out)


def test_python_dash_m_and_version():
    out = subprocess.run(
        [sys.executable, "-m", "rlft", "--version"], capture_output=True, text=True, cwd=REPO
    )
    assert out.returncode == 0 and out.stdout.startswith("rlft 0."), out.stderr


def test_a_preset_model_field_can_be_overridden():
    from rlft.cli import _config_flags  # noqa: PLC0415
    from rlft.config import parse_config  # noqa: PLC0415

    config, _, _ = _config_flags("train", [SFT, "--config.model.num_layers=3", "--workdir=x"])
    assert parse_config(config).model.num_layers == 3
