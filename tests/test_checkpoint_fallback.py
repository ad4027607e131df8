"""A corrupt latest checkpoint costs only itself: the run warns, keeps it aside and resumes from
the newest step that restores, ending where an uninterrupted run ends; if none restores, one
line names the kept files."""

import os
import pathlib

import numpy as np
import pytest

from rlft.config import load_config
from rlft.errors import CheckpointError
from rlft.train import loop
from rlft.train.checkpoint import SET_ASIDE
from rlft.train.metrics import read_metrics
from tests.helpers import REPO_CONFIGS


def _config():
    c = load_config(os.path.join(REPO_CONFIGS, "sft.py"), "tiny")
    c.total_steps, c.checkpoint_every, c.log_every = 6, 2, 1
    c.data.num_examples = 128
    return c


def _corrupt(step_dir: str) -> int:
    """Flip bytes in the middle of every data file of the step's params and train items."""
    flipped = 0
    for root, _, files in os.walk(step_dir):
        if os.sep + "d" not in root:  # the OCDBT data files live under .../d/
            continue
        for name in files:
            path = os.path.join(root, name)
            data = bytearray(pathlib.Path(path).read_bytes())
            for i in range(len(data) // 3, len(data) // 3 + 16):
                data[i] ^= 0xFF
            pathlib.Path(path).write_bytes(bytes(data))
            flipped += 1
    return flipped


def _loss_by_step(workdir):
    return {r["step"]: r["loss"] for r in read_metrics(workdir)}


def test_corrupt_latest_checkpoint_falls_back_to_the_one_before(tmp_path, capsys):
    clean, broken = str(tmp_path / "clean"), str(tmp_path / "broken")
    loop.train(_config(), clean, progress=False)
    loop.train(_config(), broken, progress=False, stop_at=4)  # checkpoints 2 and 4
    latest = os.path.join(broken, "checkpoints", "4")
    assert _corrupt(latest) > 0
    capsys.readouterr()
    loop.train(_config(), broken, progress=False)
    err = capsys.readouterr().err
    assert "checkpoint step 4 does not restore" in err and SET_ASIDE in err
    assert os.path.isdir(latest + SET_ASIDE)  # kept, not deleted
    a, b = _loss_by_step(clean), _loss_by_step(broken)
    assert sorted(b) == sorted(a)
    np.testing.assert_allclose([b[s] for s in sorted(a)], [a[s] for s in sorted(a)], rtol=1e-6)


def test_no_checkpoint_restores_one_line_names_them(tmp_path):
    wd = str(tmp_path / "run")
    loop.train(_config(), wd, progress=False, stop_at=4)
    for step in ("2", "4"):
        _corrupt(os.path.join(wd, "checkpoints", step))
    with pytest.raises(CheckpointError, match=r"no checkpoint of .* restores .*unreadable"):
        loop.train(_config(), wd, progress=False)
    assert sorted(os.listdir(os.path.join(wd, "checkpoints"))) == [
        "2" + SET_ASIDE,
        "4" + SET_ASIDE,
    ]
