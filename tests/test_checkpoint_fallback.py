"""A corrupt latest checkpoint costs only itself: the run warns, keeps it aside and resumes from
the newest step that restores, ending where an uninterrupted run ends; if none restores, one
line names the kept files. Sampling and evaluating (the read-only policy of the same loop) skip
it and leave the workdir as it was."""

import asyncio
import logging
import os
import pathlib
import shutil
import sys
import types

import numpy as np
import orbax.checkpoint as ocp
import pytest

from rlft.config import load_config
from rlft.errors import CheckpointError
from rlft.train import checkpoint, loop
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


# A failed restore's stray reads (rlft.train.checkpoint.quiet_abandoned_reads) must not reach
# Python's unraisable hook: here that would be a PytestUnraisableExceptionWarning, an error.
@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_corrupt_latest_checkpoint_falls_back_to_the_one_before(tmp_path, capsys, caplog):
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
    assert not [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    a, b = _loss_by_step(clean), _loss_by_step(broken)
    assert sorted(b) == sorted(a)
    np.testing.assert_allclose([b[s] for s in sorted(a)], [a[s] for s in sorted(a)], rtol=1e-6)


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
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


def _two_steps(workdir: str):
    """A manager with steps 1 and 2 (params {"w": [step] * 3}); step 2's params are gone."""
    manager = checkpoint.make_manager(workdir)
    for step in (1, 2):
        params = ocp.args.StandardSave({"w": np.full(3, step)})
        manager.save(step, args=ocp.args.Composite(params=params))
    manager.wait_until_finished()
    shutil.rmtree(os.path.join(workdir, "checkpoints", "2", "params"))
    return manager


def _restore_w(manager):
    def restore_step(step: int):
        args = ocp.args.Composite(params=ocp.args.StandardRestore())
        return manager.restore(step, args=args)["params"]["w"]

    return restore_step


@pytest.mark.parametrize(
    ("set_aside", "left", "note"),
    [(True, ["1", "2" + SET_ASIDE], "kept as"), (False, ["1", "2"], "left in place at")],
)
def test_newest_good_sets_aside_or_leaves_the_unreadable_step(
    tmp_path, capsys, set_aside, left, note
):
    """One fallback loop, two policies: a resuming run moves the unreadable newest step aside;
    sampling and evaluating leave it where it was. Both restore the step before."""
    manager = _two_steps(str(tmp_path))
    got = checkpoint.newest_good(manager, str(tmp_path), _restore_w(manager), set_aside=set_aside)
    np.testing.assert_array_equal(got, [1, 1, 1])
    assert sorted(os.listdir(tmp_path / "checkpoints")) == left
    err = capsys.readouterr().err
    assert "checkpoint step 2 does not restore" in err and note in err, err


def test_newest_good_read_only_none_restores_names_them_and_moves_nothing(tmp_path):
    manager = _two_steps(str(tmp_path))
    shutil.rmtree(tmp_path / "checkpoints" / "1" / "params")
    match = r"no checkpoint of .* restores \(unreadable, left in place: .*2, .*1\)"
    with pytest.raises(CheckpointError, match=match):
        checkpoint.newest_good(manager, str(tmp_path), _restore_w(manager), set_aside=False)
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1", "2"]


@pytest.mark.parametrize(("set_aside", "then"), [(True, "resume from"), (False, "use")])
def test_newest_good_multi_process_stops_at_the_first_unreadable_step(
    tmp_path, monkeypatch, set_aside, then
):
    """Processes of a pod must agree on one step, and a failed restore can leave the others in
    its collectives: on more than one process either policy raises, naming the step and the
    fix, and moves nothing."""
    manager = _two_steps(str(tmp_path))
    monkeypatch.setattr(checkpoint.jax, "process_count", lambda: 2)
    match = rf"checkpoint .*2 does not restore .*move it aside .* rerun to {then} the one before"
    with pytest.raises(CheckpointError, match=match):
        checkpoint.newest_good(manager, str(tmp_path), _restore_w(manager), set_aside=set_aside)
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1", "2"]


def _closed_loop_error() -> RuntimeError:
    """What a TensorStore read gets posting its result to an event loop already closed."""
    loop = asyncio.new_event_loop()
    loop.close()
    try:
        loop.call_soon_threadsafe(print)
    except RuntimeError as e:
        return e
    raise AssertionError("a closed event loop took a callback")


def _unraisable(e: BaseException):
    """`sys.unraisablehook`'s argument for e."""
    return types.SimpleNamespace(
        exc_type=type(e), exc_value=e, exc_traceback=e.__traceback__, err_msg=None, object=None
    )


def test_a_failed_restores_stray_reads_are_dropped_and_nothing_else(tmp_path, monkeypatch, caplog):
    """Orbax closes its event loop when a restore fails; the reads still in flight then print
    "Event loop is closed" tracebacks or log "Future exception was never retrieved". After a
    failed restore those two are dropped, the log records only for the step given up; other
    unraisable exceptions and records go through, and before any failure everything does."""
    seen = []
    logger = logging.getLogger("asyncio")
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    monkeypatch.setattr(logger, "filters", [])
    monkeypatch.setattr(checkpoint, "_abandoned_dirs", set())
    checkpoint.quiet_abandoned_reads()
    checkpoint.quiet_abandoned_reads()  # installed once
    hook = sys.unraisablehook
    assert hook is not seen.append and len(logger.filters) == 1
    closed = _unraisable(_closed_loop_error())
    hook(closed)
    assert seen == [closed]  # no restore has failed: passed on

    manager = _two_steps(str(tmp_path))  # step 2 does not restore
    checkpoint.newest_good(manager, str(tmp_path), _restore_w(manager), set_aside=False)
    step_2 = os.path.join(checkpoint.checkpoint_dir(str(tmp_path)), "2")
    assert checkpoint._abandoned_dirs == {step_2 + "/"}
    elsewhere = _unraisable(RuntimeError("Event loop is closed"))  # not from a closed loop
    other = _unraisable(ValueError("some other object's finaliser"))
    for u in (closed, elsewhere, other):
        hook(u)
    assert seen == [closed, elsewhere, other]

    def read_error(step: str):
        return ValueError(
            f'DATA_LOSS: Error reading in OCDBT database at local file "{step}/params/"'
        )

    caplog.clear()
    for step in (step_2, step_2 + "0", os.path.dirname(step_2) + "/1"):
        e = read_error(step)
        logger.error("Future exception was never retrieved", exc_info=(ValueError, e, None))
    logger.error(
        "Task was destroyed but it is pending!", exc_info=(ValueError, read_error(step_2), None)
    )
    assert [r.getMessage() for r in caplog.records] == [
        "Future exception was never retrieved",  # steps 20 and 1: not given up
        "Future exception was never retrieved",
        "Task was destroyed but it is pending!",
    ]
