"""The one train step. It picks the loss by objective name at trace time."""

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from rlft.objectives import OBJECTIVES
from rlft.objectives.base import Models


@dataclasses.dataclass(frozen=True)
class StepSpec:
    """Everything static about a train step."""

    objective: str  # a key of rlft.objectives.OBJECTIVES
    models: Models
    hparams: Any  # that objective's hyperparameter dataclass
    tx: optax.GradientTransformation
    schedule: Callable[[Any], Any]
    accum_steps: int = 1


def _micro_batches(batch: dict, n: int) -> dict:
    """[B, ...] -> [n, B/n, ...], micro-batch i holding rows i, i+n, ... (strided, so every
    device keeps an equal share of each micro-batch when B is sharded)."""

    def split(x):
        if x.shape[0] % n:
            raise ValueError(
                f"batch of {x.shape[0]} rows does not split into "
                f"optim.accum_steps={n} micro-batches; make them divide."
            )
        return jnp.swapaxes(x.reshape((x.shape[0] // n, n) + x.shape[1:]), 0, 1)

    return jax.tree.map(split, batch)


def train_step(state, batch: dict, *, spec: StepSpec):
    """One optimizer update: (state, batch) -> (state, metrics)."""
    loss_fn, _, _ = OBJECTIVES[spec.objective]

    def sum_loss(params, mb):
        out = loss_fn(params, mb, spec.models, spec.hparams)
        return out.loss_sum, (out.denom, out.metrics)

    grad_fn = jax.value_and_grad(sum_loss, has_aux=True)
    if spec.accum_steps == 1:
        (loss_sum, (denom, metric_sums)), grads = grad_fn(state.params, batch)
    else:
        mbs = _micro_batches(batch, spec.accum_steps)
        out_shape = jax.eval_shape(grad_fn, state.params, jax.tree.map(lambda x: x[0], mbs))
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), out_shape)

        def body(carry, mb):
            return jax.tree.map(jnp.add, carry, grad_fn(state.params, mb)), None

        ((loss_sum, (denom, metric_sums)), grads), _ = jax.lax.scan(body, zeros, mbs)
    denom = jnp.maximum(denom, 1)
    grads = jax.tree.map(lambda g: g / denom, grads)
    updates, opt_state = spec.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {k: v / denom for k, v in metric_sums.items()}
    metrics.update(
        loss=loss_sum / denom,
        grad_norm=optax.tree.norm(grads),
        param_norm=optax.tree.norm(params),
        learning_rate=spec.schedule(state.step),
        denom=denom,
    )
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics
