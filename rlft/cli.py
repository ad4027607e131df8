"""`rlft` console script (also `python -m rlft`): thin flag parsing over importable functions.

rlft train --config=configs/dpo.py:tiny --workdir=DIR [--config.field=value ...]
rlft reproduce --config=configs/reproduce.py --workdir=DIR
rlft convert --from-hf DIR --out DIR | --to-hf DIR --out DIR
rlft sample --workdir=DIR --prompts=FILE --out=FILE.jsonl [--num_samples=K ...]
rlft eval --workdir=DIR [--prompts=FILE] --reference=DIR | --reference_responses=FILE --judge=...

Every error is one line on stderr naming the file or field and the fix; exit status 1 for a
failed run, 2 for a bad command line or config. `--debug` (or RLFT_DEBUG=1) shows the traceback.
Each command imports what it runs inside its function, so `--help` and a flag error answer at
once and one command never loads another's stack (JAX, Orbax, the reproduce pipeline).
"""

import difflib
import os
import sys

from rlft import __version__
from rlft.cli_policy import EVAL_HELP, SAMPLE_HELP, eval_command, sample_command
from rlft.errors import ConfigError, NonFiniteLossError, RunStopped, UsageError

USAGE = """usage: rlft <command> [flags]      (rlft <command> --help for its flags)

commands:
  reproduce the paper's comparison: rlft reproduce --config=configs/reproduce.py --workdir=DIR
  train     train one stage: rlft train --config=configs/sft.py:tiny --workdir=runs/sft_tiny
  convert   Hugging Face GPT-NeoX checkpoints <-> rlft: rlft convert --from-hf DIR --out DIR
  sample    completions of a trained policy: rlft sample --workdir=DIR --prompts=FILE --out=FILE
  eval      a policy judged against a reference: rlft eval --workdir=DIR --reference=SFT_DIR
            --judge=gold:synthetic (or reward:RM_DIR, file:JUDGMENTS)

flags: --version, -h/--help
"""
HELP = {
    "train": (
        "Train one stage (the config's objective: sft, reward, dpo or ppo) in DIR; the same "
        "command again resumes it",
        "configs/sft.py:tiny",
        "--config.optim.learning_rate=1e-4 --config.dpo.beta=0.05 --config.model.num_layers=4",
    ),
    "reproduce": (
        "The paper's comparison: every stage, arm and seed of the config, then results.json "
        "and report.md in DIR; the same command again resumes it (finished units are reused "
        "only where their settings match)",
        "configs/reproduce.py:quick",
        "--config.beta=0.1 --config.seeds=0,1",
    ),
}
COMMAND_HELP = """\
usage: rlft {name} --config=FILE[:VARIANT] --workdir=DIR [--config.FIELD=VALUE ...]

{what}.

flags:
  --config=FILE[:VARIANT]  a config document, e.g. {example} (a path from the current
                           directory: run from the repository root)
  --config.FIELD=VALUE     override one field of it (repeatable), e.g.
                           {overrides}
                           A model section with a preset takes any rlft.models.ModelConfig field.
  --workdir=DIR            where checkpoints, metrics.jsonl and results go (local or gs://)
  --noprogress             log lines instead of progress bars
  --debug                  show the traceback of an error (also RLFT_DEBUG=1)
  -h, --help               this help (with --config: that file's variants too)

exit status: 0 done, or stopped by a signal after saving (rerun the command to resume);
             1 the run failed (the line says why); 2 a bad command line or config
"""


SWITCHES = ("--progress", "--noprogress", "--debug")


def _one_line(e: Exception, limit: int = 600) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _debug(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("RLFT_DEBUG", "") not in ("", "0")


def _variants(path: str) -> str:
    """The variants a config file's get_config accepts (rlft.defaults.parse_arg's fields)."""
    from rlft.config import load_config  # noqa: PLC0415
    from rlft.defaults import VARIANT_QUERY, VariantQuery  # noqa: PLC0415

    try:
        load_config(path, VARIANT_QUERY)
    except VariantQuery as q:
        return q.describe()
    except Exception as e:  # noqa: BLE001 (help must not fail on a broken config)
        return f"{path}: variants unknown ({type(e).__name__}: {e})"
    return f"{path}: takes no variant"


def _help(command: str, argv: list[str]) -> str:
    what, example, overrides = HELP[command]
    text = COMMAND_HELP.format(name=command, what=what, example=example, overrides=overrides)
    config = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if config:
        text += "\n" + _variants(config.split(":", 1)[0]) + "\n"
    return text


def _walk_override(config, flag: str) -> None:
    """Check that `--config.a.b=v` names a field; on a preset model section, add the preset's
    value of a ModelConfig field so the override can set it. Raises UsageError naming it."""
    path = flag.split("=", 1)[0][len("--config.") :].split(".")
    node, where = config, "config"
    for i, key in enumerate(path):
        fields = list(node.keys()) if hasattr(node, "keys") else []
        if key in fields:
            node, where = node[key], f"{where}.{key}"
            continue
        if hasattr(node, "keys") and "preset" in fields and i == len(path) - 1:
            from rlft.models import model_config  # noqa: PLC0415

            preset = model_config(node["preset"])
            if hasattr(preset, key) and getattr(preset, key) is not None:
                node[key] = getattr(preset, key)  # the preset's value: the override's type
                return
        close = difflib.get_close_matches(key, [str(f) for f in fields], n=1)
        hint = f"did you mean {where}.{close[0]}? " if close else ""
        listing = f"its fields: {', '.join(map(str, fields))}" if fields else "it has no fields"
        if "preset" in fields:
            listing += " (and any rlft.models.ModelConfig field, e.g. num_layers)"
        raise UsageError(f"{flag}: {where} has no field {key!r}; {hint}{listing}")


def _config_flags(command: str, argv: list[str]):
    """(config, workdir, progress) from --config=FILE[:variant], --config.x=y, --workdir,
    --[no]progress. Raises UsageError with the line to print."""
    from absl import flags  # noqa: PLC0415
    from ml_collections import config_flags  # noqa: PLC0415

    from rlft.config import load_config  # noqa: PLC0415

    for a in argv:
        if not (a.startswith(("--workdir=", "--config=", "--config.")) or a in SWITCHES):
            raise UsageError(f"unknown flag {a!r}; see rlft {command} --help")
    spec = [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]
    workdir = [a.split("=", 1)[1] for a in argv if a.startswith("--workdir=")]
    if len(spec) != 1 or len(workdir) != 1 or not spec[0] or not workdir[0]:
        raise UsageError(
            "--config=FILE[:VARIANT] and --workdir=DIR are each required once; "
            f"e.g. rlft {command} --config={HELP[command][1]} --workdir=runs/x"
        )
    path, _, variant = spec[0].partition(":")
    if not os.path.isfile(path):
        raise UsageError(
            f"--config={spec[0]}: no config file {path} (paths are from the current directory "
            f"{os.getcwd()}; run from the repository root, e.g. --config={HELP[command][1]})"
        )
    try:
        config = load_config(path, variant or None)
    except ConfigError as e:
        raise UsageError(str(e)) from e
    overrides = [a for a in argv if a.startswith("--config.")]
    for flag in overrides:
        _walk_override(config, flag)
    fv = flags.FlagValues()
    full_argv = [f"rlft {command}", *overrides]  # overrides are read from this, not sys.argv
    config_flags.DEFINE_config_dict("config", config, flag_values=fv, sys_argv=full_argv)
    try:
        fv(full_argv)
    except (flags.Error, KeyError, AttributeError, TypeError, ValueError) as e:
        how = f"see rlft {command} --help for the override syntax"
        raise UsageError(f"{_one_line(e)}; {how}") from e
    return fv.config, workdir[0], "--noprogress" not in argv


def _train(argv: list[str]) -> int:
    config, workdir, progress = _config_flags("train", argv)
    from rlft.parallel.distributed import maybe_initialize_distributed  # noqa: PLC0415
    from rlft.train.loop import train  # noqa: PLC0415

    maybe_initialize_distributed()  # multi-host TPU/GPU: before anything touches devices
    import jax  # noqa: PLC0415 (after the distributed setup)

    last = train(config, workdir, progress=progress)
    if last.get("stopped_by"):
        print(
            f"rlft train: stopped by {last['stopped_by']} at step {last['step']}; checkpoint "
            f"saved. Run the same command again to resume."
        )
    elif "loss" not in last and jax.process_index() == 0:  # other hosts log nothing
        print(f"rlft train: already done: {workdir} holds the final checkpoint; nothing to train")
    else:
        print(
            f"rlft train: done. {workdir}/metrics.jsonl, last: "
            + ", ".join(f"{k}={v:.4g}" for k, v in last.items() if k in ("step", "loss"))
        )
    return 0


def _reproduce(argv: list[str]) -> int:
    config, workdir, progress = _config_flags("reproduce", argv)
    from rlft.experiments.pipeline.run import run_reproduce  # noqa: PLC0415
    from rlft.parallel.distributed import maybe_initialize_distributed  # noqa: PLC0415

    maybe_initialize_distributed()
    try:
        run_reproduce(config, workdir, progress=progress)
    except RunStopped as e:
        print(f"rlft reproduce: {e}")
        return 0
    print(f"rlft reproduce: done. {workdir}/results.json, {workdir}/report.md")
    return 0


def _convert(argv: list[str]) -> int:
    from rlft.convert import main as convert_main  # noqa: PLC0415

    return convert_main(argv)


COMMANDS = {
    "train": _train,
    "reproduce": _reproduce,
    "convert": _convert,
    "sample": sample_command,
    "eval": eval_command,
}
FLAG_HELP = {"sample": SAMPLE_HELP, "eval": EVAL_HELP}


def _enable_compilation_cache() -> None:
    """Reuse compiled XLA programs across runs (stages and seeds share shapes) in
    ~/.cache/rlft/jax, unless the user chose a cache already (JAX_COMPILATION_CACHE_DIR)."""
    if "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return
    import jax  # noqa: PLC0415

    path = os.path.join(os.path.expanduser("~"), ".cache", "rlft", "jax")
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def main(argv: list[str] | None = None) -> int:
    """The console entry point; returns the exit status (0 done, 1 run failed, 2 usage)."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    if argv[0] == "--version":
        print(f"rlft {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        close = difflib.get_close_matches(command, COMMANDS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        print(
            f"rlft: unknown command {command!r}; {hint}commands: {', '.join(COMMANDS)} "
            "(rlft --help)",
            file=sys.stderr,
        )
        return 2
    if command != "convert" and any(a in ("-h", "--help", "-help") for a in rest):
        print(FLAG_HELP[command] if command in FLAG_HELP else _help(command, rest))
        return 0
    if command != "convert":
        _enable_compilation_cache()
    debug = _debug(rest)
    try:
        return COMMANDS[command]([a for a in rest if a != "--debug"])
    except UsageError as e:
        if debug:
            raise
        print(f"rlft {command}: {_one_line(e)}", file=sys.stderr)
        return 2
    except Exception as e:
        if debug:
            raise
        ours = isinstance(e, ValueError | OSError | NonFiniteLossError)  # messages that say the fix
        kind = "" if ours else f"{type(e).__name__}: "
        print(f"rlft {command}: error: {kind}{_one_line(e)} (--debug shows where)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
