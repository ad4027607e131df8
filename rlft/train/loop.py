"""The driver: config -> sharded state -> jitted step in a loop, with checkpoints and resume.

Running the same command on an existing workdir resumes from its latest checkpoint. SIGTERM
(a preempted TPU VM) or Ctrl-C saves a checkpoint and returns cleanly. A non-finite loss stops
the run without saving, so the last checkpoint on disk is the last good one. Metrics are read
from the device one step late, and every metrics.jsonl row is the row a synchronous loop writes.
"""

import contextlib
import functools
import math
import signal
import threading

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from rlft.config import RunConfig, parse_config, resolved
from rlft.data.bundle import DataBundle
from rlft.data.sources import bundle_from_config
from rlft.errors import CheckpointError, ConfigError, NonFiniteLossError
from rlft.objectives import check_batch
from rlft.parallel import batch_sharding, make_mesh
from rlft.train import checkpoint
from rlft.train.metrics import MetricsWriter, trl_names
from rlft.train.stages import build_stage
from rlft.train.state import init_state, make_optimizer
from rlft.train.step import StepSpec, train_step
from rlft.train.workdir import check_same_run, workdir_lock, write_config


@contextlib.contextmanager
def stop_on_signal(signals=(signal.SIGTERM, signal.SIGINT)):
    """Yields a dict whose 'signal' is set when one of `signals` arrives."""
    flag: dict = {"signal": None}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, _frame):
        if flag["signal"]:  # a second signal: stop now, without the checkpoint
            raise SystemExit(128 + signum)
        flag["signal"] = signal.Signals(signum).name

    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _stop_requested(flag: dict) -> str | None:
    """The signal name if any process got one. Hosts of a pod see a preemption at slightly
    different steps; agreeing every step makes all of them checkpoint at the same step."""
    if jax.process_count() == 1:
        return flag["signal"]
    anyone = int(multihost_utils.process_allgather(np.int32(bool(flag["signal"]))).max())
    return (flag["signal"] or "SIGTERM") if anyone else None


def _abstract(state):
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state
    )


def _meta(run: RunConfig, stage, loop_step: int) -> dict:
    return {
        "objective": run.objective,
        "loop_step": loop_step,
        "models": {
            r: {"kind": k, "config": c.to_dict(), **stage.role_meta.get(r, {})}
            for r, (k, c) in stage.roles.items()
        },
        "data_position": {"step": loop_step, "batch_size": run.batch_size, "seed": run.seed},
        "config": run.raw,
        "resolved": resolved(run),
    }


def _check_finite(metrics: dict, done: int, manager, workdir: str) -> None:
    bad = [k for k in ("loss", "grad_norm", "param_norm") if not math.isfinite(float(metrics[k]))]
    if bad:
        saved = manager.latest_step()
        manager.wait_until_finished()
        raise NonFiniteLossError(
            f"{', '.join(bad)} became non-finite at step {done} of {workdir}; stopped "
            f"without saving. Last good checkpoint: "
            f"{'step ' + str(saved) if saved is not None else 'none'}. Lower "
            f"config.optim.learning_rate or check the data, then rerun to resume."
        )


def train(
    config,
    workdir: str,
    progress: bool = True,
    data: DataBundle | None = None,
    stop_at: int | None = None,
) -> dict:
    """Train one stage; returns the last logged metrics (and 'stopped_by' if interrupted).

    `data` supplies the arrays (a task, TL;DR, a pipeline); without it the config's `data`
    section describes them (rlft.data.sources: the synthetic task or TL;DR).
    `config.total_steps` is the length of the run, and of its learning-rate schedule;
    `stop_at` (default: total_steps) is the step where this call stops, after saving a
    checkpoint there, so a run trained in segments (evaluated between them) resumes on the same
    schedule as one uninterrupted run. Raises ValueError unless 1 <= stop_at <= total_steps,
    ConfigError (also when `workdir` holds a run of another config: rlft.train.workdir),
    WorkdirLocked (another live process trains in `workdir`),
    CheckpointError, BatchError (a batch lacking a key its objective reads) and
    NonFiniteLossError (nothing saved after the last finite step).
    """
    run = parse_config(config)
    stop = run.total_steps if stop_at is None else stop_at
    if not 1 <= stop <= run.total_steps:
        raise ValueError(f"stop_at={stop_at} must lie in [1, config.total_steps={run.total_steps}]")
    with workdir_lock(workdir):  # one process per workdir
        check_same_run(run, workdir)  # before anything is read or written
        if jax.process_index() == 0:
            write_config(run, workdir)
        return _train(run, workdir, progress, data, stop)


def check_data_fits(run: RunConfig, data: DataBundle) -> None:
    """Raise ConfigError if the data's token ids or row lengths (prompt + PPO response) do not
    fit config.model (vocab_size, max_len)."""
    if data.vocab_size > run.model.vocab_size:
        raise ConfigError(
            f"the data's vocabulary has {data.vocab_size} ids but config.model.vocab_size = "
            f"{run.model.vocab_size}; use a model whose embedding fits the tokenizer"
        )
    parts = (data.sft, data.pairs, data.prompts, data.reference)
    lengths = [a.shape[-1] for p in parts if p for k, a in p.items() if k.endswith("tokens")]
    if run.rollout is not None and data.prompts:
        lengths.append(data.prompts["prompt_tokens"].shape[-1] + run.rollout.response_len)
    if lengths and max(lengths) > run.model.max_len:
        raise ConfigError(
            f"rows of {max(lengths)} tokens (prompt + response) exceed config.model.max_len = "
            f"{run.model.max_len}; shorten the data (config.data) or raise config.model.max_len"
        )


def jit_train_step(spec: StepSpec, shardings, mesh):
    """`train_step` for `spec`, jitted with the state's `shardings` (donated) and the batch's on
    `mesh`: one jitted function per distinct (spec, shardings, mesh) in a process, so
    `train()` calls that differ only in seed, data or stopping step (a reproduce run's seeds,
    and each frontier segment, which is one `train()` call) trace and lower the step once.
    Measured on `rlft reproduce --config=configs/reproduce.py:quick`: 16 traces of 0.75 s each
    before (docs/benchmarks/peers-cpu.md).
    """
    leaves, treedef = jax.tree.flatten(shardings)
    return _jit_train_step(train_step, spec, treedef, tuple(leaves), mesh)


@functools.lru_cache(maxsize=32)
def _jit_train_step(step, spec: StepSpec, treedef, leaves: tuple, mesh):
    # `step` is train_step, a key like the rest (a test may swap the module's train_step)
    shardings = jax.tree.unflatten(treedef, leaves)
    return jax.jit(
        functools.partial(step, spec=spec),
        in_shardings=(shardings, batch_sharding(mesh)),
        out_shardings=(shardings, NamedSharding(mesh, PartitionSpec())),
        donate_argnums=0,
    )


def _train(run: RunConfig, workdir: str, progress: bool, data: DataBundle | None, stop: int):
    if data is None:
        if run.data is None:
            raise ConfigError("config.data is missing and no data was passed to train()")
        data = bundle_from_config(run.data, progress=progress)
    check_data_fits(run, data)
    mesh = make_mesh(run.mesh.data, run.mesh.fsdp)
    # Everything traced for this run (train step, rollout, reference and reward passes) sees
    # the mesh, so rlft.parallel.constrain_batch keeps each device to its own rows.
    with jax.set_mesh(mesh):
        return _train_on(run, workdir, progress, data, stop, mesh)


def _train_on(run: RunConfig, workdir: str, progress: bool, data: DataBundle, stop: int, mesh):
    stage = build_stage(run, mesh, workdir, data)
    tx, schedule = make_optimizer(run.optim, run.total_steps * stage.updates_per_step)
    spec = StepSpec(run.objective, stage.models, run.hparams, tx, schedule, run.optim.accum_steps)
    state, shardings = init_state(stage.roles, tx, run.seed, mesh)
    manager = checkpoint.make_manager(workdir)
    start = 0
    try:
        restored = checkpoint.restore_newest_good(manager, _abstract(state), workdir)
    except CheckpointError:
        manager.close()
        raise
    if restored is not None:
        state, meta = restored
        start = int(meta["loop_step"])
        manager.reload()  # steps set aside as unreadable are no longer the manager's
    else:
        state = stage.load_init(state)
    jitted_step = jit_train_step(spec, shardings, mesh)

    def step_fn(state, batch):
        check_batch(run.objective, batch)  # a named error, not a KeyError inside the trace
        return jitted_step(state, batch)

    is_main = jax.process_index() == 0
    names = trl_names(run.objective)
    writer = MetricsWriter(workdir, resume_step=start, names=names) if is_main else None
    last: dict = {}
    bar = tqdm(
        range(start, stop),
        initial=start,
        total=run.total_steps,
        desc=f"{run.objective} {workdir}",
        disable=not (progress and is_main),
        dynamic_ncols=True,
        leave=None,  # kept at the top level; a bar nested under `rlft reproduce`'s goes away
    )

    def read(done: int, device_metrics) -> dict:
        """Fetch step `done`'s metrics (waits for that step only) and stop if not finite."""
        metrics = jax.device_get(device_metrics)
        _check_finite(metrics, done, manager, workdir)
        return metrics

    def log(done: int, metrics: dict) -> None:
        nonlocal last
        if writer and (done % run.log_every == 0 or done == run.total_steps):
            last = writer.write(done, metrics)
            bar.set_postfix(loss=f"{last['loss']:.4f}")

    # Metrics are read one step late (nanodo): step t is dispatched, then step t-1's metrics
    # are fetched while step t runs, so the host never idles the device. A checkpoint is
    # saved only after its own step's metrics are read, so it never holds a non-finite state.
    try:
        with stop_on_signal() as stop_flag:
            pending = None  # (step, device metrics) dispatched, not yet read
            for loop_step in bar:
                done = loop_step + 1
                try:
                    state, metrics = stage.run_step(step_fn, state, loop_step)
                except Exception:
                    if pending:  # the step that ran keeps its row, as if read at once
                        log(pending[0], read(*pending))
                    raise
                if pending:
                    log(pending[0], read(*pending))
                pending = (done, metrics)
                stopped_by = _stop_requested(stop_flag)
                if done % run.checkpoint_every and done != stop and not stopped_by:
                    continue
                metrics, pending = read(*pending), None
                if done == run.total_steps:
                    state, final_metrics = stage.finalize(state)
                    metrics = {**metrics, **final_metrics}
                log(done, metrics)
                checkpoint.save(manager, done, state, _meta(run, stage, done))
                if stopped_by:
                    last = {**last, "stopped_by": stopped_by, "step": done}
                    break
    except BaseException as e:  # the loop's own error stays the one raised
        _close_after(e, manager, writer)
        raise
    manager.wait_until_finished()
    manager.close()
    if writer:
        writer.close()
    return last


def _close_after(error: BaseException, manager, writer) -> None:
    """After `error` ended the loop: wait for the checkpoint saves in flight, close the
    manager and the metrics writer. Each that fails (a save that failed meanwhile, say) is
    added to `error` as a note instead of replacing it."""
    steps = [manager.wait_until_finished, manager.close] + ([writer.close] if writer else [])
    for finish in steps:
        try:
            finish()
        except Exception as other:  # noqa: BLE001 (Orbax raises many kinds)
            name = getattr(finish, "__name__", repr(finish))
            error.add_note(f"rlft: then, closing the run, {name} raised {other!r}")
