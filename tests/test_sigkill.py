"""SIGKILL at random moments (mid-step, mid-checkpoint write, mid-metrics write) costs nothing:
ten kills and resumes end with metrics equal, step for step, to an uninterrupted run."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import REPO, REPO_CONFIGS

STEPS = 60
ARGS = [
    sys.executable,
    "-m",
    "rlft",
    "train",
    f"--config={os.path.join(REPO_CONFIGS, 'sft.py')}:tiny",
    f"--config.total_steps={STEPS}",
    "--config.checkpoint_every=1",  # a checkpoint write in flight at almost every moment
    "--config.log_every=1",
    "--noprogress",
]


def _rows(workdir) -> list[dict]:
    try:
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
            return [json.loads(line) for line in f if line.strip()]
    except (FileNotFoundError, json.JSONDecodeError):
        return []


def _last_step(workdir) -> int:
    rows = _rows(workdir)
    return rows[-1]["step"] if rows else 0


@pytest.mark.slow  # eleven process starts
def test_ten_sigkills_resume_to_the_uninterrupted_run(tmp_path):
    clean, killed = str(tmp_path / "clean"), str(tmp_path / "killed")
    run = dict(cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    done = subprocess.run([*ARGS, f"--workdir={clean}"], timeout=600, **run)
    assert done.returncode == 0, done.stderr
    rng = random.Random(0)
    kills = 0
    while kills < 10:
        before = _last_step(killed)
        proc = subprocess.Popen([*ARGS, f"--workdir={killed}"], **run)
        deadline = time.monotonic() + 300
        while proc.poll() is None and _last_step(killed) <= before:  # wait for new progress
            assert time.monotonic() < deadline, "no progress within 300 s"
            time.sleep(0.02)
        assert proc.poll() is None, f"the run finished after {kills} kills: raise STEPS"
        time.sleep(rng.uniform(0.0, 0.25))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
    done = subprocess.run([*ARGS, f"--workdir={killed}"], timeout=600, **run)
    assert done.returncode == 0, done.stderr
    a, b = _rows(clean), _rows(killed)
    assert [r["step"] for r in b] == list(range(1, STEPS + 1))
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            assert y[k] == pytest.approx(x[k], rel=1e-6, abs=1e-7), (x["step"], k)
