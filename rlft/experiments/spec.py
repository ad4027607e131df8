"""The reproduce config as typed, strictly checked sections (see configs/reproduce.py)."""

import dataclasses
from typing import Any

from rlft.config import _as_dict, _model, to_dataclass
from rlft.errors import ConfigError
from rlft.models import ModelConfig
from rlft.models.bilinear import check_vocab
from rlft.objectives.reward import RewardHparams, model_kind
from rlft.tasks import TASKS

ARMS = ("sft", "offline_dpo", "online_dpo", "online_dpo_from_dpo", "ppo", "oracle_online_dpo")
# Optional arms, not in the default config: the report compares each against online_dpo (H3).
EXTRA_ARMS = ("online_dpo_more_prompts",)
# Where the two responses of a preference pair come from (labels.sources): "sft", two SFT
# samples (narrow: the paper's data); "wide", each response from a policy drawn per pair
# among SFT at temperature 1, SFT at temperature 2 and the task's demonstrator.
LABEL_SOURCES = ("sft", "wide")


@dataclasses.dataclass(frozen=True)
class SftSpec:
    num_examples: int = 4096  # demonstrations from the task's noisy "human"
    steps: int = 400
    batch_size: int = 64
    learning_rate: float = 1e-3
    init: str = ""  # starting policy: "" random init, else an HF / rlft checkpoint dir (Pythia)


@dataclasses.dataclass(frozen=True)
class LabelSpec:
    bt_scale: float = 10.0  # P(a > b) = sigmoid(bt_scale * (gold_a - gold_b))
    temperature: float = 1.0  # SFT sampling temperature for the two responses of a pair
    num_val_pairs: int = 512  # held-out pairs for the RM / DPO accuracy diagnostics
    sources: tuple = ("sft",)  # pair sources (LABEL_SOURCES); several: one task entry each (H4)


@dataclasses.dataclass(frozen=True)
class RewardSpec:
    pooling: str = "last"  # the reward-model class: last (paper) | mean | sum | bilinear
    epochs: float = 4.0  # passes over the label budget
    batch_size: int = 64
    learning_rate: float = 5e-4


@dataclasses.dataclass(frozen=True)
class DpoSpec:
    beta: float = 0.1  # shared by every arm (H2: identical beta and reference)
    epochs: float = 4.0  # passes over the (offline or online) pairs
    batch_size: int = 64
    learning_rate: float = 2e-4
    eval_points: int = 3  # checkpoints along training evaluated for the reward-KL frontier


@dataclasses.dataclass(frozen=True)
class OnlineSpec:
    num_samples: int = 8  # K responses per preference prompt; best and worst become a pair
    temperature: float = 1.0  # sampling temperature; DPO log-probs use logits / temperature
    more_prompts_factor: float = 2.3  # online_dpo_more_prompts: online pairs / label budget (H3)


@dataclasses.dataclass(frozen=True)
class PpoSpec:
    iterations: int = 60  # rollout iterations (each: batch_size prompts, 4 epochs x 2 minibatches)
    batch_size: int = 64
    learning_rate: float = 1e-4
    temperature: float = 1.0
    eval_points: int = 3


@dataclasses.dataclass(frozen=True)
class ParallelSpec:
    """Optional section: how every stage is laid out (defaults: data parallel, no accumulation).

    At Pythia scale set data=1, fsdp=-1 (params and AdamW split over all devices) and
    accum_steps so that each stage's batch_size / accum_steps rows fit a device."""

    data: int = -1  # mesh.data of every stage; -1: all devices
    fsdp: int = 1  # mesh.fsdp of every stage; -1: all devices
    accum_steps: int = 1  # optim.accum_steps of every training stage


@dataclasses.dataclass(frozen=True)
class EvalSpec:
    num_prompts: int = 256  # held-out prompts
    samples_per_prompt: int = 4  # policy samples per prompt (temperature 1: the policy itself)
    best_of_n: tuple = (1, 2, 5, 10, 25)  # N for the Best-of-N curves (SFT samples, reranked)


@dataclasses.dataclass(frozen=True)
class ReproduceSpec:
    tasks: tuple[str, ...]
    task_knobs: dict[str, dict[str, Any]]
    seeds: tuple[int, ...]
    label_budgets: tuple[int, ...]
    arms: tuple[str, ...]
    model: ModelConfig
    sft: SftSpec
    labels: LabelSpec
    reward: RewardSpec
    dpo: DpoSpec
    online: OnlineSpec
    ppo: PpoSpec
    eval: EvalSpec
    parallel: ParallelSpec = ParallelSpec()
    raw: dict = dataclasses.field(default_factory=dict, compare=False)


SECTIONS = {
    "sft": SftSpec,
    "labels": LabelSpec,
    "reward": RewardSpec,
    "dpo": DpoSpec,
    "online": OnlineSpec,
    "ppo": PpoSpec,
    "eval": EvalSpec,
}
OPTIONAL = {"parallel": ParallelSpec}  # sections a config may leave out (defaults apply)
TOP = ("tasks", "task_knobs", "seeds", "label_budgets", "arms", "model", *SECTIONS)


def parse_reproduce(config: Any) -> ReproduceSpec:
    raw = _as_dict(config, "")
    unknown = sorted(set(raw) - set(TOP) - set(OPTIONAL))
    missing = sorted(set(TOP) - set(raw))
    if unknown or missing:
        raise ConfigError(
            f"reproduce config: unknown keys {unknown}, missing keys {missing}; "
            f"see configs/reproduce.py"
        )
    for name in raw["tasks"]:
        if name not in TASKS:
            raise ConfigError(f"config.tasks: unknown task {name!r}; choose from {sorted(TASKS)}")
    for arm in raw["arms"]:
        if arm not in ARMS + EXTRA_ARMS:
            raise ConfigError(
                f"config.arms: unknown arm {arm!r}; choose from {list(ARMS + EXTRA_ARMS)}"
            )
    knobs = {k: dict(v) for k, v in _as_dict(raw["task_knobs"], "task_knobs").items()}
    stray = sorted(set(knobs) - set(raw["tasks"]))
    if stray:
        raise ConfigError(f"config.task_knobs has entries {stray} for tasks not in config.tasks")
    sections = {k: to_dataclass(cls, raw[k], k) for k, cls in SECTIONS.items()}
    sections |= {k: to_dataclass(cls, raw[k], k) for k, cls in OPTIONAL.items() if k in raw}
    sections["eval"] = dataclasses.replace(
        sections["eval"], best_of_n=tuple(sections["eval"].best_of_n)
    )
    sections["labels"] = _check_sources(sections["labels"])
    if sections["online"].more_prompts_factor < 1.0:
        raise ConfigError("config.online.more_prompts_factor must be >= 1 (it adds prompts)")
    model = _model(raw["model"], "model")
    _check_reward_class(sections["reward"].pooling, model)  # before SFT, not after it
    return ReproduceSpec(
        tasks=tuple(raw["tasks"]),
        task_knobs=knobs,
        seeds=tuple(raw["seeds"]),
        label_budgets=tuple(raw["label_budgets"]),
        arms=tuple(raw["arms"]),
        model=model,
        raw=raw,
        **sections,
    )


def _check_reward_class(pooling: str, model: ModelConfig) -> None:
    try:
        RewardHparams(pooling)
        if model_kind(pooling) == "bilinear":
            check_vocab(model)
    except ValueError as e:
        raise ConfigError(f"config.{e}") from e


def _check_sources(labels: LabelSpec) -> LabelSpec:
    sources = (labels.sources,) if isinstance(labels.sources, str) else tuple(labels.sources)
    bad = [s for s in sources if s not in LABEL_SOURCES]
    if not sources or bad or len(set(sources)) < len(sources):
        raise ConfigError(
            f"config.labels.sources={sources!r}: need distinct entries from {list(LABEL_SOURCES)}"
        )
    return dataclasses.replace(labels, sources=sources)


def task_key(task: str, source: str, sources: tuple[str, ...]) -> str:
    """Records' name for `task` labelled from `source`: plain by default, else _narrow / _wide."""
    if sources == ("sft",):
        return task
    return f"{task}_{'narrow' if source == 'sft' else source}"
