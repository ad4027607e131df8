"""Train state, optimizer and sharded initialisation."""

import functools
from collections.abc import Callable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from rlft.config import OptimConfig
from rlft.models import ModelConfig, init_params, param_shapes
from rlft.parallel import logical_shardings


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # optimizer updates taken
    params: dict[str, Any]  # trained models by role ("policy", "reward", "critic")
    opt_state: Any
    rng: jax.Array  # raw uint32[2] key, advanced by the driver


def make_schedule(cfg: OptimConfig, total_steps: int) -> Callable[[Any], Any]:
    peak, end = cfg.learning_rate, cfg.learning_rate * cfg.end_lr_frac
    decay = max(total_steps - cfg.warmup_steps, 1)
    if cfg.schedule == "constant":
        main = optax.constant_schedule(peak)
    elif cfg.schedule == "linear":
        main = optax.linear_schedule(peak, end, decay)
    elif cfg.schedule == "cosine":
        main = optax.cosine_decay_schedule(peak, decay, alpha=cfg.end_lr_frac)
    else:
        raise ValueError(f"optim.schedule={cfg.schedule!r}: use constant, linear or cosine.")
    if not cfg.warmup_steps:
        return main
    warm = optax.linear_schedule(0.0, peak, cfg.warmup_steps)
    return optax.join_schedules([warm, main], [cfg.warmup_steps])


@functools.lru_cache(maxsize=64)
def make_optimizer(cfg: OptimConfig, total_steps: int):
    """(tx, schedule) for `total_steps` optimizer updates.

    Memoized (both are pure functions): equal arguments return the same objects, so the
    `StepSpec`s of two `train()` calls with one optimizer are equal and share one jitted step
    (rlft.train.loop.jit_train_step).
    """
    schedule = make_schedule(cfg, total_steps)
    parts = [optax.clip_by_global_norm(cfg.max_grad_norm)] if cfg.max_grad_norm else []
    parts.append(
        optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay)
    )
    return optax.chain(*parts), schedule


def _fresh_state(tx, params, rng) -> TrainState:
    """The one place that spells out a fresh TrainState."""
    return TrainState(
        step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), rng=rng
    )


def abstract_state(
    roles: dict[str, tuple[str, ModelConfig]], tx, mesh: Mesh, seq_len: int = 8
) -> tuple[TrainState, Any]:
    """`init_state`'s plan with nothing allocated: (state, shardings), where the state's leaves
    are `jax.ShapeDtypeStruct`s carrying their shardings (for `jit(...).lower` and memory
    analysis, e.g. benchmarks/memory.py) and the shardings tree mirrors it.

    The models' shapes come from `rlft.models.param_shapes` (cached, not traced again), the
    optimizer state and rng from them by `jax.eval_shape`.
    """
    params = {role: param_shapes(kind, cfg, seq_len) for role, (kind, cfg) in roles.items()}
    # init_state's state key, shaped by the configured PRNG implementation
    rng = jax.eval_shape(lambda: jax.random.split(jax.random.PRNGKey(0), len(roles) + 1)[-1])
    boxed = jax.eval_shape(functools.partial(_fresh_state, tx), params, rng)
    shardings = logical_shardings(boxed, mesh)
    state = jax.tree.map(
        lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
        nn.unbox(boxed),
        shardings,
    )
    return state, shardings


def init_state(
    roles: dict[str, tuple[str, ModelConfig]], tx, seed: int, mesh: Mesh, seq_len: int = 8
):
    """Sharded fresh state: `abstract_state`'s shardings -> jitted init.

    `roles` maps a role name to (model kind, config), e.g. {"policy": ("lm", cfg)}.
    Returns (state, shardings); the shardings tree mirrors the state. The jitted init is
    kept per (roles, tx, mesh, seq_len), so runs differing only in seed trace it once.
    """
    init, shardings = _jit_init(tuple(sorted(roles.items())), tx, mesh, seq_len)
    return init(jax.random.PRNGKey(seed)), shardings


@functools.lru_cache(maxsize=32)
def _jit_init(roles_items: tuple, tx, mesh: Mesh, seq_len: int):
    """(jitted rng -> fresh TrainState, its shardings) for `init_state`."""
    roles = dict(roles_items)

    def boxed_init(rng):
        keys = jax.random.split(rng, len(roles) + 1)
        params = {
            role: init_params(kind, cfg, keys[i], seq_len)
            for i, (role, (kind, cfg)) in enumerate(sorted(roles.items()))
        }
        return _fresh_state(tx, params, keys[-1])

    _, shardings = abstract_state(roles, tx, mesh, seq_len)
    return jax.jit(lambda r: nn.unbox(boxed_init(r)), out_shardings=shardings), shardings
