"""Paired difference of two variants over seeds and prompts, against hand-computed values."""

from __future__ import annotations

import pytest

from safealign.eval.paired import paired_difference


def test_one_seed_difference_and_discordant_counts():
    a = {0: {"p1": True, "p2": False, "p3": True, "p4": False}}
    b = {0: {"p1": False, "p2": False, "p3": True, "p4": True}}
    d = paired_difference(a, b)
    assert d.diff == pytest.approx(0.0) and d.rate_a == 0.5 and d.rate_b == 0.5
    assert (d.only_a, d.only_b, d.n_prompts, d.seeds) == (1, 1, 4, 1)
    lo, hi = d.ci95
    assert -1 <= lo < 0 < hi <= 1 and lo == pytest.approx(-hi, abs=0.25)  # per-prompt differences +1, 0, 0, -1


def test_mean_over_seeds_and_prompts_scored_by_both_only():
    a = {0: {"p1": True, "p2": True, "p3": True}, 1: {"p1": True, "p2": False, "p3": True}}
    b = {0: {"p1": False, "p2": False}, 1: {"p1": False, "p2": False, "p3": False}}  # p3 unscored for b, seed 0
    d = paired_difference(a, b)
    assert d.n_prompts == 2  # p3 is dropped everywhere, keeping the comparison paired
    assert d.per_seed == {"0": 1.0, "1": 0.5}
    assert d.diff == pytest.approx(0.75) and (d.only_a, d.only_b) == (3, 0)
    assert d.ci95[0] > 0  # every resample keeps a above b


def test_identical_variants_give_a_zero_interval():
    a = {3: {f"p{i}": i % 3 == 0 for i in range(30)}}
    d = paired_difference(a, {3: dict(a[3])})
    assert d.diff == 0 and d.ci95 == (0, 0) and d.only_a == d.only_b == 0


def test_mismatched_seeds_or_no_common_prompt_is_an_error():
    with pytest.raises(ValueError, match="same seeds"):
        paired_difference({0: {"p": True}}, {1: {"p": True}})
    with pytest.raises(ValueError, match="no prompt"):
        paired_difference({0: {"p": True}}, {0: {"q": True}})
