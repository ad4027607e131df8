"""Train-step time per objective: against a bare grad + AdamW step, or against a FLOP bound.

  python benchmarks/train_step.py [--preset tiny] [--batch 32] [--steps 30]
  python benchmarks/train_step.py --setting pythia [--steps 5]

`--setting tiny` (default): the baseline is the minimum a step can cost, `jax.grad` of a plain
next-token loss written inline plus an optax update, no dispatch, no (sum, denominator)
bookkeeping. Each objective's ratio to it shows what the shared step adds (DPO and reward run
two sequences per row, PPO a policy and a critic, so their ratios also include that work).

`--setting pythia` (issue 9): a random GPT-NeoX with Pythia's vocabulary (50,304; 6 layers,
width 128, 4 heads, rotary 0.25, parallel residual) on 8 pairs of a 64-token prompt and a
53-token response: SFT on the chosen rows, the reward model and DPO (beta 0.05, AdamW) with
precomputed reference log-probs and with a reference forward in every step. It times a matmul
of the LM head's shape for an achievable FLOP/s, counts each step's FLOPs (6 x params x tokens
trained, 2 x params x tokens for a frozen forward; the embedding lookup counts 0; the LM head
counted at every token, and at the tokens the step actually computes) and prints s/step, the
compiled step's temporary buffers (XLA's memory analysis: activations, logits and their
gradients), the time each count needs at that rate (the bound) and the fraction reached.
"""

import argparse
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rlft.config import OptimConfig
from rlft.data.arrays import pack_pairs
from rlft.data.synthetic import SyntheticConfig, make_datasets
from rlft.models import lm_logits, model_config
from rlft.objectives import OBJECTIVES, dpo, logprobs
from rlft.objectives.base import Models
from rlft.parallel import make_mesh, shard_batch
from rlft.train.state import init_state, make_optimizer
from rlft.train.step import StepSpec, train_step

KINDS = {"policy": "lm", "reward": "scalar", "critic": "scalar"}


def _time(fn, state, batch, steps):
    state, m = fn(state, batch)  # compile
    jax.block_until_ready(m)
    start = time.perf_counter()
    for _ in range(steps):
        state, m = fn(state, batch)
    jax.block_until_ready(m)
    return (time.perf_counter() - start) / steps


def _batches(data_cfg, rows):
    data = make_datasets(data_cfg)
    sft = {k: v[:rows] for k, v in data["sft"].items()}
    pairs = {k: v[:rows] for k, v in data["pairs"].items()}
    rng = np.random.default_rng(0)
    pairs["ref_chosen_logp"] = rng.normal(-20, 1, rows).astype(np.float32)
    pairs["ref_rejected_logp"] = rng.normal(-20, 1, rows).astype(np.float32)
    t = sft["tokens"].shape[1]
    ppo = {
        **sft,
        "old_logp": rng.normal(-3, 0.5, (rows, t)).astype(np.float32),
        "old_values": rng.normal(0, 1, (rows, t)).astype(np.float32),
        "advantages": rng.normal(0, 1, (rows, t)).astype(np.float32),
        "returns": rng.normal(0, 1, (rows, t)).astype(np.float32),
    }
    return {"sft": sft, "reward": pairs, "dpo": pairs, "ppo": ppo}


def step_fn(name, cfg, tx, schedule, mesh, hparams=None):
    """(state, jitted step) of objective `name` with fresh params of `cfg` in every role."""
    _, hp_cls, roles = OBJECTIVES[name]
    state, _ = init_state({r: (KINDS[r], cfg) for r in roles}, tx, 0, mesh)
    spec = StepSpec(name, Models(**{r: cfg for r in roles}), hparams or hp_cls(), tx, schedule)
    return state, jax.jit(functools.partial(train_step, spec=spec), donate_argnums=0)


def run_tiny(args):
    cfg = model_config(args.preset)
    mesh = make_mesh(-1, 1)
    batches = _batches(SyntheticConfig(vocab_size=min(cfg.vocab_size, 64)), args.batch)
    tx, schedule = make_optimizer(OptimConfig(), 1000)

    # Baseline: inline next-token loss + AdamW, same model, same SFT batch.
    state, _ = init_state({"policy": ("lm", cfg)}, tx, 0, mesh)
    sft = shard_batch(batches["sft"], mesh)

    @jax.jit
    def bare_step(state, batch):
        def loss(p):
            logits = lm_logits(cfg, p["policy"], batch["tokens"], batch["mask"])
            logp = jax.nn.log_softmax(logits[:, :-1])
            nll = -jnp.take_along_axis(logp, batch["tokens"][:, 1:, None], -1)[..., 0]
            m = batch["loss_mask"][:, 1:]
            return jnp.sum(nll * m) / jnp.sum(m)

        value, grads = jax.value_and_grad(loss)(state.params)
        updates, opt = tx.update(grads, state.opt_state, state.params)
        return state.replace(
            params=optax.apply_updates(state.params, updates), opt_state=opt
        ), value

    base = _time(bare_step, state, sft, args.steps)
    print(
        f"devices={len(jax.devices())} preset={args.preset} batch={args.batch} "
        f"seq={batches['sft']['tokens'].shape[1]}"
    )
    print(f"{'baseline (bare grad+adamw)':28s} {base * 1e3:8.2f} ms/step   1.00x")
    for name in OBJECTIVES:
        state, fn = step_fn(name, cfg, tx, schedule, mesh)
        t = _time(fn, state, shard_batch(batches[name], mesh), args.steps)
        print(f"{name:28s} {t * 1e3:8.2f} ms/step {t / base:6.2f}x")


# ---- issue 9: the Pythia-shaped setting and its FLOP bound ----


def pythia_pairs(pairs: int, prompt_len: int, response_len: int, vocab: int) -> dict:
    """Full-length pairs (every prompt and response token real) of random token ids, packed in
    rlft's layout, with random reference log-probs."""
    rng = np.random.default_rng(0)

    def draw(n):
        return [rng.integers(0, vocab, n).tolist() for _ in range(pairs)]

    prompts = draw(prompt_len)
    out = pack_pairs(prompts, draw(response_len), draw(response_len), prompt_len, response_len, 0)
    out["ref_chosen_logp"] = rng.normal(-400, 10, pairs).astype(np.float32)
    out["ref_rejected_logp"] = rng.normal(-400, 10, pairs).astype(np.float32)
    return out


def achievable_flops(rows: int, d: int, v: int, reps: int = 3) -> float:
    """FLOP/s of a float32 [rows, d] x [d, v] matmul (the LM head's shape), best of reps."""
    x = jax.random.normal(jax.random.key(0), (rows, d), jnp.float32)
    w = jax.random.normal(jax.random.key(1), (d, v), jnp.float32)
    mm = jax.jit(jnp.matmul)
    jax.block_until_ready(mm(x, w))
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        jax.block_until_ready(mm(x, w))
        best = min(best, time.perf_counter() - start)
    return 2 * rows * d * v / best


def head_positions(loss_mask_BxT) -> int:
    """Positions per row where the step runs the LM head; an rlft without the scored path
    (before issue 9, for a before/after run) runs it at all T."""
    fn = getattr(logprobs, "head_positions", None)
    return fn(loss_mask_BxT) if fn else loss_mask_BxT.shape[1]


def step_flops(cfg, rows: int, t: int, head_t: int, trained: bool, lm: bool = True) -> float:
    """6 (trained) or 2 (frozen) x params x tokens: the backbone's non-embedding params at all
    rows x t tokens, the LM head's D x V at rows x head_t (or a scalar head at every token)."""
    d, mult = cfg.d_model, 6 if trained else 2
    per_layer = 4 * d * d + 4 * d + 2 * d * cfg.d_ff + cfg.d_ff + d + 4 * d  # attn, mlp, 2 LN
    body = cfg.num_layers * per_layer + 2 * d  # + final LN
    head = d * cfg.vocab_size * rows * head_t if lm else (d + 1) * rows * t
    return mult * (body * rows * t + head)


def run_pythia(args):
    cfg = model_config("pythia-70m", num_layers=6, d_model=128, num_heads=4, d_ff=512, max_len=256)
    mesh = make_mesh(-1, 1)
    tx, schedule = make_optimizer(OptimConfig(), 1000)
    pairs = pythia_pairs(args.pairs, args.prompt_len, args.response_len, cfg.vocab_size)
    sft = {k: pairs[f"chosen_{k}"] for k in ("tokens", "mask", "loss_mask")}
    b, t = sft["tokens"].shape
    head_t = head_positions(pairs["chosen_loss_mask"])
    rate_rows = 2 * b * t  # the head's rows in a DPO step
    print(
        f"devices={len(jax.devices())} ({jax.devices()[0].platform}) vocab={cfg.vocab_size} "
        f"layers={cfg.num_layers} width={cfg.d_model} pairs={b} prompt={args.prompt_len} "
        f"response={args.response_len} T={t}; LM head at {head_t} of {t} positions per row"
    )
    print(
        f"achievable FLOP/s: a {rate_rows}x{cfg.d_model} @ {cfg.d_model}x{cfg.vocab_size} float32 "
        f"matmul, best of 3, timed just before each step (a shared machine's load drifts)"
    )
    hp = dpo.DpoHparams(beta=args.beta)
    runs = []  # (label, state, fn, batch, [(rows, trained, lm)])
    state, fn = step_fn("sft", cfg, tx, schedule, mesh)
    runs.append(("sft", state, fn, sft, [(b, True, True)]))
    state, fn = step_fn("reward", cfg, tx, schedule, mesh)
    runs.append(("reward", state, fn, pairs, [(2 * b, True, False)]))
    state, fn = step_fn("dpo", cfg, tx, schedule, mesh, hp)
    runs.append(("dpo (precomputed ref)", state, fn, pairs, [(2 * b, True, True)]))
    state, step = step_fn("dpo", cfg, tx, schedule, mesh, hp)
    ref_params = jax.tree.map(jnp.copy, state.params["policy"])

    @functools.partial(jax.jit, donate_argnums=0)
    def with_ref(state, batch):  # online-style: the frozen reference forward inside the step
        rows = {
            k: jnp.concatenate([batch[f"chosen_{k}"], batch[f"rejected_{k}"]])
            for k in ("tokens", "mask", "loss_mask")
        }
        ref_2B = logprobs.sequence_logprobs(
            cfg, ref_params, rows["tokens"], rows["mask"], rows["loss_mask"], hp.temperature
        )
        batch = {**batch, "ref_chosen_logp": ref_2B[:b], "ref_rejected_logp": ref_2B[b:]}
        return step(state, batch)  # inlined into this program

    runs.append(
        ("dpo (+ ref forward)", state, with_ref, pairs, [(2 * b, True, True), (2 * b, False, True)])
    )
    print(
        f"{'step':24s} {'s/step':>8s} {'temp MB':>8s} {'GFLOP/s':>8s} | "
        f"{'head at every token':>28s} | "
        f"{'head where computed':>28s}"
    )
    cols = f"{'GFLOP  bound s  reached':>28s}"
    print(f"{'':24s} {'':8s} {'':8s} {'':8s} | {cols} | {cols}")
    for label, state, fn, batch, parts in runs:
        batch = shard_batch(batch, mesh)
        temp = fn.lower(state, batch).compile().memory_analysis().temp_size_in_bytes
        flops_s = achievable_flops(rate_rows, cfg.d_model, cfg.vocab_size)
        sec = _time(fn, state, batch, args.steps)
        cols = []
        for ht in (t, head_t):
            f = sum(step_flops(cfg, r, t, ht, tr, lm) for r, tr, lm in parts)
            cols.append(f"{f / 1e9:7.1f} {f / flops_s:8.3f} {f / flops_s / sec:8.1%}")
        print(
            f"{label:24s} {sec:8.3f} {temp / 1e6:8.0f} {flops_s / 1e9:8.1f} | "
            f"{cols[0]:>28s} | {cols[1]:>28s}"
        )


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--setting", choices=("tiny", "pythia"), default="tiny")
    ap.add_argument("--preset", default="tiny", help="tiny setting: the model preset")
    ap.add_argument("--batch", type=int, default=32, help="tiny setting: rows per step")
    ap.add_argument("--steps", type=int, default=30, help="timed steps after one compile step")
    ap.add_argument("--pairs", type=int, default=8, help="pythia setting: pairs per step")
    ap.add_argument("--prompt-len", type=int, default=64, help="pythia setting")
    ap.add_argument("--response-len", type=int, default=53, help="pythia setting")
    ap.add_argument("--beta", type=float, default=0.05, help="pythia setting: DPO beta")
    args = ap.parse_args()
    (run_pythia if args.setting == "pythia" else run_tiny)(args)


if __name__ == "__main__":
    main()
