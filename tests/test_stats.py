"""The report's statistics: the t table, mean and paired / Welch difference intervals, by hand."""

import math

import numpy as np
import pytest

from rlft.experiments.report import stats


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
