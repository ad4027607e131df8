"""Arms compared along their reward-KL frontier: interpolation, common KL range, selection.

A run's frontier is its list of checkpoints (step ascending, point 0 the starting policy), each
with KL(pi || pi_sft) in nats per response and the metrics measured there. Issue 7, point 3:

- *matched KL*: a metric as a piecewise-linear function of KL (`interpolate`), read at KL
  levels that every compared arm reaches in every seed (`common_kl`), compared paired by seed
  (`matched_kl`);
- *selected*: the checkpoint the arm's own held-out objective picks (`select`; no gold inside);
- *final*: the last checkpoint.
"""

import math
from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike

from rlft.experiments.report import stats

CHECKPOINTS = ("final", "selected")


def _finite(v) -> bool:
    return v is not None and math.isfinite(float(v))


def curve(points: Sequence[Mapping], metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(kl_K, value_K): the points with finite KL and metric, sorted by KL (a stable sort, so
    equal KLs keep training order), equal KLs merged into one point holding their mean."""
    pts = [p for p in points if _finite(p["kl_to_ref"]) and _finite(p.get(metric))]
    pts = sorted(pts, key=lambda p: float(p["kl_to_ref"]))
    kls, values = [], []
    for p in pts:
        kl, v = float(p["kl_to_ref"]), float(p[metric])
        if kls and kl == kls[-1]:
            values[-1].append(v)
        else:
            kls.append(kl)
            values.append([v])
    return np.asarray(kls, dtype=np.float64), np.asarray([np.mean(v) for v in values])


def interpolate(points: Sequence[Mapping], kl_levels: ArrayLike, metric: str) -> np.ndarray:
    """A metric at the given KL levels, read off the piecewise-linear curve through the points.

    points: frontier points ({"kl_to_ref": nats, metric: value, ...}), in any order. The curve
    joins the points in KL order (`curve`: points with a non-finite KL or value are left out,
    several points at one KL count as their mean). Shape of the result: [len(kl_levels)].
    A level outside [min KL, max KL] of the points is NaN: the curve is never extrapolated.
    """
    levels = np.atleast_1d(np.asarray(kl_levels, dtype=np.float64))
    kl, value = curve(points, metric)
    out = np.full(levels.shape, np.nan)
    if kl.size == 0:
        return out
    inside = (levels >= kl[0]) & (levels <= kl[-1])
    out[inside] = np.interp(levels[inside], kl, value)
    return out


def kl_range(points: Sequence[Mapping]) -> tuple[float, float]:
    """(min, max) KL over the points with a finite KL; (nan, nan) if none."""
    kls = [float(p["kl_to_ref"]) for p in points if _finite(p["kl_to_ref"])]
    return (min(kls), max(kls)) if kls else (math.nan, math.nan)


def common_kl(runs_by_arm: Mapping[str, Mapping[int, Sequence[Mapping]] | Sequence]) -> dict:
    """The KL interval every compared arm covers in every seed, and the levels read in it.

    runs_by_arm: {arm: {seed: frontier}} (or {arm: [frontier, ...]}). The upper end is
    K* = min over arms and seeds of the run's max KL, the lower end max over arms and seeds of
    the run's min KL. Applicable when the interval has positive width (K* > lower end): then
    levels = [K*] plus K*/2 when K*/2 lies inside. Otherwise not applicable, and `reason`
    names the arm and seed whose range ends first (a single shared point, e.g. SFT's KL 0,
    compares nothing). Returns {"applicable", "lo", "hi", "levels", "reason"}.
    """
    ranges = [
        (arm, seed, *kl_range(points))
        for arm, runs in runs_by_arm.items()
        for seed, points in (runs.items() if isinstance(runs, Mapping) else enumerate(runs))
    ]
    if not ranges or any(math.isnan(lo) for _, _, lo, _ in ranges):
        return _no_range(math.nan, math.nan, "a run has no checkpoint with a finite KL")
    lo_arm, lo_s, lo, _ = max(ranges, key=lambda r: r[2])
    hi_arm, hi_s, _, hi = min(ranges, key=lambda r: r[3])
    if not hi > lo:
        why = (
            f"no common KL range: {hi_arm} (seed {hi_s}) reaches at most KL {hi:.3f} and "
            f"{lo_arm} (seed {lo_s}) starts at KL {lo:.3f}"
        )
        return _no_range(lo, hi, why)
    levels = [hi] + ([hi / 2] if hi / 2 >= lo else [])
    return {"applicable": True, "lo": lo, "hi": hi, "levels": levels, "reason": ""}


def _no_range(lo: float, hi: float, reason: str) -> dict:
    return {"applicable": False, "lo": lo, "hi": hi, "levels": [], "reason": reason}


def select(points: Sequence[Mapping]) -> Mapping | None:
    """The point with the highest finite `selection` (ties: the earlier step), or None if no
    point has one (the SFT arm). `selection` is the arm's own held-out objective, higher is
    better: DPO arms' held-out DPO log-likelihood, PPO's held-out RM score - beta * KL."""
    best = None
    for p in sorted(points, key=lambda p: p["step"]):
        if _finite(p.get("selection")) and (best is None or p["selection"] > best["selection"]):
            best = p
    return best


def checkpoint(points: Sequence[Mapping], which: str) -> Mapping | None:
    """The "final" (last step) or "selected" (`select`) point of a run's frontier."""
    if which == "final":
        return max(points, key=lambda p: p["step"]) if points else None
    if which == "selected":
        return select(points)
    raise ValueError(f"unknown checkpoint {which!r}; expected one of {CHECKPOINTS}")


def matched_kl(
    frontiers_a: Mapping[int, Sequence[Mapping]],
    frontiers_b: Mapping[int, Sequence[Mapping]],
    metric: str,
    names: tuple[str, str] = ("A", "B"),
) -> dict:
    """Arm A minus arm B in `metric` at matched KL, paired by seed.

    frontiers_a, frontiers_b: {seed: frontier}; only seeds both ran count; `names` name the
    arms in the not-applicable reason. The levels are
    `common_kl` of the two arms over those seeds (K*, and K*/2 when inside). Per level, each
    seed's difference interpolate(A) - interpolate(B) and their mean with a Student-t 95%
    interval (stats.mean_ci95). Returns {"range": common_kl(...), "seeds": [...], "levels":
    [{"level": "K*" | "K*/2", "kl", "per_seed", "mean", "lo", "hi"}]}; no levels when the
    range is not applicable or no seed ran both arms.
    """
    seeds = sorted(set(frontiers_a) & set(frontiers_b))
    if not seeds:
        rng = _no_range(math.nan, math.nan, "no seed ran both arms")
        return {"range": rng, "seeds": [], "levels": []}
    a, b = ({s: f[s] for s in seeds} for f in (frontiers_a, frontiers_b))
    rng = common_kl(dict(zip(names, (a, b), strict=True)))
    levels = []
    for name, kl in zip(("K*", "K*/2"), rng["levels"], strict=False):
        diffs = [
            float(interpolate(a[s], kl, metric)[0]) - float(interpolate(b[s], kl, metric)[0])
            for s in seeds
        ]
        mean, lo, hi = stats.mean_ci95(diffs) if all(map(math.isfinite, diffs)) else (math.nan,) * 3
        levels.append(
            {"level": name, "kl": kl, "per_seed": diffs, "mean": mean, "lo": lo, "hi": hi}
        )
    return {"range": rng, "seeds": seeds, "levels": levels}
