"""From an ml_collections config (a runnable document) to typed dataclasses, strictly.

Every key must be used: an unknown or misplaced key raises with its dotted path and the valid
choices, so a typo never silently falls back to a default.
"""

import dataclasses
import importlib.util
import json
import os
from typing import Any

from rlft.data.files import FilesDataConfig
from rlft.data.sources import DATA_SOURCES, TldrDataConfig
from rlft.data.synthetic import SyntheticConfig
from rlft.errors import ConfigError, check_ranges
from rlft.models import ModelConfig, model_config
from rlft.objectives import ALIASES, OBJECTIVES, objective_name
from rlft.rollout.ppo import RolloutConfig

TOP_LEVEL = (
    "objective",
    "seed",
    "total_steps",
    "batch_size",
    "checkpoint_every",
    "log_every",
    "model",
    "optim",
    "mesh",
    "init",
)  # plus `data` (rlft.data.sources: synthetic, tldr or files), optional when train() gets data
# Extra sections an objective reads besides its own hyperparameters (named like the objective).
EXTRA_SECTIONS = {"ppo": ("rollout", "reward_model")}


SCHEDULES = ("constant", "linear", "cosine")


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """AdamW with global-norm clipping and a warm-up + decay schedule (rlft.train.state)."""

    learning_rate: float = 3e-4
    schedule: str = "cosine"  # constant | linear | cosine (decay to end_lr_frac over the run)
    warmup_steps: int = 0
    end_lr_frac: float = 0.0
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-5
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0  # 0 disables clipping
    accum_steps: int = 1  # micro-batches per update (batch_size must divide evenly)

    def __post_init__(self):
        """Raises ConfigError naming the field and its range, or the schedule's choices."""
        check_ranges(
            "optim",
            vars(self),
            {
                "learning_rate": (
                    ">= 0",
                    "the peak learning rate; the paper's Pythia runs use 3e-6",
                ),
                "warmup_steps": ("int >= 0", "updates of linear warm-up; 0 starts at the peak"),
                "end_lr_frac": ("[0, 1]", "the final lr as a fraction of the peak"),
                "b1": ("[0, 1)", "Adam's first-moment decay; usually 0.9"),
                "b2": ("[0, 1)", "Adam's second-moment decay; usually 0.999"),
                "eps": ("> 0", "Adam's denominator floor; the paper's code uses 1e-5"),
                "weight_decay": (">= 0", "AdamW's decoupled decay; 0 turns it off"),
                "max_grad_norm": (">= 0", "the global-norm clip; 0 turns clipping off"),
                "accum_steps": ("int >= 1", "micro-batches per update; 1 takes the whole batch"),
            },
        )
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"optim.schedule={self.schedule!r}; choose one of {SCHEDULES}")


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    data: int = -1  # data-parallel ways (-1: all devices not used by fsdp)
    fsdp: int = 1  # parameter-sharding ways

    def __post_init__(self):
        """Raises ConfigError unless each of data and fsdp is -1 or a positive integer."""
        for name in ("data", "fsdp"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int)
                or not (value == -1 or value >= 1)
            ):
                raise ConfigError(
                    f"mesh.{name} = {value!r}: must be -1 (every device the other axis leaves) "
                    "or a positive integer (that many ways)"
                )


@dataclasses.dataclass(frozen=True)
class InitConfig:
    policy: str = ""  # workdir of an earlier stage (or a converted/HF checkpoint) for the policy
    reward: str = ""  # workdir of a reward-model stage (PPO: critic init and scorer)
    reference: str = ""  # reference policy; empty means "same as policy"


@dataclasses.dataclass(frozen=True)
class RunConfig:
    objective: str  # a key of rlft.objectives.OBJECTIVES (an alias in the config resolved)
    seed: int
    total_steps: int
    batch_size: int
    checkpoint_every: int
    log_every: int
    model: ModelConfig
    optim: OptimConfig
    mesh: MeshConfig
    data: SyntheticConfig | TldrDataConfig | FilesDataConfig | None
    init: InitConfig
    hparams: Any  # the objective's hyperparameter dataclass
    rollout: RolloutConfig | None = None
    reward_model: ModelConfig | None = None  # scorer architecture (PPO)
    raw: dict = dataclasses.field(default_factory=dict, compare=False)

    def __post_init__(self):
        """Raises ConfigError naming the field and its range (config.total_steps = 0: must
        be an integer >= 1), or a batch that accum_steps does not split."""
        check_ranges(
            "config",
            vars(self),
            {
                "total_steps": ("int >= 1", "loop steps; PPO: rollout iterations"),
                "batch_size": ("int >= 1", "rows per step: pairs for reward/DPO, PPO prompts"),
                "checkpoint_every": ("int >= 1", "loop steps between checkpoints"),
                "log_every": ("int >= 1", "loop steps between metrics.jsonl rows"),
            },
        )
        if self.batch_size % self.optim.accum_steps:
            raise ConfigError(
                f"config.batch_size={self.batch_size} is not divisible by "
                f"config.optim.accum_steps={self.optim.accum_steps}"
            )


def as_dict(section: Any, path: str) -> dict:
    if hasattr(section, "to_dict"):
        return section.to_dict()
    if isinstance(section, dict):
        return dict(section)
    raise ConfigError(f"config.{path} must be a section (ConfigDict/dict), got {section!r}")


def to_dataclass(cls, section: Any, path: str, complete: bool = False):
    """Build `cls` from a section; unknown keys raise naming `config.<path>.<key>`, and so do
    missing ones when `complete` (a document that must state every setting)."""
    values = as_dict(section, path)
    valid = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - valid)
    if unknown:
        raise ConfigError(
            f"unknown key(s) {[f'config.{path}.{k}' for k in unknown]}; "
            f"valid keys of config.{path}: {sorted(valid)}"
        )
    missing = sorted(valid - set(values)) if complete else []
    if missing:
        raise ConfigError(
            f"config.{path} lacks {[f'config.{path}.{k}' for k in missing]}; the reproduce "
            "config states every setting (see configs/reproduce.py)"
        )
    try:
        return cls(**values)
    except (TypeError, ValueError) as e:
        # A dataclass's own check already names `<path>.<field>`: prefix it, do not repeat it.
        named = isinstance(e, ConfigError) and str(e).startswith(f"{path}.")
        raise ConfigError(f"config.{e}" if named else f"config.{path}: {e}") from e


def model_section(section: Any, path: str) -> ModelConfig:
    values = as_dict(section, path)
    preset = values.pop("preset", None)
    if preset is None:
        raise ConfigError(
            f"config.{path}.preset is missing; set it to a name in rlft.models.PRESETS"
        )
    try:
        return model_config(preset, **values)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"config.{path}: {e}") from e


def _data(section: Any, path: str) -> SyntheticConfig | TldrDataConfig | FilesDataConfig:
    """`data.source` (default "synthetic") picks the dataclass the other keys fill."""
    values = as_dict(section, path)
    source = values.pop("source", "synthetic")
    if source not in DATA_SOURCES:
        raise ConfigError(f"config.{path}.source={source!r}; choose one of {list(DATA_SOURCES)}")
    return to_dataclass(DATA_SOURCES[source], values, path)


def parse_config(config: Any) -> RunConfig:
    """Validate and convert a whole run config."""
    raw = as_dict(config, "")
    # The hyperparameter section is named as the objective is written (`mle` reads `mle`).
    written = raw.get("objective")
    objective = objective_name(written) if isinstance(written, str) else written
    if objective not in OBJECTIVES:
        raise ConfigError(
            f"config.objective={written!r}; choose one of {sorted(OBJECTIVES)} (aliases: {ALIASES})"
        )
    allowed = set(TOP_LEVEL) | {written, "data"} | set(EXTRA_SECTIONS.get(objective, ()))
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(
            f"unknown or unused top-level key(s) {unknown} for objective "
            f"{written!r}; allowed: {sorted(allowed)}"
        )
    missing = sorted(set(TOP_LEVEL) - set(raw))
    if missing:
        raise ConfigError(f"config is missing {missing}; see configs/sft.py for a full example")
    _, hparams_cls, _ = OBJECTIVES[objective]
    run = RunConfig(
        objective=objective,
        seed=int(raw["seed"]),
        total_steps=raw["total_steps"],
        batch_size=raw["batch_size"],
        checkpoint_every=raw["checkpoint_every"],
        log_every=raw["log_every"],
        model=model_section(raw["model"], "model"),
        optim=to_dataclass(OptimConfig, raw["optim"], "optim"),
        mesh=to_dataclass(MeshConfig, raw["mesh"], "mesh"),
        data=_data(raw["data"], "data") if "data" in raw else None,
        init=to_dataclass(InitConfig, raw["init"], "init"),
        hparams=to_dataclass(hparams_cls, raw.get(written, {}), written),
        rollout=(
            to_dataclass(RolloutConfig, raw["rollout"], "rollout") if "rollout" in raw else None
        ),
        reward_model=model_section(raw["reward_model"], "reward_model")
        if "reward_model" in raw
        else None,
        raw=raw,
    )
    if isinstance(run.data, SyntheticConfig) and run.data.vocab_size > run.model.vocab_size:
        raise ConfigError(
            f"config.data.vocab_size={run.data.vocab_size} exceeds "
            f"config.model.vocab_size={run.model.vocab_size}; the tokenizer's "
            f"vocabulary must fit the model's embedding"
        )
    return run


def resolved(run: RunConfig) -> dict:
    """The run's typed config after defaults and checks, as JSON data (the checkpoint meta's
    record of what ran; `raw` keeps the config as given)."""
    typed = dataclasses.asdict(dataclasses.replace(run, raw={}))
    typed.pop("raw")
    return json.loads(json.dumps(typed, default=str))


def load_config(path: str, variant: str | None = None):
    """`get_config(variant)` of a config file, as `--config=path:variant` would load it."""
    if not os.path.exists(path):
        raise ConfigError(f"config file {path} does not exist")
    spec = importlib.util.spec_from_file_location(f"rlft_config_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(variant)
