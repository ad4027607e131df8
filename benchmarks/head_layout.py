"""One chunk of the train steps' LM head, token-major against vocabulary-major, on this machine.

    python benchmarks/head_layout.py [--rows 16] [--chunk 29] [--vocab 50304] [--reps 7]

What `rlft.objectives.logprobs.scored_token_stats` computes per chunk: the head's float32
logits for N = rows x chunk hidden states (width 128, Pythia's vocabulary by default), their
log-softmax at each row's target, and (under `jax.grad`) the gradients of a weighted sum of
those log-probs for the kernel and the hidden states, the chunk under `jax.checkpoint` as in
the train steps. Two layouts of the same arithmetic:

  token-major   logits [N, V], log-softmax along the last (contiguous) axis, the target's
                logit gathered from them; the kernel's gradient as g^T h [V, D] (rlft's layout
                before issue 9's vocabulary-major change, commit bb3e296)
  vocab-major   logits [V, N] (`rlft.models.head_logits_VxN`), log-softmax along axis 0, the
                target's logit from its kernel row (`head_target_logits`): rlft's layout now

It prints each variant's forward and forward + backward milliseconds (medians), their ratio, the
largest difference between the two variants' values and gradients (relative), and the GFLOP/s
XLA reaches on each variant's matmuls alone, so a layout's gain can be told apart from the
matmul's. The
default shape is one chunk of the DPO step of benchmarks/peers.py (16 rows x 29 positions).
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from rlft.models import head_logits_VxN, head_target_logits


def median_ms(fn, *args, reps: int) -> float:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3


@jax.custom_vjp
def _logits_NxV(kernel_DxV, kernel_VxD, h_NxD):
    return h_NxD @ kernel_DxV


def _logits_NxV_fwd(kernel_DxV, kernel_VxD, h_NxD):
    return h_NxD @ kernel_DxV, (kernel_DxV, h_NxD)


def _logits_NxV_bwd(residuals, g_NxV):
    kernel_DxV, h_NxD = residuals
    return None, jnp.einsum("nv,nd->vd", g_NxV, h_NxD), jnp.einsum("nv,dv->nd", g_NxV, kernel_DxV)


_logits_NxV.defvjp(_logits_NxV_fwd, _logits_NxV_bwd)


def token_major(kernel_DxV, h_NxD, targets_N, w_N):
    kernels = (jax.lax.stop_gradient(kernel_DxV), kernel_DxV.T)

    @jax.checkpoint
    def chunk(h_NxD):
        logp_NxV = jax.nn.log_softmax(_logits_NxV(*kernels, h_NxD), axis=-1)
        return jnp.take_along_axis(logp_NxV, targets_N[:, None], axis=-1)[:, 0]

    return jnp.sum(w_N * chunk(h_NxD))


def vocab_major(kernel_DxV, h_NxD, targets_N, w_N):
    kernels = (jax.lax.stop_gradient(kernel_DxV), kernel_DxV.T)

    @jax.checkpoint
    def chunk(h_NxD):
        lse_N = jax.nn.logsumexp(head_logits_VxN(*kernels, h_NxD), axis=0)
        return head_target_logits(kernels[1], h_NxD, targets_N) - lse_N

    return jnp.sum(w_N * chunk(h_NxD))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=16)
    p.add_argument("--chunk", type=int, default=29, help="positions per row in the chunk")
    p.add_argument("--vocab", type=int, default=50_304)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--reps", type=int, default=7)
    a = p.parse_args()
    n, d, v = a.rows * a.chunk, a.width, a.vocab
    rng = np.random.default_rng(0)
    h_NxD = jnp.asarray(rng.standard_normal((n, d), np.float32))
    kernel_DxV = jnp.asarray(0.02 * rng.standard_normal((d, v), np.float32))
    kernel_VxD = jnp.asarray(np.ascontiguousarray(np.asarray(kernel_DxV).T))
    targets_N = jnp.asarray(rng.integers(0, v, n), jnp.int32)
    w_N = jnp.asarray(rng.standard_normal(n), jnp.float32)
    gflop = 2 * n * d * v / 1e9
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; N = {a.rows} x {a.chunk} = {n}, "
          f"D = {d}, V = {v}; medians of {a.reps}")  # fmt: skip

    matmuls = {
        "token-major": {
            "forward h W [N, V]": ("nd,dv->nv", h_NxD, kernel_DxV),
            "kernel grad g^T h [V, D]": ("nv,nd->vd", jnp.ones((n, v)), h_NxD),
            "hidden grad g W^T [N, D]": ("nv,dv->nd", jnp.ones((n, v)), kernel_DxV),
        },
        "vocab-major": {
            "forward W^T h^T [V, N]": ("dv,nd->vn", kernel_DxV, h_NxD),
            "kernel grad g h [V, D]": ("vn,nd->vd", jnp.ones((v, n)), h_NxD),
            "hidden grad g^T W^T [N, D]": ("vn,vd->nd", jnp.ones((v, n)), kernel_VxD),
        },
    }
    times = {}
    for name, loss in (("token-major", token_major), ("vocab-major", vocab_major)):
        args = (kernel_DxV, h_NxD, targets_N, w_N)
        fwd = median_ms(jax.jit(loss), *args, reps=a.reps)
        both = median_ms(jax.jit(jax.value_and_grad(loss, argnums=(0, 1))), *args, reps=a.reps)
        times[name] = (fwd, both)
        rates = []
        for label, (spec, x, y) in matmuls[name].items():
            ms = median_ms(jax.jit(lambda x, y, s=spec: jnp.einsum(s, x, y)), x, y, reps=a.reps)
            rates.append(f"{label} {gflop / ms * 1e3:.0f}")
        print(f"{name:12s} forward {fwd:7.1f} ms   forward + backward {both:7.1f} ms   "
              f"matmul GFLOP/s: {', '.join(rates)}")  # fmt: skip
    (f0, b0), (f1, b1) = times["token-major"], times["vocab-major"]
    print(f"token-major / vocab-major time: forward {f0 / f1:.2f}x, "
          f"forward + backward {b0 / b1:.2f}x")  # fmt: skip
    args = (kernel_DxV, h_NxD, targets_N, w_N)
    got = jax.value_and_grad(vocab_major, argnums=(0, 1))(*args)
    want = jax.value_and_grad(token_major, argnums=(0, 1))(*args)
    pairs = zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True)
    diff = max(float(jnp.max(jnp.abs(x - y)) / jnp.max(jnp.abs(y))) for x, y in pairs)
    print(f"largest difference, value and each gradient, relative to its largest entry: {diff:.1e}")


if __name__ == "__main__":
    main()
