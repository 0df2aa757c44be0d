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


# hierarchical_difference: seeds and prompts crossed (safealign sweep): each draw resamples the seeds and, once,
# the prompts, and every drawn seed is scored on that one prompt resample


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


# hierarchical_mean: one variant's mean over seeds with the same crossed interval (the sweep's per-method column)


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


def test_hierarchical_mean_keeps_each_seeds_own_prompts_and_refuses_nothing_scored():
    from safealign.errors import UserError
    from safealign.eval.paired import hierarchical_mean

    # seed 1 scored one prompt fewer: the estimate is over each seed's own prompts, not the intersection
    m = hierarchical_mean({0: {"p1": True, "p2": True}, 1: {"p1": False}})
    assert m["mean"] == 0.5 and m["n_prompts"] == 2 and m["ci95"] == [0.0, 1.0]
    with pytest.raises(UserError, match="no prompt was scored"):
        hierarchical_mean({0: {}, 1: {}})


def test_crossed_draws_give_every_drawn_seed_the_same_prompt_resample():
    """The design itself, draw by draw: the seeds are resampled, then one prompt resample is drawn and every drawn
    seed is scored on it (crossed), not a prompt resample of its own (nested)."""
    import random

    from safealign.eval.paired import _crossed_draws

    rng = random.Random(9)
    seeds, prompts = [0, 1, 2], [f"p{i}" for i in range(6)]
    values = {s: {p: rng.gauss(s, 1.0) for p in prompts} for s in seeds}

    def statistic(s, sample):
        return sum(values[s][p] for p in sample) / len(sample)

    draws = _crossed_draws(seeds, {s: prompts for s in seeds}, statistic, resamples=50, seed=4)
    stream, expected = random.Random(4), []
    for _ in range(50):
        drawn = stream.choices(seeds, k=3)
        sample = stream.choices(prompts, k=6)
        expected.append(sum(statistic(s, sample) for s in drawn) / 3)
    assert draws == pytest.approx(expected, abs=1e-12)


def test_crossed_draws_average_each_seed_over_the_drawn_prompts_it_scored():
    """Seeds with different prompt sets: the resample is drawn from the union; a seed is averaged over the drawn
    prompts it scored and left out of a draw where it scored none of them; there are always ``resamples`` draws."""
    from safealign.eval.paired import _crossed_draws

    values = {0: {"p1": 1.0, "p2": 1.0}, 1: {"p1": 0.0}}
    calls: list[tuple] = []

    def statistic(s, sample):
        calls.append((s, tuple(sample)))
        return sum(values[s][p] for p in sample) / len(sample)

    draws = _crossed_draws([0, 1], {s: sorted(v) for s, v in values.items()}, statistic, resamples=400, seed=1)
    assert len(draws) == 400 and set(draws) == {0.0, 0.5, 1.0}
    assert all(set(sample) <= set(values[s]) and sample for s, sample in calls)  # only a seed's own prompts
    # seed 1 drops out when p1 is not drawn (1/4 of the prompt resamples), so 1.0 is commoner than 0.0
    assert draws.count(1.0) > draws.count(0.0)


def test_toy_case_the_same_prompts_in_every_seed_do_not_narrow_the_interval():
    """The reviewer's toy case: E-DPO is jailbroken on the same 7 of DPO's 10 prompts in 5 identical seeds (it wins
    on the same 3 of 40 prompts every time). Five copies of one seed are one sample of 40 prompts, not five: the
    interval must be as wide as the prompt bootstrap of one seed and include 0 (the nested design gave
    [−0.115, −0.040], a spurious "E-DPO beats DPO")."""
    prompts = [f"p{i:02d}" for i in range(40)]
    dpo = {s: {p: i < 10 for i, p in enumerate(prompts)} for s in range(5)}
    edpo = {s: {p: i < 10 and i not in (0, 1, 2) for i, p in enumerate(prompts)} for s in range(5)}
    h = hierarchical_difference(edpo, dpo)
    d = paired_difference(edpo, dpo)
    assert h["diff"] == d.diff == pytest.approx(-3 / 40) and h["seeds"] == 5
    assert h["ci95"][1] - h["ci95"][0] >= d.ci95[1] - d.ci95[0] - 1e-12
    assert h["ci95"][0] < 0 <= h["ci95"][1]
    assert h["ci95"] == pytest.approx([-0.175, 0.0])
    # one seed of it: exactly the prompt bootstrap
    assert hierarchical_difference({0: edpo[0]}, {0: dpo[0]})["ci95"] == list(paired_difference({0: edpo[0]},
                                                                                                {0: dpo[0]}).ci95)


def test_repeating_a_prompt_driven_effect_over_more_seeds_keeps_the_interval_width():
    """Per-prompt effects shared by every seed (no seed effect): the interval reflects the one prompt sample, so
    its width stays that of one seed as seeds are added (a nested bootstrap would shrink it about 1/√seeds)."""
    import random

    rng = random.Random(11)
    effect = {f"p{i}": rng.gauss(0.2, 1.0) for i in range(30)}
    widths = []
    for n in (1, 3, 6):
        a = {s: dict(effect) for s in range(n)}
        ci = hierarchical_difference(a, {s: dict.fromkeys(effect, 0.0) for s in range(n)}, resamples=1000)["ci95"]
        widths.append(ci[1] - ci[0])
    assert widths[1] == pytest.approx(widths[0], rel=0.15) and widths[2] == pytest.approx(widths[0], rel=0.15)


def test_crossed_interval_covers_a_prompt_driven_difference():
    """A small coverage check: each replicate draws 30 prompts from a population with per-prompt effects shared by
    both seeds' runs (plus a small seed effect and noise), and the nominal 95% interval of the mean covers the
    population mean in most replicates: 47 of the 50 here, where the nested design (prompts resampled anew for
    each drawn seed) covered 36."""
    import random

    from safealign.eval.paired import hierarchical_mean

    rng = random.Random(2)
    hits, reps = 0, 50
    for rep in range(reps):
        prompt_effect = [rng.gauss(0.0, 1.0) for _ in range(30)]
        seed_effect = [rng.gauss(0.0, 0.1) for _ in range(4)]
        values = {s: {f"p{i}": e + seed_effect[s] + rng.gauss(0.0, 0.3) for i, e in enumerate(prompt_effect)}
                  for s in range(4)}
        low, high = hierarchical_mean(values, resamples=200, seed=rep)["ci95"]
        hits += low <= 0.0 <= high
    assert hits >= 0.85 * reps


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
