"""How the report keys and orders its rows: cells, label budgets, arms, seeds and task roles.

A *cell* is one entry of records["tasks"] (the key runs use as "task"); a cell and a label
budget make one comparison (and one map point). Runs are indexed as
{(cell, budget, arm): {seed: run}}, diagnostics as {(cell, budget): {seed: record}}.
"""

from collections.abc import Iterable, Mapping

from rlft.experiments.arms import ARMS

# Which task-config entry plays which part in the hypotheses (docs/paper.md section 5).
TASK_ROLES = {"gap": "keyed", "short": "keyed_short", "hard_verifier": "rouge", "control": "bandit"}
H4_SUFFIXES = ("_narrow", "_wide")  # cells split by pair source (labels.sources)


def index_rows(rows: list, key_fields: tuple, what: str) -> dict:
    """{key tuple: {seed: row}}. Raises ValueError on two rows for one seed of a key."""
    index = {}
    for row in rows:
        cell = index.setdefault(tuple(row[k] for k in key_fields), {})
        if row["seed"] in cell:
            name = ", ".join(f"{k}={row[k]!r}" for k in key_fields)
            raise ValueError(f"two {what} records for {name}, seed {row['seed']}")
        cell[row["seed"]] = row
    return index


def arm_key(arm: str) -> tuple:
    """Sort key: the arm table's order, unknown names after it."""
    names = list(ARMS)
    return (names.index(arm), arm) if arm in names else (len(names), arm)


def cell_order(obj: Mapping) -> list[str]:
    """Cells in records/results["tasks"] order, then any other cell rows name."""
    order = list(obj["tasks"])
    for section in ("runs", "diagnostics", "curves"):
        for row in obj.get(section) or []:
            if row["task"] not in order:
                order.append(row["task"])
    return order


def sorted_keys(keys: Iterable[tuple], order: list[str]) -> list[tuple]:
    """(cell, budget[, arm]) keys in cell order, budget ascending, arm-table order."""

    def key(k):
        return (order.index(k[0]), k[1], *(arm_key(a) for a in k[2:3]))

    return sorted(keys, key=key)


def budgets_of(results: Mapping, cell: str) -> list[int]:
    """The label budgets of a cell's trained arms (the SFT arm's alone if it has no others)."""
    rows = [r for r in results["summary"] if r["task"] == cell]
    budgets = sorted({r["label_budget"] for r in rows if r["arm"] != "sft"})
    return budgets or sorted({r["label_budget"] for r in rows})


def cell_rows(results: Mapping, cell: str, budget: int, section: str = "summary") -> list[dict]:
    """Per-arm rows (results[section]: "summary" or "frontier") of one (cell, budget); an SFT
    row recorded at a budget no trained arm uses (SFT does not depend on the budget) joins
    every budget of its cell."""
    rows = [r for r in results[section] if r["task"] == cell]
    budgets = {r["label_budget"] for r in rows if r["arm"] != "sft"}
    return [
        r
        for r in rows
        if r["label_budget"] == budget or (r["arm"] == "sft" and r["label_budget"] not in budgets)
    ]


def role_cells(role: str, tasks: Mapping) -> list[str]:
    """The cells playing `role` (TASK_ROLES): built from that config entry on SFT-sample pairs
    (label_source "sft": a run split by pair source has a `_narrow` and a `_wide` copy); the
    hard-verifier role also takes TL;DR cells judged by ROUGE-L."""
    entry = TASK_ROLES[role]
    return [
        c
        for c, m in tasks.items()
        if m["label_source"] == "sft" and (m["task"] == entry or _tldr_rouge(role, m))
    ]


def _tldr_rouge(role: str, meta: Mapping) -> bool:
    """TL;DR judged by ROUGE-L against the reference summary is a hard verifier too."""
    knobs = meta.get("knobs", {})
    return (
        role == "hard_verifier"
        and meta.get("family") == "tldr"
        and (knobs.get("judge", "rouge") == "rouge")
    )


def h4_cells(order: list[str]) -> list[str]:
    """The cells split by pair source (H4): names ending in H4_SUFFIXES."""
    return [c for c in order if c.endswith(H4_SUFFIXES)]


def arm_runs(index: Mapping, cell: str, budget: int, arm: str) -> dict:
    """{seed: run} of an arm at (cell, budget). SFT does not depend on the budget: a cell whose
    SFT runs sit at one other budget lends them to every budget; {} when the arm did not run."""
    if (cell, budget, arm) in index or arm != "sft":
        return dict(index.get((cell, budget, arm), {}))
    budgets = [b for c, b, a in index if c == cell and a == "sft"]
    return dict(index[cell, budgets[0], "sft"]) if len(budgets) == 1 else {}
