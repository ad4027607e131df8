"""The reporting side of the reproduce pipeline: statistics, verdicts, results.json, report, plots.

Pure numpy and matplotlib on synthetic records: no JAX, no training.
"""

import ast
import copy
import json
import math
import os
import pathlib

import numpy as np
import pytest

from rlft.experiments.report import render as report
from rlft.experiments.report import stats

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "colab", "quickstart.ipynb")
SEEDS = (0, 1, 2)
BUDGETS = (250, 1000)
# Gold reward per arm before noise; online beats offline by 0.2 on keyed, 0.02 on keyed_short.
BASE = {"sft": 0.3, "offline_dpo": 0.5, "online_dpo_from_dpo": 0.72, "ppo": 0.6}
BASE |= {"oracle_online_dpo": 0.9}
ONLINE_GAIN = {"keyed": 0.2, "keyed_short": 0.02}


def _run(task, budget, seed, arm, gold, rng):
    frontier = [
        {"step": s, "gold_reward": gold * f, "kl_to_ref": 2.0 * f, "win_rate_vs_sft": 0.5 + 0.2 * f}
        for s, f in ((0, 0.0), (10, 0.5), (20, 1.0))
    ]
    return {
        "task": task,
        "label_budget": budget,
        "seed": seed,
        "arm": arm,
        "gold_reward": gold,
        "win_rate_vs_sft": 0.5 if arm == "sft" else 0.5 + 0.3 * gold,
        "kl_to_ref": 0.0 if arm == "sft" else float(rng.uniform(1, 5)),
        "frontier": [] if arm == "sft" else frontier,
        "gold_parts": {"validity": float(rng.uniform(0.8, 1.0)), "repeat_frac": 0.1},
        "rm_score": None if arm == "sft" else gold + 0.5,
        "wall_s": 1.5,
    }


def _diag(task, budget, seed, rng):
    bon = [
        {"ranker": ranker, "n": n, "gold_reward": 0.3 + gain * math.log(n) + rng.normal(0, 0.01)}
        for ranker, gain in (("global_rm", 0.1), ("local_rm", 0.05), ("gold", 0.2))
        for n in (1, 2, 5)
    ]
    return {
        "task": task,
        "label_budget": budget,
        "seed": seed,
        "rm_heldout_accuracy": 0.8 + rng.normal(0, 0.01),
        "dpo_heldout_accuracy": 0.6 + rng.normal(0, 0.01),
        "rm_heldout_loglik": -0.5 + rng.normal(0, 0.01),
        "dpo_heldout_loglik": -0.65 + rng.normal(0, 0.01),
        "oracle_best_of_k_gain": 0.4 + rng.normal(0, 0.01),
        "best_of_n": bon,
    }


def make_records(online_gain=None, noise=0.01, seeds=SEEDS, budgets=BUDGETS):
    """Synthetic records: keyed and keyed_short, every arm, frontiers, Best-of-N, curves."""
    rng = np.random.default_rng(0)
    online_gain = ONLINE_GAIN if online_gain is None else online_gain
    runs, diags, curves = [], [], []
    for task, gain in online_gain.items():
        for budget in budgets:
            for seed in seeds:
                for arm, base in {**BASE, "online_dpo": BASE["offline_dpo"] + gain}.items():
                    gold = float(base + rng.normal(0, noise))
                    runs.append(_run(task, budget, seed, arm, gold, rng))
                diags.append(_diag(task, budget, seed, rng))
        for seed in seeds:
            for n in (100, 400):
                acc = {"rm_heldout_accuracy": 0.7, "dpo_heldout_accuracy": 0.6}
                curves.append({"task": task, "seed": seed, "n_pairs": n} | acc)
    tasks = {t: {"description": f"synthetic {t}"} for t in online_gain}
    return {"runs": runs, "diagnostics": diags, "curves": curves, "tasks": tasks} | {
        "wall_time_s": 12.0
    }


CONFIG = {"seeds": list(SEEDS), "dpo": {"beta": 0.1}}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("reproduce"))
    return workdir, report.write_outputs(workdir, CONFIG, make_records())


def _verdicts(results, hid):
    return [r["verdict"] for r in results["hypotheses"] if r["id"] == hid]


# ----------------------------------------------------------------------------- statistics


def test_t_table_is_the_t_quantile():
    """Each tabulated t_{0.975, df} has CDF 0.975 (numeric integral of the t density)."""
    assert stats.t975(2) == pytest.approx(4.303, abs=1e-3)
    assert stats.t975(4) == pytest.approx(2.776, abs=1e-3)
    for df in (*range(1, 32), 45, 100, 1000):
        t = stats.t975(df)
        x = np.linspace(0.0, t, 200_001)
        log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
        pdf = np.exp(log_c - (df + 1) / 2 * np.log1p(x**2 / df))
        cdf = 0.5 + float(np.sum((pdf[1:] + pdf[:-1]) / 2 * np.diff(x)))
        assert cdf == pytest.approx(0.975, abs=3e-5), df
    assert stats.t975(10**6) == pytest.approx(1.95997, abs=1e-4)


def test_mean_ci95_by_hand():
    mean, lo, hi = stats.mean_ci95([1.0, 2.0, 3.0])  # s = 1, t(0.975, 2) = 4.303
    assert mean == 2.0
    assert (hi - lo) / 2 == pytest.approx(4.3027 / math.sqrt(3), abs=1e-6)
    assert (lo, hi) == pytest.approx((2 - 2.48417, 2 + 2.48417), abs=1e-4)
    mean, lo, hi = stats.mean_ci95([0.7])
    assert mean == 0.7 and math.isnan(lo) and math.isnan(hi)
    with pytest.raises(ValueError):
        stats.mean_ci95([])


def test_paired_and_welch_differences():
    mean, lo, hi = stats.paired_difference_ci([3.0, 5.0, 7.0], [1.0, 2.0, 3.0])  # diffs 2, 3, 4
    assert (mean, lo, hi) == pytest.approx((3.0, 3 - 2.48417, 3 + 2.48417), abs=1e-4)
    with pytest.raises(ValueError, match="equal lengths"):
        stats.paired_difference_ci([1.0, 2.0], [1.0])
    # Equal variances and sizes: Welch's df = 2(n-1) = 4, se = sqrt(2/3).
    mean, lo, hi = stats.welch_difference_ci([4.0, 5.0, 6.0], [1.0, 2.0, 3.0])
    assert mean == 3.0 and (hi - lo) / 2 == pytest.approx(2.7764 * math.sqrt(2 / 3), abs=1e-6)


@pytest.mark.parametrize(
    ("lo", "hi", "predicted", "expected"),
    [
        (0.1, 0.3, "positive", "supported"),
        (-0.3, -0.1, "positive", "contradicted"),
        (-0.1, 0.3, "positive", "inconclusive"),
        (0.1, 0.3, "not positive", "contradicted"),
        (-0.3, -0.1, "not positive", "supported"),
        (-0.1, 0.3, "not positive", "consistent"),
        (-0.1, 0.3, "zero", "consistent"),
        (0.1, 0.3, "zero", "contradicted"),
        (math.nan, math.nan, "positive", "inconclusive (1 seed, no CI)"),
    ],
)
def test_verdict_words(lo, hi, predicted, expected):
    assert stats.verdict(lo, hi, predicted) == expected


# ----------------------------------------------------------------------------- results.json


def test_results_json_shape(written):
    workdir, returned = written
    with open(os.path.join(workdir, "results.json")) as f:
        results = json.load(f)
    report.validate_results(results)
    assert results == returned
    assert results["config"] == CONFIG and results["wall_time_s"] == 12.0
    assert len(results["runs"]) == 2 * 2 * 3 * 6
    # One summary row per task x budget x arm, every field typed as the brief says.
    assert len(results["summary"]) == 2 * 2 * 6
    for row in results["summary"]:
        assert isinstance(row["task"], str) and isinstance(row["arm"], str)
        assert isinstance(row["label_budget"], int) and row["n_seeds"] == 3
        for m in report.METRICS:
            assert isinstance(row[f"{m}_mean"], float)
            lo, hi = row[f"{m}_ci95"]
            assert lo <= row[f"{m}_mean"] <= hi
    assert {r["arm"] for r in results["summary"]} == set(report.ARMS)
    assert len(results["diagnostics"]) == 4
    for row in results["diagnostics"]:
        assert len(row["per_seed"]) == 3 and row["n_seeds"] == 3
        assert row["rm_heldout_accuracy_mean"] == pytest.approx(0.8, abs=0.03)
    assert len(results["best_of_n"]) == 4 * 3 * 3  # task x budget, ranker, N
    assert {r["n_pairs"] for r in results["curves_summary"]} == {100, 400}
    assert len(results["frontier"]) == 4 * 5  # every arm but SFT has checkpoints


def test_summary_ci_matches_hand_computation(written):
    _, results = written
    row = next(
        r
        for r in results["summary"]
        if (r["task"], r["label_budget"], r["arm"]) == ("keyed", 250, "online_dpo")
    )
    golds = [
        r["gold_reward"]
        for r in results["runs"]
        if (r["task"], r["label_budget"], r["arm"]) == ("keyed", 250, "online_dpo")
    ]
    half = 4.3027 * np.std(golds, ddof=1) / math.sqrt(3)
    assert row["gold_reward_mean"] == pytest.approx(np.mean(golds), abs=1e-12)
    assert row["gold_reward_ci95"] == pytest.approx([np.mean(golds) - half, np.mean(golds) + half])


def test_validate_results_names_the_missing_key(written):
    _, results = written
    broken = copy.deepcopy(results)
    del broken["summary"]
    with pytest.raises(ValueError, match="'summary'"):
        report.validate_results(broken)
    broken = copy.deepcopy(results)
    del broken["summary"][3]["gold_reward_ci95"]
    with pytest.raises(ValueError, match=r"summary\[3\].*'gold_reward_ci95'"):
        report.validate_results(broken)
    broken = copy.deepcopy(results)
    broken["runs"][0]["seed"] = "0"
    with pytest.raises(ValueError, match=r"runs\[0\]\.seed: expected int"):
        report.validate_results(broken)


def test_bad_records_are_refused(tmp_path):
    records = make_records()
    del records["runs"][5]["kl_to_ref"]
    with pytest.raises(ValueError, match=r"records.runs\[5\]: missing key 'kl_to_ref'"):
        report.write_outputs(str(tmp_path), CONFIG, records)
    records = make_records()
    records["runs"].append(dict(records["runs"][0]))
    with pytest.raises(ValueError, match="two run records"):
        report.write_outputs(str(tmp_path), CONFIG, records)


# ----------------------------------------------------------------------------- verdicts


def test_main_verdicts_from_the_numbers(written):
    _, results = written
    assert _verdicts(results, "H6") == ["supported", "supported"]  # one per label budget
    assert _verdicts(results, "H6a") == ["supported", "supported"]  # 0.2 vs 0.02
    assert _verdicts(results, "budget") == ["inconclusive"]  # same gain at both budgets
    assert set(_verdicts(results, "H5")) == {"supported"}  # RM 0.8 vs DPO 0.6, BoN 0.1 vs 0.05
    assert _verdicts(results, "H2")[0].startswith("rejected")
    for hid in ("H6b", "H3", "H4", "control"):
        assert _verdicts(results, hid) == [report.NOT_RUN]


@pytest.mark.parametrize(
    ("gain", "noise", "expected"),
    [(0.2, 0.01, "supported"), (-0.2, 0.01, "contradicted"), (0.0, 0.3, "inconclusive")],
)
def test_h6_verdict_follows_the_data(gain, noise, expected):
    records = make_records(online_gain={"keyed": gain}, noise=noise, budgets=(250,))
    results = report.build_results(CONFIG, records)
    assert _verdicts(results, "H6") == [expected]
    assert _verdicts(results, "budget") == [report.NOT_RUN]


def test_budget_verdict_pairs_budgets_by_seed():
    """Advantage 0.3 at 250 labels and 0.05 at 1000: largest at the smallest budget."""
    records = make_records(online_gain={"keyed": 0.3})
    for run in records["runs"]:
        if run["arm"] == "online_dpo" and run["label_budget"] == 1000:
            run["gold_reward"] -= 0.25
    results = report.build_results(CONFIG, records)
    assert _verdicts(results, "budget") == ["supported"]
    assert _verdicts(results, "H6") == ["supported", "supported"]


def test_one_seed_has_no_ci_and_no_verdict(tmp_path):
    records = make_records(seeds=(0,), budgets=(250,))
    results = report.write_outputs(str(tmp_path), CONFIG, records)
    assert _verdicts(results, "H6") == ["inconclusive (1 seed, no CI)"]
    assert results["summary"][0]["gold_reward_ci95"] == [None, None]
    text = (tmp_path / "report.md").read_text()
    assert "1 seed, no CI" in text
    assert (tmp_path / "plots" / "gold_vs_budget_keyed.png").exists()  # bar chart, one budget


def test_control_hard_verifier_and_extra_arms():
    """bandit and rouge get their own predictions; unknown arms and _narrow tasks are reported."""
    records = make_records(online_gain={"rouge": 0.0, "bandit": 0.0, "keyed_narrow": 0.3})
    for run in [r for r in records["runs"] if r["arm"] == "online_dpo"]:
        records["runs"].append(run | {"arm": "online_dpo_more_prompts"})
    results = report.build_results(CONFIG, records)
    assert set(_verdicts(results, "control")) == {"consistent"}
    assert set(_verdicts(results, "H6b")) == {"consistent"}
    assert set(_verdicts(results, "H4")) == {"supported"}
    assert set(_verdicts(results, "H3")) == {"no detectable difference"}
    assert _verdicts(results, "H6") == [report.NOT_RUN]  # no keyed task here
    text = report.render_report(results)
    assert "online_dpo_more_prompts" in text and "keyed_narrow" in text


# ----------------------------------------------------------------------------- report and plots


def test_report_mentions_every_arm_and_links_plots(written):
    workdir, results = written
    text = pathlib.Path(workdir, "report.md").read_text()
    for arm in report.ARMS:
        assert f"| {arm} |" in text, arm
    for title in report.TITLES.values():
        assert title in text
    assert "not run in this variant" in text
    names = {p["name"] for p in results["plots"]}
    assert {"online_advantage", "curves"} <= names
    for task in ("keyed", "keyed_short"):
        assert {f"gold_vs_budget_{task}", f"best_of_n_{task}", f"frontier_{task}"} <= names
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
        run["frontier"] = []
    results = report.write_outputs(str(tmp_path), CONFIG, records)
    skipped = {s["name"] for s in results["plots_skipped"]}
    assert {"curves", "best_of_n_keyed", "frontier_keyed"} <= skipped
    text = (tmp_path / "report.md").read_text()
    assert "*Plot `curves` skipped: no learning-curve records" in text
    assert not (tmp_path / "plots" / "curves.png").exists()


def test_report_side_arms_match_the_pipeline():
    """report.ARMS repeats spec.ARMS (not imported there: spec pulls in JAX)."""
    path = os.path.join(ROOT, "rlft", "experiments", "spec.py")
    if not os.path.exists(path):
        pytest.skip("rlft/experiments/spec.py not written yet")
    tree = ast.parse(pathlib.Path(path).read_text())
    arms = next(
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "ARMS"
    )
    assert tuple(arms) == report.ARMS


# ----------------------------------------------------------------------------- notebook


def _notebook():
    with open(NOTEBOOK) as f:
        return json.load(f)


def test_notebook_is_stripped_nbformat4():
    nb = _notebook()
    assert nb["nbformat"] == 4 and nb["nbformat_minor"] >= 4
    assert isinstance(nb["metadata"], dict) and nb["cells"]
    for cell in nb["cells"]:
        assert cell["cell_type"] in ("markdown", "code")
        assert isinstance(cell["source"], list | str) and isinstance(cell["metadata"], dict)
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None


def _public_names(module: str) -> set[str] | None:
    path = os.path.join(ROOT, *module.split(".")) + ".py"
    if not os.path.exists(path):
        return None
    names = set()
    for node in ast.parse(pathlib.Path(path).read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return names


def test_notebook_only_calls_public_rlft_functions():
    code = "\n".join("".join(c["source"]) for c in _notebook()["cells"] if c["cell_type"] == "code")
    tree = ast.parse(code)  # plain Python: no shell magics, so it also runs as a script
    assert not any(isinstance(n, ast.FunctionDef | ast.ClassDef) for n in ast.walk(tree))
    imported = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("rlft"):
            imported += [(node.module, a.name) for a in node.names]
        if isinstance(node, ast.Attribute):
            assert not node.attr.startswith("_"), node.attr
    assert ("rlft.experiments.reproduce", "run_reproduce") in imported
    assert ("rlft.config", "load_config") in imported
    for module, name in imported:
        assert not name.startswith("_"), name
        names = _public_names(module)
        if names is not None:  # reproduce.py may still be in the works
            assert name in names, f"{module}.{name} does not exist"
    assert '"configs/reproduce.py", "quick"' in code
