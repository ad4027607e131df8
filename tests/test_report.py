"""The report half of the reproduce pipeline: statistics, schema, results.json, report, plots.

Pure numpy and matplotlib on synthetic records (tests/report_records.py): no JAX, no training.
"""

import json
import math
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from rlft.experiments.arms import ARMS, DEFAULT_ARMS, EXTRA_ARMS, Arm
from rlft.experiments.report.claims import TITLES
from rlft.experiments.report.render import render_report, write_outputs
from rlft.experiments.report.schema import POINT_METRICS, validate_results
from rlft.experiments.report.summary import build_results
from tests.report_records import SELECTED_POINT, make_records

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = {"seeds": [0, 1, 2], "dpo": {"beta": 0.05}}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("reproduce"))
    return workdir, write_outputs(workdir, CONFIG, make_records())


def _verdicts(results, hid):
    return [r["verdict"] for r in results["hypotheses"] if r["id"] == hid and r["headline"]]


def _row(results, cell, budget, arm):
    return next(
        r
        for r in results["summary"]
        if (r["task"], r["label_budget"], r["arm"]) == (cell, budget, arm)
    )


# ----------------------------------------------------------------------------- arm table


def test_arm_table_order_and_properties():
    assert list(ARMS) == [
        "sft",
        "offline_dpo",
        "online_dpo",
        "online_dpo_from_dpo",
        "iterated_online_dpo",
        "ppo",
        "oracle_online_dpo",
        "online_dpo_more_prompts",
    ]
    assert tuple(ARMS)[:7] == DEFAULT_ARMS and EXTRA_ARMS == ("online_dpo_more_prompts",)
    assert ARMS["online_dpo_from_dpo"].start == "offline_dpo"
    assert ARMS["iterated_online_dpo"].start == "sft" and ARMS["iterated_online_dpo"].iterated
    assert ARMS["oracle_online_dpo"].scorer == "gold" and ARMS["ppo"].pairs is None
    assert ARMS["online_dpo_more_prompts"].prompts == "more"
    assert ARMS["sft"].selection_rule is None
    assert ARMS["ppo"].selection_rule == "heldout_rm_minus_beta_kl"
    assert ARMS["iterated_online_dpo"].selection_rule == "heldout_rm_minus_beta_kl"
    single = {
        ARMS[a].selection_rule for a in ARMS if ARMS[a].kind == "dpo" and not ARMS[a].iterated
    }
    assert single == {"heldout_dpo_loglik"}
    with pytest.raises(ValueError, match="kind 'rl'"):
        Arm("x", "rl")
    with pytest.raises(ValueError, match="with pairs None"):
        Arm("x", "dpo", iterated=True)


def test_report_imports_no_jax():
    """The report runs without JAX: importing it pulls in no jax, flax or optax."""
    code = (
        "import sys, rlft.experiments.report.render, rlft.experiments.report.readme, "
        "rlft.experiments.arms; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'flax', 'optax')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ----------------------------------------------------------------------------- results.json


def test_results_json_shape(written):
    workdir, returned = written
    with open(os.path.join(workdir, "results.json")) as f:
        results = json.load(f)
    validate_results(results)
    assert results == returned
    assert results["config"] == CONFIG and results["wall_time_s"] == 12.0
    assert results["settings"]["primary_eval"] == "greedy"
    assert len(results["runs"]) == 2 * 2 * 3 * len(ARMS)
    assert len(results["summary"]) == 2 * 2 * len(ARMS)  # cell x budget x arm
    for row in results["summary"]:
        assert row["n_seeds"] == 3 and row["seeds"] == [0, 1, 2]
        for which in ("final", "selected"):
            for m in POINT_METRICS:
                mean, (lo, hi) = row[f"{which}_{m}_mean"], row[f"{which}_{m}_ci95"]
                if mean is not None and lo is not None:
                    assert lo <= mean + 1e-12 and mean <= hi + 1e-12
    assert {r["arm"] for r in results["summary"]} == set(ARMS)
    assert len(results["diagnostics"]) == 4 and len(results["best_of_n"]) == 4 * 3 * 3
    assert {r["n_pairs"] for r in results["curves_summary"]} == {100, 400}
    assert len(results["frontier"]) == 4 * len(ARMS)
    assert {"cells", "fit"} <= set(results["map"])


def test_final_and_selected_checkpoints_by_hand(written):
    """Gold is linear in KL (report_records): final at the arm's max KL, selected at point 2."""
    _, results = written
    row = _row(results, "keyed", 250, "offline_dpo")
    tops = [2.0 * (1 + 0.05 * s) for s in (0, 1, 2)]
    finals = [0.2 + 1.5 * 0.1 * t for t in tops]
    half = 4.3027 * np.std(finals, ddof=1) / math.sqrt(3)
    assert row["final_gold_reward_greedy_mean"] == pytest.approx(np.mean(finals), abs=1e-12)
    assert row["final_gold_reward_greedy_ci95"] == pytest.approx(
        [np.mean(finals) - half, np.mean(finals) + half], abs=1e-12
    )
    assert row["selected_steps"] == [10 * SELECTED_POINT] * 3
    assert row["selected_kl_to_ref_mean"] == pytest.approx(np.mean(tops) * SELECTED_POINT / 4)
    assert row["selection_rule"] == "heldout_dpo_loglik"
    sft = _row(results, "keyed", 250, "sft")
    assert sft["selected_steps"] == [None] * 3 and sft["selected_n_seeds"] == 0
    assert sft["final_gold_reward_mean"] == pytest.approx(0.1)


def test_matched_kl_column_reads_every_arm_at_the_cells_k_star(written):
    _, results = written
    online = _row(results, "keyed", 250, "online_dpo")
    assert online["matched_kl"] == 2.0
    assert online["matched_gold_reward_mean"] == pytest.approx(0.1 + 0.2 * 2.0, abs=0.03)
    sft = _row(results, "keyed", 250, "sft")
    assert (
        sft["matched_gold_reward_mean"] is None
        and "covers KL [0.000, 0.000]" in (sft["matched_kl_note"])
    )


def test_comparisons_cover_every_arm_evaluation_and_checkpoint(written):
    _, results = written
    comps = [c for c in results["comparisons"] if (c["task"], c["label_budget"]) == ("keyed", 250)]
    pairs = {(c["arm"], c["baseline"]) for c in comps}
    assert pairs == {(a, "offline_dpo") for a in ARMS if a != "offline_dpo"} | {
        ("iterated_online_dpo", "online_dpo"),
        ("online_dpo_more_prompts", "online_dpo"),
    }
    online = [c for c in comps if (c["arm"], c["baseline"]) == ("online_dpo", "offline_dpo")]
    assert {(c["eval"], c["checkpoint"], c["level"]) for c in online} == {
        (e, ch, lv)
        for e in ("greedy", "sample")
        for ch, lv in (("matched_kl", "K*"), ("matched_kl", "K*/2"), ("selected", None))
        + (("final", None),)
    }
    sft_sel = next(c for c in comps if c["arm"] == "sft" and c["checkpoint"] == "selected")
    assert not sft_sel["applicable"] and "sft has no selection objective" in sft_sel["reason"]
    from_dpo = next(
        c for c in comps if c["arm"] == "online_dpo_from_dpo" and c["checkpoint"] == "matched_kl"
    )
    assert not from_dpo["applicable"] and "no common KL range" in from_dpo["reason"]


def test_comparison_numbers_from_the_runs_by_hand(written):
    """online - offline on keyed at 250 labels, per seed, from the raw frontiers: linear gold
    in KL gives the matched-KL value; the selected step and the last step give the others."""
    _, results = written
    runs = {
        (r["arm"], r["seed"]): r["frontier"]
        for r in results["runs"]
        if (r["task"], r["label_budget"]) == ("keyed", 250)
    }

    def gold_at(points, kl):  # the straight line through the first and last point
        a, b = points[0], points[-1]
        rise = b["gold_reward_greedy"] - a["gold_reward_greedy"]
        return a["gold_reward_greedy"] + rise / (b["kl_to_ref"] - a["kl_to_ref"]) * kl

    def row(checkpoint):
        return next(
            c
            for c in results["comparisons"]
            if (c["task"], c["label_budget"], c["arm"], c["baseline"], c["eval"])
            == ("keyed", 250, "online_dpo", "offline_dpo", "greedy")
            and c["checkpoint"] == checkpoint
            and c["level"] in (None, "K*")
        )

    pairs = [(runs["online_dpo", s], runs["offline_dpo", s]) for s in (0, 1, 2)]
    g = "gold_reward_greedy"
    expected = {
        "matched_kl": [gold_at(a, 2.0) - gold_at(b, 2.0) for a, b in pairs],
        "selected": [a[SELECTED_POINT][g] - b[SELECTED_POINT][g] for a, b in pairs],
        "final": [a[-1][g] - b[-1][g] for a, b in pairs],
    }
    for checkpoint, values in expected.items():
        c = row(checkpoint)
        np.testing.assert_allclose(c["per_seed"], values, atol=1e-12, err_msg=checkpoint)
        assert c["mean"] == pytest.approx(np.mean(values), abs=1e-12)
    assert row("selected")["steps"] == [[10 * SELECTED_POINT] * 2] * 3


# ----------------------------------------------------------------------------- verdicts


def test_main_verdicts_from_the_numbers(written):
    _, results = written
    assert _verdicts(results, "H6") == ["supported", "supported"]  # one per label budget
    assert _verdicts(results, "H6a") == ["supported", "supported"]  # 0.1 vs 0.01 per nat
    assert _verdicts(results, "budget") == ["inconclusive"]  # same gain at both budgets
    assert set(_verdicts(results, "H5")) == {"supported"}  # RM 0.8 vs DPO 0.6, BoN 0.1 vs 0.05
    assert _verdicts(results, "H2") == ["supported"]
    # iterated = more prompts = online: no improvement, and not shown below 0 either
    assert set(_verdicts(results, "H3")) <= {"supported", "not contradicted"}
    for hid in ("H6b", "H4", "control"):
        assert _verdicts(results, hid) == ["not run in this variant"]


def test_one_seed_has_no_ci_and_no_verdict(tmp_path):
    records = make_records(seeds=(0,), budgets=(250,))
    results = write_outputs(str(tmp_path), CONFIG, records)
    (h6,) = [r for r in results["hypotheses"] if r["id"] == "H6" and r["headline"]]
    assert h6["verdict"] == "not applicable"  # no interval: the premise is not measured
    assert _row(results, "keyed", 250, "online_dpo")["final_gold_reward_ci95"] == [None, None]
    text = (tmp_path / "report.md").read_text()
    assert "1 seed, no CI" in text
    assert (tmp_path / "plots" / "frontier_keyed.png").exists()


def test_control_hard_verifier_and_narrow_cells():
    records = make_records(gain={"rouge": 0.0, "bandit": 0.0, "keyed_narrow": 0.3}, noise=0.05)
    results = build_results(CONFIG, records)
    assert set(_verdicts(results, "control")) == {"not contradicted"}
    assert set(_verdicts(results, "H6b")) == {"not contradicted"}
    assert set(_verdicts(results, "H4")) == {"supported"}
    text = render_report(results)
    assert "online_dpo_more_prompts" in text and "keyed_narrow" in text


# ----------------------------------------------------------------------------- report and plots


def test_report_states_results_with_intervals_and_links_plots(written):
    workdir, results = written
    text = pathlib.Path(workdir, "report.md").read_text()
    assert text.startswith("# Reproduction report: a reward model plus online RL")
    assert "synthetic" not in text.split("\n")[0]
    for arm in ARMS:
        assert f"| {arm} |" in text, arm
    for title in TITLES.values():
        assert title in text
    assert "near-greedy (T=0.01)" in text and "samples at T=1" in text
    h6 = next(r for r in results["hypotheses"] if r["id"] == "H6" and r["headline"])
    lo, hi = h6["ci95"]
    assert f"= {h6['mean']:+.3f} [{lo:+.3f}, {hi:+.3f}] (3 seeds): **supported**" in text
    assert "## The map: when does online win?" in text and "Across 4 cells" in text
    assert "informative labels" in text and "SFT fit" in text
    names = {p["name"] for p in results["plots"]}
    assert {"online_advantage", "map", "curves"} <= names
    for cell in ("keyed", "keyed_short"):
        assert {f"frontier_{cell}", f"rm_vs_gold_{cell}", f"best_of_n_{cell}"} <= names
    for plot in results["plots"]:
        assert f"]({plot['path']})" in text
        with open(os.path.join(workdir, plot["path"]), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert results["plots_skipped"] == []


def test_missing_pieces_skip_plots_with_a_note(tmp_path):
    records = make_records(budgets=(250,))
    records["curves"] = []
    for diag in records["diagnostics"]:
        diag["best_of_n"] = []
    for run in records["runs"]:
        for point in run["frontier"]:
            point["rm_score_greedy"] = None
    results = write_outputs(str(tmp_path), CONFIG, records)
    skipped = {s["name"]: s["note"] for s in results["plots_skipped"]}
    assert {"curves", "best_of_n_keyed", "rm_vs_gold_keyed"} <= set(skipped)
    text = (tmp_path / "report.md").read_text()
    assert "*Plot `curves` skipped: no learning-curve records*" in text
    assert not (tmp_path / "plots" / "curves.png").exists()


def test_arm_time_counts_each_unit_once():
    """A second reward-model class adds its RM-driven arms' time, not the shared arms' again."""
    from rlft.experiments.arms import uses_reward_model  # noqa: PLC0415
    from rlft.experiments.report.summary import arms_wall_s  # noqa: PLC0415

    records = make_records(budgets=(250,))
    once = sum(r["wall_s"] for r in records["runs"])
    keyed = [r for r in records["runs"] if r["task"] == "keyed"]
    records["tasks"]["keyed@mean"] = {**records["tasks"]["keyed"], "reward_class": "mean"}
    records["runs"] += [{**r, "task": "keyed@mean"} for r in keyed]
    extra = sum(r["wall_s"] for r in keyed if uses_reward_model(r["arm"]))
    assert extra > 0 and arms_wall_s(records) == pytest.approx(once + extra)


def test_a_report_renders_again_from_its_results_json(tmp_path):
    """results.json keeps the records, so the report can be rendered again without the
    pipeline: the same results, bar the plot list, and the same report.md."""
    from rlft.experiments.report.render import records_from_results, rerender  # noqa: PLC0415

    first = write_outputs(str(tmp_path), CONFIG, make_records())
    report = (tmp_path / "report.md").read_text()
    again = rerender(str(tmp_path))
    drop = ("plots", "plots_skipped")
    assert {k: v for k, v in again.items() if k not in drop} == json.loads(
        json.dumps({k: v for k, v in first.items() if k not in drop})
    )
    assert (tmp_path / "report.md").read_text() == report
    assert records_from_results(again)["runs"] == first["runs"]


def test_tldr_judged_by_rouge_plays_the_hard_verifier():
    from rlft.experiments.report.cells import role_cells  # noqa: PLC0415

    tasks = {
        "rouge": {"task": "rouge", "family": "rouge", "knobs": {}, "label_source": "sft"},
        "tldr": {"task": "tldr", "family": "tldr", "knobs": {}, "label_source": "sft"},
        "tldr_rm": {
            "task": "tldr_rm",
            "family": "tldr",
            "knobs": {"judge": "rm", "gold_rm": "runs/rm"},
            "label_source": "sft",
        },
        "keyed": {"task": "keyed", "family": "keyed", "knobs": {}, "label_source": "sft"},
    }
    assert role_cells("hard_verifier", tasks) == ["rouge", "tldr"]
    assert role_cells("gap", tasks) == ["keyed"]
