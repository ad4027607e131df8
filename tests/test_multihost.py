"""Two processes x 4 CPU devices = one 8-device mesh: the multi-controller path of a TPU pod.

Each worker (this file run as `python -m tests.test_multihost --worker ...`) joins a loopback
coordinator over gloo, builds the global data x fsdp = 4 x 2 mesh, takes two sharded sft steps
and samples from the trained policy, and writes what it sees (gathered across processes) to an
.npz. The parent checks both workers against the same program in one process on 8 fake devices
and on 1 device.
"""

import argparse
import functools
import os
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import optax
import pytest
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

from rlft.cli import main as rlft_main
from rlft.config import load_config
from rlft.data.synthetic import EOS, PAD, SyntheticConfig, make_datasets
from rlft.models import model_config
from rlft.objectives.base import Models
from rlft.objectives.sft import SftHparams
from rlft.parallel import batch_sharding, distributed, make_mesh, shard_batch
from rlft.rollout.sampler import generate
from rlft.train import loop
from rlft.train.metrics import read_metrics
from rlft.train.state import init_state
from rlft.train.step import StepSpec, train_step
from tests.helpers import REPO_CONFIGS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_PROCESSES, LOCAL_DEVICES, MESH = 2, 4, (4, 2)  # (data, fsdp) over 2 x 4 devices
TIMEOUT_S = 180  # per worker; a hang fails the test instead of blocking CI
# Prime-ish sizes so axis mix-ups fail (as in test_train): vocab 67, width 40 over 5 heads.
MODEL_KW = dict(vocab_size=67, d_model=40, num_heads=5, d_ff=72, rotary_pct=0.5)
DATA_KW = dict(vocab_size=67, num_examples=64, max_items=5)
STEPS, ROWS, PROMPTS, NEW_TOKENS, SAMPLES = 2, 16, 8, 6, 2


def compute(mesh) -> dict[str, np.ndarray]:
    """Two sft steps, then greedy and sampled generation; every result gathered to the host.

    Runs unchanged in one process and in each process of a multi-process job: batches are full
    host arrays placed with `shard_batch`, results come back through `process_allgather`.
    """
    cfg = model_config("tiny", **MODEL_KW)
    data = make_datasets(SyntheticConfig(**DATA_KW))
    # Plain SGD, as in test_train: Adam would amplify float noise in near-zero gradients.
    tx = optax.sgd(0.5)
    spec = StepSpec("sft", Models(policy=cfg), SftHparams(), tx, optax.constant_schedule(0.5))
    state, shardings = init_state({"policy": ("lm", cfg)}, tx, seed=3, mesh=mesh)
    step = jax.jit(  # placed as rlft.train.loop places it
        functools.partial(train_step, spec=spec),
        in_shardings=(shardings, batch_sharding(mesh)),
        out_shardings=(shardings, NamedSharding(mesh, PartitionSpec())),
    )
    batch = {k: v[:ROWS] for k, v in data["sft"].items()}
    out: dict[str, object] = {"loss": [], "grad_norm": []}
    for _ in range(STEPS):
        state, metrics = step(state, shard_batch(batch, mesh))
        out["loss"].append(metrics["loss"])
        out["grad_norm"].append(metrics["grad_norm"])

    prompts = shard_batch({k: v[:PROMPTS] for k, v in data["prompts"].items()}, mesh)
    sample = functools.partial(
        generate,
        cfg,
        state.params["policy"],
        prompts["prompt_tokens"],
        prompts["prompt_mask"],
        np.asarray(jax.random.key_data(jax.random.key(7))),  # same host value everywhere
        max_new_tokens=NEW_TOKENS,
        num_samples=SAMPLES,
        eos_id=EOS,
        pad_id=PAD,
    )
    greedy, sampled = sample(temperature=0.0), sample(temperature=0.7)
    out.update(greedy_tokens=greedy.tokens, greedy_logp=greedy.logp)
    out.update(sampled_tokens=sampled.tokens, sampled_logp=sampled.logp, mask=sampled.mask)
    flat, _ = jax.tree_util.tree_flatten_with_path(state.params)
    out.update({"params" + jax.tree_util.keystr(path): leaf for path, leaf in flat})
    out = multihost_utils.process_allgather(out, tiled=True)
    return {k: np.asarray(v) for k, v in out.items()}


def initialize_cpu_multiprocess(
    coordinator: str, num_processes: int, process_id: int, local_devices: int
) -> None:
    """One of `num_processes` CPU processes with `local_devices` fake devices each.

    The same multi-controller path as a TPU pod slice: cross-process collectives go over gloo.
    Must run before the JAX backend starts.
    """
    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.config.update("jax_num_cpu_devices", local_devices)
    jax.distributed.initialize(
        coordinator, num_processes=num_processes, process_id=process_id, initialization_timeout=120
    )


def _worker(argv: list[str]) -> int:
    """`compute` after `initialize_cpu_multiprocess`, or (--train) `rlft train` after
    `maybe_initialize_distributed` reads RLFT_COORDINATOR/... as on a cluster."""
    p = argparse.ArgumentParser()
    p.add_argument("--coordinator")
    p.add_argument("--process-id", type=int)
    p.add_argument("--out")
    p.add_argument("--train", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)

    if args.train is not None:
        assert distributed.maybe_initialize_distributed()
        return rlft_main(["train", *args.train])
    initialize_cpu_multiprocess(args.coordinator, NUM_PROCESSES, args.process_id, LOCAL_DEVICES)
    jax.config.update("jax_default_matmul_precision", "highest")  # as tests/conftest.py
    results = compute(make_mesh(*MESH))
    topology = [jax.process_count(), jax.process_index(), jax.device_count()]
    topology.append(jax.local_device_count())
    np.savez(args.out, topology=np.array(topology), **results)
    jax.distributed.shutdown()
    return 0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker_env(**extra: str) -> dict[str, str]:
    """The parent's env without its 8-device XLA flag (each worker sets 4 itself)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO, **extra)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f]
    env["XLA_FLAGS"] = " ".join(flags)
    # A compilation cache shared by concurrent writers is a flake risk; workers compile afresh.
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    return env


def run_workers(tmp_path, args_fn, env_fn=lambda pid, coordinator: {}, tag: str = "worker"):
    """Start NUM_PROCESSES workers (`python -m tests.test_multihost --worker ARGS`), wait for
    all of them within TIMEOUT_S and fail with their logs if any fails or hangs."""
    coordinator = f"127.0.0.1:{_free_port()}"
    procs, logs = [], []
    for pid in range(NUM_PROCESSES):
        logs.append(tmp_path / f"{tag}{pid}.log")
        cmd = [sys.executable, "-m", "tests.test_multihost", "--worker", *args_fn(pid, coordinator)]
        env = _worker_env(**env_fn(pid, coordinator))
        with open(logs[-1], "w") as log:
            procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=log))
    deadline = time.monotonic() + TIMEOUT_S
    try:
        for proc in procs:
            proc.wait(timeout=max(deadline - time.monotonic(), 1))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    report = "\n".join(
        f"--- {tag} {i} (exit {p.returncode}) ---\n" + log.read_text()[-3000:]
        for i, (p, log) in enumerate(zip(procs, logs, strict=True))
    )
    assert all(p.returncode == 0 for p in procs), f"workers failed or hung:\n{report}"


def _assert_same(got: dict, want: dict, tol: float = 1e-5) -> None:
    assert set(got) == set(want)
    for key in sorted(want):
        if "tokens" in key or key == "mask":
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)
        else:
            np.testing.assert_allclose(got[key], want[key], rtol=tol, atol=tol, err_msg=key)


@pytest.mark.slow
def test_two_processes_equal_one_process(tmp_path):
    outs = [tmp_path / f"worker{pid}.npz" for pid in range(NUM_PROCESSES)]
    run_workers(
        tmp_path,
        lambda pid, coordinator: [
            "--coordinator",
            coordinator,
            "--process-id",
            str(pid),
            "--out",
            str(outs[pid]),
        ],
    )
    workers = [dict(np.load(out)) for out in outs]
    one_process = compute(make_mesh(*MESH))
    one_device = compute(make_mesh(1, 1, jax.devices()[:1]))
    _assert_same(one_process, one_device)
    for pid, got in enumerate(workers):
        topology = got.pop("topology")
        assert topology.tolist() == [NUM_PROCESSES, pid, 8, LOCAL_DEVICES]
        _assert_same(got, one_process)
    # Not vacuous: the steps moved the loss and the sampler emitted real response tokens.
    assert one_process["loss"][1] < one_process["loss"][0]
    assert one_process["mask"][:, -NEW_TOKENS:].any()


def _sft_tiny(workdir, steps: int) -> list[str]:
    # A constant lr: the schedule must not depend on total_steps, which the rerun raises.
    return [
        "--config=configs/sft.py:tiny",
        f"--workdir={workdir}",
        "--noprogress",
        f"--config.total_steps={steps}",
        "--config.checkpoint_every=2",
        "--config.log_every=1",
        "--config.mesh.fsdp=2",
        "--config.optim.schedule=constant",
    ]


@pytest.mark.slow
def test_rlft_train_on_two_processes_equals_one_and_resumes(tmp_path):
    """`rlft train` as tpu/launch.sh runs it on a pod: every process the same command, the
    cluster read from the environment, one shared workdir; then rerun to resume."""
    workdir = tmp_path / "two_processes"

    def env(pid, coordinator):
        return dict(
            RLFT_COORDINATOR=coordinator,
            RLFT_NUM_PROCESSES=str(NUM_PROCESSES),
            RLFT_PROCESS_ID=str(pid),
            JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo",
            JAX_NUM_CPU_DEVICES=str(LOCAL_DEVICES),
        )

    for steps in (4, 6):  # the second run restores step 4 and continues
        run_workers(
            tmp_path,
            lambda pid, c, n=steps: ["--train", *_sft_tiny(workdir, n)],
            env,
            tag=f"train{steps}_",
        )

    config = load_config(os.path.join(REPO_CONFIGS, "sft.py"), "tiny")
    config.total_steps, config.checkpoint_every, config.log_every = 6, 2, 1
    config.mesh.fsdp, config.optim.schedule = 2, "constant"
    loop.train(config, str(tmp_path / "one_process"), progress=False)
    got, want = read_metrics(workdir), read_metrics(tmp_path / "one_process")
    assert [r["step"] for r in got] == list(range(1, 7))
    for a, b in zip(got, want, strict=True):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-6), (a, b)
    assert sorted(os.listdir(workdir / "checkpoints")) == ["4", "6"]


# maybe_initialize_distributed's decision, without starting anything.
@pytest.mark.parametrize(
    "env,mode",
    [
        ({}, "skip"),  # a laptop, one GPU, Colab, a single-host TPU VM
        ({"TPU_WORKER_HOSTNAMES": "t1k-w-0"}, "skip"),
        ({"TPU_WORKER_HOSTNAMES": "t1k-w-0,t1k-w-1"}, "auto"),  # GKE pod slice
        ({"RLFT_DISTRIBUTED": "1"}, "auto"),  # tpu/launch.sh on a GCE TPU VM
        ({"RLFT_DISTRIBUTED": "0", "SLURM_JOB_ID": "7", "SLURM_NTASKS": "4"}, "skip"),
        ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4"}, "auto"),
        ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}, "skip"),
        ({"OMPI_COMM_WORLD_SIZE": "2"}, "auto"),
        ({"MEGASCALE_COORDINATOR_ADDRESS": "10.0.0.2"}, "auto"),
    ],
)
def test_distributed_plan_detection(env, mode):
    assert distributed.distributed_plan(env)[0] == mode


def test_distributed_plan_explicit_and_errors():
    env = {"RLFT_COORDINATOR": "10.0.0.2:8476", "RLFT_NUM_PROCESSES": "4", "RLFT_PROCESS_ID": "3"}
    assert distributed.distributed_plan(env) == (
        "explicit",
        {"coordinator_address": "10.0.0.2:8476", "num_processes": 4, "process_id": 3},
    )
    with pytest.raises(ValueError, match="RLFT_PROCESS_ID"):
        distributed.distributed_plan({k: v for k, v in env.items() if k != "RLFT_PROCESS_ID"})
    with pytest.raises(ValueError, match="RLFT_DISTRIBUTED='maybe'"):
        distributed.distributed_plan({"RLFT_DISTRIBUTED": "maybe"})
    # No cluster in the environment: the test process stays single-process.
    assert distributed.maybe_initialize_distributed({}) is False


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    sys.exit(_worker(sys.argv[2:]))
