"""Multi-process JAX: one process per host, all of them driving one global mesh.

A TPU pod slice (or a multi-node GPU job) runs the same program on every host; after
`jax.distributed.initialize()` each process sees the global device list, `make_mesh` spans all
hosts and `jit` inserts the cross-host collectives. It must run before anything touches a JAX
backend (even `jax.devices()`), so the CLI calls `maybe_initialize_distributed()` first.

Detection, in order:
  RLFT_DISTRIBUTED=0                    never initialise (debugging one host of a pod)
  RLFT_COORDINATOR=host:port            explicit: with RLFT_NUM_PROCESSES and RLFT_PROCESS_ID
  RLFT_DISTRIBUTED=1                    `jax.distributed.initialize()` with JAX's auto-detection
                                        (Cloud TPU VM metadata, Slurm, Open MPI, GKE); tpu/launch.sh
                                        sets this on every worker
  a multi-process launcher's variables  the same auto-detection (see `_launcher_env`)
  otherwise                             no-op: one CPU, one GPU, a single-host TPU VM or Colab
"""

import os
from collections.abc import Mapping

import jax

_ON = ("1", "true", "yes", "auto")
_OFF = ("0", "false", "no")
_EXPLICIT = ("RLFT_COORDINATOR", "RLFT_NUM_PROCESSES", "RLFT_PROCESS_ID")


def _more_than_one(value: str | None, sep: str = ",") -> bool:
    return value is not None and len([v for v in value.split(sep) if v.strip()]) > 1


def _launcher_env(env: Mapping[str, str]) -> str | None:
    """Name of the multi-process launcher whose variables are set, if any."""
    if _more_than_one(env.get("TPU_WORKER_HOSTNAMES")) or _more_than_one(
        env.get("TPU_PROCESS_ADDRESSES")
    ):
        return "TPU pod slice (TPU_WORKER_HOSTNAMES)"
    if env.get("MEGASCALE_COORDINATOR_ADDRESS"):
        return "TPU multislice (MEGASCALE_COORDINATOR_ADDRESS)"
    if env.get("SLURM_JOB_ID") and int(env.get("SLURM_NTASKS", "1")) > 1:
        return "Slurm (SLURM_NTASKS > 1)"
    if int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
        return "Open MPI (OMPI_COMM_WORLD_SIZE > 1)"
    return None


def distributed_plan(env: Mapping[str, str] | None = None) -> tuple[str, dict]:
    """('skip' | 'explicit' | 'auto', initialize kwargs) chosen from the environment."""
    env = os.environ if env is None else env
    flag = env.get("RLFT_DISTRIBUTED", "").strip().lower()
    if flag in _OFF:
        return "skip", {}
    if flag and flag not in _ON:
        raise ValueError(f"RLFT_DISTRIBUTED={flag!r}: use 1 (initialise) or 0 (never).")
    given = [k for k in _EXPLICIT if env.get(k)]
    if given:
        missing = [k for k in _EXPLICIT if not env.get(k)]
        if missing:
            raise ValueError(
                f"{', '.join(given)} set but {', '.join(missing)} missing: set all three of "
                f"{', '.join(_EXPLICIT)} (every process the same coordinator host:port and "
                f"process count, its own id 0..N-1)."
            )
        return "explicit", {
            "coordinator_address": env["RLFT_COORDINATOR"],
            "num_processes": int(env["RLFT_NUM_PROCESSES"]),
            "process_id": int(env["RLFT_PROCESS_ID"]),
        }
    if flag in _ON or _launcher_env(env):
        return "auto", {}
    return "skip", {}


def maybe_initialize_distributed(env: Mapping[str, str] | None = None) -> bool:
    """Call `jax.distributed.initialize` when this is one process of a multi-process job.

    Returns whether the distributed runtime is up. Idempotent; a no-op on a single machine.
    Must run before the first JAX computation or `jax.devices()` call.
    """
    if jax.distributed.is_initialized():
        return True
    mode, kwargs = distributed_plan(env)
    if mode == "skip":
        return False
    jax.distributed.initialize(**kwargs)
    return True
