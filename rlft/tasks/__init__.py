"""Synthetic tasks with programmatic gold verifiers, and preference labelling (docs/tasks.md).

TASKS maps a name to a constructor taking the task's knobs as keywords (unknown knobs raise):

    keyed        topic-keyed token preference spoken in a grammar: the gap is built in
    keyed_short  the same verifier with one response token (response_len=2): gap mostly removed
    rouge        ROUGE-L against a hidden reference: verification as hard as generation
    bandit       a free reward table and a softmax policy: the isomorphic control
    tldr         Reddit TL;DR (real data): reference summaries, ROUGE-L or a gold RM as the judge
"""

from rlft.tasks.bandit import BanditConfig, BanditTask, soft_optimal
from rlft.tasks.base import (
    EOS_ID,
    PAD_ID,
    SEP_ID,
    Task,
    make_prompt_arrays,
    make_sft_arrays,
    split_response,
    split_sequences,
)
from rlft.tasks.keyed import KeyedConfig, KeyedTask
from rlft.tasks.labels import (
    best_worst,
    bradley_terry_labels,
    log_sigmoid,
    make_preference_pairs,
    pairs_from_samples,
    sigmoid,
)
from rlft.tasks.rouge import RougeConfig, RougeTask, lcs_length, rouge_l_prf
from rlft.tasks.tldr import TldrTask, TldrTaskConfig


def keyed(**knobs) -> KeyedTask:
    return KeyedTask(KeyedConfig(**knobs))


def keyed_short(**knobs) -> KeyedTask:
    return KeyedTask(KeyedConfig(**{"response_len": 2, **knobs}))


def rouge(**knobs) -> RougeTask:
    return RougeTask(RougeConfig(**knobs))


def bandit(**knobs) -> BanditTask:
    return BanditTask(BanditConfig(**knobs))


def tldr(**knobs) -> TldrTask:
    return TldrTask(TldrTaskConfig(**knobs))


# Each task's knob dataclass: what config.task_knobs may set (e.g. whether it has a `seed`).
TASK_CONFIGS = {
    "keyed": KeyedConfig,
    "keyed_short": KeyedConfig,
    "rouge": RougeConfig,
    "bandit": BanditConfig,
    "tldr": TldrTaskConfig,
}
TASKS = {
    "keyed": keyed,
    "keyed_short": keyed_short,
    "rouge": rouge,
    "bandit": bandit,
    "tldr": tldr,
}


def make_task(name: str, **knobs) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {sorted(TASKS)}")
    return TASKS[name](**knobs)


__all__ = [
    "EOS_ID",
    "PAD_ID",
    "SEP_ID",
    "TASKS",
    "TASK_CONFIGS",
    "BanditConfig",
    "BanditTask",
    "KeyedConfig",
    "KeyedTask",
    "RougeConfig",
    "RougeTask",
    "Task",
    "TldrTask",
    "TldrTaskConfig",
    "best_worst",
    "bradley_terry_labels",
    "lcs_length",
    "log_sigmoid",
    "make_preference_pairs",
    "make_prompt_arrays",
    "make_sft_arrays",
    "make_task",
    "pairs_from_samples",
    "rouge_l_prf",
    "sigmoid",
    "soft_optimal",
    "split_response",
    "split_sequences",
]
