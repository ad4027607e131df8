"""The records the pipeline hands the report, the results.json it writes, and their checks.

`validate_records` checks the pipeline's records (settings, per-cell task metadata, runs with
their frontier of checkpoints, diagnostics, learning curves) and `validate_results` the
results.json object; each raises ValueError naming the first missing or mistyped field by its
path (e.g. `records.runs[3].frontier[2].kl_to_ref`). `json_safe` is the JSON copy both write
(NaN and inf as null).
"""

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from rlft.experiments.arms import ARMS, SELECTION_RULES

EVALS = ("greedy", "sample")  # near-greedy samples (T = settings.greedy_temperature) or T = 1
# Each evaluation's frontier field of a metric: gold_reward (T = 1), gold_reward_greedy, ...
EVAL_SUFFIX = {"sample": "", "greedy": "_greedy"}
RANKERS = ("global_rm", "local_rm", "gold")
LABEL_SOURCES = ("sft", "wide")
REWARD_CLASSES = ("last", "mean", "sum", "bilinear")
# Frontier metrics averaged over seeds (kl_to_ref: nats per response, Monte Carlo, T = 1).
POINT_METRICS = ("kl_to_ref", "gold_reward", "gold_reward_greedy", "win_rate_vs_sft")
POINT_METRICS += ("win_rate_vs_sft_greedy", "rm_score", "rm_score_greedy", "selection")
DIAG_METRICS = ("rm_heldout_accuracy", "dpo_heldout_accuracy", "rm_heldout_loglik")
DIAG_METRICS += ("dpo_heldout_loglik", "oracle_best_of_k_gain", "informative_label_frac")
DIAG_METRICS += ("label_agreement_with_gold",)
SFT_FIT = ("demo_gold", "sft_gold", "sft_gold_greedy", "heldout_nll_per_token")

# Field kinds: NUM (int or float, NaN allowed), INT, STR, LIST, DICT, OPT (a number or null:
# JSON has no NaN, so NaN is written as null), OPT_INT, OPT_STR, CI ([lo, hi], each OPT).
NUM, INT, STR, LIST, DICT, OPT, CI = "number", "int", "str", "list", "dict", "number|null", "ci95"
OPT_INT, OPT_STR, BOOL = "int|null", "str|null", "bool"

SETTINGS_FIELDS = {"beta": NUM, "greedy_temperature": NUM, "sample_temperature": NUM}
SETTINGS_FIELDS |= {"primary_eval": STR}
TASK_FIELDS = {"task": STR, "family": STR, "knobs": DICT, "description": STR}
TASK_FIELDS |= {"vocab_size": INT, "prompt_len": INT, "response_len": INT}
TASK_FIELDS |= {"label_source": STR, "reward_class": STR}
KEYS = {"task": STR, "label_budget": INT}
RUN_FIELDS = {**KEYS, "seed": INT, "arm": STR, "selection_rule": OPT_STR}
RUN_FIELDS |= {"num_pairs": OPT_INT, "num_prompts": OPT_INT, "wall_s": NUM, "frontier": LIST}
RUN_OPTIONAL = {"policy_distance": DICT}
POINT_FIELDS = {"step": INT, "kl_to_ref": NUM, "gold_reward": NUM, "gold_reward_greedy": NUM}
POINT_FIELDS |= {"win_rate_vs_sft": NUM, "win_rate_vs_sft_greedy": NUM}
POINT_FIELDS |= {"rm_score": OPT, "rm_score_greedy": OPT, "selection": OPT}
POINT_FIELDS |= {"gold_parts": DICT, "gold_parts_greedy": DICT}
DIAG_FIELDS = {**KEYS, "seed": INT, **dict.fromkeys(DIAG_METRICS, NUM)}
DIAG_FIELDS |= {"best_of_n": LIST, "sft_fit": DICT}
DIAG_OPTIONAL = {"isomorphic": DICT}
BON_FIELDS = {"ranker": STR, "n": INT, "gold_reward": NUM}
CURVE_FIELDS = {"task": STR, "seed": INT, "n_pairs": INT}
CURVE_FIELDS |= dict.fromkeys(("rm_heldout_accuracy", "dpo_heldout_accuracy"), NUM)
RECORD_FIELDS = {"settings": DICT, "tasks": DICT, "runs": LIST, "diagnostics": LIST}
RECORD_FIELDS |= {"curves": LIST, "wall_time_s": NUM}
# Closed vocabularies: (where, field) -> allowed values.
ENUMS = {
    ("settings", "primary_eval"): EVALS,
    ("tasks", "label_source"): LABEL_SOURCES,
    ("tasks", "reward_class"): REWARD_CLASSES,
    ("runs", "arm"): tuple(ARMS),
    ("runs", "selection_rule"): (*SELECTION_RULES, None),
    ("best_of_n", "ranker"): RANKERS,
}

# results.json: each section's required fields (more are welcome).
RESULT_FIELDS = {"config": DICT, "settings": DICT, "tasks": DICT, "runs": LIST, "summary": LIST}
RESULT_FIELDS |= {"frontier": LIST, "comparisons": LIST, "diagnostics": LIST, "best_of_n": LIST}
RESULT_FIELDS |= {"curves": LIST, "hypotheses": LIST, "map": DICT, "wall_time_s": NUM}
RESULT_FIELDS |= {"isomorphic": LIST}
VERDICTS = ("supported", "contradicted", "not contradicted", "inconclusive", "not applicable")
VERDICTS += ("not run in this variant",)
EST = {"mean": OPT, "ci95": CI}
RESULT_SECTIONS = {
    "summary": {**KEYS, "arm": STR, "n_seeds": INT, "selected_steps": LIST, "matched_kl": OPT},
    "comparisons": {**KEYS, "arm": STR, "baseline": STR, "eval": STR, "checkpoint": STR}
    | {"kl": OPT, "n_seeds": INT, "per_seed": LIST, **EST, "applicable": BOOL, "reason": STR},
    "diagnostics": {**KEYS, "n_seeds": INT, "per_seed": LIST},
    "best_of_n": {**KEYS, "ranker": STR, "n": INT, "n_seeds": INT, "gold_reward_mean": OPT},
    "hypotheses": {"id": STR, "quantity": STR, **EST, "n": STR, "verdict": STR, "note": STR},
}


# ----------------------------------------------------------------------------- checking


def _is_num(v) -> bool:
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)


def _is(v, kind: str) -> bool:
    if kind == NUM:
        return _is_num(v)
    if kind in (INT, OPT_INT):
        return (kind == OPT_INT and v is None) or (
            isinstance(v, int | np.integer) and not isinstance(v, bool)
        )
    if kind == OPT:
        return v is None or _is_num(v)
    if kind == OPT_STR:
        return v is None or isinstance(v, str)
    if kind == CI:
        return isinstance(v, list | tuple) and len(v) == 2 and all(_is(x, OPT) for x in v)
    if kind == BOOL:
        return isinstance(v, bool)
    return isinstance(v, {STR: str, LIST: list | tuple, DICT: Mapping}[kind])


def _check(obj, fields: dict, where: str, optional: bool = False) -> None:
    if not isinstance(obj, Mapping):
        raise ValueError(f"{where} should be a dict, got {type(obj).__name__}")
    for key, kind in fields.items():
        if key not in obj:
            if optional:
                continue
            raise ValueError(f"{where}: missing key {key!r}")
        if not _is(obj[key], kind):
            got = f"{type(obj[key]).__name__} {obj[key]!r}"[:60]
            raise ValueError(f"{where}.{key}: expected {kind}, got {got}")


def _check_rows(rows, fields: dict, where: str) -> None:
    for i, row in enumerate(rows):
        _check(row, fields, f"{where}[{i}]")


def _check_enum(obj: Mapping, section: str, key: str, where: str) -> None:
    allowed = ENUMS[section, key]
    if obj[key] not in allowed:
        raise ValueError(f"{where}.{key}: {obj[key]!r} is not one of {allowed}")


def _check_run(run: Mapping, where: str, cells: Mapping) -> None:
    _check(run, RUN_OPTIONAL, where, optional=True)
    _check_enum(run, "runs", "arm", where)
    _check_enum(run, "runs", "selection_rule", where)
    if run["task"] not in cells:
        raise ValueError(f"{where}.task: {run['task']!r} has no entry in records.tasks")
    if not run["frontier"]:
        raise ValueError(f"{where}.frontier: empty (point 0 is the starting policy)")
    _check_rows(run["frontier"], POINT_FIELDS, f"{where}.frontier")
    steps = [p["step"] for p in run["frontier"]]
    if any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
        raise ValueError(f"{where}.frontier: steps not strictly ascending: {steps}")


def validate_records(records: Mapping) -> None:
    """Raise ValueError naming the first missing, mistyped or out-of-vocabulary field."""
    _check(records, RECORD_FIELDS, "records")
    _check(records["settings"], SETTINGS_FIELDS, "records.settings")
    _check_enum(records["settings"], "settings", "primary_eval", "records.settings")
    for cell, meta in records["tasks"].items():
        where = f"records.tasks[{cell!r}]"
        _check(meta, TASK_FIELDS, where)
        for key in ("label_source", "reward_class"):
            _check_enum(meta, "tasks", key, where)
        if meta["response_len"] < 1:
            raise ValueError(f"{where}.response_len: {meta['response_len']} (includes the EOS)")
    _check_rows(records["runs"], RUN_FIELDS, "records.runs")
    for i, run in enumerate(records["runs"]):
        _check_run(run, f"records.runs[{i}]", records["tasks"])
    _check_rows(records["diagnostics"], DIAG_FIELDS, "records.diagnostics")
    for i, diag in enumerate(records["diagnostics"]):
        where = f"records.diagnostics[{i}]"
        _check(diag, DIAG_OPTIONAL, where, optional=True)
        if diag["task"] not in records["tasks"]:
            raise ValueError(f"{where}.task: {diag['task']!r} has no entry in records.tasks")
        _check(diag["sft_fit"], dict.fromkeys(SFT_FIT, NUM), f"{where}.sft_fit")
        _check_rows(diag["best_of_n"], BON_FIELDS, f"{where}.best_of_n")
        for j, point in enumerate(diag["best_of_n"]):
            _check_enum(point, "best_of_n", "ranker", f"{where}.best_of_n[{j}]")
    _check_rows(records["curves"], CURVE_FIELDS, "records.curves")


def validate_results(obj: Mapping) -> None:
    """Raise ValueError naming the first missing or mistyped field of a results.json object."""
    _check(obj, RESULT_FIELDS, "results")
    for section, fields in RESULT_SECTIONS.items():
        _check_rows(obj[section], fields, f"results.{section}")
    for i, row in enumerate(obj["hypotheses"]):
        if row["verdict"] not in VERDICTS:
            raise ValueError(
                f"results.hypotheses[{i}].verdict: {row['verdict']!r} not in {VERDICTS}"
            )


def json_safe(x: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, NaN/inf to None, configs to dicts."""
    if hasattr(x, "to_dict"):  # ml_collections.ConfigDict
        x = x.to_dict()
    if isinstance(x, Mapping):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple | np.ndarray):
        return [json_safe(v) for v in x]
    if isinstance(x, bool | np.bool_):
        return bool(x)
    if isinstance(x, int | np.integer):
        return int(x)
    if isinstance(x, float | np.floating):
        return float(x) if math.isfinite(x) else None
    if x is None or isinstance(x, str):
        return x
    return str(x)
