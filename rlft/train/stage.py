"""What differs between stages: which models train, where they start, and how a batch is made.

A stage never owns a training loop or a loss. A stage builder (rlft.train.stages,
rlft.train.ppo_stage) returns a `Stage`: `roles` (models in the train state), `load_init`
(params from earlier stages), and `run_step` (build batch(es), call the one jitted train step).
Offline objectives read a step-indexed dataset; PPO makes its batch by rollout.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

from rlft.errors import ConfigError
from rlft.models import ModelConfig
from rlft.objectives.base import Models


@dataclasses.dataclass
class Stage:
    roles: dict[str, tuple[str, ModelConfig]]  # role -> (model kind, config) in the train state
    models: Models
    load_init: Callable[[Any], Any]  # fresh state -> state with params from earlier stages
    run_step: Callable[[Callable, Any, int], tuple[Any, dict]]  # (step_fn, state, i) -> ...
    updates_per_step: int = 1  # optimizer updates per loop step (PPO: epochs x minibatches)
    finalize: Callable[[Any], tuple[Any, dict]] = lambda state: (state, {})  # after the last step
    # Checkpoint meta per role beside kind and config, e.g. {"reward": {"model_class": "sum"}}.
    role_meta: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)


def replace_params(state, role: str, params):
    """`state` with the params of `role` replaced (the other roles' params kept)."""
    return state.replace(params={**state.params, role: params})


def require_init(path: str, field: str, what: str) -> str:
    """`path` (config.init.<field>); raises ConfigError naming the flag if it is empty."""
    if not path:
        raise ConfigError(
            f"config.init.{field} is empty: this stage starts from {what}; set "
            f"--config.init.{field}=WORKDIR of that stage"
        )
    return path
