"""Verdict rows: a measured difference, its interval, and the verdict it earns.

Verdicts are one of VERDICTS (schema.py): supported, contradicted, inconclusive (stats.verdict
on the 95% interval), not applicable (the rule's premise was not measured; the note says which
numbers fell short) and not run in this variant (the cells or arms it needs are absent).
"""

import math
from collections.abc import Mapping, Sequence

from rlft.experiments.report import stats
from rlft.experiments.report.comparisons import find
from rlft.experiments.report.markdown import num

NOT_RUN = "not run in this variant"
NOT_APPLICABLE = "not applicable"
# After a comparison's headline row (matched KL, K*): these checkpoints as extra rows.
EXTRA_ROWS = (("matched_kl", "K*/2"), ("selected", None), ("final", None))


def verdict_row(
    hid: str,
    cell: str | None,
    budget: int | None,
    quantity: str,
    mean: float | None = None,
    ci: list | None = None,
    n: int | str = 0,
    verdict: str = NOT_RUN,
    note: str = "",
    **extra,
) -> dict:
    """A results.json "hypotheses" row; n is the seed count ("3+3" for a Welch comparison).
    extra: checkpoint, eval, kl, headline (bool: False for extra-checkpoint rows)."""
    row = {"id": hid, "task": cell, "label_budget": budget, "quantity": quantity}
    row |= {"mean": mean, "ci95": list(ci) if ci else [None, None], "n": str(n)}
    row |= {"verdict": verdict, "note": note, "checkpoint": None, "eval": None, "kl": None}
    return row | {"headline": True} | extra


def not_run(hid: str, why: str) -> dict:
    """A "not run in this variant" row: the cells or arms the hypothesis needs are absent."""
    return verdict_row(hid, None, None, "", note=why)


def _note(lo: float, hi: float, predicted: str, verdict: str) -> str:
    """Why a prediction of no improvement / no difference counts an interval covering 0."""
    if verdict != stats.NOT_CONTRADICTED:
        return ""
    if predicted == "not positive":
        reach = f" (the interval reaches {num(hi, '+.3f')})" if round(hi, 3) > 0 else ""
        return f"no improvement detected at this precision{reach}"
    return "no difference detected at this precision"


def judge(values: Sequence, predicted: str, welch_b: Sequence | None = None) -> tuple:
    """(mean, [lo, hi], verdict, note) of paired per-seed differences (Student-t), or of
    mean(values) - mean(welch_b) for independent samples (Welch), against a predicted sign
    (stats.verdict). One seed or a non-finite value: inconclusive, with the reason."""
    both = [*values, *(welch_b or [])]
    if not values or welch_b == []:
        return None, [None, None], "inconclusive", "no seed ran both arms"
    if not all(v is not None and math.isfinite(v) for v in both):
        return None, [None, None], "inconclusive", "non-finite values"
    if welch_b is None:
        mean, lo, hi = stats.mean_ci95(values)
    else:
        mean, lo, hi = stats.welch_difference_ci(values, welch_b)
    if not stats.has_ci(lo, hi):
        return mean, [None, None], "inconclusive", "1 seed, no CI"
    verdict = stats.verdict(lo, hi, predicted)
    return mean, [lo, hi], verdict, _note(lo, hi, predicted, verdict)


def describe(c: Mapping) -> str:
    """'online_dpo - offline_dpo gold reward at matched KL K* = 1.234' for a comparison row."""
    where = {
        "matched_kl": f"at matched KL {c['level']} = {num(c['kl'])}"
        if c["kl"] is not None
        else "at matched KL",
        "selected": "at the selected checkpoints",
        "final": "at the final checkpoints",
    }[c["checkpoint"]]
    return f"{c['arm']} - {c['baseline']} gold reward {where}"


def from_comparison(hid: str, c: Mapping, predicted: str, headline: bool) -> dict:
    """A verdict row judging one comparison row; not applicable (with its reason) when the
    comparison does not apply."""
    extra = {"checkpoint": c["checkpoint"], "eval": c["eval"], "kl": c["kl"]}
    args = (hid, c["task"], c["label_budget"], describe(c))
    if not c["applicable"]:
        return verdict_row(
            *args, None, None, 0, NOT_APPLICABLE, c["reason"], **extra, headline=headline
        )
    mean, ci, verdict, note = judge(c["per_seed"], predicted)
    note = "; ".join(x for x in (note, c["reason"]) if x)
    return verdict_row(
        *args, mean, ci, len(c["per_seed"]), verdict, note, **extra, headline=headline
    )


def family(hid: str, comps: list, key: tuple, pair: tuple, ev: str, predicted: str) -> list:
    """The headline row (matched KL, K*) and the extra rows (K*/2, selected, final)."""
    head = find(comps, *key, *pair, ev, "matched_kl")
    if head is None:
        return []
    rows = [from_comparison(hid, head, predicted, True)]
    for checkpoint, level in EXTRA_ROWS:
        c = find(comps, *key, *pair, ev, checkpoint, level)
        rows += [from_comparison(hid, c, predicted, False)] if c else []
    return rows


def pair_keys(comps: list, cell: str, pair: tuple) -> list[tuple]:
    """(cell, budget) keys with comparison rows of `pair` = (arm, baseline), budget ascending."""
    keys = {
        (c["task"], c["label_budget"])
        for c in comps
        if c["task"] == cell and (c["arm"], c["baseline"]) == pair
    }
    return sorted(keys, key=lambda k: k[1])


def cells_rows(
    hid: str, results: Mapping, cells: list, pair: tuple, predicted: str, why_absent: str
) -> list[dict]:
    """`family` rows of `pair` in every budget of the given cells (primary evaluation), or one
    not-run row saying `why_absent`."""
    comps, ev = results["comparisons"], results["settings"]["primary_eval"]
    rows = [
        r
        for cell in cells
        for k in pair_keys(comps, cell, pair)
        for r in family(hid, comps, k, pair, ev, predicted)
    ]
    return rows or [not_run(hid, why_absent)]
