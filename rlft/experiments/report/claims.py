"""What each hypothesis predicts, and the verdict rows written out as sentences and tables.

CLAIMS state the predictions tested (docs/paper.md section 3), not results. Every sentence that
states a result is `verdict_sentence` of a results.json "hypotheses" row: its quantity, mean,
95% interval, seeds, evaluation and verdict.
"""

from collections.abc import Mapping

from rlft.experiments.report.cells import TASK_ROLES
from rlft.experiments.report.judge import NOT_RUN
from rlft.experiments.report.markdown import eval_name, fmt_diff, num, plots_md, table

CLAIMS = {
    "H6": "Generation-verification gap: on the gap cell (`{gap}`) online DPO beats offline DPO in "
    "gold reward at matched KL (online_dpo - offline_dpo > 0, paired by seed). Applies only where "
    "its premise was measured: the global RM ranks held-out pairs better than DPO's implicit "
    "reward and oracle best-of-K reranking has headroom (both intervals above 0).",
    "H6a": "Short responses shrink the gap: the online advantage on `{short}` is smaller than on "
    "`{gap}` (advantage on {gap} - advantage on {short} > 0, Welch). Applies only where the "
    "advantage on `{gap}` is positive.",
    "H6b": "Hard verification removes the gap: on `{hard_verifier}` (and TL;DR judged by "
    "ROUGE-L) online DPO does not beat "
    "offline DPO (online_dpo - offline_dpo not > 0 at matched KL).",
    "budget": "Label budget: on `{gap}` the online advantage is largest at the smallest budget "
    "(advantage at the smallest - at the largest budget > 0, paired by seed). Applies only "
    "where the advantage at the smallest budget is positive.",
    "H5": "Global reward models generalise better than local ones: the global RM beats DPO's "
    "implicit reward on held-out pairs (accuracy; log-likelihood of the drawn labels) and as a "
    "Best-of-N reranker of SFT samples at the largest N (differences paired by seed).",
    "H2": "Offline DPO regularises badly (the paper rejects this): an online advantage measured "
    "with one beta and the same reference for online and offline DPO cannot come from "
    "regularisation. Applies only where an online advantage was measured.",
    "H3": "Online is just an easier optimisation (the paper rejects this): more online data, from "
    "more prompts or more rounds (iterated online DPO, beyond the paper), barely helps "
    "(arm - online_dpo not > 0 at matched KL).",
    "H4": "The RM sees wider data (the paper rejects this): on cells suffixed _narrow / _wide, "
    "online_dpo - offline_dpo > 0 at matched KL (paper: online still better).",
    "control": "Isomorphic control `{control}`: reward and policy classes correspond one to one, "
    "so online and offline DPO should coincide up to optimisation error (interval covers 0).",
}
TITLES = {
    "H6": "H6: generation-verification gap (main prediction)",
    "H6a": "H6(a): short responses (generation as easy as verification)",
    "H6b": "H6(b): hard verifier (verification as hard as generation)",
    "budget": "H6, label budget: the online advantage shrinks as labels grow",
    "H5": "H5: global vs local reward models",
    "H2": "H2: identical beta and reference",
    "H3": "H3: more online data (extra arms)",
    "H4": "H4: narrow vs wide data",
    "control": "Isomorphic control",
}


def verdict_sentence(row: Mapping, settings: Mapping) -> str:
    """One sentence from a verdict row: where, what, the number with its interval, the verdict."""
    where = f"`{row['task']}`" if row["task"] else "This run"
    if row["label_budget"] is not None:
        where += f", {row['label_budget']} labels"
    evaluated = f", {eval_name(settings, row['eval'])}" if row.get("eval") else ""
    if row["mean"] is None:
        measured = f"{row['quantity']}{evaluated}" if row["quantity"] else "nothing measured"
    else:
        seeds = "1 seed" if row["n"] == "1" else f"{row['n']} seeds"
        measured = f"{row['quantity']}{evaluated} = {fmt_diff(row['mean'], row['ci95'])} ({seeds})"
    note = f" ({row['note']})" if row["note"] else ""
    return f"{where}: {measured}: **{row['verdict']}**{note}."


def _table_rows(rows: list) -> list[list]:
    return [
        [
            r["task"] or "",
            "" if r["label_budget"] is None else r["label_budget"],
            r["quantity"],
            r.get("eval") or "",
            "" if r.get("kl") is None else num(r["kl"]),
            fmt_diff(r["mean"], r["ci95"]) if r["mean"] is not None else "",
            r["n"],
            f"**{r['verdict']}**",
            r["note"],
        ]
        for r in rows
    ]


def verdicts_markdown(results: Mapping, plots: bool = True) -> str:
    """The verdict of each hypothesis as measured here: the claim, a sentence per headline row,
    then, where a hypothesis has extra rows (other checkpoints), every row in a table."""
    out = ["## Verdicts as measured here", ""]
    for hid, title in TITLES.items():
        rows = [r for r in results["hypotheses"] if r["id"] == hid]
        out += [f"### {title}", "", CLAIMS[hid].format(**TASK_ROLES), ""]
        if not rows or all(r["verdict"] == NOT_RUN for r in rows):
            why = rows[0]["note"] if rows else ""
            out += [f"**{NOT_RUN}**" + (f" ({why})." if why else "."), ""]
            continue
        out += [
            "- " + verdict_sentence(r, results["settings"]) for r in rows if r.get("headline", True)
        ]
        out += [""]
        if not all(r.get("headline", True) for r in rows):  # extra checkpoints: every row
            header = ["cell", "labels", "quantity", "eval", "KL", "mean [95% CI]", "seeds"]
            out += [table([*header, "verdict", "note"], _table_rows(rows)), ""]
        links = plots_md(results, f"verdict:{hid}") if plots else ""
        out += [links, ""] if links else []
    return "\n".join(out)
