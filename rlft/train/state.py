"""Train state, optimizer and sharded initialisation."""

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


def make_optimizer(cfg: OptimConfig, total_steps: int):
    """(tx, schedule) for `total_steps` optimizer updates."""
    schedule = make_schedule(cfg, total_steps)
    parts = [optax.clip_by_global_norm(cfg.max_grad_norm)] if cfg.max_grad_norm else []
    parts.append(
        optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay)
    )
    return optax.chain(*parts), schedule


def init_state(
    roles: dict[str, tuple[str, ModelConfig]], tx, seed: int, mesh: Mesh, seq_len: int = 8
):
    """Sharded fresh state: eval_shape -> logical shardings -> jitted init.

    `roles` maps a role name to (model kind, config), e.g. {"policy": ("lm", cfg)}.
    Returns (state, shardings); the shardings tree mirrors the state.
    """

    def fresh_state(params, rng):  # the one place that spells out a fresh TrainState
        return TrainState(
            step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), rng=rng
        )

    def boxed_init(rng):
        keys = jax.random.split(rng, len(roles) + 1)
        params = {
            role: init_params(kind, cfg, keys[i], seq_len)
            for i, (role, (kind, cfg)) in enumerate(sorted(roles.items()))
        }
        return fresh_state(params, keys[-1])

    rng = jax.random.PRNGKey(seed)
    # boxed_init's shapes without tracing the models again: their cached shapes, and the
    # rest of the state from them.
    params = {role: param_shapes(kind, cfg, seq_len) for role, (kind, cfg) in roles.items()}
    state_rng = jax.eval_shape(lambda r: jax.random.split(r, len(roles) + 1)[-1], rng)
    abstract = jax.eval_shape(fresh_state, params, state_rng)
    shardings = logical_shardings(abstract, mesh)
    state = jax.jit(lambda r: nn.unbox(boxed_init(r)), out_shardings=shardings)(rng)
    return state, shardings
