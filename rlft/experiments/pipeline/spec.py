"""The reproduce config as typed, strictly checked sections (configs/reproduce.py documents it).

One vocabulary: the stage sections `sft`, `reward`, `dpo`, `ppo` are complete `rlft train`
recipes (configs/<stage>.py, loaded by `stage_recipe`) minus the keys the pipeline owns
(PIPELINE_OWNED: where a stage starts, how long it runs, its seed, data, model and layout). The
pipeline fills those per unit and hands the result to `rlft.config.parse_config`, so a recipe
setting is read exactly where `rlft train` reads it. Around the recipes: tasks, seeds, budgets,
arms, reward-model classes, labelling, online sampling, epochs, frontier and evaluation.
"""

import copy
import dataclasses
import json
import os
from typing import Any

from rlft.config import as_dict, load_config, model_section, to_dataclass
from rlft.errors import ConfigError
from rlft.experiments.arms import ARMS
from rlft.models import ModelConfig
from rlft.models.bilinear import check_vocab
from rlft.objectives.reward import MODEL_CLASSES, RewardHparams, model_kind
from rlft.tasks import TASK_CONFIGS, TASKS

STAGES = ("sft", "reward", "dpo", "ppo")
# Keys of a stage recipe the pipeline sets per unit; a recipe given to `rlft reproduce` must not
# hold them (they would be silently overridden). Dotted paths inside the recipe.
PIPELINE_OWNED = (
    "objective",
    "seed",
    "total_steps",
    "checkpoint_every",
    "log_every",
    "model",
    "mesh",
    "data",
    "init",
    "optim.accum_steps",
    "reward.model_class",
    "reward_model",
    "rollout.response_len",
    "dpo.temperature",  # 1 offline; online arms: their sampling temperature (the paper's rule)
)
# Where the two responses of a preference pair come from (labels.sources): "sft", two SFT
# samples (narrow: the paper's data); "wide", each response from a policy drawn per response
# among SFT at temperature 1, SFT at temperature 2 and the task's demonstrator.
LABEL_SOURCES = ("sft", "wide")
EVALS = ("greedy", "sample")


def _drop(section, dotted: str) -> None:
    head, _, rest = dotted.partition(".")
    if head in section:
        if rest:
            _drop(section[head], rest)
        else:
            del section[head]


def strip_owned(config):
    """A stage config without the pipeline-owned keys (in place; returned): a recipe."""
    for key in PIPELINE_OWNED:
        _drop(config, key)
    return config


def stage_recipe(configs_dir: str, stage: str):
    """`configs_dir`/<stage>.py:tiny as a recipe: what `rlft reproduce` varies (a reproduce
    config passes its own folder)."""
    return strip_owned(load_config(os.path.join(configs_dir, f"{stage}.py"), "tiny"))


@dataclasses.dataclass(frozen=True)
class LabelSpec:
    bt_scale: float = 10.0  # P(a > b) = sigmoid(bt_scale * (gold_a - gold_b))
    temperature: float = 1.0  # SFT sampling temperature for the two responses of a pair
    num_val_pairs: int = 512  # held-out pairs: RM / DPO accuracy, DPO checkpoint selection
    sources: tuple = ("sft",)  # pair sources (LABEL_SOURCES); several: one cell each (H4)


@dataclasses.dataclass(frozen=True)
class OnlineSpec:
    num_samples: int = 25  # K responses per prompt; the scorer's best and worst become a pair
    temperature: float = 0.1  # sampling T; online DPO's log-probs use logits / T (paper)
    rounds: int = 2  # iterated_online_dpo: rounds of (sample, score, DPO from the current policy)
    more_prompts_factor: float = 2.3  # online_dpo_more_prompts: prompts / label budget (H3)


@dataclasses.dataclass(frozen=True)
class EpochSpec:
    """Passes over each stage's data; total_steps = ceil(epochs * rows / batch_size)."""

    sft: float = 1.0  # over the task's demonstrations
    reward: float = 1.0  # over the label budget's pairs
    dpo: float = 1.0  # offline: over the label budget's pairs
    online_dpo: float = 1.0  # online arms: over their pairs (one per prompt), per round
    ppo: float = 1.0  # over the label budget's prompts; one rollout batch per iteration


@dataclasses.dataclass(frozen=True)
class FrontierSpec:
    points: int = 6  # checkpoints evaluated along each arm's training (besides its start)


@dataclasses.dataclass(frozen=True)
class EvalSpec:
    num_prompts: int = 256  # held-out prompts
    samples_per_prompt: int = 4  # T=1 samples per prompt (the policy itself; KL, win rate)
    greedy_temperature: float = 0.01  # the paper's near-greedy evaluation
    primary: str = "greedy"  # which evaluation the headline verdicts use: greedy | sample
    best_of_n: tuple = (1, 2, 5, 10, 25)  # N for the Best-of-N curves (SFT samples, reranked)


@dataclasses.dataclass(frozen=True)
class ParallelSpec:
    """Optional section: how every stage is laid out (defaults: data parallel, no accumulation).

    At Pythia scale set data=1, fsdp=-1 (params and AdamW split over all devices) and
    accum_steps so that each stage's batch_size / accum_steps rows fit a device."""

    data: int = -1  # mesh.data of every stage; -1: all devices
    fsdp: int = 1  # mesh.fsdp of every stage; -1: all devices
    accum_steps: int = 1  # optim.accum_steps of every training stage


@dataclasses.dataclass(frozen=True)
class ReproduceSpec:
    tasks: tuple[str, ...]
    task_knobs: dict[str, dict[str, Any]]
    seeds: tuple[int, ...]
    label_budgets: tuple[int, ...]
    arms: tuple[str, ...]
    reward_classes: tuple[str, ...]
    reward_class_overrides: dict[str, dict[str, Any]]
    model: ModelConfig
    beta: float
    labels: LabelSpec
    online: OnlineSpec
    epochs: EpochSpec
    frontier: FrontierSpec
    eval: EvalSpec
    stages: dict[str, dict]  # stage -> recipe (plain dict, pipeline-owned keys absent)
    sft_examples: int
    sft_init: str  # SFT's starting policy: "" random init, else an HF / rlft checkpoint dir
    parallel: ParallelSpec = ParallelSpec()
    raw: dict = dataclasses.field(default_factory=dict, compare=False)


SECTIONS = {
    "labels": LabelSpec,
    "online": OnlineSpec,
    "epochs": EpochSpec,
    "frontier": FrontierSpec,
    "eval": EvalSpec,
}
OPTIONAL = {"parallel": ParallelSpec}
TOP = (
    "tasks",
    "task_knobs",
    "seeds",
    "label_budgets",
    "arms",
    "reward_classes",
    "reward_class_overrides",
    "model",
    "beta",
    "sft_examples",
    "sft_init",
    *SECTIONS,
    *STAGES,
)


def parse_reproduce(config: Any) -> ReproduceSpec:
    """Validate a reproduce config; every error names the field and the fix."""
    raw = as_dict(config, "")
    unknown, missing = sorted(set(raw) - set(TOP) - set(OPTIONAL)), sorted(set(TOP) - set(raw))
    if unknown or missing:
        raise ConfigError(
            f"reproduce config: unknown keys {unknown}, missing keys {missing}; "
            "see configs/reproduce.py"
        )
    knobs = {k: dict(v) for k, v in as_dict(raw["task_knobs"], "task_knobs").items()}
    for name in raw["tasks"]:
        family = knobs.get(name, {}).get("family", name)
        if family not in TASKS:
            raise ConfigError(
                f"config.tasks: unknown task {name!r}; choose from {sorted(TASKS)} or define it "
                f"in config.task_knobs as {{{name!r}: {{'family': <task>, knob: value}}}}"
            )
    stray = sorted(set(knobs) - set(raw["tasks"]))
    if stray:
        raise ConfigError(f"config.task_knobs has entries {stray} for tasks not in config.tasks")
    for arm in raw["arms"]:
        if arm not in ARMS:
            raise ConfigError(f"config.arms: unknown arm {arm!r}; choose from {list(ARMS)}")
    for key in ("tasks", "seeds", "label_budgets", "arms"):
        if not raw[key] or len(set(raw[key])) < len(raw[key]):
            raise ConfigError(f"config.{key}={tuple(raw[key])}: need distinct entries")
    if any(not isinstance(n, int) or n < 2 for n in raw["label_budgets"]):
        raise ConfigError(
            f"config.label_budgets={tuple(raw['label_budgets'])}: each budget is a number of "
            "labelled pairs, an integer >= 2 (e.g. (128, 512))"
        )
    for name in raw["tasks"]:  # knobs checked now, not after earlier tasks have trained
        entry = {k: v for k, v in knobs.get(name, {}).items() if k != "family"}
        to_dataclass(TASK_CONFIGS[knobs.get(name, {}).get("family", name)], entry, "task_knobs")
    sections = {k: to_dataclass(cls, raw[k], k, complete=True) for k, cls in SECTIONS.items()}
    sections |= {k: to_dataclass(cls, raw[k], k) for k, cls in OPTIONAL.items() if k in raw}
    sections["eval"] = dataclasses.replace(
        sections["eval"], best_of_n=tuple(sections["eval"].best_of_n)
    )
    sections["labels"] = _check_sources(sections["labels"])
    _check_sections(sections)
    model = model_section(raw["model"], "model")
    classes = tuple(raw["reward_classes"])
    overrides = {k: dict(v) for k, v in as_dict(raw["reward_class_overrides"], "x").items()}
    for cls in classes:
        _check_reward_class(cls, model)  # before SFT, not after it
    if not classes or sorted(set(overrides) - set(MODEL_CLASSES)):
        raise ConfigError(
            f"config.reward_classes={classes} must be non-empty and config."
            f"reward_class_overrides ({sorted(overrides)}) may only name {list(MODEL_CLASSES)}"
        )
    stages = {s: _stage(raw[s], s) for s in STAGES}
    beta = float(raw["beta"])
    _check_beta(beta, stages)
    return ReproduceSpec(
        tasks=tuple(raw["tasks"]),
        task_knobs=knobs,
        seeds=tuple(raw["seeds"]),
        label_budgets=tuple(raw["label_budgets"]),
        arms=tuple(raw["arms"]),
        reward_classes=classes,
        reward_class_overrides=overrides,
        model=model,
        beta=beta,
        stages=stages,
        sft_examples=int(raw["sft_examples"]),
        sft_init=str(raw["sft_init"]),
        raw=raw,
        **sections,
    )


def _stage(section, stage: str) -> dict:
    recipe = copy.deepcopy(as_dict(section, stage))
    owned = [k for k in PIPELINE_OWNED if _has(recipe, k)]
    if owned:
        raise ConfigError(
            f"config.{stage} sets {[f'config.{stage}.{k}' for k in owned]}, which `rlft "
            "reproduce` sets per unit (start, length, seed, data, model, layout); remove them "
            "(rlft.experiments.pipeline.spec.PIPELINE_OWNED lists them; steps come from "
            "config.epochs, the reward class from config.reward_classes)"
        )
    return recipe


def _has(section: dict, dotted: str) -> bool:
    head, _, rest = dotted.partition(".")
    if head not in section:
        return False
    return _has(as_dict(section[head], head), rest) if rest else True


def _check_beta(beta: float, stages: dict) -> None:
    """H2 needs one beta: DPO's beta and PPO's KL coefficient are config.beta (references);
    the held-out selection and the local reward assume the plain sigmoid DPO loss."""
    used = {
        "config.dpo.dpo.beta": stages["dpo"].get("dpo", {}).get("beta"),
        "config.ppo.rollout.kl_coef": stages["ppo"].get("rollout", {}).get("kl_coef"),
    }
    if beta <= 0 or any(v != beta for v in used.values()):
        raise ConfigError(
            f"config.beta={beta} must be > 0 and shared by every arm (H2: identical beta), "
            f"but {used}; set both fields to config.beta (a reference) and override "
            "--config.beta"
        )
    dpo = stages["dpo"].get("dpo", {})
    plain = {"loss_type": "sigmoid", "reference_free": False, "label_smoothing": 0.0}
    changed = {k: dpo[k] for k, v in plain.items() if k in dpo and dpo[k] != v}
    if changed:
        raise ConfigError(
            f"config.dpo.dpo sets {changed}: `rlft reproduce` selects DPO checkpoints and "
            f"measures DPO's implicit reward with the plain loss {plain}; use `rlft train` for "
            "the variants"
        )


def _check_sections(s: dict) -> None:
    o, e, f = s["online"], s["eval"], s["frontier"]
    checks = [
        (o.more_prompts_factor >= 1.0, "config.online.more_prompts_factor must be >= 1"),
        (o.num_samples >= 2, "config.online.num_samples must be >= 2 (best and worst)"),
        (o.temperature > 0 and o.rounds >= 1, "config.online: temperature > 0, rounds >= 1"),
        (e.primary in EVALS, f"config.eval.primary must be one of {EVALS}"),
        (e.greedy_temperature > 0, "config.eval.greedy_temperature must be > 0"),
        (f.points >= 1, "config.frontier.points must be >= 1"),
        (all(v > 0 for v in dataclasses.asdict(s["epochs"]).values()), "config.epochs: > 0"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def _check_reward_class(model_class: str, model: ModelConfig) -> None:
    try:
        RewardHparams(model_class)
        if model_kind(model_class) == "bilinear":
            check_vocab(model)
    except ValueError as e:
        raise ConfigError(f"config.reward_classes: {e}") from e


def _check_sources(labels: LabelSpec) -> LabelSpec:
    sources = (labels.sources,) if isinstance(labels.sources, str) else tuple(labels.sources)
    bad = [s for s in sources if s not in LABEL_SOURCES]
    if not sources or bad or len(set(sources)) < len(sources):
        raise ConfigError(
            f"config.labels.sources={sources!r}: need distinct entries from {list(LABEL_SOURCES)}"
        )
    return dataclasses.replace(labels, sources=sources)


def resolved(spec: ReproduceSpec) -> dict:
    """The typed reproduce config after defaults and checks, as JSON data (results.json)."""
    typed = dataclasses.asdict(dataclasses.replace(spec, raw={}))
    typed.pop("raw")
    return json.loads(json.dumps(typed, default=str))


def cell_key(task: str, source: str, model_class: str, spec: ReproduceSpec) -> str:
    """Records' name of a cell: the task, `_narrow`/`_wide` with several pair sources, and
    `@class` with several reward-model classes (the report reads the cell's fields from its
    records["tasks"] entry, never from this name)."""
    key = task
    if spec.labels.sources != ("sft",):
        key += f"_{'narrow' if source == 'sft' else source}"
    if len(spec.reward_classes) > 1:
        key += f"@{model_class}"
    return key
