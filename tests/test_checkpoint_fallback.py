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
import tensorstore as ts

from rlft.config import load_config, parse_config
from rlft.errors import CheckpointError
from rlft.models import quiet_restore
from rlft.models.params_io import checkpoint_dir, load_params
from rlft.parallel import make_mesh
from rlft.train import checkpoint, loop
from rlft.train.checkpoint import SET_ASIDE
from rlft.train.metrics import read_metrics
from tests.helpers import REPO_CONFIGS


@pytest.fixture(autouse=True)
def no_restore_failed_yet(monkeypatch):
    """Each test starts as a process in which no restore has failed (rlft.models.quiet_restore
    remembers the step directories given up)."""
    monkeypatch.setattr(quiet_restore, "_abandoned_dirs", set())
    monkeypatch.setattr(quiet_restore, "_restoring", 0)


def _config():
    c = load_config(os.path.join(REPO_CONFIGS, "sft.py"), "tiny")
    c.total_steps, c.checkpoint_every, c.log_every = 6, 2, 1
    c.data.num_examples = 128
    return c


def _corrupt(step_dir: str) -> int:
    """Flip bytes in the middle of every data file of the step's params and train items."""
    flipped = 0
    for root, _, files in os.walk(step_dir):
        if "d" not in os.path.relpath(root, step_dir).split(os.sep):  # OCDBT data: .../d/
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
    # A later stage loading this policy fails on Orbax's error, its stray reads quiet too.
    with pytest.raises(Exception, match="DATA_LOSS"):
        load_params(wd, "policy", "lm", parse_config(_config()).model, make_mesh(-1, 1), step=4)
    assert quiet_restore._abandoned_dirs == {os.path.join(checkpoint_dir(wd), "4") + "/"}
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


def _stray_read() -> ts.Promise:
    """A TensorStore read awaited on an event loop that is then closed: what a failed Orbax
    restore leaves in flight. Resolving the promise posts to the closed loop, and Python
    reports "Event loop is closed" through sys.unraisablehook, on the resolving thread."""
    promise, future = ts.Promise.new()
    loop = asyncio.new_event_loop()

    async def wait():
        await future

    async def start():
        task = loop.create_task(wait())
        await asyncio.sleep(0)  # the task now awaits the read
        return task

    loop.run_until_complete(start())
    loop.close()
    return promise


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_a_failed_restores_stray_reads_print_nothing(tmp_path):
    """Reads of a restore that fails finish during it and after it was given up: neither
    reaches the unraisable hook (here it would be a PytestUnraisableExceptionWarning, an
    error). Red without the hook or without the count of restores under way."""
    manager = _two_steps(str(tmp_path))  # step 2 does not restore
    restore_w, after = _restore_w(manager), []

    def restore_step(step: int):
        if step == 2:
            _stray_read().set_exception(ValueError("finished during the failing restore"))
            after.append(_stray_read())
        return restore_w(step)

    got = checkpoint.newest_good(manager, str(tmp_path), restore_step, set_aside=False)
    np.testing.assert_array_equal(got, [1, 1, 1])
    after[0].set_exception(ValueError("finished after it was given up"))


def _closed_loop_error() -> RuntimeError:
    """What a read gets posting its result to an event loop already closed, as raised from a
    thread's callback (asyncio's call_soon_threadsafe is its outermost frame)."""
    loop = asyncio.new_event_loop()
    loop.close()
    try:
        loop.call_soon_threadsafe(print)
    except RuntimeError as e:
        return e.with_traceback(e.__traceback__.tb_next)  # drop this function's frame
    raise AssertionError("a closed event loop took a callback")


def _unraisable(e: BaseException):
    """`sys.unraisablehook`'s argument for e."""
    return types.SimpleNamespace(
        exc_type=type(e), exc_value=e, exc_traceback=e.__traceback__, err_msg=None, object=None
    )


def test_the_filters_drop_only_a_failed_restores_reads(tmp_path, monkeypatch, caplog):
    """Before any restore fails everything goes through; after one, closed-loop errors raised
    in call_soon_threadsafe are dropped, and asyncio's "never retrieved" records only for the
    step given up (not step 20, not step 1); anything else goes through."""
    seen = []
    logger = logging.getLogger("asyncio")
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    monkeypatch.setattr(logger, "filters", [])
    with quiet_restore.quiet_failed_restore("unused"):
        pass
    with quiet_restore.quiet_failed_restore("unused"):  # installed once
        pass
    hook = sys.unraisablehook
    assert hook is not seen.append and len(logger.filters) == 1
    closed = _unraisable(_closed_loop_error())
    hook(closed)
    assert seen == [closed]  # no restore has failed: passed on

    step_2 = os.path.join(checkpoint_dir(str(tmp_path)), "2")
    with pytest.raises(ValueError), quiet_restore.quiet_failed_restore(step_2):
        raise ValueError("the restore's own error")
    assert quiet_restore._abandoned_dirs == {step_2 + "/"}
    elsewhere = _unraisable(RuntimeError("Event loop is closed"))  # no callback frame
    other = _unraisable(ValueError("some other object's finaliser"))
    for u in (closed, elsewhere, other):
        hook(u)
    assert seen == [closed, elsewhere, other]

    def read_error(step: str):
        return ValueError(f'DATA_LOSS: Error reading in OCDBT database at local file "{step}/d/"')

    caplog.clear()
    for step in (step_2, step_2 + "0", os.path.dirname(step_2) + "/1"):
        e = read_error(step)
        logger.error("Future exception was never retrieved", exc_info=(ValueError, e, None))
    e = read_error(step_2)
    logger.error("Task was destroyed but it is pending!", exc_info=(ValueError, e, None))
    assert [r.getMessage() for r in caplog.records] == [
        "Future exception was never retrieved",  # steps 20 and 1: not given up
        "Future exception was never retrieved",
        "Task was destroyed but it is pending!",
    ]
