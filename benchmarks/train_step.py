"""Train-step time per objective, against a bare grad + AdamW step measured in the same run.

  python benchmarks/train_step.py [--preset tiny] [--batch 32] [--steps 30]

The baseline is the minimum a step can cost: `jax.grad` of a plain next-token loss written
inline plus an optax update, no dispatch, no (sum, denominator) bookkeeping. Each objective's
ratio to it shows what the shared step adds (DPO and reward run two sequences per row, PPO a
policy and a critic, so their ratios also include that real extra work).
"""

import argparse
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rlft.config import OptimConfig
from rlft.data.synthetic import SyntheticConfig, make_datasets
from rlft.models import lm_logits, model_config
from rlft.objectives import OBJECTIVES
from rlft.objectives.base import Models
from rlft.parallel import make_mesh, shard_batch
from rlft.train.state import init_state, make_optimizer
from rlft.train.step import StepSpec, train_step


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


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args()
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
    for name, (_, hp_cls, roles) in OBJECTIVES.items():
        kinds = {"policy": "lm", "reward": "scalar", "critic": "scalar"}
        state, _ = init_state({r: (kinds[r], cfg) for r in roles}, tx, 0, mesh)
        spec = StepSpec(name, Models(**{r: cfg for r in roles}), hp_cls(), tx, schedule)
        fn = jax.jit(functools.partial(train_step, spec=spec), donate_argnums=0)
        t = _time(fn, state, shard_batch(batches[name], mesh), args.steps)
        print(f"{name:28s} {t * 1e3:8.2f} ms/step {t / base:6.2f}x")


if __name__ == "__main__":
    main()
