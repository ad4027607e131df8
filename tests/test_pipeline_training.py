"""The pipeline's training driver: a frontier unit resumes mark by mark, and a signal stops the
run instead of handing a half-trained unit downstream."""

import os

import pytest

from rlft.config import load_config
from rlft.data.synthetic import SyntheticConfig, synthetic_bundle
from rlft.errors import RunStopped
from rlft.experiments.pipeline import training
from rlft.models.params_io import read_meta
from tests.helpers import REPO_CONFIGS


def _tiny_sft(total_steps: int = 4) -> tuple[dict, object]:

    c = load_config(os.path.join(REPO_CONFIGS, "sft.py"), "tiny").to_dict()
    c.update(total_steps=total_steps, checkpoint_every=total_steps, log_every=1)
    c.pop("data")
    return c, synthetic_bundle(SyntheticConfig(num_examples=64))


def test_frontier_resumes_point_by_point_and_refuses_a_passed_mark(tmp_path):
    """A unit interrupted between its marks resumes to the same points as a fresh run; a
    checkpoint past an unevaluated mark (which only an older run could leave) is refused."""

    config, bundle = _tiny_sft()

    def evaluate(workdir, step):  # what the policy under evaluation is: its checkpoint's step
        return {"checkpoint": read_meta(workdir)[0]}

    fresh = training.train_frontier(config, str(tmp_path / "a"), bundle, 2, evaluate)
    assert [(p["step"], p["checkpoint"]) for p in fresh] == [(2, 2), (4, 4)]

    calls = []

    def crash_at_the_second_point(workdir, step):
        calls.append(step)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed after training to step 4, before evaluating it
        return evaluate(workdir, step)

    with pytest.raises(KeyboardInterrupt):
        training.train_frontier(config, str(tmp_path / "b"), bundle, 2, crash_at_the_second_point)
    assert training.train_frontier(config, str(tmp_path / "b"), bundle, 2, evaluate) == fresh

    training.train_to(config, str(tmp_path / "c"), bundle)  # step 4 saved, mark 2 never evaluated
    with pytest.raises(RuntimeError, match="latest checkpoint is step 4, expected 2"):
        training.train_frontier(config, str(tmp_path / "c"), bundle, 2, evaluate)


def test_a_signal_stops_the_pipeline_instead_of_using_a_half_trained_unit(monkeypatch, tmp_path):

    config, bundle = _tiny_sft()
    monkeypatch.setattr(training, "train", lambda *a, **k: {"stopped_by": "SIGTERM", "step": 1})
    with pytest.raises(RunStopped, match="stopped by SIGTERM at step 1"):
        training.train_to(config, str(tmp_path), bundle)


def test_units_show_their_step_bar_only_when_the_run_shows_progress(monkeypatch, tmp_path):
    seen = []

    def fake_train(config, workdir, progress, data, stop_at):
        seen.append(progress)
        return {"stopped_by": "SIGTERM", "step": 0}  # stop right away: the bar is what we check

    monkeypatch.setattr(training, "train", fake_train)
    config, bundle = _tiny_sft()
    for shown in (False, True):
        token = training.STEP_BARS.set(shown)
        with pytest.raises(RunStopped):
            training.train_to(config, str(tmp_path), bundle)
        training.STEP_BARS.reset(token)
    assert seen == [False, True]
