"""Quiet the stray reads a failed Orbax restore leaves behind.

Orbax (orbax-checkpoint 0.12.8, `orbax.checkpoint._src.asyncio_utils._run_sync_via_new_loop`)
runs a restore on an event loop of its own and closes it as soon as the restore's coroutine
raises, i.e. at the first read that fails (a corrupt or truncated step). The TensorStore reads
still in flight finish afterwards in TensorStore's threads: each posts its result to the
closed loop, and Python prints a "RuntimeError: Event loop is closed" traceback through
`sys.unraisablehook` (0 to 70 of them around rlft's one-line warning for a corrupt tiny-model
step, varying with timing); a read whose result was posted before the close but never awaited
may instead be logged by asyncio as "Future exception was never retrieved". Those reads belong
to a restore that was given up, and the caller reports that restore's own error.

`quiet_failed_restore` goes around every restore of a checkpoint step rlft makes
(rlft.models.params_io, rlft.train.checkpoint). It installs, once per process, an unraisable
hook and a filter on the `asyncio` logger that drop exactly those:

- a RuntimeError('Event loop is closed') whose outermost frame is asyncio's
  `call_soon_threadsafe` (TensorStore's callback), while a restore runs or after one failed;
- an asyncio "exception was never retrieved" record whose error names a step directory whose
  restore failed in this process.

Every other unraisable exception goes to the hook installed before, every other record
through.
"""

import contextlib
import logging
import sys
import traceback

# Step directories (with a trailing "/") whose restore failed in this process.
_abandoned_dirs: set[str] = set()
_restoring = 0  # restores under way


@contextlib.contextmanager
def quiet_failed_restore(step_dir: str):
    """Run one restore of `step_dir` (a checkpoint step's directory, or a params directory):
    installs the filters (once), counts the restore as under way, and if it raises, marks
    `step_dir` as given up before re-raising."""
    global _restoring
    _install()
    _restoring += 1
    try:
        yield
    except Exception:
        _abandoned_dirs.add(str(step_dir).rstrip("/") + "/")  # as the read errors name it
        raise
    finally:
        _restoring -= 1


def is_stray_read(unraisable) -> bool:
    """Whether an unraisable exception (`sys.unraisablehook`'s argument) is a read of a failed
    restore posting its result to Orbax's closed event loop (see the module docstring)."""
    if not (_restoring or _abandoned_dirs) or unraisable.exc_type is not RuntimeError:
        return False
    if str(unraisable.exc_value) != "Event loop is closed":
        return False
    frames = traceback.extract_tb(unraisable.exc_traceback)
    return bool(frames) and frames[0].name == "call_soon_threadsafe"


class StrayReadFilter(logging.Filter):
    """Drops asyncio's "exception was never retrieved" records of reads of a step directory
    whose restore failed (the read's error names the directory)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "exception was never retrieved" not in record.getMessage() or not record.exc_info:
            return True
        error = str(record.exc_info[1])
        return not any(d in error for d in _abandoned_dirs)


def _install() -> None:
    previous = sys.unraisablehook
    if not getattr(previous, "rlft_quiet_restore", False):

        def hook(unraisable) -> None:
            if not is_stray_read(unraisable):
                previous(unraisable)

        hook.rlft_quiet_restore = True
        sys.unraisablehook = hook
    logger = logging.getLogger("asyncio")
    if not any(isinstance(f, StrayReadFilter) for f in logger.filters):
        logger.addFilter(StrayReadFilter())
