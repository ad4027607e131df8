"""Matched-KL interpolation, the common KL range and checkpoint selection, on hand cases."""

import math

import numpy as np
import pytest

from rlft.experiments.report import frontier


def pts(*kl_gold, selection=None):
    """Frontier points at steps 0, 10, 20, ... with the given (kl, gold) pairs."""
    sel = selection or [None] * len(kl_gold)
    return [
        {"step": 10 * i, "kl_to_ref": kl, "gold": g, "selection": s}
        for i, ((kl, g), s) in enumerate(zip(kl_gold, sel, strict=True))
    ]


# ----------------------------------------------------------------------------- interpolate


def test_interpolate_at_and_between_points():
    p = pts((0.0, 1.0), (1.0, 3.0), (3.0, 2.0))
    got = frontier.interpolate(p, [0.0, 0.5, 1.0, 2.0, 3.0], "gold")
    np.testing.assert_allclose(got, [1.0, 2.0, 3.0, 2.5, 2.0], rtol=0, atol=1e-12)


def test_interpolate_is_nan_outside_the_covered_range():
    p = pts((0.5, 1.0), (2.0, 4.0))
    got = frontier.interpolate(p, [0.0, 0.4999, 2.0001, 10.0, 1.0], "gold")
    assert np.isnan(got[:4]).all() and got[4] == pytest.approx(2.0, abs=1e-12)


def test_interpolate_sorts_unsorted_points_by_kl():
    """KL is not monotone in training: the curve joins the points in KL order."""
    p = pts((2.0, 4.0), (0.0, 0.0), (1.0, 1.0))
    got = frontier.interpolate(p, [0.5, 1.5], "gold")
    np.testing.assert_allclose(got, [0.5, 2.5], atol=1e-12)


def test_duplicate_kls_count_as_their_mean():
    p = pts((0.0, 0.0), (1.0, 2.0), (1.0, 4.0), (2.0, 3.0))
    kl, value = frontier.curve(p, "gold")
    np.testing.assert_array_equal(kl, [0.0, 1.0, 2.0])
    np.testing.assert_allclose(value, [0.0, 3.0, 3.0])
    np.testing.assert_allclose(frontier.interpolate(p, [0.5, 1.0, 1.5], "gold"), [1.5, 3.0, 3.0])


def test_interpolate_skips_missing_values_and_never_extrapolates_past_them():
    p = pts((0.0, 1.0), (1.0, None), (2.0, 3.0), (3.0, float("nan")))
    got = frontier.interpolate(p, [1.0, 2.5], "gold")
    assert got[0] == pytest.approx(2.0, abs=1e-12) and math.isnan(got[1])
    assert np.isnan(frontier.interpolate([], [0.0], "gold")).all()


# ----------------------------------------------------------------------------- common_kl


def test_common_kl_hand_ranges():
    runs = {
        "online": {0: pts((0.0, 0), (5.0, 0)), 1: pts((0.0, 0), (4.0, 0))},
        "offline": {0: pts((0.2, 0), (2.0, 0)), 1: pts((0.1, 0), (3.0, 0))},
    }
    got = frontier.common_kl(runs)
    assert got["applicable"] and (got["lo"], got["hi"]) == (0.2, 2.0)
    assert got["levels"] == [2.0, 1.0]  # K*, and K*/2 inside [0.2, 2.0]


def test_common_kl_drops_half_level_outside_the_range():
    runs = {"a": [pts((0.0, 0), (2.0, 0))], "b": [pts((1.5, 0), (3.0, 0))]}
    got = frontier.common_kl(runs)
    assert got["applicable"] and got["levels"] == [2.0]  # K*/2 = 1.0 < 1.5


def test_empty_common_range_is_not_applicable_with_the_reason():
    """online_dpo_from_dpo starts where offline DPO ends; SFT has one point at KL 0."""
    runs = {"from_dpo": {0: pts((2.0, 0), (4.0, 0))}, "offline": {0: pts((0.0, 0), (1.5, 0))}}
    got = frontier.common_kl(runs)
    assert not got["applicable"] and got["levels"] == []
    assert "offline (seed 0) reaches at most KL 1.500" in got["reason"]
    assert "from_dpo (seed 0) starts at KL 2.000" in got["reason"]
    single = frontier.common_kl({"sft": [pts((0.0, 0))], "offline": [pts((0.0, 0), (1.0, 0))]})
    assert not single["applicable"]  # a shared single point compares nothing


# ----------------------------------------------------------------------------- select


def test_select_takes_the_highest_selection_and_the_earlier_step_on_ties():
    p = pts((0, 0), (1, 0), (2, 0), (3, 0), selection=[-0.7, -0.5, -0.6, -0.5])
    assert frontier.select(p)["step"] == 10
    assert frontier.select(list(reversed(p)))["step"] == 10  # order of the list does not matter
    assert frontier.checkpoint(p, "final")["step"] == 30


def test_select_ignores_missing_selection_and_none_means_no_checkpoint():
    p = pts((0, 0), (1, 0), (2, 0), selection=[None, float("nan"), -1.0])
    assert frontier.select(p)["step"] == 20
    assert frontier.select(pts((0, 0), selection=[None])) is None  # the SFT arm
    with pytest.raises(ValueError, match="unknown checkpoint"):
        frontier.checkpoint(p, "best")


# ----------------------------------------------------------------------------- matched_kl


def test_matched_kl_paired_differences_known_answer():
    """Gold = rate * KL in every run: the difference at K is (rate_a - rate_b) K per seed."""
    rate_a, rate_b = {0: 0.3, 1: 0.2, 2: 0.4}, {0: 0.1, 1: 0.05, 2: 0.2}
    a = {s: pts(*((kl, r * kl) for kl in (0.0, 1.0, 4.0, 6.0))) for s, r in rate_a.items()}
    b = {s: pts(*((kl, r * kl) for kl in (0.0, 0.5, 2.0 + s))) for s, r in rate_b.items()}
    b[3] = b[0]  # a seed only one arm ran is left out
    got = frontier.matched_kl(a, b, "gold", names=("online", "offline"))
    assert got["seeds"] == [0, 1, 2] and got["range"]["hi"] == 2.0
    k_star, k_half = got["levels"]
    assert (k_star["level"], k_star["kl"], k_half["kl"]) == ("K*", 2.0, 1.0)
    np.testing.assert_allclose(k_star["per_seed"], [0.4, 0.3, 0.4], atol=1e-12)
    np.testing.assert_allclose(k_half["per_seed"], [0.2, 0.15, 0.2], atol=1e-12)
    mean, sd = 1.1 / 3, np.std([0.4, 0.3, 0.4], ddof=1)
    half = 4.3027 * sd / math.sqrt(3)
    assert (k_star["mean"], k_star["lo"], k_star["hi"]) == pytest.approx(
        (mean, mean - half, mean + half), abs=1e-12
    )


def test_matched_kl_without_common_range_or_seeds():
    a = {0: pts((2.0, 0), (3.0, 1))}
    b = {0: pts((0.0, 0), (1.0, 1))}
    got = frontier.matched_kl(a, b, "gold", names=("from_dpo", "offline"))
    assert got["levels"] == [] and "from_dpo (seed 0) starts at KL 2.000" in got["range"]["reason"]
    none = frontier.matched_kl(a, {1: b[0]}, "gold")
    assert none["levels"] == [] and none["range"]["reason"] == "no seed ran both arms"
