"""Confidence intervals over seeds (Student t, no scipy) and the verdicts they decide.

A 95% interval for the mean of n seeds is  mean ± t_{0.975, n-1} · s / sqrt(n),  s the sample
standard deviation (ddof 1). Arm-versus-arm comparisons pair runs by seed (same SFT model, same
labels) and take the interval of the per-seed differences; comparisons across tasks or label
budgets are unpaired (Welch: t with the Welch–Satterthwaite degrees of freedom).
"""

import math
from collections.abc import Sequence

import numpy as np

# t_{0.975, df} for df = 1..30 (tests check each against a numeric integral of the t density).
T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
        2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
        2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423)  # fmt: skip
Z975 = 1.959964

NO_CI = (math.nan, math.nan)
PREDICTIONS = ("positive", "negative", "not positive", "zero")


def t975(df: float) -> float:
    """The 0.975 quantile of Student's t: the table up to df 30, a Cornish-Fisher series beyond.

    A fractional df (Welch) is rounded down, which widens the interval slightly.
    """
    if df < 1:
        raise ValueError(f"t quantile needs df >= 1, got {df}")
    df = math.floor(df)
    if df <= len(T975):
        return T975[df - 1]
    z = Z975  # Abramowitz & Stegun 26.7.5; error below 1e-4 at df 31, smaller beyond
    return (z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3))  # fmt: skip


def _values(values: Sequence[float]) -> np.ndarray:
    x = np.asarray([float(v) for v in values], dtype=np.float64)
    if x.size == 0:
        raise ValueError("no values to average")
    return x


def mean_ci95(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, lo, hi) of the Student-t 95% interval; with one value (v, nan, nan)."""
    x = _values(values)
    mean = float(x.mean())
    if x.size == 1:
        return (mean, *NO_CI)
    half = t975(x.size - 1) * float(x.std(ddof=1)) / math.sqrt(x.size)
    return mean, mean - half, mean + half


def paired_difference_ci(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """(mean, lo, hi) of a_i - b_i over paired seeds (e.g. online minus offline, same seed)."""
    xa, xb = _values(a), _values(b)
    if xa.shape != xb.shape:
        raise ValueError(f"paired values need equal lengths, got {xa.size} and {xb.size}")
    return mean_ci95(xa - xb)


def welch_difference_ci(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """(mean, lo, hi) of mean(a) - mean(b) for independent samples (Welch's interval)."""
    xa, xb = _values(a), _values(b)
    diff = float(xa.mean() - xb.mean())
    if xa.size < 2 or xb.size < 2:
        return (diff, *NO_CI)
    va, vb = xa.var(ddof=1) / xa.size, xb.var(ddof=1) / xb.size
    se = math.sqrt(va + vb)
    if se == 0.0:
        return diff, diff, diff
    df = (va + vb) ** 2 / (va**2 / (xa.size - 1) + vb**2 / (xb.size - 1))
    half = t975(df) * se
    return diff, diff - half, diff + half


def has_ci(lo: float, hi: float) -> bool:
    """Whether both bounds are numbers (one seed gives NaN bounds)."""
    return not (math.isnan(lo) or math.isnan(hi))


def sign_verdict(lo: float, hi: float) -> str:
    """'positive' / 'negative' when the interval excludes 0, else 'zero' ('no CI' for 1 seed)."""
    if not has_ci(lo, hi):
        return "no CI"
    if lo > 0:
        return "positive"
    if hi < 0:
        return "negative"
    return "zero"


NOT_CONTRADICTED = "not contradicted"  # a null prediction whose interval covers 0


def verdict(lo: float, hi: float, predicted: str = "positive") -> str:
    """Verdict on a predicted sign of a difference.

    predicted "positive": supported iff the interval lies above 0, contradicted iff below,
    else inconclusive; "negative": the mirror image. predicted "not positive" (a prediction of
    no improvement, docs/paper.md H3 and H6b): contradicted iff the interval lies above 0, supported
    iff it lies below, else "not contradicted" (no improvement detected at this precision: an
    interval covering 0 cannot support a null without an equivalence margin, and fewer seeds
    would make it easier). predicted "zero" (two roads that should coincide, the isomorphic
    control): "not contradicted" when the interval covers 0, else contradicted. Without an
    interval (1 seed, or NaN bounds): inconclusive. Raises ValueError on an unknown prediction.
    """
    if predicted not in PREDICTIONS:
        raise ValueError(f"unknown prediction {predicted!r}; expected one of {PREDICTIONS}")
    sign = sign_verdict(lo, hi)
    if sign == "no CI":
        return "inconclusive"
    if predicted == "zero":
        return NOT_CONTRADICTED if sign == "zero" else "contradicted"
    if predicted == "not positive":
        return {"positive": "contradicted", "negative": "supported"}.get(sign, NOT_CONTRADICTED)
    if sign == "zero":
        return "inconclusive"
    return "supported" if sign == predicted else "contradicted"


def estimate(values: Sequence) -> tuple:
    """(mean, [lo, hi], n) over the finite values, JSON-safe: None for a missing bound or mean.

    None and NaN entries are left out and n counts the rest (an RM score the SFT arm does not
    have, a NaN metric); with no finite value (None, [None, None], 0).
    """
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return None, [None, None], 0
    mean, lo, hi = mean_ci95(vals)
    return mean, [None if math.isnan(lo) else lo, None if math.isnan(hi) else hi], len(vals)
