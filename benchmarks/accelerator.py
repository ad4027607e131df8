"""Model FLOPs utilisation of the SFT and DPO train steps, and decode tokens/s against the
memory-bandwidth bound, on one accelerator chip (GPU or TPU), written as JSON.

    python benchmarks/accelerator.py                       # Pythia-410m and 1.4b, bf16, remat
    python benchmarks/accelerator.py --smoke --out=smoke.json     # tiny model, CPU, ~25 s

Prepared to run once on a lent chip in under 8 minutes (`--budget-s`: a cell that would start
later is recorded as skipped; the JSON is rewritten after every cell, so a killed run keeps
what it measured). On an H200 a cell took 85-100 s, most of it compiling 24 unrolled layers, so
the default run there measured SFT and decode and skipped the rest; `--only=dpo,sft_no_remat`
ran those (docs/benchmarks/accelerator-h200.md). Default output:
docs/benchmarks/accelerator-<device>.json.

Train steps (rlft.train.step.train_step, jitted as rlft.train.loop does, one device, random
init, random tokens; `--steps` timed after one compile call). Model FLOPs per step follow PaLM
(Chowdhery et al. 2022, appendix B):

    F = 6 N D + 12 L d T D        D = tokens in the step, T = sequence length, L layers, d width

with N the parameters that multiply every token (all but the input embedding table; Pythia's
output head is untied, so it counts). One change to PaLM's count: the output head (d x V of N)
is counted only at the S scored tokens (6 d V S), since a step needs logits only there and rlft
skips the rest. SFT cells score every token (S = D, PaLM's F exactly); DPO cells score the
response, the last quarter of each sequence. Remat's recompute is not model FLOPs. DPO runs both
sequences of each pair whole (D = 2 x pairs x T; the DPO stage runs a pair's shared prompt once,
`Models.pair_prefix_len`, which this script leaves off so F counts what it runs). MFU = F / step
time / peak bf16 FLOP/s of the chip (data sheet); `mfu_of_measured` divides by the bf16 matmul
rate measured in the same run instead. XLA's own count (`cost_analysis()['flops']`, recompute
included) gives the hardware FLOPs utilisation (HFU) beside it, except on GPU, where that count
leaves out the matmuls XLA hands to cuBLAS (on an H200 it read 4.4e12 per step for both
Pythia-410m and 1.4b, under a tenth of the model FLOPs): there `hfu` is null. Not checked on a
TPU. Cell `sft_no_remat` is the largest model's SFT step without remat (it fits an H200's
memory), run last if the budget allows; `--only` picks cells by name.

Decode (rlft.rollout.sampler.generate's program, B prompts of P tokens, no EOS): a decode step is
(t(L new tokens) - t(1 new token)) / (L - 1), which removes the prefill. Each step reads every
parameter that multiplies a token (fp32 as stored, 4 B; 2 B if XLA hoists the bf16 cast out of
the loop) and the whole bf16 KV cache (the sampler attends over all P + L slots):

    bytes/step = 4 N + 2 (K and V) x L x B x (P + L_new) x d x 2 B (bf16)
    bound tokens/s = B x HBM bytes/s / bytes/step

Peak bf16 FLOP/s (dense, no sparsity) and HBM bytes/s per JAX device from the vendors' data
sheets: NVIDIA H100 / H200 / A100 product pages, Google Cloud TPU system-architecture pages
(v4, v5e, v5p, v6e). An unknown device (the CPU of --smoke included) measures its own: the
best of a large bf16 matmul (2 n^3 FLOPs) and of a reduction over a large bf16 array (bytes).

JSON: `peaks` (peak_flops in FLOP/s, hbm_bytes_per_s, and measured_flops,
measured_bytes_per_s from a large bf16 matmul and a bf16 reduction in this run);
`train[model][sft|dpo|sft_no_remat]`: step_s (seconds, best of --steps), tokens_per_s,
scored_tokens, model_flops and xla_flops (per step), mfu, mfu_of_measured and hfu (fractions of
peak); `decode[model]`: decode_step_s, tokens_per_s (new tokens/s over the batch),
bytes_per_step, bound_tokens_per_s (fp32 params) and bound_tokens_per_s_bf16_params,
fraction_of_bound, temp_bytes (the compiled generate's temporaries) and kernel_bf16_bytes (a
bf16 copy of the backbone's kernels: temporaries that large suggest XLA hoisted the cast out
of the loop); `decode_bf16_weights[model]`: the same, the sampler given bf16 kernels (the
same tokens: the bf16 layers cast them so anyway), bounds as decode's; `errors` (a cell that
failed, e.g. out of memory: 1.4b does not fit a 16 GiB chip) and `skipped` (over --budget-s).
"""

import argparse
import functools
import json
import math
import pathlib
import re
import time
import traceback

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rlft.config import OptimConfig
from rlft.models import init_params, model_config
from rlft.objectives import OBJECTIVES
from rlft.objectives.base import Models
from rlft.parallel import make_mesh, shard_batch
from rlft.rollout.sampler import generate
from rlft.train.state import init_state, make_optimizer
from rlft.train.step import StepSpec, train_step

# (device_kind pattern, name, peak dense bf16 FLOP/s, HBM bytes/s), first match wins.
DEVICES = (
    (r"H100.*PCIe", "h100-pcie", 756e12, 2.0e12),
    (r"H100.*NVL", "h100-nvl", 835e12, 3.9e12),
    (r"H100", "h100", 989e12, 3.35e12),  # SXM5 80GB HBM3
    (r"H200", "h200", 989e12, 4.8e12),  # SXM 141GB HBM3e
    (r"A100.*40GB", "a100-40gb", 312e12, 1.555e12),
    (r"A100.*PCIe", "a100-80gb-pcie", 312e12, 1.935e12),
    (r"A100", "a100-80gb", 312e12, 2.039e12),
    (r"v5 ?lite|v5e", "tpu-v5e", 197e12, 819e9),
    (r"v6 ?lite|v6e", "tpu-v6e", 918e12, 1640e9),
    (r"v5p|TPU v5$", "tpu-v5p", 459e12, 2765e9),
    (r"TPU v4", "tpu-v4", 275e12, 1200e9),  # one JAX device = one chip (2 cores, megacore)
)
TRAIN = {"sft": 16, "dpo": 8}  # rows per step: SFT sequences, DPO pairs (16 sequences)


def _best_time(fn, reps: int) -> float:
    """Seconds of the fastest of `reps` calls, after one warm-up (compile) call."""
    jax.block_until_ready(fn())
    best = math.inf
    for _ in range(reps):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - start)
    return best


def measured_peaks(n: int, nbytes: int) -> tuple[float, float]:
    """(bf16 matmul FLOP/s of an n x n product, bytes/s of summing an nbytes bf16 array)."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.bfloat16)
    mm = jax.jit(lambda x: x @ x)
    flops = 2 * n**3 / _best_time(lambda: mm(a), 3)
    x = jnp.ones((nbytes // 2,), jnp.bfloat16)
    total = jax.jit(lambda v: jnp.sum(v, dtype=jnp.float32))
    return flops, nbytes / _best_time(lambda: total(x), 3)


def device_peaks(kind: str, smoke: bool) -> dict:
    """The chip's name, peak bf16 FLOP/s and HBM bytes/s: looked up, else measured."""
    for pattern, name, flops, bw in DEVICES:
        if re.search(pattern, kind):
            return dict(name=name, peak_flops=flops, hbm_bytes_per_s=bw, source="data sheet")
    n, nbytes = (512, 2**24) if smoke else (8192, 2**30)
    flops, bw = measured_peaks(n, nbytes)
    name = re.sub(r"[^a-z0-9]+", "-", kind.lower()).strip("-") or "unknown"
    return dict(name=name, peak_flops=flops, hbm_bytes_per_s=bw, source="measured")


def with_measured(peaks: dict, smoke: bool) -> dict:
    """`peaks` plus this run's measured bf16 matmul FLOP/s and reduction bytes/s."""
    if peaks["source"] == "measured":
        flops, bw = peaks["peak_flops"], peaks["hbm_bytes_per_s"]
    else:
        flops, bw = measured_peaks(*((512, 2**24) if smoke else (8192, 2**30)))
    return {**peaks, "measured_flops": flops, "measured_bytes_per_s": bw}


def token_params(cfg) -> int:
    """Parameters that multiply every token: the LM's params minus its input embedding."""
    key = jax.ShapeDtypeStruct((2,), jnp.uint32)
    shapes = jax.eval_shape(lambda r: nn.unbox(init_params("lm", cfg, r)), key)
    total = sum(math.prod(x.shape) for x in jax.tree.leaves(shapes))
    return total - cfg.vocab_size * cfg.d_model


def model_flops(cfg, tokens: int, seq_len: int, scored: int | None = None) -> float:
    """PaLM's training FLOPs for `tokens` tokens in sequences of `seq_len`, 6ND + 12LdTD, with
    the output head's 6 d V share counted at the `scored` tokens only (default: all)."""
    head = cfg.d_model * cfg.vocab_size
    scored = tokens if scored is None else scored
    attention = 12 * cfg.num_layers * cfg.d_model * seq_len * tokens
    return 6 * (token_params(cfg) - head) * tokens + 6 * head * scored + attention


def _response_len(objective: str, seq_len: int) -> int:
    """Scored tokens per sequence: all of it for SFT, the last quarter for DPO."""
    return seq_len if objective == "sft" else max(seq_len // 4, 1)


def _random_batch(objective: str, rows: int, seq_len: int, vocab: int) -> dict:
    """Random tokens, full masks; SFT scores every token, DPO the last quarter (response)."""
    rng = np.random.default_rng(0)
    mask = np.ones((rows, seq_len), bool)
    loss_mask = np.zeros((rows, seq_len), bool)
    loss_mask[:, -_response_len(objective, seq_len) :] = True
    seq = lambda: dict(tokens=rng.integers(0, vocab, (rows, seq_len), dtype=np.int32))  # noqa: E731
    if objective == "sft":
        return {**seq(), "mask": mask, "loss_mask": loss_mask}
    out = {}
    for side in ("chosen", "rejected"):
        out.update({f"{side}_tokens": seq()["tokens"], f"{side}_mask": mask})
        out[f"{side}_loss_mask"] = loss_mask
        out[f"ref_{side}_logp"] = rng.normal(-20, 1, rows).astype(np.float32)
    return out


def train_cell(
    preset: str, objective: str, rows: int, seq_len: int, steps: int, peaks: dict, remat=True
):
    """Step time, MFU and HFU of one objective's train step on one device."""
    cfg = model_config(preset, dtype="bfloat16", remat=remat)
    mesh = make_mesh(1, 1, devices=jax.devices()[:1])
    _, hp_cls, roles = OBJECTIVES[objective]
    tx, schedule = make_optimizer(OptimConfig(), 1000)
    state, _ = init_state({r: ("lm", cfg) for r in roles}, tx, 0, mesh)
    batch = shard_batch(_random_batch(objective, rows, seq_len, cfg.vocab_size), mesh)
    spec = StepSpec(objective, Models(**{r: cfg for r in roles}), hp_cls(), tx, schedule)
    compiled = jax.jit(functools.partial(train_step, spec=spec), donate_argnums=0)
    compiled = compiled.lower(state, batch).compile()
    cost = compiled.cost_analysis() or {}
    cost = cost[0] if isinstance(cost, list) else cost  # a list of one dict in older jax
    xla_flops = cost.get("flops", 0.0)
    holder = [state]

    def call():
        holder[0], metrics = compiled(holder[0], batch)
        return metrics

    step_s = _best_time(call, steps)
    sequences = rows * (2 if objective == "dpo" else 1)
    tokens, scored = sequences * seq_len, sequences * _response_len(objective, seq_len)
    flops = model_flops(cfg, tokens, seq_len, scored)
    return dict(
        rows=rows,
        seq_len=seq_len,
        remat=remat,
        tokens=tokens,
        scored_tokens=scored,
        step_s=step_s,
        tokens_per_s=tokens / step_s,
        model_flops=flops,
        xla_flops=xla_flops,
        mfu=flops / step_s / peaks["peak_flops"],
        mfu_of_measured=flops / step_s / peaks["measured_flops"],
        hfu=None if jax.default_backend() == "gpu" else xla_flops / step_s / peaks["peak_flops"],
    )


def _backbone_kernel(path) -> bool:
    """Whether a params path names one of the backbone's matmul kernels."""
    return getattr(path[0], "key", None) == "backbone" and getattr(path[-1], "key", None) == (
        "kernel"
    )


def bf16_kernels(params):
    """The backbone's matmul kernels cast to bf16 (what its bf16 layers cast them to anyway);
    the head, embeddings and LayerNorms stay float32."""
    return jax.tree_util.tree_map_with_path(
        lambda path, x: x.astype(jnp.bfloat16) if _backbone_kernel(path) else x, params
    )


def decode_cell(
    preset: str,
    batch: int,
    prompt_len: int,
    new_tokens: int,
    peaks: dict,
    bf16_weights: bool = False,
):
    """Decode tokens/s of the KV-cache sampler against the HBM-bandwidth bound; with
    `bf16_weights`, of the same sampler given bf16 copies of the backbone's kernels."""
    cfg = model_config(preset, dtype="bfloat16")
    params = nn.unbox(init_params("lm", cfg, jax.random.key(0)))
    if bf16_weights:
        params = bf16_kernels(params)
    prompt = jax.random.randint(jax.random.key(1), (batch, prompt_len), 0, cfg.vocab_size)
    mask = jnp.ones((batch, prompt_len), bool)

    def compiled(n):  # generate's program for n new tokens, compiled once (what generate runs:
        # its padding check does nothing under a trace, the rest is its own jitted program)
        kw = dict(max_new_tokens=n, temperature=1.0, eos_id=None, pad_id=0)
        program = jax.jit(generate, static_argnums=0, static_argnames=tuple(kw))
        return program.lower(cfg, params, prompt, mask, jax.random.key(2), **kw).compile()

    def run(program):
        return lambda: program(params, prompt, mask, jax.random.key(2)).tokens

    program = compiled(new_tokens)
    full, first = _best_time(run(program), 3), _best_time(run(compiled(1)), 3)
    # Whether XLA hoisted the kernels' bf16 cast out of the decode loop shows in the program's
    # temporaries: a hoisted cast keeps a bf16 copy of every kernel (kernel_bf16_bytes) there.
    memory = program.memory_analysis()
    kernel_bytes = sum(
        2 * x.size
        for path, x in jax.tree_util.tree_leaves_with_path(params)
        if _backbone_kernel(path)
    )
    step_s = max(full - first, 1e-9) / (new_tokens - 1)
    kv = 2 * cfg.num_layers * batch * (prompt_len + new_tokens) * cfg.d_model * 2
    n = token_params(cfg)
    step_bytes = 4 * n + kv
    bound = batch * peaks["hbm_bytes_per_s"] / step_bytes
    return dict(
        batch=batch,
        prompt_len=prompt_len,
        new_tokens=new_tokens,
        decode_step_s=step_s,
        tokens_per_s=batch / step_s,
        bytes_per_step=step_bytes,
        kv_cache_bytes=kv,
        bound_tokens_per_s=bound,
        bound_tokens_per_s_bf16_params=batch * peaks["hbm_bytes_per_s"] / (2 * n + kv),
        fraction_of_bound=batch / step_s / bound,
        generate_s=full,
        temp_bytes=getattr(memory, "temp_size_in_bytes", None),
        kernel_bf16_bytes=kernel_bytes,
    )


def _cells(args) -> list[tuple[str, str, dict]]:
    """(model, what, settings) in run order, the issue's goals first: every model's SFT, then
    decode, then DPO; then the largest model's SFT without remat; last, decode given bf16
    kernels."""
    models = args.models.split(",")
    train = {
        o: dict(rows=2 if args.smoke else r, seq_len=args.seq_len, steps=args.steps)
        for o, r in TRAIN.items()
    }
    decode = dict(batch=args.decode_batch, prompt_len=args.prompt_len, new_tokens=args.new_tokens)
    out = [(m, "sft", train["sft"]) for m in models]
    out += [(m, "decode", decode) for m in models]
    out += [(m, "dpo", train["dpo"]) for m in models]
    out += [(models[-1], "sft_no_remat", {**train["sft"], "remat": False})]
    return out + [(m, "decode_bf16_weights", {**decode, "bf16_weights": True}) for m in models]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="pythia-410m,pythia-1.4b", help="rlft.models presets")
    p.add_argument("--seq-len", type=int, default=565, help="train tokens per sequence (TL;DR)")
    p.add_argument("--steps", type=int, default=5, help="timed train steps (best of)")
    p.add_argument("--decode-batch", type=int, default=16, help="prompts decoded at once")
    p.add_argument("--prompt-len", type=int, default=512)
    p.add_argument("--new-tokens", type=int, default=53)
    p.add_argument("--budget-s", type=float, default=420, help="start no cell after this")
    p.add_argument("--only", default="", help="cells to run, e.g. dpo,sft_no_remat (default all)")
    p.add_argument("--smoke", action="store_true", help="tiny model and shapes (CPU test)")
    p.add_argument("--out", default="", help="JSON path; default docs/benchmarks/...")
    args = p.parse_args(argv)
    if args.smoke:
        args.models, args.seq_len, args.steps = "tiny", 24, 2
        args.decode_batch, args.prompt_len, args.new_tokens = 2, 16, 8
    start = time.perf_counter()
    kind = jax.devices()[0].device_kind
    peaks = with_measured(device_peaks(kind, args.smoke), args.smoke)
    print(f"{kind} ({jax.default_backend()}, jax {jax.__version__}): {json.dumps(peaks)}")
    out = pathlib.Path(args.out or f"docs/benchmarks/accelerator-{peaks['name']}.json")
    result = dict(
        device_kind=kind,
        backend=jax.default_backend(),
        jax_version=jax.__version__,
        peaks=peaks,
        dtype="bfloat16",
        remat=True,
        train={},
        decode={},
        skipped=[],
        errors={},
    )
    only = set(filter(None, args.only.split(",")))
    for preset, what, settings in _cells(args):
        label = f"{preset}/{what}"
        if only and what not in only:
            continue
        if time.perf_counter() - start > args.budget_s:
            result["skipped"].append(label)
            continue
        try:
            if what.startswith("decode"):
                cell = decode_cell(preset, **settings, peaks=peaks)
                result.setdefault(what, {})[preset] = cell
            else:
                objective = what.removesuffix("_no_remat")
                cell = train_cell(preset, objective, **settings, peaks=peaks)
                result["train"].setdefault(preset, {})[what] = cell
        except Exception as e:  # noqa: BLE001 (an OOM on a small chip is a result, not a crash)
            result["errors"][label] = f"{type(e).__name__}: {str(e)[:300]}"
            traceback.print_exc()
        result["wall_s"] = time.perf_counter() - start
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"{label}: {json.dumps(_brief(result, preset, what))}", flush=True)
    print(f"wrote {out} ({result['wall_s']:.0f} s)")
    return result


def _brief(result: dict, preset: str, what: str) -> dict:
    """The line printed per cell: MFU or decode tokens/s, or the error."""
    if f"{preset}/{what}" in result["errors"]:
        return {"error": result["errors"][f"{preset}/{what}"]}
    if what.startswith("decode"):
        d = result[what][preset]
        keys = ("tokens_per_s", "bound_tokens_per_s", "fraction_of_bound")
    else:
        d = result["train"][preset][what]
        keys = ("step_s", "tokens_per_s", "mfu", "mfu_of_measured", "hfu")
    return {k: None if d[k] is None else round(d[k], 4) for k in keys}


if __name__ == "__main__":
    main()
