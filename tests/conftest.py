"""Test setup: 8 fake CPU devices and a persistent compilation cache, set before jax starts."""

import os

# XLA's CPU client runs every device program on one thread pool sized max(cores, devices):
# exactly 8 threads here, one per fake device, with no spare. A collective program needs all 8
# participants at once; in a hung run (gdb) 7 intra-op threads sat in the all-reduce rendezvous
# while the 8th device's program was still in a dot fusion on a pool thread, and XLA aborts the
# whole test process when the collective timeout expires (CI died so in the 8-device CLI
# chain; 4 of 12 local runs of tests/test_cli.py, 0 of 8 with these settings). NPROC (read by
# XLA's DefaultThreadPoolSize) gives the pools spare threads. Single-threaded Eigen removes the
# other known pool wedge (nested intra-op waits) and costs nothing with 8 devices on 2 cores.
# The timeout stays above XLA's 40 s default so a merely slow, loaded machine still passes.
os.environ.setdefault("NPROC", "32")
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + " --xla_force_host_platform_device_count=8"
    + " --xla_cpu_multi_thread_eigen=false"
    + " --xla_cpu_collective_call_terminate_timeout_seconds=300"
).strip()
# One cache for every xdist worker and subprocess. JAX writes entries without a lock (it locks
# only with a size cap set); a worker that reads an entry another is still writing gets a
# "Error reading persistent compilation cache entry" warning and compiles it again
# (jax/_src/compiler.py catches the read), so sharing costs at worst a compile, never a result.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(os.path.dirname(__file__), "..", ".jax_cache")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

# The default tier compiles hundreds of small programs and runs each a few times, so LLVM's
# optimisation of the code XLA emits for the CPU costs more than it saves: at -O0 the default
# tier took 637 s from a cold compilation cache (CI's case) against 812 s at XLA's
# default, run one after the other on the 2-core EPYC CI runs on (every test passed in both);
# from a warm cache it took 337 s against 307 s, the price of slower machine code.
# Only the machine code differs, so results may differ in float rounding (FMA contraction, say).
OPT_LEVEL = "--xla_backend_optimization_level"


def pytest_configure(config):
    """LLVM -O0 for XLA's code when the mark expression is exactly "not slow" (pyproject's
    addopts: the default tier), unless XLA_FLAGS already sets a level. `-m slow` (CI's slow
    tier: benchmarks, `rlft reproduce`) and any other expression keep XLA's default. This runs
    before any test module imports rlft, and the CPU backend reads XLA_FLAGS when it starts
    (on first use), so the flag reaches every program of the run, in xdist workers (which run
    this hook too) and in the subprocesses tests start (the default tier's benchmark smoke
    runs among them)."""
    if config.option.markexpr.replace(" ", "") == "notslow":
        flags = os.environ.get("XLA_FLAGS", "")
        if not any(f.split("=")[0] == OPT_LEVEL for f in flags.split()):
            os.environ["XLA_FLAGS"] = f"{flags} {OPT_LEVEL}=0".strip()
