"""A (data, fsdp) mesh: batches split over both axes, parameters split over `fsdp`.

This is `pmap`-style data parallelism expressed as `jax.jit` over a `Mesh`: with fsdp=1 every
device holds all params and a slice of the batch; with fsdp>1 each param's `embed` dimension is
split too (ZeRO-3 style), and XLA inserts the all-gathers. The same code runs on one CPU, fake
CPU devices, a TPU chip, a multi-host pod slice or GPUs.
"""

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

BATCH_AXES = ("data", "fsdp")
# Logical axis name (from the model's param annotations) -> mesh axis.
LOGICAL_RULES = (
    ("batch", BATCH_AXES),
    ("embed", "fsdp"),
    ("vocab", None),
    ("heads", None),
    ("kv", None),
    ("mlp", None),
)


def make_mesh(data: int = -1, fsdp: int = 1, devices=None) -> Mesh:
    """Mesh with Auto axes `data` x `fsdp`; -1 means "all remaining devices"."""
    devices = list(devices if devices is not None else jax.devices())
    n = len(devices)
    if data == -1 and fsdp == -1:
        raise ValueError("mesh.data and mesh.fsdp cannot both be -1; set one of them.")
    if data == -1:
        data = n // fsdp if fsdp and n % fsdp == 0 else 0
    if fsdp == -1:
        fsdp = n // data if data and n % data == 0 else 0
    if data * fsdp != n:
        raise ValueError(
            f"mesh.data={data} x mesh.fsdp={fsdp} must equal the {n} available "
            f"devices; set mesh.data=-1 to use all devices for data parallelism."
        )
    grid = np.array(devices).reshape(data, fsdp)
    return Mesh(grid, ("data", "fsdp"), axis_types=(AxisType.Auto, AxisType.Auto))


def logical_shardings(boxed_tree, mesh: Mesh):
    """NamedShardings for a tree whose leaves may be boxed with logical axis names."""
    specs = nn.get_partition_spec(boxed_tree)
    return nn.logical_to_mesh_sharding(specs, mesh, LOGICAL_RULES)


def constrain_batch(x: jax.Array, axis: int = 0) -> jax.Array:
    """x with dimension `axis` split over the batch axes (`BATCH_AXES`) of the mesh it is being
    traced under (`jax.set_mesh`), its other dimensions whole: the activations' layout of
    ZeRO-3 / FSDP data parallelism (each device its rows, every parameter gathered). Without
    it XLA's sharding propagation met the fsdp-sharded `embed` dimension of the kernels by
    contracting over it instead: every device computed partial activations and LM-head logits
    for every row of the global batch, then summed them across devices (all-reduce) - the
    Pythia-410m PPO step's temporaries on an 8-way fsdp mesh were 14.4 GiB per device against
    5.3 with this constraint (`python benchmarks/memory.py`, tpu/README.md).

    The identity outside a mesh context, on a mesh without both batch axes or of one device
    along them, and where x.shape[axis] is not a multiple of their size (the sampler's small
    batches); so single-device code, tests and the sampler trace exactly as before. Not for
    use under `jax.vmap`, where `axis` would count the per-example dimensions.
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or not set(BATCH_AXES) <= set(mesh.axis_names):
        return x
    ways = int(np.prod([mesh.shape[a] for a in BATCH_AXES]))
    if ways == 1 or x.shape[axis] % ways:
        return x
    spec = [None] * x.ndim
    spec[axis] = BATCH_AXES
    return jax.lax.with_sharding_constraint(x, PartitionSpec(*spec))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dim split over every device; other dims replicated."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def shard_batch(batch: dict, mesh: Mesh) -> dict:
    """Place a host batch (numpy arrays, identical on every process) on the mesh."""
    sharding = batch_sharding(mesh)
    n = mesh.size
    out = {}
    for key, value in batch.items():
        value = np.asarray(value)
        if value.shape[0] % n:
            raise ValueError(
                f"batch field {key!r} has {value.shape[0]} rows, not divisible by the "
                f"{n} devices of the mesh; make batch_size a multiple of {n}."
            )
        out[key] = jax.make_array_from_callback(value.shape, sharding, lambda idx, v=value: v[idx])
    return out
