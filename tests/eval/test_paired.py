"""Paired difference of two variants over seeds and prompts, against hand-computed values."""

from __future__ import annotations

import pytest

from safealign.eval.paired import hierarchical_difference, paired_difference


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


# hierarchical_difference: seeds resampled, then prompts within each drawn seed (safealign sweep)


def test_hierarchical_one_seed_is_exactly_the_prompt_bootstrap():
    import random

    rng = random.Random(7)
    a = {0: {f"p{i}": rng.random() < 0.4 for i in range(25)}}
    b = {0: {f"p{i}": rng.random() < 0.6 for i in range(25)}}
    h = hierarchical_difference(a, b, resamples=500, seed=3)
    d = paired_difference(a, b, resamples=500, seed=3)
    assert h["ci95"] == list(d.ci95) and h["diff"] == d.diff and h["seeds"] == 1
    assert (h["a_higher"], h["b_higher"]) == (d.only_a, d.only_b)


def test_hierarchical_golden_two_prompts_one_seed():
    # per-prompt differences (+1, 0): a resample of two prompts has mean 1 (p=1/4), 0.5 (p=1/2) or 0 (p=1/4);
    # both tails hold far more than 2.5% of 2000 draws, so the interval is the extremes [0, 1]
    h = hierarchical_difference({0: {"p1": True, "p2": False}}, {0: {"p1": False, "p2": False}})
    assert h["diff"] == 0.5 and h["ci95"] == [0.0, 1.0]


def test_hierarchical_golden_seeds_that_disagree():
    # seed 0: a fails every prompt, b none (difference 1 under any prompt resample); seed 1: identical (0).
    # Drawing two seeds gives mean 1 (p=1/4), 0.5 (p=1/2), 0 (p=1/4): interval [0, 1]. The prompt bootstrap
    # keeps both seeds every draw, so its interval is the single point 0.5.
    prompts = ("p1", "p2", "p3")
    a = {0: dict.fromkeys(prompts, True), 1: dict.fromkeys(prompts, False)}
    b = {0: dict.fromkeys(prompts, False), 1: dict.fromkeys(prompts, False)}
    h = hierarchical_difference(a, b)
    assert h["diff"] == 0.5 and h["per_seed"] == {"0": 1.0, "1": 0.0} and h["ci95"] == [0.0, 1.0]
    assert paired_difference(a, b).ci95 == (0.5, 0.5)


def test_hierarchical_identical_variants_give_a_zero_interval():
    a = {s: {f"p{i}": (i + s) % 3 == 0 for i in range(12)} for s in range(4)}
    h = hierarchical_difference(a, {s: dict(v) for s, v in a.items()})
    assert h["diff"] == 0 and h["ci95"] == [0.0, 0.0] and h["a_higher"] == h["b_higher"] == 0


@pytest.mark.parametrize("case", range(5))
def test_hierarchical_interval_widens_as_seeds_disagree(case):
    """Property: adding seed effects that cancel on average (+d, −d, +d, −d) leaves the estimate where it
    was and widens the interval, strictly more the larger d is."""
    import random

    rng = random.Random(case)
    base = {f"p{i}": rng.gauss(0, 1) for i in range(15)}
    zero = {s: dict.fromkeys(base, 0.0) for s in range(4)}
    widths, diffs = [], []
    for d in (0.0, 1.0, 3.0):
        a = {s: {p: v + (d if s % 2 else -d) for p, v in base.items()} for s in range(4)}
        h = hierarchical_difference(a, zero, resamples=1000, seed=case)
        widths.append(h["ci95"][1] - h["ci95"][0])
        diffs.append(h["diff"])
    assert diffs == pytest.approx([diffs[0]] * 3)
    assert widths[0] < widths[1] < widths[2]


# hierarchical_mean: one variant's mean over seeds with the same two-level interval (the sweep's per-method column)


def test_hierarchical_mean_golden_seeds_that_disagree():
    # seed 0 fails every prompt (rate 1 under any prompt resample), seed 1 none (0): two drawn seeds give
    # 1 (p=1/4), 0.5 (p=1/2) or 0 (p=1/4), so the interval is [0, 1] around the mean 0.5
    from safealign.eval.paired import hierarchical_mean

    prompts = ("p1", "p2", "p3")
    m = hierarchical_mean({0: dict.fromkeys(prompts, True), 1: dict.fromkeys(prompts, False)})
    assert m["mean"] == 0.5 and m["ci95"] == [0.0, 1.0] and (m["seeds"], m["n_prompts"]) == (2, 3)


def test_hierarchical_mean_is_the_difference_against_all_zero():
    """Against a variant that scores 0 everywhere, the paired difference's draws are the mean's draws."""
    import random

    from safealign.eval.paired import hierarchical_mean

    rng = random.Random(5)
    a = {s: {f"p{i}": rng.random() < 0.3 + 0.1 * s for i in range(20)} for s in range(3)}
    zero = {s: dict.fromkeys(v, False) for s, v in a.items()}
    h, m = hierarchical_difference(a, zero, resamples=400, seed=2), hierarchical_mean(a, resamples=400, seed=2)
    assert m["mean"] == pytest.approx(h["diff"]) and m["ci95"] == pytest.approx(h["ci95"])


def test_hierarchical_mean_resamples_each_seeds_own_prompts_and_refuses_nothing_scored():
    from safealign.errors import UserError
    from safealign.eval.paired import hierarchical_mean

    # seed 1 scored one prompt fewer: its own prompts are resampled, not the intersection
    m = hierarchical_mean({0: {"p1": True, "p2": True}, 1: {"p1": False}})
    assert m["mean"] == 0.5 and m["n_prompts"] == 2
    with pytest.raises(UserError, match="no prompt was scored"):
        hierarchical_mean({0: {}, 1: {}})


def test_per_metric_helpers_skip_only_the_unscored_metric(caplog):
    from safealign.eval.paired import hierarchical_mean, metric_differences, metric_intervals

    a = {0: {"asr": {"p": True, "q": False}, "new": {}}, 1: {"asr": {"p": True, "q": True}}}
    b = {0: {"asr": {"p": False, "q": False}, "new": {}}, 1: {"asr": {"p": True, "q": False}}, 2: {"asr": {"p": True}}}
    intervals = metric_intervals(a, resamples=200)
    assert list(intervals) == ["asr"]  # "new" was scored by no seed
    assert intervals["asr"] == hierarchical_mean({0: a[0]["asr"], 1: a[1]["asr"]}, resamples=200)["ci95"]
    with caplog.at_level("WARNING"):
        compared = metric_differences(a, b, resamples=200, label="sweep: x")
    assert list(compared) == ["asr"] and "sweep: x: no paired comparison of new" in caplog.text
    assert compared["asr"]["seeds"] == 2  # seed 2 is b's alone
    assert compared["asr"]["diff"] == pytest.approx(((0.5 - 0.0) + (1.0 - 0.5)) / 2)


def test_a_metric_some_seeds_lack_is_compared_on_the_seeds_that_have_it():
    from safealign.eval.paired import hierarchical_difference, metric_differences

    # ASR under a judge run on seed 0's cells only (safealign judge records): seed 1 has the recorded metric alone
    a = {0: {"asr": {"p": True, "q": False}, "asr@x": {"p": True, "q": True}}, 1: {"asr": {"p": True, "q": True}}}
    b = {0: {"asr": {"p": False, "q": False}, "asr@x": {"p": False, "q": True}}, 1: {"asr": {"p": False, "q": True}}}
    compared = metric_differences(a, b, resamples=200)
    assert compared["asr"]["seeds"] == 2 and compared["asr@x"]["seeds"] == 1
    assert compared["asr@x"] == hierarchical_difference({0: a[0]["asr@x"]}, {0: b[0]["asr@x"]}, resamples=200)


@pytest.mark.parametrize("n, low, high", [(1000, 24, 974), (2000, 49, 1949), (40, 0, 38), (39, 0, 38), (1, 0, 0)])
def test_percentile_interval_is_the_nearest_rank(n, low, high):
    """The ⌈p·n⌉-th smallest draw (0-based index ⌈p·n⌉ − 1): for 1000 draws 24 lie below the interval and 25
    above, as numpy's percentile(method="inverted_cdf") gives."""
    from safealign.eval.paired import percentile_interval

    draws = [float(i) for i in reversed(range(n))]
    assert percentile_interval(draws) == [low, high]
