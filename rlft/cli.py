"""`rlft` console script: thin flag parsing over importable functions.

rlft train --config=configs/dpo.py:tiny --workdir=DIR [--config.field=value ...]
rlft convert --from-hf DIR --out DIR | --to-hf DIR --out DIR

Each command imports what it runs inside its function, so `rlft --help` and a flag error answer
at once and one command never loads another's stack (JAX, Orbax, the reproduce pipeline).
"""

import os
import sys

from rlft.errors import BatchError, CheckpointError, ConfigError, NonFiniteLossError, RunStopped

USAGE = """usage: rlft <command> [flags]

commands:
  reproduce the paper's comparison: rlft reproduce --config=configs/reproduce.py --workdir=DIR
  train     train one stage: rlft train --config=configs/sft.py:tiny --workdir=runs/sft_tiny
  convert   Hugging Face GPT-NeoX checkpoints <-> rlft: rlft convert --from-hf DIR --out DIR
"""


def _config_flags(command: str, argv: list[str]):
    """Parse --config=FILE[:variant] (+ --config.x=y overrides), --workdir, --progress.

    Returns the flag values, or an exit code (2) after printing the problem.
    """
    from absl import flags  # noqa: PLC0415
    from ml_collections import config_flags  # noqa: PLC0415

    fv = flags.FlagValues()
    full_argv = [f"rlft {command}", *argv]  # overrides are read from this, not from sys.argv
    config_flags.DEFINE_config_file(
        "config", None, "Config file[:variant].", flag_values=fv, sys_argv=full_argv
    )
    flags.DEFINE_string("workdir", None, "Run directory (resumable).", flag_values=fv)
    flags.DEFINE_bool("progress", True, "Show a progress bar.", flag_values=fv)
    try:
        fv(full_argv)
    except (flags.Error, KeyError, AttributeError, ValueError) as e:
        print(f"rlft {command}: {e}", file=sys.stderr)
        return 2
    if fv.config is None or not fv.workdir:
        print(
            f"rlft {command}: --config=FILE[:variant] and --workdir=DIR are required\n{USAGE}",
            file=sys.stderr,
        )
        return 2
    return fv


def _train(argv: list[str]) -> int:
    fv = _config_flags("train", argv)
    if isinstance(fv, int):
        return fv
    from rlft.parallel.distributed import maybe_initialize_distributed  # noqa: PLC0415
    from rlft.train.loop import train  # noqa: PLC0415

    maybe_initialize_distributed()  # multi-host TPU/GPU: before anything touches devices

    try:
        last = train(fv.config, fv.workdir, progress=fv.progress)
    except (ConfigError, CheckpointError, BatchError, NonFiniteLossError) as e:
        print(f"rlft train: error: {e}", file=sys.stderr)
        return 1
    if last.get("stopped_by"):
        print(
            f"rlft train: stopped by {last['stopped_by']} at step {last['step']}; checkpoint "
            f"saved. Run the same command again to resume."
        )
    else:
        print(
            f"rlft train: done. {fv.workdir}/metrics.jsonl, last: "
            + ", ".join(f"{k}={v:.4g}" for k, v in last.items() if k in ("step", "loss"))
        )
    return 0


def _reproduce(argv: list[str]) -> int:
    fv = _config_flags("reproduce", argv)
    if isinstance(fv, int):
        return fv
    from rlft.experiments.pipeline.run import run_reproduce  # noqa: PLC0415
    from rlft.parallel.distributed import maybe_initialize_distributed  # noqa: PLC0415

    maybe_initialize_distributed()

    try:
        run_reproduce(fv.config, fv.workdir, progress=fv.progress)
    except ConfigError as e:
        print(f"rlft reproduce: error: {e}", file=sys.stderr)
        return 1
    except RunStopped as e:
        print(f"rlft reproduce: {e}")
        return 0
    print(f"rlft reproduce: done. {fv.workdir}/results.json, {fv.workdir}/report.md")
    return 0


def _convert(argv: list[str]) -> int:
    from rlft.convert import main as convert_main  # noqa: PLC0415

    return convert_main(argv)


COMMANDS = {"train": _train, "reproduce": _reproduce, "convert": _convert}


def _enable_compilation_cache() -> None:
    """Reuse compiled XLA programs across runs (stages and seeds share shapes), unless the user
    chose a cache already."""
    if "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return
    import jax  # noqa: PLC0415

    path = os.path.join(os.path.expanduser("~"), ".cache", "rlft", "jax")
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help") or argv[0] not in COMMANDS:
        print(
            USAGE,
            file=sys.stderr if argv and argv[0] not in ("-h", "--help", "help") else sys.stdout,
        )
        return 0 if not argv or argv[0] in ("-h", "--help", "help") else 2
    if argv[0] in ("train", "reproduce"):
        _enable_compilation_cache()
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
