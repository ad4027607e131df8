"""New tokens/s of the KV-cache sampler, the fraction of a FLOP bound it reaches, and baselines.

    python benchmarks/sampler.py --setting pythia   # issue 9: Pythia-shaped, 6 x 128, V 50,304
    python benchmarks/sampler.py                    # 'small': with the no-cache baseline
    python benchmarks/sampler.py --setting small --preset tiny --batch 16 --new_tokens 64

Settings (flags override their fields):
  pythia: random GPT-NeoX, 6 layers, width 128, 4 heads, d_ff 512, vocab 50,304, rotary 0.25,
          parallel residual; batch 32, prompt 64, 53 new tokens, temperature 0.7, no EOS stop.
  small:  the 'small' preset (vocab 256); batch 64, prompt 32, 32 new tokens, temperature 1.

The sampler runs on random-init params, random ragged left-padded prompts and a fixed rng, and
samples every token (no EOS stop). Times are the best of --reps calls after a warm-up call that
compiles; on a shared machine they are noisy. The FLOP bound is measured in the same run:
GFLOP/s of the LM-head matmul [N, D] x [D, V] (the decode step's largest matmul), divided by
the forward FLOPs per new token (`flops_per_new_token`). The per-step lines time the LM head,
`sample_token` and `jax.random.categorical` (one Gumbel per vocabulary entry) at [N, V].
The no-cache baseline (--no_cache) reruns the full forward over the [N, P+L] buffer at every
step and reads the logits at the next slot; it shares `sample_token`, so with the same rng
its tokens should agree with the sampler's.
"""

import argparse
import functools
import time

import flax.linen as nn
import jax
import jax.numpy as jnp

from rlft.models import ModelConfig, init_params, lm_logits, model_config
from rlft.rollout.sampler import generate, sample_token

SETTINGS = {
    "pythia": dict(
        preset="pythia-70m",
        model=dict(num_layers=6, d_model=128, num_heads=4, d_ff=512),
        batch=32,
        prompt_len=64,
        new_tokens=53,
        temperature=0.7,
        no_cache=False,  # the baseline recomputes a 50,304-way head over 117 slots per step
    ),
    "small": dict(
        preset="small",
        model={},
        batch=64,
        prompt_len=32,
        new_tokens=32,
        temperature=1.0,
        no_cache=True,
    ),
}


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


def flops_per_new_token(cfg: ModelConfig, params, batch: int, k: int, p: int, L: int) -> float:
    """Forward FLOPs of one `generate` call (no EOS stop) divided by its N * L new tokens.

    Matmuls cost 2 FLOPs per parameter per token (every backbone parameter but the embedding
    lookup; the LM head only where logits are read: the last prompt slot and each fed token);
    attention 4 * D per layer per attended slot (QK^T and PV). Prefill: B prompts of P tokens,
    causal (P(P+1)/2 slots per prompt and layer). Decode: L - 1 forwards of N = B*K rows, the
    one at response step i attending P + i slots (the first token comes from prefill logits).
    Counts what the maths needs, not the masked slots the implementation also computes.
    """
    n_backbone = sum(x.size for x in jax.tree.leaves(params["backbone"]))
    n_backbone -= params["backbone"]["embed_in"]["embedding"].size
    n_head = params["embed_out"]["kernel"].size
    attn_per_slot = 4 * cfg.d_model * cfg.num_layers
    n = batch * k
    prefill = batch * (p * 2 * n_backbone + 2 * n_head + attn_per_slot * p * (p + 1) / 2)
    decode = sum(n * (2 * (n_backbone + n_head) + attn_per_slot * (p + i)) for i in range(1, L))
    return (prefill + decode) / (n * L)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--setting", default="small", choices=sorted(SETTINGS))
    parser.add_argument("--preset", help="model preset (default: the setting's)")
    parser.add_argument("--batch", type=int, help="prompts B")
    parser.add_argument("--num_samples", type=int, default=1, help="samples per prompt K")
    parser.add_argument("--prompt_len", type=int, help="prompt width P")
    parser.add_argument("--new_tokens", type=int, help="new tokens per sample L")
    parser.add_argument("--temperature", type=float)
    parser.add_argument("--top_p", type=float, default=1.0)
    parser.add_argument("--no_cache", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    setting = dict(SETTINGS[args.setting])
    for field in ("preset", "batch", "prompt_len", "new_tokens", "temperature", "no_cache"):
        if getattr(args, field) is not None:
            setting[field] = getattr(args, field)
    if setting["preset"] != SETTINGS[args.setting]["preset"]:
        setting["model"] = {}  # the setting's shape overrides belong to its own preset

    cfg = model_config(setting["preset"], **setting["model"])
    params = nn.unbox(jax.jit(init_params, static_argnums=(0, 1))("lm", cfg, jax.random.key(0)))
    b, k, p, L = setting["batch"], args.num_samples, setting["prompt_len"], setting["new_tokens"]
    temperature, n = setting["temperature"], setting["batch"] * args.num_samples
    prompt_BxP = jax.random.randint(jax.random.key(1), (b, p), 0, cfg.vocab_size)
    pad_B = jax.random.randint(jax.random.key(2), (b,), 0, p // 2)  # ragged left padding
    mask_BxP = jnp.arange(p)[None, :] >= pad_B[:, None]
    rng = jax.random.key(3)
    sampling = dict(temperature=temperature, top_p=args.top_p)

    def cached():
        return generate(
            cfg,
            params,
            prompt_BxP,
            mask_BxP,
            rng,
            max_new_tokens=L,
            num_samples=k,
            eos_id=None,
            pad_id=0,
            **sampling,
        ).tokens

    print(
        f"{args.setting}: preset={setting['preset']} layers={cfg.num_layers} d={cfg.d_model} "
        f"heads={cfg.num_heads} d_ff={cfg.d_ff} vocab={cfg.vocab_size} batch={b} K={k} "
        f"prompt={p} new_tokens={L} T={temperature} top_p={args.top_p} "
        f"backend={jax.default_backend()} devices={jax.device_count()} (times: best of "
        f"{args.reps}, noisy on a shared machine)"
    )
    t_cache = time_calls(cached, args.reps)
    print(f"kv-cache  : {n * L / t_cache:10.0f} new tokens/s ({t_cache * 1e3:.1f} ms/call)")

    # The FLOP bound, measured now: the LM head's matmul at the decode shape.
    h_NxD = jax.random.normal(jax.random.key(4), (n, cfg.d_model))
    head_DxV = params["embed_out"]["kernel"]
    head = jax.jit(jnp.matmul)
    logits_NxV = head(h_NxD, head_DxV)
    reps = 10 * args.reps
    t_head = time_calls(lambda: head(h_NxD, head_DxV), reps)
    gflops = 2 * n * cfg.d_model * cfg.vocab_size / t_head / 1e9
    flops = flops_per_new_token(cfg, params, b, k, p, L)
    bound = gflops * 1e9 / flops
    print(
        f"FLOP bound: {bound:10.0f} new tokens/s = {gflops:.1f} GFLOP/s (LM head "
        f"[{n},{cfg.d_model}]x[{cfg.d_model},{cfg.vocab_size}]) / {flops / 1e6:.2f} MFLOP per "
        f"new token; reached {n * L / t_cache / bound:.1%}"
    )

    sample = jax.jit(sample_token, static_argnums=(2, 3, 4))
    gumbel = jax.jit(lambda x, key: jax.random.categorical(key, x / temperature, axis=-1))
    t_sample = time_calls(lambda: sample(logits_NxV, rng, temperature, args.top_p, False), reps)
    t_gumbel = time_calls(lambda: gumbel(logits_NxV, rng), reps)
    print(
        f"per step  : LM head {t_head * 1e3:.2f} ms, sample_token {t_sample * 1e3:.2f} ms, "
        f"jax.random.categorical {t_gumbel * 1e3:.2f} ms, whole step ~{t_cache / L * 1e3:.1f} ms"
    )

    if setting["no_cache"]:

        def no_cache():
            return generate_no_cache(
                cfg,
                params,
                prompt_BxP,
                mask_BxP,
                rng,
                max_new_tokens=L,
                temperature=temperature,
                pad_id=0,
            )

        agree = float(jnp.mean(cached()[:, p:] == no_cache()[:, p:])) if k == 1 else float("nan")
        t_full = time_calls(no_cache, args.reps)
        print(f"no cache  : {b * L / t_full:10.0f} new tokens/s ({t_full * 1e3:.1f} ms/call)")
        print(
            f"speed-up  : {(n * L / t_cache) / (b * L / t_full):10.1f}x   (same rng, tokens "
            f"agree: {agree:.1%})"
        )


if __name__ == "__main__":
    main()
