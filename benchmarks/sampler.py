"""New tokens/s of the KV-cache sampler against a no-cache baseline (full recompute per step).

    python benchmarks/sampler.py                      # 'small' preset, batch 64, 32 new tokens
    python benchmarks/sampler.py --preset tiny --batch 16 --new_tokens 64 --prompt_len 16

Both samplers run on the same random-init params, prompts and rng, sample all tokens (no EOS
stop), and are timed after a warm-up call that compiles them. The baseline runs the full
forward over the whole [N, P+L] buffer at every step and reads the logits at the next slot;
it shares `sample_token` with the sampler, so with the same rng their tokens should agree.
"""

import argparse
import functools
import time

import flax.linen as nn
import jax
import jax.numpy as jnp

from rlft.models import ModelConfig, init_params, lm_logits, model_config
from rlft.rollout.sampler import generate, sample_token


@functools.partial(
    jax.jit, static_argnums=0, static_argnames=("max_new_tokens", "temperature", "pad_id")
)
def generate_no_cache(
    cfg: ModelConfig,
    params,
    prompt_tokens_BxP,
    prompt_mask_BxP,
    rng,
    *,
    max_new_tokens: int,
    temperature: float,
    pad_id: int,
) -> jax.Array:
    """Baseline: recompute the whole sequence for every new token; returns tokens [B, P+L]."""
    b, p = prompt_tokens_BxP.shape
    tokens_BxT = jnp.concatenate(
        [prompt_tokens_BxP, jnp.full((b, max_new_tokens), pad_id, prompt_tokens_BxP.dtype)], -1
    )
    mask_BxT = jnp.concatenate(
        [prompt_mask_BxP.astype(bool), jnp.zeros((b, max_new_tokens), bool)], -1
    )

    def step(i, carry):
        tokens_BxT, mask_BxT = carry
        logits_BxTxV = lm_logits(cfg, params, tokens_BxT, mask_BxT)
        tok_B = sample_token(
            logits_BxTxV[:, p + i - 1], jax.random.fold_in(rng, i), temperature, 1.0, False
        )
        return tokens_BxT.at[:, p + i].set(tok_B), mask_BxT.at[:, p + i].set(True)

    tokens_BxT, _ = jax.lax.fori_loop(0, max_new_tokens, step, (tokens_BxT, mask_BxT))
    return tokens_BxT


def time_calls(fn, reps: int) -> float:
    """Seconds per call, best of `reps` after one warm-up (compile) call."""
    jax.block_until_ready(fn())
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--new_tokens", type=int, default=32)
    parser.add_argument("--prompt_len", type=int, default=32)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()

    cfg = model_config(args.preset)
    params = nn.unbox(init_params("lm", cfg, jax.random.key(0)))
    b, p, L = args.batch, args.prompt_len, args.new_tokens
    prompt_BxP = jax.random.randint(jax.random.key(1), (b, p), 0, cfg.vocab_size)
    pad_B = jax.random.randint(jax.random.key(2), (b,), 0, p // 2)  # ragged left padding
    mask_BxP = jnp.arange(p)[None, :] >= pad_B[:, None]
    rng = jax.random.key(3)

    def cached():
        return generate(
            cfg,
            params,
            prompt_BxP,
            mask_BxP,
            rng,
            max_new_tokens=L,
            temperature=1.0,
            eos_id=None,
            pad_id=0,
        ).tokens

    def no_cache():
        return generate_no_cache(
            cfg, params, prompt_BxP, mask_BxP, rng, max_new_tokens=L, temperature=1.0, pad_id=0
        )

    agree = float(jnp.mean(cached()[:, p:] == no_cache()[:, p:]))
    t_cache, t_full = time_calls(cached, args.reps), time_calls(no_cache, args.reps)
    new_tokens = b * L
    print(
        f"{args.preset}: d={cfg.d_model} layers={cfg.num_layers} vocab={cfg.vocab_size} "
        f"batch={b} prompt={p} new_tokens={L} backend={jax.default_backend()}"
    )
    print(f"kv-cache  : {new_tokens / t_cache:10.0f} new tokens/s ({t_cache * 1e3:.1f} ms/call)")
    print(f"no cache  : {new_tokens / t_full:10.0f} new tokens/s ({t_full * 1e3:.1f} ms/call)")
    print(f"speed-up  : {t_full / t_cache:10.1f}x   (same rng, tokens agree: {agree:.1%})")


if __name__ == "__main__":
    main()
