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


def test_identical_variants_give_the_exact_no_discordant_prompt_interval():
    # no prompt discordant: every bootstrap resample is 0, a zero-width interval claiming certainty; the exact bound
    # for seeing none of 30 prompts discordant is u = 1 − 0.025^(1/30): (1 − u)^30 = 0.025
    a = {3: {f"p{i}": i % 3 == 0 for i in range(30)}}
    d = paired_difference(a, {3: dict(a[3])})
    u = 1 - 0.025 ** (1 / 30)
    assert d.diff == 0 and d.ci95 == pytest.approx((-u, u)) and d.only_a == d.only_b == 0
    assert (1 - d.ci95[1]) ** 30 == pytest.approx(0.025) and 0.115 < u < 0.116
    # numbers (margins) that do not differ keep the point: there is no discrete bound to give
    m = {0: {"p1": 0.5, "p2": 1.5}}
    assert paired_difference(m, {0: dict(m[0])}).ci95 == (0.0, 0.0)


def test_mismatched_seeds_or_no_common_prompt_is_an_error():
    with pytest.raises(ValueError, match="same seeds"):
        paired_difference({0: {"p": True}}, {1: {"p": True}})
    with pytest.raises(ValueError, match="no prompt"):
        paired_difference({0: {"p": True}}, {0: {"q": True}})


# hierarchical_difference / hierarchical_mean: seeds and prompts crossed (safealign sweep): every seed scored the
# same prompts, so the interval is the two-way crossed random-effects t (x = mu + a_seed + b_prompt + e), with
# Satterthwaite's df; the crossed bootstrap is kept only for a mean whose seeds scored different prompts

# A hand-computed table, seeds × prompts:    row means 3, 4, 7; column means 3, 4, 5, 20/3; grand mean 14/3
#   seed 0: 1 2 3 6                           SS_seed = 4·((5/3)² + (2/3)² + (7/3)²) = 104/3, df 2 -> MS 52/3
#   seed 1: 2 4 4 6                           SS_prompt = 3·((5/3)² + (2/3)² + (1/3)² + 2²) = 22, df 3 -> MS 22/3
#   seed 2: 6 6 8 8                           SS_total = 322 − 12·(14/3)² = 182/3, so SS_res = 4, df 6 -> MS 2/3
# σ²_seed = (52/3 − 2/3)/4 = 25/6, σ²_prompt = (22/3 − 2/3)/3 = 20/9, σ²_res = 2/3;
# Var(mean) = 25/18 + 20/36 + 2/36 = 2 = (52/3 + 22/3 − 2/3)/12;
# df = 24² / ((52/3)²/2 + (22/3)²/3 + (2/3)²/6) = 2592/757 = 3.42404…, t₀.₉₇₅ = 2.9706951122232 (40-digit mpmath)
TABLE = [[1.0, 2.0, 3.0, 6.0], [2.0, 4.0, 4.0, 6.0], [6.0, 6.0, 8.0, 8.0]]
TABLE_CI = [14 / 3 - 2.9706951122232269 * 2**0.5, 14 / 3 + 2.9706951122232269 * 2**0.5]


def as_seeds(rows):
    return {s: {f"p{p}": v for p, v in enumerate(row)} for s, row in enumerate(rows)}


def test_crossed_variance_of_the_hand_computed_table():
    from safealign.eval.paired import crossed_variance

    v = crossed_variance(TABLE)
    assert v.mean == pytest.approx(14 / 3, rel=1e-12)
    assert v.mean_squares == pytest.approx((52 / 3, 22 / 3, 2 / 3), rel=1e-12)
    assert v.components == pytest.approx((25 / 6, 20 / 9, 2 / 3), rel=1e-12)
    assert v.var == pytest.approx(2.0, rel=1e-12) and v.df == pytest.approx(2592 / 757, rel=1e-12)


def test_hierarchical_mean_and_difference_of_the_hand_computed_table():
    from safealign.eval.paired import hierarchical_mean

    m = hierarchical_mean(as_seeds(TABLE))
    assert m["mean"] == pytest.approx(14 / 3) and m["ci95"] == pytest.approx(TABLE_CI, rel=1e-9)
    assert m["df"] == pytest.approx(2592 / 757) and m["interval"] == "crossed random-effects t (Satterthwaite df=3.4)"
    assert (m["seeds"], m["n_prompts"]) == (3, 4)
    # a difference is the same analysis of the per-seed, per-prompt differences a − b
    b = as_seeds([[10.0 + p for p in range(4)]] * 3)
    a = as_seeds([[x + 10.0 + p for p, x in enumerate(row)] for row in TABLE])
    h = hierarchical_difference(a, b, resamples=50, seed=1)
    assert h["diff"] == pytest.approx(14 / 3) and h["ci95"] == pytest.approx(TABLE_CI, rel=1e-9)
    assert h["df"] == pytest.approx(2592 / 757) and "Satterthwaite" in h["interval"]
    assert set(h) == {"diff", "ci95", "interval", "df", "per_seed", "mean_a", "mean_b", "n_prompts", "seeds",
                      "a_higher", "b_higher"}


@pytest.mark.parametrize("rows, mean_squares, var, df", [
    # seeds agree on average (MS_seed 0 < MS_res 2): σ²_seed is 0 and drops its variance terms, Var = MS_prompt/(S·P)
    # = (14/3)/6; its df stay: (14/3)² / (0²/1 + (14/3)²/2 + 2²/2) = 49/29, not P − 1 = 2
    ([[0.0, 5.0, 2.0], [2.0, 3.0, 2.0]], (0.0, 14 / 3, 2.0), 7 / 9, 49 / 29),
    # no prompt effect (MS_prompt 0 < MS_seed 1.5): Var = MS_seed/(S·P) = 1.5/6, df = S − 1
    ([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]], (1.5, 0.0, 0.0), 0.25, 1.0),
    # both dropped: Var = MS_res/(S·P) = 1/4, df = (S − 1)(P − 1)
    ([[0.0, 1.0], [1.0, 0.0]], (0.0, 0.0, 1.0), 0.25, 1.0),
])
def test_a_component_estimated_below_zero_drops_its_variance_terms(rows, mean_squares, var, df):
    from safealign.eval.paired import crossed_variance

    v = crossed_variance(rows)
    assert v.mean_squares == pytest.approx(mean_squares, abs=1e-12)
    assert v.var == pytest.approx(var, rel=1e-12) and v.df == pytest.approx(df, rel=1e-12)
    sa2, sb2, se2 = v.components  # the variance is the truncated components' sum
    assert v.var == pytest.approx(sa2 / len(rows) + sb2 / len(rows[0]) + se2 / (len(rows) * len(rows[0])))


def test_truncated_interval_value():
    from safealign.eval.paired import hierarchical_mean

    # the first case above: 7/3 ± t₀.₉₇₅(49/29)·√(7/9), t₀.₉₇₅(49/29) = 5.15622791973044 (scipy.stats.t.ppf)
    m = hierarchical_mean(as_seeds([[0.0, 5.0, 2.0], [2.0, 3.0, 2.0]]))
    assert m["ci95"] == pytest.approx([-2.2140322595915527, 6.880698926258219], rel=1e-9)
    assert m["df"] == pytest.approx(49 / 29)


def test_one_seed_is_a_paired_t_over_prompts_clipped_for_outcomes():
    # differences (1, 1, 0, 1): mean 0.75, variance 1/4 over prompts, Var = 1/16, df 3, t₀.₉₇₅(3) = 3.182446305284263;
    # 0.75 ± 0.7956 reaches above 1, which a difference of rates cannot
    a = {0: {"p1": True, "p2": True, "p3": False, "p4": True}}
    b = {0: dict.fromkeys(a[0], False)}
    h = hierarchical_difference(a, b)
    assert h["diff"] == 0.75 and h["seeds"] == 1 and h["df"] == 3.0
    assert h["ci95"] == pytest.approx([0.75 - 3.182446305284263 / 4, 1.0], rel=1e-12)
    assert h["interval"] == "crossed random-effects t (one seed: t over prompts df=3.0)"
    assert (h["a_higher"], h["b_higher"]) == (3, 0)


def test_one_prompt_is_a_t_over_seeds():
    from safealign.eval.paired import hierarchical_mean

    # values 1, 2, 6: mean 3, variance 7 over seeds, Var = 7/3, df 2
    m = hierarchical_mean({0: {"p": 1.0}, 1: {"p": 2.0}, 2: {"p": 6.0}})
    assert m["ci95"] == pytest.approx([3 - 4.302652729749462 * (7 / 3) ** 0.5, 3 + 4.302652729749462 * (7 / 3) ** 0.5])
    assert m["df"] == 2.0 and "one prompt" in m["interval"]


def test_hierarchical_golden_two_prompts_one_seed():
    # per-prompt differences (+1, 0): Var = 0.5/2, df 1, t₀.₉₇₅(1) = 12.7: the interval is the whole [−1, 1]
    h = hierarchical_difference({0: {"p1": True, "p2": False}}, {0: {"p1": False, "p2": False}})
    assert h["diff"] == 0.5 and h["ci95"] == [-1.0, 1.0] and h["df"] == 1.0


def test_hierarchical_golden_seeds_that_disagree():
    # seed 0: a fails every prompt, b none (difference 1 on every prompt); seed 1: identical (0). MS_seed = 1.5 and
    # nothing else varies: Var = 1.5/6, df 1 (two seeds), 0.5 ± 6.35 is clipped to [−1, 1]: two seeds that
    # disagree say next to nothing. The prompt bootstrap keeps both seeds every draw, so its interval is the point.
    prompts = ("p1", "p2", "p3")
    a = {0: dict.fromkeys(prompts, True), 1: dict.fromkeys(prompts, False)}
    b = {0: dict.fromkeys(prompts, False), 1: dict.fromkeys(prompts, False)}
    h = hierarchical_difference(a, b)
    assert h["diff"] == 0.5 and h["per_seed"] == {"0": 1.0, "1": 0.0} and h["ci95"] == [-1.0, 1.0]
    assert paired_difference(a, b).ci95 == (0.5, 0.5)


def test_hierarchical_identical_variants_give_the_exact_interval_over_prompts():
    # seeds may repeat each other exactly, so the bound counts the 12 prompts, not 4 × 12 answers
    a = {s: {f"p{i}": (i + s) % 3 == 0 for i in range(12)} for s in range(4)}
    h = hierarchical_difference(a, {s: dict(v) for s, v in a.items()})
    u = 1 - 0.025 ** (1 / 12)
    assert h["diff"] == 0 and h["ci95"] == pytest.approx([-u, u]) and h["a_higher"] == h["b_higher"] == 0
    assert h["df"] is None and "exact binomial over the 12 prompts" in h["interval"]
    # a fails every prompt, b none, in every seed: the difference is at least 1 − 2u
    h = hierarchical_difference({s: dict.fromkeys(a[0], True) for s in a}, {s: dict.fromkeys(a[0], False) for s in a})
    assert h["diff"] == 1 and h["ci95"] == pytest.approx([1 - 2 * u, 1.0])
    h = hierarchical_difference({s: dict.fromkeys(a[0], False) for s in a}, {s: dict.fromkeys(a[0], True) for s in a})
    assert h["ci95"] == pytest.approx([-1.0, 2 * u - 1])


def test_every_value_equal_gives_the_point_and_a_single_value_no_interval():
    from safealign.eval.paired import hierarchical_mean

    assert hierarchical_mean({s: {"p1": 0.5, "p2": 0.5} for s in range(3)})["ci95"] == [0.5, 0.5]
    # outcomes all equal: the exact bound over the 2 prompts (u = 1 − 0.025^(1/2) = 0.842), not the point
    u = 1 - 0.025 ** 0.5
    assert hierarchical_mean({s: {"p1": True, "p2": True} for s in range(3)})["ci95"] == pytest.approx([1 - u, 1.0])
    assert hierarchical_mean({s: {"p1": False, "p2": False} for s in range(3)})["ci95"] == pytest.approx([0.0, u])
    # seeds that scored different prompts (a hole): the bound counts the most prompts one seed scored
    holes = hierarchical_mean({0: {"p1": False, "p2": False}, 1: {"p1": False}})
    assert holes["ci95"] == pytest.approx([0.0, u]) and "exact binomial" in holes["interval"]
    # one seed and one prompt: no spread to estimate; an outcome's rate can be anything in [0, 1]
    assert hierarchical_mean({0: {"p": True}})["ci95"] == [0.0, 1.0]
    assert hierarchical_difference({0: {"p": True}}, {0: {"p": False}})["ci95"] == [-1.0, 1.0]
    single = hierarchical_mean({0: {"p": 2.5}})  # a number: shown (a margin-split group of one case), no interval
    assert single["ci95"] == [2.5, 2.5] and "no interval" in single["interval"]


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


def test_hierarchical_mean_golden_seeds_that_disagree():
    # seed 0 fails every prompt (rate 1), seed 1 none (0): Var = 1.5/6, df 1, so 0.5 ± 6.35, clipped to the rates'
    # [0, 1]
    from safealign.eval.paired import hierarchical_mean

    prompts = ("p1", "p2", "p3")
    m = hierarchical_mean({0: dict.fromkeys(prompts, True), 1: dict.fromkeys(prompts, False)})
    assert m["mean"] == 0.5 and m["ci95"] == [0.0, 1.0] and (m["seeds"], m["n_prompts"]) == (2, 3)
    assert m["df"] == 1.0


def test_hierarchical_mean_is_the_difference_against_all_zero():
    """Against a variant that scores 0 everywhere, the paired difference's interval is the mean's (numbers here:
    outcomes would clip the mean to [0, 1] and the difference to [−1, 1])."""
    import random

    from safealign.eval.paired import hierarchical_mean

    rng = random.Random(5)
    a = {s: {f"p{i}": float(rng.random() < 0.3 + 0.1 * s) for i in range(20)} for s in range(3)}
    zero = {s: dict.fromkeys(v, 0.0) for s, v in a.items()}
    h, m = hierarchical_difference(a, zero, resamples=400, seed=2), hierarchical_mean(a, resamples=400, seed=2)
    assert m["mean"] == pytest.approx(h["diff"]) and m["ci95"] == pytest.approx(h["ci95"]) and m["df"] == h["df"]


def test_hierarchical_mean_keeps_each_seeds_own_prompts_and_refuses_nothing_scored():
    from safealign.errors import UserError
    from safealign.eval.paired import hierarchical_mean

    # seed 1 scored one prompt fewer: the estimate is over each seed's own prompts, not the intersection, and the
    # interval is the crossed bootstrap (the table has a hole), said so
    m = hierarchical_mean({0: {"p1": True, "p2": True}, 1: {"p1": False}})
    assert m["mean"] == 0.5 and m["n_prompts"] == 2 and m["ci95"] == [0.0, 1.0]
    assert m["df"] is None and "bootstrap" in m["interval"]
    with pytest.raises(UserError, match="no prompt was scored"):
        hierarchical_mean({0: {}, 1: {}})


# Coverage: 300 simulated data sets per regime from x = a_seed + b_prompt + e (population mean 0), S seeds × 40
# prompts; the nominal 95% interval must cover 0 in 90–99% of them. The crossed bootstrap the code used before
# covered 0.998 (i), 0.86 (ii), 0.76 (ii, 3 seeds) and 0.97 (iii) in these regimes (2000 data sets each). The t
# interval, with the seed component's df kept when its estimate is 0 (1000 data sets each): 0.983 (i), 0.948 (ii),
# 0.958 (iii), 0.942 (ii, 3 seeds), 0.945 and 0.922 (iv, 3 and 2 seeds; without keeping those df ~0.935 and ~0.89).
COVERAGE = {  # name: (seeds, σ_seed, σ_prompt, σ_residual)
    "(i) per-answer noise only": (5, 0.0, 0.0, 1.0),
    "(ii) seed-to-seed spread dominant": (5, 1.0, 0.2, 0.5),
    "(iii) a mix": (5, 0.2, 0.5, 1.0),
    "(ii) with 3 seeds": (3, 1.0, 0.2, 0.5),
    "(iv) a moderate seed effect, 3 seeds": (3, 0.3, 0.3, 1.0),
    "(iv) a moderate seed effect, 2 seeds": (2, 0.3, 0.3, 1.0),
}


@pytest.mark.parametrize("regime", COVERAGE)
def test_the_95_percent_interval_covers_95_percent(regime):
    import random

    from safealign.eval.paired import hierarchical_mean

    n_seeds, seed_sd, prompt_sd, residual_sd = COVERAGE[regime]
    rng = random.Random(list(COVERAGE).index(regime))
    hits, datasets = 0, 300
    for _ in range(datasets):
        seed_effect = [rng.gauss(0.0, seed_sd) for _ in range(n_seeds)]
        prompt_effect = [rng.gauss(0.0, prompt_sd) for _ in range(40)]
        values = {s: {f"p{p:02d}": seed_effect[s] + e + rng.gauss(0.0, residual_sd)
                      for p, e in enumerate(prompt_effect)} for s in range(n_seeds)}
        low, high = hierarchical_mean(values)["ci95"]
        hits += low <= 0.0 <= high
    assert 0.90 <= hits / datasets <= 0.99


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
    interval is the one-seed paired t over prompts and includes 0 (the nested design gave [−0.115, −0.040], a
    spurious "E-DPO beats DPO"). Identical seeds have MS_seed = MS_res = 0, so Var = MS_prompt/(S·P) = s²/P,
    s² = (3·0.925² + 37·0.075²)/39, df 39, t₀.₉₇₅(39) = 2.022690920036762."""
    prompts = [f"p{i:02d}" for i in range(40)]
    dpo = {s: {p: i < 10 for i, p in enumerate(prompts)} for s in range(5)}
    edpo = {s: {p: i < 10 and i not in (0, 1, 2) for i, p in enumerate(prompts)} for s in range(5)}
    h = hierarchical_difference(edpo, dpo)
    assert h["diff"] == pytest.approx(-3 / 40) and h["seeds"] == 5 and h["df"] == pytest.approx(39)
    assert h["ci95"] == pytest.approx([-0.16030975985905739, 0.010309759859057392], rel=1e-9)
    assert h["ci95"] == pytest.approx(hierarchical_difference({0: edpo[0]}, {0: dpo[0]})["ci95"], rel=1e-9)


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
    assert widths[1] == pytest.approx(widths[0], rel=1e-9) and widths[2] == pytest.approx(widths[0], rel=1e-9)


def test_crossed_interval_covers_a_prompt_driven_difference():
    """A small coverage check: each replicate draws 30 prompts from a population with per-prompt effects shared by
    both seeds' runs (plus a small seed effect and noise), and the nominal 95% interval of the mean covers the
    population mean in most replicates (the nested design, prompts resampled anew for each drawn seed, covered 36
    of these 50)."""
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


def test_a_prompt_bootstrap_of_fractions_stays_in_their_range():
    """The anchor diagnostic's sampled refusal rate: one rare refusal among 40 prompts; a t interval would reach
    below 0, the bootstrap's bounds are means of resampled fractions."""
    from safealign.eval.paired import prompt_bootstrap_mean

    fractions = {f"p{i}": 0.0 for i in range(39)} | {"p39": 0.25}
    lo, hi = prompt_bootstrap_mean(fractions)
    assert lo == 0.0 and 0.0 < hi <= 0.25 * 3 / 40 + 1e-12  # at most 3 copies of p39 among 40 in 97.5% of draws
    assert prompt_bootstrap_mean(fractions) == [lo, hi]  # seeded


def test_a_non_finite_value_is_refused_not_turned_into_a_nan_interval():
    from safealign.errors import UserError
    from safealign.eval.paired import hierarchical_mean

    for bad in (float("nan"), float("inf")):
        with pytest.raises(UserError, match="not finite"):
            hierarchical_mean({0: {"p1": 1.0, "p2": bad}, 1: {"p1": 0.5, "p2": 2.0}})


def test_a_mean_difference_over_one_prompt_has_no_interval():
    """One prompt gives a mean but no spread: a bootstrap over it is a zero-width interval, claiming certainty."""
    from safealign.eval.paired import mean_difference_stats

    one = mean_difference_stats({"p1": 0.7}, {"p1": 0.2}, total=3)
    assert (one.mean, one.ci95, one.n, one.unscored) == (pytest.approx(0.5), None, 1, 2)
    two = mean_difference_stats({"p1": 0.7, "p2": 0.1}, {"p1": 0.2, "p2": 0.2}, total=2)
    assert two.ci95 is not None and two.ci95[0] < two.ci95[1] and two.n == 2
