"""The shape of the reproduce pipeline's records and of results.json, and how to read them.

Which arms, rankers, metrics and task roles the report knows; the required fields of each
record and results.json section with their kinds, checked by `validate_records` and
`validate_results`; and the helpers report.py, verdicts.py and plots.py share: the JSON-safe
copy (NaN written as null) and the orders of tasks, budgets and arms.
"""

import math
from collections.abc import Mapping

import numpy as np

# Keep in step with rlft.experiments.spec.ARMS (not imported: that module pulls in JAX).
ARMS = ("sft", "offline_dpo", "online_dpo", "online_dpo_from_dpo", "ppo", "oracle_online_dpo")
RANKERS = ("global_rm", "local_rm", "gold")
# Which task plays which part in the hypotheses (PAPER.md section 5, rlft/tasks/__init__.py).
TASK_ROLES = {"gap": "keyed", "short": "keyed_short", "hard_verifier": "rouge", "control": "bandit"}
H4_SUFFIXES = ("_narrow", "_wide")
METRICS = ("gold_reward", "win_rate_vs_sft", "kl_to_ref")
DIAG_METRICS = (
    "rm_heldout_accuracy",
    "dpo_heldout_accuracy",
    "rm_heldout_loglik",
    "dpo_heldout_loglik",
    "oracle_best_of_k_gain",
)

# Field kinds checked by _check: NUM (int or float, NaN allowed), INT, STR, LIST, DICT,
# OPT (a number or null: JSON has no NaN, so a NaN is written as null), CI ([lo, hi], each OPT).
NUM, INT, STR, LIST, DICT, OPT, CI = "number", "int", "str", "list", "dict", "number|null", "ci95"
KEYS = {"task": STR, "label_budget": INT}
# The pipeline's records.
RUN_FIELDS = {**KEYS, "seed": INT, "arm": STR, **dict.fromkeys(METRICS, NUM)}
RUN_OPTIONAL = {"frontier": LIST, "gold_parts": DICT, "rm_score": OPT, "wall_s": NUM}
FRONTIER_FIELDS = {"step": INT, **dict.fromkeys(METRICS, NUM)}
DIAG_FIELDS = {**KEYS, "seed": INT, **dict.fromkeys(DIAG_METRICS, NUM), "best_of_n": LIST}
BON_FIELDS = {"ranker": STR, "n": INT, "gold_reward": NUM}
CURVE_FIELDS = {"task": STR, "seed": INT, "n_pairs": INT}
CURVE_FIELDS |= dict.fromkeys(("rm_heldout_accuracy", "dpo_heldout_accuracy"), NUM)
RECORD_FIELDS = {"runs": LIST, "diagnostics": LIST, "curves": LIST, "tasks": DICT}
RECORD_FIELDS |= {"wall_time_s": NUM}


def _mean_fields(metrics) -> dict:
    return {f"{m}_{s}": k for m in metrics for s, k in (("mean", OPT), ("ci95", CI))}


def _nullable(fields: dict) -> dict:
    return {k: OPT if kind == NUM else kind for k, kind in fields.items()}


# results.json: each section's required fields (more are welcome).
RESULT_FIELDS = {"config": DICT, "runs": LIST, "summary": LIST, "diagnostics": LIST}
RESULT_FIELDS |= {"curves": LIST, "best_of_n": LIST, "tasks": DICT, "wall_time_s": NUM}
RESULT_FIELDS |= {"hypotheses": LIST}
RESULT_SECTIONS = {
    "runs": _nullable(RUN_FIELDS),
    "summary": {**KEYS, "arm": STR, "n_seeds": INT, **_mean_fields(METRICS)},
    "diagnostics": {**KEYS, "n_seeds": INT, **_mean_fields(DIAG_METRICS), "per_seed": LIST},
    "best_of_n": {**KEYS, "ranker": STR, "n": INT, "n_seeds": INT, **_mean_fields(["gold_reward"])},
    "curves": _nullable(CURVE_FIELDS),
    "hypotheses": {"id": STR, "quantity": STR, "mean": OPT, "ci95": CI, "n": STR, "verdict": STR},
}


# ----------------------------------------------------------------------------- checking


def _is_num(v) -> bool:
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)


def _is(v, kind: str) -> bool:
    if kind == NUM:
        return _is_num(v)
    if kind == INT:
        return isinstance(v, int | np.integer) and not isinstance(v, bool)
    if kind == OPT:
        return v is None or _is_num(v)
    if kind == CI:
        return isinstance(v, list | tuple) and len(v) == 2 and all(_is(x, OPT) for x in v)
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


def validate_records(records: Mapping) -> None:
    """Raise ValueError naming the first missing or mistyped key of the pipeline's records."""
    _check(records, RECORD_FIELDS, "records")
    _check_rows(records["runs"], RUN_FIELDS, "records.runs")
    for i, run in enumerate(records["runs"]):
        _check(run, RUN_OPTIONAL, f"records.runs[{i}]", optional=True)
        _check_rows(run.get("frontier") or [], FRONTIER_FIELDS, f"records.runs[{i}].frontier")
    _check_rows(records["diagnostics"], DIAG_FIELDS, "records.diagnostics")
    for i, diag in enumerate(records["diagnostics"]):
        _check_rows(diag["best_of_n"], BON_FIELDS, f"records.diagnostics[{i}].best_of_n")
    _check_rows(records["curves"], CURVE_FIELDS, "records.curves")


def validate_results(obj: Mapping) -> None:
    """Raise ValueError naming the first missing or mistyped key of a results.json object."""
    _check(obj, RESULT_FIELDS, "results")
    for section, fields in RESULT_SECTIONS.items():
        _check_rows(obj[section], fields, f"results.{section}")


# ----------------------------------------------------------------------------- reading


def _clean(x):
    """JSON-safe copy: numpy scalars to Python, NaN/inf to None, configs to dicts."""
    if hasattr(x, "to_dict"):  # ml_collections.ConfigDict
        x = x.to_dict()
    if isinstance(x, Mapping):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple | np.ndarray):
        return [_clean(v) for v in x]
    if isinstance(x, bool | np.bool_):
        return bool(x)
    if isinstance(x, int | np.integer):
        return int(x)
    if isinstance(x, float | np.floating):
        return float(x) if math.isfinite(x) else None
    if x is None or isinstance(x, str):
        return x
    return str(x)


def _arm_key(arm: str) -> tuple:
    return (ARMS.index(arm), arm) if arm in ARMS else (len(ARMS), arm)


def _sorted_cells(index: dict, order: list[str]) -> list:
    def key(cell):
        return (order.index(cell[0]), cell[1], *(_arm_key(c) for c in cell[2:3]))

    return sorted(index, key=key)


def _tasks(results: Mapping) -> list[str]:
    order = list(results["tasks"])
    for row in [*results["summary"], *results["diagnostics"]]:
        if row["task"] not in order:
            order.append(row["task"])
    return order


def _cell_rows(results: Mapping, task: str, budget: int) -> list[dict]:
    """Summary rows of one cell; SFT rows recorded at a budget no other arm uses join every cell."""
    rows = [r for r in results["summary"] if r["task"] == task]
    budgets = {r["label_budget"] for r in rows if r["arm"] != "sft"}
    return [
        r
        for r in rows
        if r["label_budget"] == budget or (r["arm"] == "sft" and r["label_budget"] not in budgets)
    ]


def _budgets_of(results: Mapping, task: str) -> list[int]:
    rows = [r for r in results["summary"] if r["task"] == task]
    budgets = sorted({r["label_budget"] for r in rows if r["arm"] != "sft"})
    return budgets or sorted({r["label_budget"] for r in rows})
