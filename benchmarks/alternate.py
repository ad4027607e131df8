"""Two builds of one train step traced in one process and timed alternately (issue 9).

Shared by benchmarks/gelu.py, attention.py and shared_prefix.py. The step is
benchmarks/train_step.py's Pythia-shaped one (6 layers, width 128, d_ff 512, vocabulary 50,304,
8 pairs of a 64-token prompt, `--prompt-len`, and a 53-token response; DPO with precomputed
reference log-probs). Each variant is a context manager in force while its program is traced;
the two programs then run `--steps` steps at a time for `--rounds` rounds, alternating, so the
machine's drift falls on both alike (on a shared 2-core machine, runs of one commit and then
another drifted by more than the differences measured here). Prints each program's median and
best milliseconds per step, their ratio, each program's temporaries (XLA's memory analysis),
whether the two compiled programs differ and the largest difference between their first-step
metrics (0 is possible: SFT's agreed to the last bit with its params differing by 5e-8).
"""

import argparse
import time

import jax
import numpy as np
from train_step import pythia_pairs, step_fn  # this directory, run as a script

from rlft.config import OptimConfig
from rlft.models import model_config
from rlft.parallel import make_mesh, shard_batch
from rlft.train.state import make_optimizer


def parser(doc: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--objective", choices=("sft", "reward", "dpo"), default="reward")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--steps", type=int, default=3, help="steps of one program per round")
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--vocab", type=int, default=50304)
    ap.add_argument("--prompt-len", type=int, default=64, help="prompt tokens per row")
    return ap


def alternate(args, variants: dict) -> dict:
    """Time the step traced under each of two {name: context manager factory}, alternately.

    Returns {"objective", "ms": {name: {"median", "best"}}, "temp_mb": {name: MB}, "ratio"
    (the second's median over the first's), "first_step_metrics_max_abs_diff",
    "programs_differ"}.
    """
    cfg = model_config(
        "pythia-70m",
        num_layers=args.layers,
        d_model=128,
        num_heads=4,
        d_ff=512,
        max_len=max(256, args.prompt_len + 53),
        vocab_size=args.vocab,
    )
    mesh = make_mesh(-1, 1)
    tx, schedule = make_optimizer(OptimConfig(), 1000)
    pairs = pythia_pairs(8, args.prompt_len, 53, cfg.vocab_size)
    batch = (
        pairs
        if args.objective != "sft"
        else {k: pairs[f"chosen_{k}"] for k in ("tokens", "mask", "loss_mask")}
    )
    batch = shard_batch(batch, mesh)

    runs = {}  # name -> [state, jitted step, seconds, first metrics, temp bytes]
    programs = []  # each variant's compiled program, as text
    for name, ctx in variants.items():
        with ctx():  # the swapped function is read when the step is traced: its first call
            state, fn = step_fn(args.objective, cfg, tx, schedule, mesh)
            compiled = fn.lower(state, batch).compile()
            temp = compiled.memory_analysis().temp_size_in_bytes
            programs.append(compiled.as_text())
            state, metrics = fn(state, batch)
            first = jax.device_get(metrics)
            state, metrics = fn(state, batch)  # warm
            jax.block_until_ready(metrics)
        runs[name] = [state, fn, [], first, temp]
    for _ in range(args.rounds):
        for run in runs.values():
            state, fn, seconds = run[0], run[1], run[2]
            for _ in range(args.steps):
                start = time.perf_counter()
                state, metrics = fn(state, batch)
                jax.block_until_ready(metrics)
                seconds.append(time.perf_counter() - start)
            run[0] = state

    (a, ra), (b, rb) = runs.items()
    diff = max(float(np.max(np.abs(np.asarray(ra[3][k]) - np.asarray(rb[3][k])))) for k in ra[3])
    print(
        f"{args.objective} step, {cfg.num_layers} layers, vocabulary {cfg.vocab_size}, "
        f"{args.rounds} rounds x {args.steps} steps each, alternating"
    )
    result = {"objective": args.objective, "ms": {}, "temp_mb": {}}
    for name, run in runs.items():
        ms = 1e3 * np.asarray(run[2])
        result["ms"][name] = {"median": float(np.median(ms)), "best": float(ms.min())}
        result["temp_mb"][name] = run[4] / 1e6
        print(
            f"{name:24s} median {np.median(ms):8.1f} ms   best {ms.min():8.1f} ms   "
            f"temp {run[4] / 1e6:6.0f} MB"
        )
    result["ratio"] = result["ms"][b]["median"] / result["ms"][a]["median"]
    result["first_step_metrics_max_abs_diff"] = diff
    result["programs_differ"] = programs[0] != programs[1]
    print(f"{b} / {a}, median time: {result['ratio']:.3f}")
    print(f"compiled programs differ (the swap took effect): {result['programs_differ']}")
    print(f"first step's metrics, largest difference: {diff:.2e}")
    return result
