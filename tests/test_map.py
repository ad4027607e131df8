"""The map: the precondition-outcome fit (weighted least squares, Spearman) and its cells."""

import math
import re

import numpy as np
import pytest

from rlft.experiments.report import map as report_map
from rlft.experiments.report import stats
from rlft.experiments.report.summary import build_results
from tests.report_records import make_records

CONFIG = {"seeds": [0, 1, 2]}


def test_cells_on_an_exact_line_give_its_slope_and_r2_one():
    x = np.array([0.0, 0.05, 0.1, 0.2, 0.3])
    fit = report_map.wls_fit(x, 0.1 + 2.5 * x, [0.01, 0.04, 0.02, 0.09, 0.01])
    assert fit["b"] == pytest.approx(2.5, abs=1e-10) and fit["a"] == pytest.approx(0.1, abs=1e-10)
    assert fit["r2"] == pytest.approx(1.0, abs=1e-12)
    assert fit["b_ci95"] == pytest.approx([2.5, 2.5], abs=1e-6)  # no residual scatter
    assert fit["spearman_rho"] == pytest.approx(1.0) and fit["n"] == 5


def test_flat_noise_gives_a_slope_interval_covering_zero():
    x = np.array([0.0, 0.1, 0.2, 0.3, 0.4])
    fit = report_map.wls_fit(x, [0.1, -0.1, 0.0, -0.1, 0.1], [0.01] * 5)
    assert fit["b"] == pytest.approx(0.0, abs=1e-12)
    assert fit["b_ci95"][0] < 0 < fit["b_ci95"][1]
    # Pure noise around a flat line: the 95% slope interval covers 0 in about 95% of draws.
    rng = np.random.default_rng(3)
    covers = []
    for _ in range(400):
        lo, hi = report_map.wls_fit(rng.uniform(0, 0.3, 8), rng.normal(0, 0.1, 8), [0.01] * 8)[
            "b_ci95"
        ]
        covers.append(lo < 0 < hi)
    assert 0.92 <= np.mean(covers) <= 0.98


def test_wls_matches_numpy_lstsq_on_scaled_rows_and_its_standard_error():
    """WLS = OLS on rows scaled by sqrt(w); se(b) = sqrt(s^2 (X'WX)^-1)[1, 1]."""
    rng = np.random.default_rng(0)
    x, y, var = rng.uniform(0, 1, 7), rng.normal(0, 1, 7), rng.uniform(0.1, 1, 7)
    fit = report_map.wls_fit(x, y, var)
    sw = 1 / np.sqrt(var)
    X = np.stack([np.ones(7), x], 1)
    coef, rss, *_ = np.linalg.lstsq(X * sw[:, None], y * sw, rcond=None)
    assert (fit["a"], fit["b"]) == pytest.approx(tuple(coef), abs=1e-10)
    cov = rss[0] / 5 * np.linalg.inv((X * sw[:, None]).T @ (X * sw[:, None]))
    half = stats.t975(5) * math.sqrt(cov[1, 1])
    assert fit["b_ci95"] == pytest.approx([coef[1] - half, coef[1] + half], abs=1e-10)


def test_wls_refuses_what_it_cannot_fit():
    with pytest.raises(ValueError, match=">= 3"):
        report_map.wls_fit([0, 1], [0, 1], [1, 1])
    with pytest.raises(ValueError, match="var > 0"):
        report_map.wls_fit([0, 1, 2], [0, 1, 2], [1, 0, 1])
    with pytest.raises(ValueError, match="varies"):
        report_map.wls_fit([1, 1, 1], [0, 1, 2], [1, 1, 1])


def test_spearman_by_hand():
    assert report_map.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert report_map.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ranks x (1, 2, 3, 4), y (1.5, 1.5, 3, 4) -> Pearson of the ranks
    assert report_map.spearman([1, 2, 3, 4], [5, 5, 7, 9]) == pytest.approx(
        np.corrcoef([1, 2, 3, 4], [1.5, 1.5, 3, 4])[0, 1]
    )
    assert math.isnan(report_map.spearman([1, 2, 3], [1, 1, 1]))


def test_map_cells_carry_precondition_outcome_and_the_fit():
    gain = {"keyed": 0.1, "keyed_short": 0.01, "rouge": -0.05}
    results = build_results(CONFIG, make_records(gain=gain))
    m = results["map"]
    assert [(c["task"], c["label_budget"]) for c in m["cells"]] == [
        (t, b) for t in gain for b in (250, 1000)
    ]
    c = m["cells"][0]
    assert (c["family"], c["content_len"], c["reward_class"]) == ("keyed", 6, "last")
    assert c["accuracy"]["mean"] == pytest.approx(0.2, abs=0.03) and c["in_fit"]
    assert c["outcome"]["kl"] == 2.0  # offline DPO's largest KL in seed 0
    assert c["outcome"]["mean"] == pytest.approx(2.0 * 0.1 * 1.5, abs=0.05)  # greedy x1.5
    fit = m["fit"]
    assert fit["applicable"] and fit["n"] == 6 and "1/var" in fit["weights"]
    sentence = report_map.finding(m, results["settings"])
    assert sentence.startswith("Across 6 cells, online_dpo - offline_dpo gold reward")
    assert sentence.endswith(".") and not re.search(r"\.\s+[A-Z]", sentence)  # one sentence


def test_map_needs_three_cells_with_outcomes():
    records = make_records(gain={"keyed": 0.1}, budgets=(250, 1000))
    m = build_results(CONFIG, records)["map"]
    assert not m["fit"]["applicable"]
    assert "2 map cell(s) have an outcome" in m["fit"]["reason"] and "needs 3" in m["fit"]["reason"]
    assert report_map.finding(m, {}).startswith("No fit: 2 map cell(s)")


def test_cells_without_interval_or_outcome_stay_out_of_the_fit():
    records = make_records(gain={"keyed": 0.1, "keyed_short": 0.0, "rouge": 0.0}, seeds=(0,))
    m = build_results(CONFIG, records)["map"]
    assert not any(c["in_fit"] for c in m["cells"])
    assert "no interval" in m["cells"][0]["fit_note"]
    records = make_records(gain={"keyed": 0.1}, arms=("sft", "offline_dpo"))
    cell = build_results(CONFIG, records)["map"]["cells"][0]
    assert cell["outcome"]["mean"] is None and "no online_dpo and offline_dpo" in cell["fit_note"]
