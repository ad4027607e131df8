"""Device mesh, logical-axis sharding rules and batch placement."""

from rlft.parallel.mesh import (
    BATCH_AXES,
    LOGICAL_RULES,
    batch_sharding,
    constrain_batch,
    logical_shardings,
    make_mesh,
    shard_batch,
)

__all__ = [
    "BATCH_AXES",
    "LOGICAL_RULES",
    "batch_sharding",
    "constrain_batch",
    "logical_shardings",
    "make_mesh",
    "shard_batch",
]
