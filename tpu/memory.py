"""Per-device HBM for PPO (policy + critic trained, reference + reward model frozen) on TPUs.

    python tpu/memory.py [--micro-batch=4] [--seq-len=565] [--markdown-only]

Parameter counts come from `jax.eval_shape` of `rlft.models.init_params` (nothing is allocated),
and per-device bytes from each parameter's logical axes under `rlft.parallel.LOGICAL_RULES` on
a data=1 x fsdp=<all devices> mesh, so replicated leaves (biases without an `embed` axis) are
counted on every device. Bytes per parameter:
  trained policy and critic: fp32 param + fp32 grad + AdamW mu + nu (fp32)  = 16
  frozen reference and reward model: fp32 = 4 (what ppo_stage keeps today) or bf16 = 2
Activations are a rough estimate for the PPO train step (policy and critic forward + backward in
bf16 compute with fp32 attention scores, as rlft.models.transformer does), per device, for
`micro-batch` sequences of `seq-len` tokens (TL;DR: 512 prompt + 53 response). Per layer,
following Korthikanti et al. 2022 (no dropout, fp32 scores):
  remat off: B*T*(34*D + 10*H*T) bytes          remat on: B*T*D*2 bytes (block input) + one
  layer recomputed at a time; plus the LM head's fp32 logits, log-softmax and their grad,
  3 * B*T*V*4 bytes. A smaller micro-batch (optim.accum_steps) scales them down linearly.
"Fits" keeps `--reserve` of HBM free for XLA temporaries, fsdp all-gathers and fragmentation.
The rollout (KV cache of 2*L*B*S*D*2 bytes plus forward logits) needs less than the train step
at the same micro-batch and is not added.
"""

import argparse
import dataclasses
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from rlft.models import ModelConfig, init_params, model_config
from rlft.parallel import LOGICAL_RULES

GiB = 2**30
TRAINED_BYTES = 16  # fp32 param + grad + AdamW mu + nu
FROZEN_BYTES = {"fp32": 4, "bf16": 2}


@dataclasses.dataclass(frozen=True)
class Tpu:
    name: str
    devices: int  # JAX devices = chips (v4 megacore: 2 TensorCores show as one device)
    hbm_gib: float  # per device
    note: str = ""


TPUS = (
    Tpu("v4-8", 4, 32, "1 host, 4 chips"),
    Tpu("v4-32", 16, 32, "4 hosts, 16 chips"),
    Tpu("v5e-8", 8, 16, "1 host, 8 chips"),
    Tpu("v5e-1", 1, 16, "Colab TPU"),
)


@functools.cache
def _abstract(kind: str, cfg: ModelConfig):
    key = jax.ShapeDtypeStruct((2,), jnp.uint32)
    return jax.eval_shape(lambda r: init_params(kind, cfg, r), key)


def param_count(kind: str, cfg: ModelConfig) -> int:
    """Exact number of parameters of a `lm` or `scalar` model."""
    return sum(math.prod(x.shape) for x in jax.tree.leaves(nn.unbox(_abstract(kind, cfg))))


def params_per_device(kind: str, cfg: ModelConfig, fsdp: int) -> int:
    """Parameters held by one device when every `embed` axis is split `fsdp` ways."""
    boxed = _abstract(kind, cfg)
    specs = nn.get_partition_spec(boxed)
    total = 0
    for leaf, names in zip(
        jax.tree.leaves(nn.unbox(boxed)),
        jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec)),
        strict=True,
    ):
        mesh_axes = nn.logical_to_mesh_axes(tuple(names), LOGICAL_RULES)
        shard = 1
        for dim, axes in zip(leaf.shape, tuple(mesh_axes) + (None,) * leaf.ndim, strict=False):
            axes = (axes,) if isinstance(axes, str) else (axes or ())
            ways = fsdp if "fsdp" in axes else 1  # data = 1: only fsdp splits params
            shard *= math.ceil(dim / ways)
        total += shard
    return total


def activation_bytes(cfg: ModelConfig, batch: int, seq: int, remat: bool) -> float:
    """Stored activations of one PPO train step (policy LM + critic), per device."""
    b, t, d, h = batch, seq, cfg.d_model, cfg.num_heads
    full_layer = b * t * (34 * d + 10 * h * t)
    # remat keeps each block's bf16 input and recomputes one block at a time
    stored = cfg.num_layers * b * t * d * 2 + full_layer if remat else cfg.num_layers * full_layer
    lm_head = 3 * b * t * cfg.vocab_size * 4
    return 2 * stored + lm_head  # policy and critic backbones, one LM head


@dataclasses.dataclass(frozen=True)
class Row:
    model: str
    tpu: Tpu
    frozen: str
    trained_gib: float
    frozen_gib: float
    act_off_gib: float
    act_on_gib: float
    micro_batch: int
    reserve: float

    @property
    def state_gib(self) -> float:
        return self.trained_gib + self.frozen_gib

    @property
    def free_gib(self) -> float:
        return self.tpu.hbm_gib * (1 - self.reserve) - self.state_gib

    @property
    def max_micro_batch(self) -> int:
        """Most sequences per device whose remat activations fit (activations grow ~ B)."""
        per_sequence = self.act_on_gib / self.micro_batch
        return max(int(self.free_gib // per_sequence), 0)

    @property
    def fits(self) -> str:
        if self.free_gib >= self.act_off_gib:
            return "yes"
        if self.free_gib >= self.act_on_gib:
            return "with remat"
        return "no"


def rows(
    models: list[str], tpus=TPUS, micro_batch: int = 4, seq_len: int = 565, reserve: float = 0.1
) -> list[Row]:
    out = []
    for name in models:
        cfg = model_config(name)
        act_off = activation_bytes(cfg, micro_batch, seq_len, remat=False) / GiB
        act_on = activation_bytes(cfg, micro_batch, seq_len, remat=True) / GiB
        for tpu in tpus:
            lm = params_per_device("lm", cfg, tpu.devices)
            scalar = params_per_device("scalar", cfg, tpu.devices)
            trained = (lm + scalar) * TRAINED_BYTES / GiB  # policy (lm) + critic (scalar)
            for frozen, nbytes in FROZEN_BYTES.items():
                frozen_gib = (lm + scalar) * nbytes / GiB  # reference (lm) + reward (scalar)
                out.append(
                    Row(
                        name,
                        tpu,
                        frozen,
                        trained,
                        frozen_gib,
                        act_off,
                        act_on,
                        micro_batch,
                        reserve,
                    )
                )
    return out


def markdown(table: list[Row], micro_batch: int, seq_len: int, reserve: float) -> str:
    head = (
        "| model | TPU | chips x HBM | fsdp | frozen | policy+critic | ref+RM | params+opt "
        "/ device | free | activations, remat off / on | fits | max seqs/device (remat) |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in table:
        lines.append(
            f"| {r.model} | {r.tpu.name} | {r.tpu.devices} x {r.tpu.hbm_gib:g} GiB "
            f"| {r.tpu.devices} | {r.frozen} | {r.trained_gib:.1f} | {r.frozen_gib:.1f} "
            f"| {r.state_gib:.1f} | {r.free_gib:.1f} | {r.act_off_gib:.1f} / {r.act_on_gib:.1f} "
            f"| **{r.fits}** | {r.max_micro_batch} |"
        )
    note = (
        f"\nGiB per device. policy+critic: fp32 params, grads, AdamW mu and nu (16 B/param); "
        f"ref+RM: frozen, 4 or 2 B/param; all sharded fsdp = all chips (data = 1). free = "
        f"{1 - reserve:.0%} of HBM - params+opt. Activations: PPO train step (policy + critic "
        f"forward/backward), {micro_batch} sequences x {seq_len} tokens per device, bf16 compute. "
        f"fits: yes = remat off fits, with remat = only with model.remat=True.\n"
    )
    return head + "\n".join(lines) + "\n" + note


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="pythia-1.4b,pythia-2.8b")
    p.add_argument("--micro-batch", type=int, default=4, help="sequences per device per step")
    p.add_argument("--seq-len", type=int, default=565, help="prompt + response tokens")
    p.add_argument("--reserve", type=float, default=0.1, help="HBM fraction kept free")
    args = p.parse_args(argv)
    models = args.models.split(",")
    print("Parameters (exact, from eval_shape of init_params):")
    for name in models:
        cfg = model_config(name)
        lm, scalar = param_count("lm", cfg), param_count("scalar", cfg)
        print(f"  {name}: policy/reference (lm) {lm:,}; reward/critic (scalar) {scalar:,}")
    print()
    table = rows(models, micro_batch=args.micro_batch, seq_len=args.seq_len, reserve=args.reserve)
    print(markdown(table, args.micro_batch, args.seq_len, args.reserve))
    for name in models:
        where = []
        for tpu in TPUS:
            ok = [r.frozen for r in table if r.model == name and r.tpu == tpu and r.fits != "no"]
            if ok:
                where.append(tpu.name + ("" if len(ok) == len(FROZEN_BYTES) else f" ({ok[0]})"))
        print(f"{name} fits on: {', '.join(where) or 'none of these'}")
    small = rows(
        ["pythia-160m", "pythia-410m"],
        tpus=TPUS[-1:],
        micro_batch=args.micro_batch,
        seq_len=args.seq_len,
        reserve=args.reserve,
    )
    print("\nOne v5e chip (Colab), smaller Pythia:")
    for r in small:
        print(f"  {r.model} ({r.frozen} frozen): params+opt {r.state_gib:.1f} GiB, {r.fits}")


if __name__ == "__main__":
    main()
