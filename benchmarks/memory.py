"""Peak device memory of one train step, read from the compiled XLA program (nothing allocated).

    python benchmarks/memory.py                                  # 410m + 1.4b, DPO + PPO, 1 and 8
    python benchmarks/memory.py --models=pythia-410m --objectives=dpo --json=mem.json

For each model x objective x mesh (1 device, and data=1 x fsdp=8) the train step is jitted as
`rlft.train.loop` jits it (state and batch shardings, donated state; each DPO row run whole,
where the DPO stage runs a pair's shared prompt once, `Models.pair_prefix_len`, so its cells are
upper bounds there too) and lowered with `jax.ShapeDtypeStruct` inputs only: the state comes
from `jax.eval_shape` of the same init as `rlft.train.state.init_state`, the batch from the
objective's `BATCH_KEYS`. Then `compiled.memory_analysis()` gives, per device, in bytes:

    argument  params + AdamW state + step + rng + the batch (whole-program lifetime)
    output    the new state + metrics
    alias     output bytes that reuse a donated argument buffer (the state, donate_argnums=0)
    temp      XLA's buffer-assignment heap for every temporary (activations, grads, gathers)

    peak = argument + output - alias + temp

(the same sum as MaxText's `max_utils.print_compiled_memory_stats`; JAX also reports XLA's own
`peak_memory_in_bytes`, printed alongside). Generated code is left out. Shapes: TL;DR, prompt
512 + response 53 = 565 tokens (configs/tldr_pythia.py; its DPO pairs use response 128, see
--response-len), `--seqs-per-device` sequences per device per micro-batch (default 4, as
tpu/memory.py: PPO 4 rows, DPO 2 pairs of 2 sequences), so an 8-way mesh runs 8x the rows and
only the parameter and optimizer bytes shrink. bf16 compute with remat, fp32 params and AdamW.

The CPU compiler's memory analysis is a proxy for the TPU one: the same HLO, but another
compiler's fusion, scheduling and layout; run on a TPU host these are the TPU compiler's own
numbers. On CPU, `CPU_FLAGS` select XLA's memory-minimising scheduler (without it remat
saved nothing on CPU) and the fsdp-8 cells are upper bounds (see there); XLA's
`peak_memory_in_bytes` reports only the arguments there. The `analytic` column is
tpu/memory.py's estimate for the same step (16 B per trained parameter: fp32 param, grad,
AdamW mu, nu; plus its activation formula). PPO also keeps its frozen reference + reward
model (fp32, `frozen`) on the device for the rollout, outside the step; `total` adds them.

Runtime: each cell is one compile of the whole step (24 unrolled layers); the eight default
cells, run at once on a 2-core CPU shared with other jobs, took 10 (DPO) to 24 (PPO, fsdp 8)
min each, so split long runs with --models / --objectives
/ --meshes (and --json per run), then merge them: --from-json A.json B.json --json=ALL.json.
"""

import os
import sys

# 8 fake CPU devices for the fsdp-8 mesh, and XLA CPU's memory-minimising scheduler: its default
# concurrency-optimised one hoists independent work (remat recomputes) and pays for it in
# memory (Pythia-70m DPO, 4 x 565 tokens: 3.86 GiB peak with or without remat; 2.44 with this
# scheduler, against 2.46 from tpu/memory.py). On the fsdp-8 mesh neither CPU scheduler frees
# gathered parameters as a TPU's does (1.4b DPO: 21.6 GiB with this one, 12.4 with the
# default, 4.5 analytic), so read fsdp cells as upper bounds. The last two flags only skip
# LLVM's optimisation of the generated code, which memory_analysis does not read. XLA_FLAGS
# set by the caller come after these and win, e.g.
# XLA_FLAGS=--xla_cpu_enable_concurrency_optimized_scheduler=true for the default scheduler.
CPU_FLAGS = (
    "--xla_force_host_platform_device_count=8 "
    "--xla_cpu_enable_concurrency_optimized_scheduler=false "
    "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
)

if "jax" not in sys.modules:  # before jax starts: CPU_FLAGS (see there); TPU/GPU ignore them
    os.environ["XLA_FLAGS"] = (CPU_FLAGS + " " + os.environ.get("XLA_FLAGS", "")).strip()

import argparse  # noqa: E402
import functools  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec  # noqa: E402

from rlft.config import OptimConfig  # noqa: E402
from rlft.models import ModelConfig, model_config  # noqa: E402
from rlft.objectives import BATCH_KEYS, OBJECTIVES  # noqa: E402
from rlft.objectives.base import Models  # noqa: E402
from rlft.parallel import batch_sharding, make_mesh  # noqa: E402
from rlft.train.state import abstract_state, make_optimizer  # noqa: E402
from rlft.train.step import StepSpec, train_step  # noqa: E402

GiB = 2**30
KINDS = {"policy": "lm", "reward": "scalar", "critic": "scalar"}
# HBM per chip, GiB (one JAX device per chip): v5e (Colab's v5e-1 is one), v4.
HBM_GIB = {"v5e": 16, "v4": 32}
SEQS_PER_ROW = {"sft": 1, "ppo": 1, "dpo": 2, "reward": 2}  # sequences in one batch row


def _tpu_memory():
    """tpu/memory.py as a module (tpu/ is a folder of scripts, not a package)."""
    path = pathlib.Path(__file__).resolve().parent.parent / "tpu" / "memory.py"
    spec = importlib.util.spec_from_file_location("tpu_memory", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def abstract_batch(objective: str, rows: int, seq_len: int, mesh) -> dict:
    """The objective's batch keys as [rows, seq_len] (or [rows]) ShapeDtypeStructs."""
    sharding = batch_sharding(mesh)
    out = {}
    for key in BATCH_KEYS[objective]:
        if key.startswith("ref_"):  # DPO reference log-probs, one per row
            shape, dtype = (rows,), jnp.float32
        elif key.endswith("tokens"):
            shape, dtype = (rows, seq_len), jnp.int32
        elif key.endswith("mask"):
            shape, dtype = (rows, seq_len), jnp.bool_
        else:  # PPO rollout arrays: old_logp, old_values, advantages, returns
            shape, dtype = (rows, seq_len), jnp.float32
        out[key] = jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)
    return out


def compiled_memory(
    objective: str, cfg: ModelConfig, fsdp: int, rows_per_device: int, seq_len: int
):
    """memory_analysis() of the jitted train step on a data=1 x fsdp mesh, plus compile time."""
    mesh = make_mesh(1, fsdp, devices=jax.devices()[:fsdp])
    _, hp_cls, roles = OBJECTIVES[objective]
    tx, schedule = make_optimizer(OptimConfig(), 1000)
    state, shardings = abstract_state({r: (KINDS[r], cfg) for r in roles}, tx, mesh)
    batch = abstract_batch(objective, rows_per_device * fsdp, seq_len, mesh)
    spec = StepSpec(objective, Models(**{r: cfg for r in roles}), hp_cls(), tx, schedule)
    step = jax.jit(
        functools.partial(train_step, spec=spec),
        in_shardings=(shardings, batch_sharding(mesh)),
        out_shardings=(shardings, NamedSharding(mesh, PartitionSpec())),
        donate_argnums=0,
    )
    start = time.perf_counter()
    with jax.set_mesh(mesh):  # as rlft.train.loop traces it: rlft.parallel.constrain_batch
        stats = step.lower(state, batch).compile().memory_analysis()
    return stats, time.perf_counter() - start


def analytic_bytes(tm, objective: str, cfg: ModelConfig, fsdp: int, seqs: int, seq_len: int):
    """tpu/memory.py's estimate of the step: (trained state, activations, frozen) bytes/device.

    Trained: 16 B per parameter held by the device. Activations: its PPO formula
    A = 2 S + H (policy and critic backbones S, one LM head H = 3 B T V 4 B); a one-model step
    (DPO, SFT) has S + H = (A + H) / 2. Frozen: PPO's reference (lm) + reward model (scalar),
    fp32, resident for the rollout but not arguments of the step; 0 for the others.
    """
    _, _, roles = OBJECTIVES[objective]
    lm, scalar = (tm.params_per_device(k, cfg, fsdp) for k in ("lm", "scalar"))
    trained = sum(lm if KINDS[r] == "lm" else scalar for r in roles) * tm.TRAINED_BYTES
    act = tm.activation_bytes(cfg, seqs, seq_len, remat=cfg.remat)
    head = 3 * seqs * seq_len * cfg.vocab_size * 4
    if len(roles) == 1:
        act = (act + head) / 2
    frozen = (lm + scalar) * tm.FROZEN_BYTES["fp32"] if objective == "ppo" else 0
    return trained, act, frozen


def measure(models, objectives, meshes, seqs_per_device, seq_len, dtype, remat):
    """Yields one row per model x objective x mesh, bytes per device."""
    tm = _tpu_memory()
    for name in models:
        cfg = model_config(name, dtype=dtype, remat=remat)
        for objective in objectives:
            per_row = SEQS_PER_ROW[objective]
            if seqs_per_device % per_row:
                raise SystemExit(f"--seqs-per-device must be a multiple of {per_row} ({objective})")
            rows = seqs_per_device // per_row
            for fsdp in meshes:
                stats, secs = compiled_memory(objective, cfg, fsdp, rows, seq_len)
                state, act, frozen = analytic_bytes(
                    tm, objective, cfg, fsdp, seqs_per_device, seq_len
                )
                peak = (
                    stats.argument_size_in_bytes
                    + stats.output_size_in_bytes
                    - stats.alias_size_in_bytes
                    + stats.temp_size_in_bytes
                )
                yield dict(
                    model=name,
                    objective=objective,
                    fsdp=fsdp,
                    rows_per_device=rows,
                    global_rows=rows * fsdp,
                    argument_bytes=stats.argument_size_in_bytes,
                    output_bytes=stats.output_size_in_bytes,
                    alias_bytes=stats.alias_size_in_bytes,
                    temp_bytes=stats.temp_size_in_bytes,
                    peak_bytes=peak,
                    xla_peak_bytes=stats.peak_memory_in_bytes,
                    analytic_bytes=int(state + act),
                    analytic_state_bytes=int(state),
                    analytic_activation_bytes=int(act),
                    frozen_bytes=int(frozen),
                    total_bytes=int(peak + frozen),
                    fits={k: peak + frozen <= v * GiB for k, v in HBM_GIB.items()},
                    compile_s=round(secs, 1),
                )


def markdown(rows: list[dict]) -> str:
    """The table: GiB per device, and whether step + frozen models (total) fit each chip's
    HBM in full (no reserve: temp already holds XLA's temporaries)."""
    g = lambda b: f"{b / GiB:.2f}"  # noqa: E731
    lines = [
        "| model | objective | mesh | rows/device | args | temp | peak (compiled) | XLA peak "
        "| analytic (tpu/memory.py) | frozen | total | fits v5e 16 GiB | fits v4 32 GiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        mesh = "1 device" if r["fsdp"] == 1 else f"fsdp {r['fsdp']}"
        yes = {k: "**yes**" if r["total_bytes"] <= v * GiB else "no" for k, v in HBM_GIB.items()}
        lines.append(
            f"| {r['model']} | {r['objective']} | {mesh} | {r['rows_per_device']} "
            f"| {g(r['argument_bytes'])} | {g(r['temp_bytes'])} | {g(r['peak_bytes'])} "
            f"| {g(r['xla_peak_bytes'])} | {g(r['analytic_bytes'])} | {g(r['frozen_bytes'])} "
            f"| {g(r['total_bytes'])} | {yes['v5e']} | {yes['v4']} |"
        )
    return "\n".join(lines)


def _summary(result: dict) -> str:
    """The table and the line that states its shapes, backend and wall time."""
    sh = result["shapes"]
    proxy = " (a proxy for the TPU compiler)" if result["backend"] == "cpu" else ""
    return (
        markdown(result["rows"])
        + f"\n\nGiB per device; {sh['seqs_per_device']} sequences x {sh['seq_len']} tokens per "
        f"device, {sh['dtype']}, remat {'on' if sh['remat'] else 'off'}; backend "
        f"{result['backend']}{proxy}; {result['wall_s']:.0f} s"
        + (f" (summed over {result['merged_runs']} runs)." if "merged_runs" in result else ".")
    )


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="pythia-410m,pythia-1.4b", help="rlft.models presets")
    p.add_argument("--objectives", default="dpo,ppo", help="keys of rlft.objectives.OBJECTIVES")
    p.add_argument("--meshes", default="1,8", help="fsdp ways (data = 1), one cell each")
    p.add_argument("--seqs-per-device", type=int, default=4, help="sequences per device")
    p.add_argument("--prompt-len", type=int, default=512)
    p.add_argument("--response-len", type=int, default=53)
    p.add_argument("--dtype", default="bfloat16", help="compute dtype (params stay fp32)")
    p.add_argument("--no-remat", dest="remat", action="store_false")
    p.add_argument("--json", default="", help="write the results here (after every cell)")
    p.add_argument(
        "--from-json", nargs="+", help="no compiling: merge these result files (into --json)"
    )
    args = p.parse_args(argv)
    if args.from_json:  # e.g. the files of runs split by --models / --objectives
        results = [json.loads(pathlib.Path(f).read_text()) for f in args.from_json]
        rows = [
            {**r, "xla_flags": res.get("xla_flags", "")} for res in results for r in res["rows"]
        ]
        for r in rows:  # against this file's HBM_GIB
            r["fits"] = {k: r["total_bytes"] <= v * GiB for k, v in HBM_GIB.items()}
        merged = {**results[0], "rows": rows, "hbm_gib": HBM_GIB}
        merged["wall_s"] = sum(res["wall_s"] for res in results)
        merged["merged_runs"] = len(results)
        if args.json:
            pathlib.Path(args.json).write_text(json.dumps(merged, indent=1) + "\n")
        print(_summary(merged))
        return merged
    meshes = [int(m) for m in args.meshes.split(",")]
    if max(meshes) > len(jax.devices()):
        raise SystemExit(
            f"--meshes={args.meshes} needs {max(meshes)} devices; have {len(jax.devices())}"
        )
    seq_len = args.prompt_len + args.response_len
    shapes = dict(
        prompt_len=args.prompt_len,
        response_len=args.response_len,
        seq_len=seq_len,
        seqs_per_device=args.seqs_per_device,
        dtype=args.dtype,
        remat=args.remat,
    )
    cpu = jax.default_backend() == "cpu"
    result = dict(
        backend=jax.default_backend(),
        device_kind=jax.devices()[0].device_kind,
        jax_version=jax.__version__,
        note="CPU memory_analysis is a proxy for the TPU compiler's" if cpu else "",
        formula="peak = argument + output - alias + temp (bytes per device)",
        xla_flags=os.environ.get("XLA_FLAGS", ""),
        shapes=shapes,
        hbm_gib=HBM_GIB,
        rows=[],
        wall_s=0.0,
    )
    start = time.perf_counter()
    cells = measure(
        args.models.split(","),
        args.objectives.split(","),
        meshes,
        args.seqs_per_device,
        seq_len,
        args.dtype,
        args.remat,
    )
    for row in cells:
        result["rows"].append(row)
        result["wall_s"] = round(time.perf_counter() - start, 1)
        print(
            f"  {row['model']} {row['objective']} fsdp={row['fsdp']}: args "
            f"{row['argument_bytes'] / GiB:.2f} temp {row['temp_bytes'] / GiB:.2f} peak "
            f"{row['peak_bytes'] / GiB:.2f} GiB ({row['compile_s']:.0f} s)",
            file=sys.stderr,
            flush=True,
        )
        if args.json:  # after every cell, so a long run that is stopped keeps its cells
            pathlib.Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            pathlib.Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print(_summary(result))
    return result


if __name__ == "__main__":
    main()
