"""Markdown and number formats shared by every part of the report.

A mean over seeds is written `0.412 ± 0.031` (the Student-t 95% half-width), a difference
`+0.120 [+0.050, +0.190]` (its 95% interval); a value without an interval (one seed) says so.
"""

from collections.abc import Mapping


def table(header: list[str], rows: list[list]) -> str:
    """A markdown table; a `|` inside a cell is escaped so it cannot split the cell."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    cells = [[str(c).replace("|", "\\|") for c in row] for row in rows]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def num(x: float | None, spec: str = ".3f") -> str:
    """x rounded to 3 decimals ("n/a" for None); + 0.0 keeps "-0.000" from appearing."""
    return "n/a" if x is None else format(round(x, 3) + 0.0, spec)


def has_ci(ci: list | None) -> bool:
    """Whether a [lo, hi] interval is there (one seed gives [None, None])."""
    return ci is not None and None not in ci


def fmt_diff(mean: float | None, ci: list | None) -> str:
    """'+0.120 [+0.050, +0.190]': a difference with its 95% interval."""
    if mean is None:
        return "n/a"
    if not has_ci(ci):
        return f"{num(mean, '+.3f')} (1 seed, no CI)"
    return f"{num(mean, '+.3f')} [{num(ci[0], '+.3f')}, {num(ci[1], '+.3f')}]"


def fmt_interval(mean: float | None, ci: list | None) -> str:
    """'0.412 [0.381, 0.443]': a level (not a difference) with its 95% interval."""
    if mean is None:
        return "n/a"
    if not has_ci(ci):
        return f"{num(mean)} (1 seed)"
    return f"{num(mean)} [{num(ci[0])}, {num(ci[1])}]"


def fmt_mean(mean: float | None, ci: list | None) -> str:
    """'0.412 ± 0.031' (Student-t 95% half-width); a bare mean without an interval (1 seed)."""
    if mean is None:
        return "n/a"
    if not has_ci(ci):
        return num(mean)
    return f"{num(mean)} ± {num((ci[1] - ci[0]) / 2)}"


def fmt_seeds(n: int) -> str:
    """The number of seeds, flagged when one seed gives no interval."""
    return "1 (no CI)" if n == 1 else str(n)


def eval_name(settings: Mapping, ev: str) -> str:
    """How an evaluation was sampled, e.g. 'near-greedy (T=0.01)' or 'samples at T=1'."""
    if ev == "greedy":
        return f"near-greedy (T={settings['greedy_temperature']:g})"
    return f"samples at T={settings['sample_temperature']:g}"


def plots_md(results: Mapping, section: str) -> str:
    """Image links of the plots made for a report section, and a note per skipped plot."""
    lines = [f"![{p['caption']}]({p['path']})" for p in results["plots"] if p["section"] == section]
    lines += [
        f"*Plot `{s['name']}` skipped: {s['note']}*"
        for s in results["plots_skipped"]
        if s["section"] == section
    ]
    return "\n\n".join(lines)
