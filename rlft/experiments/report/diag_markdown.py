"""The report's diagnostics section: can the reward be learnt from these labels?

Per (cell, budget): RM and DPO held-out accuracy and log-likelihood with their paired
differences, oracle best-of-K headroom, informative labels and the labels' agreement with
gold; the SFT fit; Best-of-N per ranker. Numbers from results.json["diagnostics"].
"""

from collections.abc import Mapping

from rlft.experiments.report.markdown import (
    eval_name,
    fmt_diff,
    fmt_mean,
    fmt_seeds,
    plots_md,
    table,
)

LEARNABILITY = (
    ("RM accuracy", "rm_heldout_accuracy"),
    ("DPO accuracy", "dpo_heldout_accuracy"),
    ("RM loglik", "rm_heldout_loglik"),
    ("DPO loglik", "dpo_heldout_loglik"),
    ("oracle best-of-K gain", "oracle_best_of_k_gain"),
    ("informative labels", "informative_label_frac"),
    ("labels agree with gold", "label_agreement_with_gold"),
)
SFT_FIT = (
    ("demonstrator gold", "demo_gold"),
    ("SFT gold, T=1", "sft_gold"),
    ("SFT gold, near-greedy", "sft_gold_greedy"),
    ("held-out NLL per token", "heldout_nll_per_token"),
)


def _mean(row: Mapping, name: str) -> str:
    return fmt_mean(row[f"{name}_mean"], row[f"{name}_ci95"])


def _best_of_n(results: Mapping) -> list[str]:
    out = []
    cells = list(dict.fromkeys((r["task"], r["label_budget"]) for r in results["best_of_n"]))
    for cell, budget in cells:
        rows = [r for r in results["best_of_n"] if (r["task"], r["label_budget"]) == (cell, budget)]
        ns = sorted({r["n"] for r in rows})
        got = {(r["ranker"], r["n"]): r for r in rows}
        body = [
            [ranker]
            + [_mean(got[ranker, n], "gold_reward") if (ranker, n) in got else "" for n in ns]
            for ranker in dict.fromkeys(r["ranker"] for r in rows)
        ]
        out += [f"**Best-of-N gold reward, `{cell}`, {budget} labels**", ""]
        out += [table(["ranker", *(f"N={n}" for n in ns)], body), ""]
    return out


def diagnostics_markdown(results: Mapping) -> str:
    """Learnability, SFT fit and Best-of-N tables, with the plots of those sections."""
    out = ["## Diagnostics: can the reward be learnt from these labels?", ""]
    rows = results["diagnostics"]
    if not rows:
        return "\n".join(out + ["No diagnostics records.", ""])
    head = ["cell", "labels", *(n for n, _ in LEARNABILITY), "RM - DPO accuracy"]
    body = [
        [r["task"], r["label_budget"], *(_mean(r, k) for _, k in LEARNABILITY)]
        + [fmt_diff(r["rm_minus_dpo_accuracy_mean"], r["rm_minus_dpo_accuracy_ci95"])]
        + [fmt_seeds(r["n_seeds"])]
        for r in rows
    ]
    out += [table([*head, "seeds"], body), ""]
    out += [
        "Accuracy: held-out pairs ordered as the gold verifier orders them. Loglik: mean log "
        "sigmoid(margin) of the drawn labels (global vs local validation likelihood). Informative "
        "labels: pairs whose two responses differ in gold reward (a tie is a coin flip). RM - DPO: "
        "paired by seed, mean [95% CI].",
        "",
    ]
    body = [
        [r["task"], r["label_budget"], *(_mean(r, f"sft_fit_{k}") for _, k in SFT_FIT)]
        for r in rows
    ]
    out += ["**SFT fit**", "", table(["cell", "labels", *(n for n, _ in SFT_FIT)], body), ""]
    out += [
        f"SFT gold on {eval_name(results['settings'], 'sample')} and "
        f"{eval_name(results['settings'], 'greedy')}; NLL in nats per token on held-out "
        "demonstrations.",
        "",
    ]
    out += _best_of_n(results)
    for section in ("best_of_n", "curves"):
        links = plots_md(results, section)
        out += [links, ""] if links else []
    return "\n".join(out)
