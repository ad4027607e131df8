"""`rlft sample` and `rlft eval`: their flags, help and the two commands (rlft.cli dispatches).

Flags are `--name=value`, typed by a {name: (type, default)} table (default None: required);
a bad flag or input row raises UsageError (one line, exit status 2). The experiments modules
are imported inside each command, so `--help` answers without JAX.
"""

import difflib
import os

from rlft.errors import UsageError

SAMPLING = {  # flag: (type, default); the sampling settings `rlft sample` and `rlft eval` share
    "num_samples": (int, 1),
    "temperature": (float, 1.0),
    "top_p": (float, 1.0),
    "max_new_tokens": (int, 16),
    "seed": (int, 0),
}
SAMPLE_FLAGS = {"workdir": (str, None), "prompts": (str, None), "out": (str, None),
                "tokenizer": (str, ""), **SAMPLING}  # fmt: skip
EVAL_FLAGS = {"workdir": (str, None), "judge": (str, None), "prompts": (str, ""),
              "reference": (str, ""), "reference_responses": (str, ""), "out": (str, ""),
              "tokenizer": (str, ""), "num_prompts": (int, 64), **SAMPLING}  # fmt: skip
SAMPLE_HELP = """\
usage: rlft sample --workdir=DIR --prompts=FILE --out=FILE.jsonl [flags]

Completions of the policy in DIR (the newest checkpoint that restores, the model config it
records), K per prompt, with the summed log-prob, length and EOS flag of each (docs/eval.md).

flags:
  --workdir=DIR          an `rlft train` workdir of an sft, dpo or ppo stage
  --prompts=FILE         JSONL, one object a line: {"prompt": TEXT} (needs a tokenizer) or
                         {"prompt_ids": [ids]}, optionally "id"; left-padded for the sampler
  --out=FILE.jsonl       one line per sample: id, sample, prompt_ids, response_ids, [prompt,
                         response as text], logp_sum, length, finished
  --tokenizer=DIR|FILE   decode and encode text (default: the one the workdir's data records)
  --num_samples=K        samples per prompt (default 1)
  --temperature=T        softmax temperature, 0 = greedy (default 1.0)
  --top_p=P              nucleus sampling mass, 0 < P <= 1 (default 1.0)
  --max_new_tokens=L     response tokens at most, EOS included (default 16)
  --seed=S               sampling seed (default 0)
  --debug                show the traceback of an error

example:
  rlft sample --workdir=runs/sft_tiny --prompts=prompts.jsonl --out=runs/sft_tiny/samples.jsonl \\
      --num_samples=4 --max_new_tokens=7

exit status: 0 done; 1 the run failed (the line says why); 2 a bad flag or input row
"""
EVAL_HELP = """\
usage: rlft eval --workdir=DIR [--prompts=FILE] (--reference=DIR | --reference_responses=FILE)
                 --judge=reward:RM_DIR|gold:TASK|file:JUDGMENTS [flags]

The policy in DIR judged on held-out prompts against a reference: win rate (ties half) with a
95% Wilson score interval, mean judge score of both sides, KL to a reference policy, lengths and
the share of responses without EOS. Writes DIR/eval.json (or --out) and prints a table.

flags:
  --workdir=DIR              the policy's `rlft train` workdir
  --prompts=FILE             prompts JSONL as for rlft sample; with --judge=gold:TASK it may be
                             left out: --num_prompts held-out prompts come from the task
  --reference=DIR            a reference policy (e.g. the SFT workdir), sampled with the same
                             keys; gives KL(policy || reference)
  --reference_responses=FILE JSONL, one line per prompt: {"response": TEXT} or
                             {"response_ids": [ids]}, optionally "id"
  --judge=reward:RM_DIR      a reward stage's model scores each response
  --judge=gold:TASK          a task's verifier: synthetic (the tiny configs' data task) or a
                             name in rlft.tasks.TASKS
  --judge=file:JUDGMENTS     judgments JSONL ({"id", "winner"|"p_policy"}), ids as rlft sample
                             writes them (id, or id:k when --num_samples > 1)
  --out=FILE                 where to write the record (default DIR/eval.json)
  --num_prompts=N            task prompts for gold:TASK without --prompts (default 64)
  --tokenizer, --num_samples, --temperature, --top_p, --max_new_tokens, --seed: as rlft sample

examples:
  rlft eval --workdir=runs/dpo_tiny --reference=runs/sft_tiny --judge=gold:synthetic \\
      --max_new_tokens=7 --num_samples=4
  rlft eval --workdir=runs/ppo_tiny --prompts=heldout.jsonl --reference=runs/sft_tiny \\
      --judge=reward:runs/reward_tiny

exit status: 0 done; 1 the run failed (the line says why); 2 a bad flag or input row
"""


def _named_flags(command: str, argv: list[str], spec: dict) -> dict:
    """{name: value} of `--name=value` flags typed by `spec` ({name: (type, default)}, default
    None: required). Raises UsageError naming the flag."""
    out = {}
    for a in argv:
        name, eq, value = a[2:].partition("=") if a.startswith("--") else ("", "", "")
        if name not in spec or not eq:
            close = difflib.get_close_matches(name, spec, n=1)
            hint = f" (did you mean --{close[0]}=?)" if close else ""
            raise UsageError(f"unknown flag {a!r}{hint}; see rlft {command} --help")
        kind = spec[name][0]
        try:
            out[name] = kind(value)
        except ValueError:
            raise UsageError(f"--{name}={value}: expected {kind.__name__}") from None
    missing = [f"--{n}" for n, (_, default) in spec.items() if default is None and not out.get(n)]
    if missing:
        raise UsageError(f"{', '.join(missing)} required; see rlft {command} --help")
    out = {n: out.get(n, default) for n, (_, default) in spec.items()}
    _check_sampling(out)
    return out


def _check_sampling(f: dict) -> None:
    if f["num_samples"] < 1 or f["max_new_tokens"] < 1:
        raise UsageError("--num_samples and --max_new_tokens must be >= 1")
    if not 0.0 < f["top_p"] <= 1.0 or f["temperature"] < 0.0:
        raise UsageError(f"need 0 < --top_p <= 1 and --temperature >= 0; got {f['top_p']}, "
                         f"{f['temperature']}")  # fmt: skip


def sample_command(argv: list[str]) -> int:
    f = _named_flags("sample", argv, SAMPLE_FLAGS)
    from rlft.experiments import sample  # noqa: PLC0415

    try:
        policy = sample.load_policy(f["workdir"], f["tokenizer"] or None)
        ids, prompts = sample.read_prompts(
            f["prompts"], policy.tokenizer, policy.cfg.vocab_size, sample.prompt_limit(policy)
        )
        settings = {k: f[k] for k in SAMPLING}
        samples = sample.sample_policy(policy, prompts, **settings)
    except sample.InputError as e:
        raise UsageError(str(e)) from e
    sample.write_jsonl(f["out"], sample.sample_rows(policy, ids, prompts, samples))
    print(f"rlft sample: wrote {len(samples['length'])} samples of {f['workdir']} (checkpoint "
          f"step {policy.step}) to {f['out']}")  # fmt: skip
    return 0


def eval_command(argv: list[str]) -> int:
    f = _named_flags("eval", argv, EVAL_FLAGS)
    if bool(f["reference"]) == bool(f["reference_responses"]):
        raise UsageError("give exactly one of --reference=DIR and --reference_responses=FILE")
    import json  # noqa: PLC0415

    from rlft.experiments import evaluate, sample  # noqa: PLC0415

    try:
        policy = sample.load_policy(f["workdir"], f["tokenizer"] or None)
        judge = evaluate.make_judge(f["judge"], policy)
        if f["prompts"]:
            ids, prompts = sample.read_prompts(
                f["prompts"], policy.tokenizer, policy.cfg.vocab_size, sample.prompt_limit(policy)
            )
        elif getattr(judge, "task_prompts", None) is not None:
            prompts = judge.task_prompts(f["num_prompts"], f["seed"])
            ids = [str(i) for i in range(len(prompts))]
        else:
            raise UsageError(f"--prompts=FILE is required with --judge={f['judge']}")
        reference, responses = None, None
        if f["reference"]:
            reference = sample.load_policy(f["reference"], f["tokenizer"] or None)
        else:
            responses = evaluate.read_reference_responses(f["reference_responses"], ids, policy)
        settings = {k: f[k] for k in SAMPLING}
        result = evaluate.evaluate(policy, judge, ids, prompts, settings, reference, responses)
    except sample.InputError as e:
        raise UsageError(str(e)) from e
    out = f["out"] or os.path.join(f["workdir"], "eval.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as fh:
        json.dump(result, fh, indent=2)
        fh.write("\n")
    print(evaluate.format_table(result))
    print(f"rlft eval: wrote {out}")
    return 0
