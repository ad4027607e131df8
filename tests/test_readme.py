"""The README's results section is the block rendered from the committed results.json."""

import json
import os

import pytest

from rlft.experiments.arms import ARMS
from rlft.experiments.report.readme import BEGIN, END, readme_block
from rlft.experiments.report.summary import build_results
from tests.report_records import make_records

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "docs", "results", "results.json")


def test_readme_block_from_synthetic_results():
    results = build_results({}, make_records(budgets=(250,)))
    block = readme_block(results)
    assert block.startswith(BEGIN + "\n") and block.endswith(END + "\n")
    assert "| arm | `keyed`, 250 labels | `keyed_short`, 250 labels |" in block
    for arm in ARMS:
        assert f"| {arm} |" in block
    online = next(
        r
        for r in results["summary"]
        if (r["task"], r["label_budget"], r["arm"]) == ("keyed", 250, "online_dpo")
    )
    mean, (lo, hi) = (
        online["selected_gold_reward_greedy_mean"],
        online["selected_gold_reward_greedy_ci95"],
    )
    assert f"| online_dpo | {mean:.3f} [{lo:.3f}, {hi:.3f}] |" in block
    assert "0.200 [0.200, 0.200] †" in block  # SFT: its one checkpoint
    assert "near-greedy (T=0.01)" in block
    h6 = [r for r in results["hypotheses"] if r["id"] == "H6" and r["headline"]]
    assert len(h6) == 1 and f"**{h6[0]['verdict']}**" in block
    assert block.count("\n- `keyed`, 250 labels: online_dpo - offline_dpo") == 1


def test_readme_holds_the_block_of_the_committed_results():
    with open(RESULTS) as f:
        results = json.load(f)
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    block = readme_block(results)
    if block not in readme:
        start, end = readme.find(BEGIN), readme.find(END)
        found = readme[start : end + len(END) + 1] if start >= 0 and end >= 0 else "(no block)"
        pytest.fail(
            "README.md's results block differs from the one rendered from "
            f"docs/results/results.json.\n--- expected\n{block}\n--- found\n{found}"
        )
