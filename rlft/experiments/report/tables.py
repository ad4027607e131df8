"""The report's result tables: each arm at three checkpoints, comparisons, over-optimisation.

Per (cell, budget): every arm's gold reward on both evaluations and KL at the final checkpoint,
at the selected one (with the steps chosen) and at the cell's matched KL; each comparison with
offline DPO (and online DPO); and at the final checkpoint the RM score next to the gold reward
and the verifier's parts (validity, repeats), where over-optimisation shows.
"""

from collections.abc import Mapping

from rlft.experiments.report.cells import budgets_of, cell_rows
from rlft.experiments.report.markdown import (
    eval_name,
    fmt_diff,
    fmt_mean,
    fmt_seeds,
    num,
    plots_md,
    table,
)

EVAL_ORDER = {"greedy": ("greedy", "sample"), "sample": ("sample", "greedy")}


def _gold(primary: str) -> tuple[str, str]:
    return tuple("gold_reward" + ("_greedy" if e == "greedy" else "") for e in EVAL_ORDER[primary])


def _steps(row: Mapping) -> str:
    steps = row["selected_steps"]
    return "n/a" if all(s is None for s in steps) else ", ".join(str(s) for s in steps)


def _arm_table(rows: list, primary: str) -> str:
    g1, g2 = _gold(primary)
    header = ["arm", "final: gold", "final: gold (other eval)", "final: KL"]
    header += ["selected: gold", "selected: KL", "selected steps", "matched KL: gold", "seeds"]
    body = [
        [r["arm"]]
        + [fmt_mean(r[f"final_{m}_mean"], r[f"final_{m}_ci95"]) for m in (g1, g2, "kl_to_ref")]
        + [fmt_mean(r[f"selected_{m}_mean"], r[f"selected_{m}_ci95"]) for m in (g1, "kl_to_ref")]
        + [_steps(r), fmt_mean(r[f"matched_{g1}_mean"], r[f"matched_{g1}_ci95"])]
        + [fmt_seeds(r["n_seeds"])]
        for r in rows
    ]
    return table(header, body)


def summary_markdown(results: Mapping, plots: bool = True) -> str:
    """Per cell and label budget: each arm at the final, selected and matched-KL checkpoints."""
    settings, primary = results["settings"], results["settings"]["primary_eval"]
    other = EVAL_ORDER[primary][1]
    out = ["## Results per cell and label budget", ""]
    out += [
        f"Gold reward on the primary evaluation, {eval_name(settings, primary)}; the other "
        f"column: {eval_name(settings, other)}. KL(pi || pi_sft) in nats per response, Monte "
        "Carlo on T=1 samples. Selected: the checkpoint each arm's own held-out objective picks "
        "(DPO arms: held-out DPO log-likelihood; PPO: held-out RM score - beta KL), steps per "
        "seed. Matched KL: the arm's curve read at the cell's K*, the largest KL online and "
        "offline DPO both reach in every seed. Mean ± Student-t 95% half-width over seeds.",
        "",
    ]
    for cell in results["tasks"]:
        meta = results["tasks"][cell]
        out += [f"### `{cell}`", ""] + ([meta["description"], ""] if meta["description"] else [])
        for budget in budgets_of(results, cell):
            rows = cell_rows(results, cell, budget)
            kl = next((r["matched_kl"] for r in rows if r["matched_kl"] is not None), None)
            note = next((r["matched_kl_note"] for r in rows if r["arm"] == "offline_dpo"), "")
            level = f"K* = {num(kl)}" if kl is not None else f"no matched KL: {note or 'n/a'}"
            out += [f"**{budget} labels** ({level})", "", _arm_table(rows, primary), ""]
        links = plots_md(results, f"cell:{cell}") if plots else ""
        out += [links, ""] if links else []
    return "\n".join(out)


def _comparison_table(rows: list, evals: tuple) -> tuple[str, list[str]]:
    """One (cell, budget)'s comparisons: a row per pair, K*, matched / selected / final per
    evaluation; and the reasons of the n/a cells."""
    pairs = list(dict.fromkeys((c["arm"], c["baseline"]) for c in rows))
    got = {(c["arm"], c["baseline"], c["eval"], c["checkpoint"], c["level"]): c for c in rows}
    body, reasons = [], {}
    for pair in pairs:
        head = got.get((*pair, evals[0], "matched_kl", "K*"))
        line = [f"{pair[0]} - {pair[1]}", num(head["kl"]) if head else "n/a"]
        for ev in evals:
            for checkpoint, level in (("matched_kl", "K*"), ("selected", None), ("final", None)):
                c = got.get((*pair, ev, checkpoint, level))
                if c is not None and not c["applicable"]:
                    reasons.setdefault(f"{pair[0]} - {pair[1]}, {checkpoint}", c["reason"])
                ok = c is not None and c["applicable"]
                line.append(fmt_diff(c["mean"], c["ci95"]) if ok else "n/a")
        body.append(line + [fmt_seeds(head["n_seeds"]) if head and head["n_seeds"] else ""])
    header = ["difference", "K*"]
    header += [f"{w} ({ev})" for ev in evals for w in ("matched KL", "selected", "final")]
    notes = [f"- n/a, {k}: {why}" for k, why in reasons.items()]
    return table([*header, "seeds"], body), notes


def comparisons_markdown(results: Mapping) -> str:
    """Every comparison: arm - baseline at matched KL (K*), selected and final checkpoints, on
    both evaluations (primary first). K*/2 rows are in results.json."""
    settings, evals = results["settings"], EVAL_ORDER[results["settings"]["primary_eval"]]
    out = ["## Arms against offline DPO (and online DPO), paired by seed", ""]
    if not results["comparisons"]:
        return "\n".join(out + ["No cell has offline DPO and another arm.", ""])
    out += [
        f"Gold reward differences, mean [95% CI] over seeds; {evals[0]}: "
        f"{eval_name(settings, evals[0])} (primary), {evals[1]}: {eval_name(settings, evals[1])}."
        " Matched KL: both arms' curves read at K*, the largest KL both reach in every seed.",
        "",
    ]
    keys = list(dict.fromkeys((c["task"], c["label_budget"]) for c in results["comparisons"]))
    for cell, budget in keys:
        rows = [
            c for c in results["comparisons"] if (c["task"], c["label_budget"]) == (cell, budget)
        ]
        body, notes = _comparison_table(rows, evals)
        out += [f"**`{cell}`, {budget} labels**", "", body, ""] + (notes + [""] if notes else [])
    links = plots_md(results, "comparisons")
    return "\n".join(out + ([links, ""] if links else []))


def overoptimisation_markdown(results: Mapping) -> str:
    """At the final checkpoint: KL, RM score and gold reward (both evaluations) and gold parts."""
    settings, primary = results["settings"], results["settings"]["primary_eval"]
    sfx = "_greedy" if primary == "greedy" else ""
    out = ["## Over-optimisation: KL, reward-model score and gold reward", ""]
    out += [
        f"Final checkpoints, {eval_name(settings, primary)}: the learned RM's score next to the "
        "gold reward and the verifier's parts; a rising RM score with a falling gold reward is "
        "over-optimisation of the RM.",
        "",
    ]
    for cell in results["tasks"]:
        for budget in budgets_of(results, cell):
            rows = cell_rows(results, cell, budget)
            key = f"final_gold_parts{sfx}_mean"
            parts = sorted({k for r in rows for k in r[key]})
            body = [
                [r["arm"], fmt_mean(r["final_kl_to_ref_mean"], r["final_kl_to_ref_ci95"])]
                + [fmt_mean(r[f"final_rm_score{sfx}_mean"], r[f"final_rm_score{sfx}_ci95"])]
                + [fmt_mean(r[f"final_gold_reward{sfx}_mean"], r[f"final_gold_reward{sfx}_ci95"])]
                + [num(r[key].get(k)) for k in parts]
                for r in rows
            ]
            header = ["arm", "KL", "RM score", "gold reward", *parts]
            out += [f"**`{cell}`, {budget} labels**", "", table(header, body), ""]
    links = plots_md(results, "overoptimisation")
    return "\n".join(out + ([links, ""] if links else []))
