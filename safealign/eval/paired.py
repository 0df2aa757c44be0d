"""Paired comparison of two trained variants on the same prompts, over one or more training seeds.

Two variants (e.g. E-DPO and DPO) trained from the same pairs with the same seeds and evaluated on the
same prompts give paired per-prompt outcomes. The difference of their rates is estimated as the mean
over seeds of ``rate_a − rate_b``; its 95% interval comes from a paired bootstrap that resamples
prompts (the same resample for every seed and both variants), so the interval reflects prompt sampling
while the seeds are kept as run. Discordant prompts (one variant succeeds, the other not) are counted
too: they are what the difference is made of. Per-prompt numbers (log-prob margins from
``safealign diagnose ranking``) are compared the same way by :func:`paired_mean_difference`
(``safealign diagnose paired-margin`` of one seed; several get :func:`hierarchical_difference`; docs/algorithms.md,
"Paired comparison of two variants").

:func:`hierarchical_difference` and :func:`hierarchical_mean` give the intervals of a sweep over several
training seeds (``safealign sweep``), which cover seed-to-seed variation as well as prompt sampling instead of
holding the seeds fixed. Seeds and prompts are crossed, not nested (every seed's model answers the same held-out
prompts), so the data are a seeds × prompts table read as the two-way crossed random-effects model ``x = μ +
a_seed + b_prompt + e``; the interval is the grand mean ± t·√Var, Var from the ANOVA mean squares and the t's
degrees of freedom by Satterthwaite (:func:`crossed_variance`). It replaced a crossed ("pigeonhole") bootstrap
whose 95% intervals covered 100% with no seed effect (about 1.6 times too wide: it counts the residual variance
about three times) and about 80% when seeds dominate (a percentile interval over 3–5 resampled seeds has no
t-like tails: with 3 seeds it never reaches below the lowest seed's value). That bootstrap (:func:`_crossed_draws`)
is kept only for a mean whose seeds scored different prompts, where the table has holes, and the result's
``interval`` says which method made it. Treating every seed as a fresh sample of prompts (a nested design) would
undercover when the outcome is driven by which prompts were asked (the same few prompts flipping in every seed);
both methods avoid that.
"""

from __future__ import annotations

import logging
import math
import random
import statistics
from typing import Any, Callable, Mapping, NamedTuple

from safealign.errors import UserError
from safealign.eval.student_t import t_quantile
from safealign.io.summaries import PairedDifference, ScoreStats

Outcomes = Mapping[str, bool]  # prompt id -> outcome (True = attack succeeded / model refused ...)
Values = Mapping[str, float]  # prompt id -> a per-prompt number (e.g. a log-prob margin in nats)

BySeed = Mapping[Any, Mapping[str, Mapping[str, Any]]]  # seed -> metric -> prompt id -> outcome or number

logger = logging.getLogger(__name__)


def paired_difference(a: Mapping[Any, Outcomes], b: Mapping[Any, Outcomes], *, resamples: int = 2000,
                      seed: int = 0) -> PairedDifference:
    """``a`` and ``b``: seed -> prompt id -> outcome (or a per-prompt number such as a margin: the rates are
    then means, and ``only_a``/``only_b`` count the cases where that side's value is the higher). Only prompts
    scored for both variants under every shared seed are compared; a seed present for one variant only is an
    error. One prompt gives no interval (``ci95`` None), as in :func:`mean_difference_stats`: every resample is
    that prompt, a zero-width interval that claims certainty."""
    seeds, prompts = _paired_keys(a, b)
    ci95 = None
    if len(prompts) >= 2:
        outcomes = _outcomes(a, seeds, prompts) and _outcomes(b, seeds, prompts)
        differences = {float(a[s][p]) - float(b[s][p]) for s in seeds for p in prompts}
        ci95 = (constant_outcome_interval(differences, len(prompts), difference=True) if outcomes else None) or \
            percentile_interval(_prompt_draws(a, b, seeds, prompts, resamples, seed))
    # the key order of earlier summaries: rate_a, rate_b where the numeric comparison says mean_a, mean_b
    out = {("rate" + k[4:] if k.startswith("mean_") else k): v
           for k, v in _summary(a, b, seeds, prompts, ci95).items()}
    # for outcomes a > b is "a succeeded, b not"; for per-prompt numbers, "a's value is the higher"
    out["only_a"] = sum(a[s][p] > b[s][p] for s in seeds for p in prompts)
    out["only_b"] = sum(b[s][p] > a[s][p] for s in seeds for p in prompts)
    return PairedDifference.from_json(out)


def paired_mean_difference(a: Mapping[Any, Values], b: Mapping[Any, Values], *, resamples: int = 2000,
                           seed: int = 0) -> dict[str, Any]:
    """The same comparison for per-prompt numbers (seed -> prompt id -> value): mean over seeds of
    ``mean_a − mean_b``, a paired bootstrap interval over prompts, and ``a_higher``/``b_higher``: in how
    many prompt×seed cases one variant's value exceeds the other's."""
    seeds, prompts = _paired_keys(a, b)
    ci95 = percentile_interval(_prompt_draws(a, b, seeds, prompts, resamples, seed))
    return {**_summary(a, b, seeds, prompts, ci95), **_higher_counts(a, b, seeds, prompts)}


def mean_difference_stats(a: Values, b: Values, total: int) -> ScoreStats:
    """``mean(a − b)`` over the prompt ids both mappings score, with the paired bootstrap interval of
    :func:`paired_mean_difference`; ``total`` prompts were asked, the ones not scored by both are unscored. One
    prompt gives no interval (None): every resample is that prompt, a zero-width interval that claims certainty."""
    shared = sorted(set(a) & set(b))
    if not shared:
        return ScoreStats(mean=None, n=0, unscored=total)
    d = paired_mean_difference({0: {i: a[i] for i in shared}}, {0: {i: b[i] for i in shared}})
    ci95 = (d["ci95"][0], d["ci95"][1]) if len(shared) >= 2 else None
    return ScoreStats(mean=d["diff"], ci95=ci95, n=len(shared), unscored=total - len(shared))


def _paired_keys(a: Mapping[Any, Mapping[str, Any]], b: Mapping[Any, Mapping[str, Any]]) -> tuple[list, list]:
    if set(a) != set(b) or not a:
        raise UserError(f"paired comparison needs the same seeds for both variants, got {sorted(a)} and {sorted(b)}")
    seeds = sorted(a)
    prompts = sorted(set.intersection(*(set(a[s]) & set(b[s]) for s in seeds)))
    if not prompts:
        raise UserError("paired comparison: no prompt was scored for both variants")
    return seeds, prompts


def _prompt_draws(a: Mapping[Any, Mapping[str, Any]], b: Mapping[Any, Mapping[str, Any]], seeds: list,
                  prompts: list, resamples: int, seed: int) -> list[float]:
    """Bootstrap draws of the mean-over-seeds difference, resampling prompts (one sample for every seed)."""
    rng = random.Random(seed)
    boot = []
    for _ in range(resamples):
        sample = rng.choices(prompts, k=len(prompts))
        boot.append(statistics.fmean(_mean(a[s], sample) - _mean(b[s], sample) for s in seeds))
    return boot


def _summary(a: Mapping[Any, Mapping[str, Any]], b: Mapping[Any, Mapping[str, Any]], seeds: list, prompts: list,
             ci95: list[float] | None, **extra: Any) -> dict[str, Any]:
    """The point estimates of a paired comparison, with its interval ``ci95``."""
    per_seed = {s: _mean(a[s], prompts) - _mean(b[s], prompts) for s in seeds}
    return {
        "diff": statistics.fmean(per_seed.values()),
        "ci95": ci95,
        **extra,
        "per_seed": {str(s): v for s, v in per_seed.items()},
        "mean_a": statistics.fmean(_mean(a[s], prompts) for s in seeds),
        "mean_b": statistics.fmean(_mean(b[s], prompts) for s in seeds),
        "n_prompts": len(prompts),
        "seeds": len(seeds),
    }


def _higher_counts(a: Mapping[Any, Values], b: Mapping[Any, Values], seeds: list, prompts: list) -> dict[str, int]:
    """In how many prompt×seed cases each side's value exceeds the other's."""
    return {"a_higher": sum(a[s][p] > b[s][p] for s in seeds for p in prompts),
            "b_higher": sum(b[s][p] > a[s][p] for s in seeds for p in prompts)}


def hierarchical_difference(a: Mapping[Any, Mapping[str, Any]], b: Mapping[Any, Mapping[str, Any]], *,
                            resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Mean over seeds of ``mean_a − mean_b`` (seed -> prompt id -> outcome or number, paired as in
    :func:`paired_difference`: the prompts scored for both variants under every seed) with the crossed
    random-effects t interval of :func:`crossed_variance` on the per-seed, per-prompt differences ``a − b`` (every
    seed scored the same prompts: the comparison is balanced by construction). ``resamples``/``seed`` are
    accepted for the callers' sake and unused. ``df``: the interval's degrees of freedom; ``interval``: how it
    was made. ``a_higher``/``b_higher`` count prompt×seed cases where one side exceeds the other (for outcomes:
    prompts only one variant failed)."""
    seeds, prompts = _paired_keys(a, b)
    rows = [[float(a[s][p]) - float(b[s][p]) for p in prompts] for s in seeds]
    diff = statistics.fmean(_mean(a[s], prompts) - _mean(b[s], prompts) for s in seeds)  # _summary's "diff"
    bounds = (-1.0, 1.0) if _outcomes(a, seeds, prompts) and _outcomes(b, seeds, prompts) else None
    ci95, df, interval = crossed_t_interval(diff, rows, bounds)
    return {**_summary(a, b, seeds, prompts, ci95, interval=interval, df=df), **_higher_counts(a, b, seeds, prompts)}


def hierarchical_mean(values: Mapping[Any, Mapping[str, Any]], *, resamples: int = 2000,
                      seed: int = 0) -> dict[str, Any]:
    """One variant's mean over seeds of its per-seed mean over the prompts it scored (seed -> prompt id -> outcome
    or number). Where every seed scored the same prompts, the interval is the crossed random-effects t of
    :func:`crossed_variance`. Seeds may have scored different prompts (an unscored prompt, a group of prompts
    defined per seed as in ``safealign diagnose margin-split``), where that table has holes: the interval is then
    the crossed bootstrap of :func:`_crossed_draws` (``resamples`` draws from ``seed``), whose coverage is only
    approximate (too wide without a seed effect, too narrow when seeds dominate; docs/algorithms.md), or, where
    every outcome is the same, the exact bound of :func:`constant_outcome_interval`.
    ``interval`` names the method, ``df`` its degrees of freedom (None for the bootstrap); ``n_prompts``: the
    most any seed scored."""
    seeds = sorted(s for s in values if values[s])
    if not seeds:
        raise UserError("hierarchical mean: no prompt was scored under any seed")
    prompts = {s: sorted(values[s]) for s in seeds}
    mean = statistics.fmean(_mean(values[s], prompts[s]) for s in seeds)
    shared = prompts[seeds[0]]
    if all(prompts[s] == shared for s in seeds):
        rows = [[float(values[s][p]) for p in shared] for s in seeds]
        ci95, df, interval = crossed_t_interval(mean, rows, (0.0, 1.0) if _outcomes(values, seeds, shared) else None)
    elif all(_outcomes(values, [s], prompts[s]) for s in seeds) and (constant := constant_outcome_interval(
            {float(v) for s in seeds for v in values[s].values()}, max(map(len, prompts.values())), difference=False)):
        ci95, df = constant, None
        interval = "exact binomial over the most prompts a seed scored (every outcome equal in every seed)"
    else:
        boot = _crossed_draws(seeds, prompts, lambda s, sample: _mean(values[s], sample), resamples, seed)
        ci95, df = percentile_interval(boot), None
        interval = ("hierarchical bootstrap (seeds scored different prompts: seeds and, once per draw, prompts "
                    "resampled; percentile)")
    return {"mean": mean, "ci95": ci95, "interval": interval, "df": df, "seeds": len(seeds),
            "n_prompts": max(len(p) for p in prompts.values())}


class CrossedVariance(NamedTuple):
    """The two-way crossed random-effects analysis of a seeds × prompts table (:func:`crossed_variance`)."""

    mean: float  # the grand mean
    var: float  # the estimated variance of the grand mean
    df: float  # its Satterthwaite degrees of freedom
    mean_squares: tuple[float, float, float] | None  # seed, prompt, residual (None with one seed or one prompt)
    components: tuple[float, float, float] | None  # σ²_seed, σ²_prompt, σ²_residual, truncated at 0 (likewise)


def crossed_variance(rows: list[list[float]]) -> CrossedVariance:
    """``rows[s][p]``: the value of seed s on prompt p (every seed on the same prompts, at least two values), read
    as ``x = μ + a_s + b_p + e_sp`` with independent random seed, prompt and residual effects. The grand mean's
    variance is ``σ²_a/S + σ²_b/P + σ²_e/(S·P)``, estimated from the ANOVA mean squares (seed: df S−1, prompt:
    P−1, residual: (S−1)(P−1)) through ``σ²_a = (MS_seed − MS_res)/P``, ``σ²_b = (MS_prompt − MS_res)/S`` and
    ``σ²_e = MS_res``, which makes it ``(MS_seed + MS_prompt − MS_res)/(S·P)``. A component estimated at or below
    0 is set to 0, which drops its terms: without the seed component the variance is ``(MS_prompt)/(S·P)``,
    without the prompt component ``MS_seed/(S·P)``, without both ``MS_res/(S·P)``. The degrees of freedom are
    Satterthwaite's for the combination of mean squares left, ``(Σ cᵢMSᵢ)² / Σ (cᵢMSᵢ)²/dfᵢ``. One seed: the
    variance over prompts divided by P, df P−1 (a paired t over prompts); one prompt: over seeds, df S−1.

    Why not a bootstrap: resampling 3–5 seeds cannot give t-like tails (with 3 seeds one draw in 27 repeats the
    lowest seed, so a percentile interval never reaches below it), and the crossed bootstrap counts the residual
    variance about three times; its 95% intervals covered ~80% when seeds dominate and 100% when they do not."""
    n_seeds, n_prompts = len(rows), len(rows[0])
    if n_seeds * n_prompts < 2 or any(len(r) != n_prompts for r in rows):
        raise ValueError(f"crossed variance: needs a full seeds × prompts table of at least 2 values, got row "
                         f"lengths {[len(r) for r in rows]}")
    values = [v for r in rows for v in r]
    mean = math.fsum(values) / len(values)
    if n_seeds == 1 or n_prompts == 1:
        spread = math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1)
        return CrossedVariance(mean, spread / len(values), float(len(values) - 1), None, None)
    seed_means = [math.fsum(r) / n_prompts for r in rows]
    prompt_means = [math.fsum(r[p] for r in rows) / n_seeds for p in range(n_prompts)]
    df_seed, df_prompt, df_res = n_seeds - 1, n_prompts - 1, (n_seeds - 1) * (n_prompts - 1)
    ms_seed = n_prompts * math.fsum((m - mean) ** 2 for m in seed_means) / df_seed
    ms_prompt = n_seeds * math.fsum((m - mean) ** 2 for m in prompt_means) / df_prompt
    ms_res = math.fsum((v - seed_means[s] - prompt_means[p] + mean) ** 2
                       for s, r in enumerate(rows) for p, v in enumerate(r)) / df_res
    keep_seed, keep_prompt = ms_seed > ms_res, ms_prompt > ms_res
    # S·P·Var = [seed kept]·(MS_seed − MS_res) + [prompt kept]·(MS_prompt − MS_res) + MS_res
    terms = [(c * ms, df) for c, ms, df in ((keep_seed, ms_seed, df_seed), (keep_prompt, ms_prompt, df_prompt),
                                            (1 - keep_seed - keep_prompt, ms_res, df_res)) if c and ms]
    total = math.fsum(t for t, _ in terms)
    df = total**2 / math.fsum(t**2 / d for t, d in terms) if total > 0 else float(df_res)
    if not keep_seed and total > 0:
        # a seed component estimated at 0 may be a real one that S−1 df could not show: its df are not dropped
        # with its variance (dropping them took df to ~P−1 and covered 28–84% of such tables, 88–91% overall with
        # two seeds); every mean square's own uncertainty stays in Satterthwaite's denominator
        df = min(df, total**2 / math.fsum(ms**2 / d for ms, d in ((ms_seed, df_seed), (ms_prompt, df_prompt),
                                                                   (ms_res, df_res))))
    components = (max(0.0, (ms_seed - ms_res) / n_prompts), max(0.0, (ms_prompt - ms_res) / n_seeds), ms_res)
    return CrossedVariance(mean, total / (n_seeds * n_prompts), df, (ms_seed, ms_prompt, ms_res), components)


def crossed_t_interval(center: float, rows: list[list[float]],
                       bounds: tuple[float, float] | None) -> tuple[list[float], float | None, str]:
    """The 95% interval ``center ± t₀.₉₇₅(df)·√Var`` of :func:`crossed_variance` (``center``: the caller's point
    estimate, the grand mean up to rounding), clipped to ``bounds`` (rates of outcomes: [0, 1]; differences of
    rates: [−1, 1]); with its df (None where there is none) and a description for the result's ``interval``. Every
    value equal: the point for numbers, and for outcomes (``bounds`` given) the exact interval of
    :func:`constant_outcome_interval`. A single value has no spread to estimate: the whole of ``bounds``, and for
    numbers the value itself, its description saying there is no interval."""
    method = "crossed random-effects t"
    if not all(math.isfinite(v) for r in rows for v in r):
        raise UserError("hierarchical interval: a value is not finite (NaN or infinite): no interval can be given")
    if sum(map(len, rows)) == 1:  # e.g. a margin-split group with one case: shown, with no spread to estimate
        if bounds is None:
            return [center, center], None, f"{method} (a single value: no spread to estimate, no interval)"
        return list(bounds), None, f"{method} (a single outcome: no spread to estimate, the whole range)"
    if min(map(min, rows)) == max(map(max, rows)):
        if bounds is not None:
            return (constant_outcome_interval({v for r in rows for v in r}, len(rows[0]), difference=bounds[0] < 0),
                    None,
                    f"exact binomial over the {len(rows[0])} prompts (every outcome equal in every seed)")
        return [center, center], None, f"{method} (every value equal: no spread)"
    estimate = crossed_variance(rows)
    half = t_quantile(0.975, estimate.df) * math.sqrt(estimate.var)
    low, high = center - half, center + half
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    how = ("one seed: t over prompts" if len(rows) == 1 else "one prompt: t over seeds" if len(rows[0]) == 1
           else "Satterthwaite")
    return [low, high], estimate.df, f"{method} ({how} df={estimate.df:.1f})"


def constant_outcome_interval(values: set[float], n_prompts: int, *, difference: bool) -> list[float] | None:
    """The 95% interval of a rate (``difference`` False: every value 0 or every value 1) or of a difference of two
    rates (True: every per-prompt difference 0, or every one +1, or every one −1) that did not vary at all over a
    seeds × prompts table of outcomes (``values``: the distinct values seen; ``n_prompts``: P); None where they
    vary. No variance can be estimated from such a table, and the point (a zero-width interval) would claim
    certainty: the bound is the exact (Clopper–Pearson) one for seeing none of P prompts go the other way,
    ``u = 1 − 0.025^(1/P)``, the seeds counted as one sample since they may repeat each other exactly. A rate of 0
    gives [0, u], of 1 [1 − u, 1]; a difference of 0 (no prompt discordant) [−u, +u], since a difference of two
    rates is at most the rate of discordant prompts; a difference of +1 (every prompt discordant one way: at most u
    of them are not) [1 − 2u, 1], −1 likewise. P = 40: u = 0.088."""
    if len(values) != 1:
        return None
    (value,) = values
    u = 1.0 - 0.025 ** (1.0 / n_prompts)
    if difference:
        return [-u, u] if value == 0 else [1.0 - 2.0 * u, 1.0] if value > 0 else [-1.0, 2.0 * u - 1.0]
    return [0.0, u] if value == 0 else [1.0 - u, 1.0]


def _outcomes(values: Mapping[Any, Mapping[str, Any]], seeds: list, prompts: list) -> bool:
    """Whether every compared value is an outcome (a bool), whose rates lie in [0, 1]."""
    return all(isinstance(values[s][p], bool) for s in seeds for p in prompts)


def prompt_bootstrap_mean(values: Values, *, resamples: int = 2000, seed: int = 0) -> list[float]:
    """The 95% percentile-bootstrap interval of one run's mean over prompts (prompt id -> number), prompts resampled
    with replacement: for a per-prompt fraction (e.g. the share of a prompt's sampled answers that refused), whose
    samples are not independent of each other, and whose bounds stay inside the values' range."""
    if not values:
        raise UserError("prompt bootstrap: no prompt was scored")
    ids = sorted(values)
    return percentile_interval(_crossed_draws([0], {0: ids}, lambda _, sample: _mean(values, sample), resamples,
                                              seed))


def metric_intervals(by_seed: BySeed, *, resamples: int = 2000) -> dict[str, list[float]]:
    """Per metric, the 95% interval of :func:`hierarchical_mean` of one variant's runs (seed -> metric -> prompt
    id -> outcome or number). A metric no seed scored has none; one a seed lacks (e.g. a run finished before the
    metric existed) counts as unscored for that seed."""
    scored = sorted({m for metrics in by_seed.values() for m, values in metrics.items() if values})
    return {m: hierarchical_mean({s: o.get(m, {}) for s, o in by_seed.items()}, resamples=resamples)["ci95"]
            for m in scored}


def metric_differences(a: BySeed, b: BySeed, *, resamples: int = 2000, label: str = "",
                       compare: Callable[..., Any] = hierarchical_difference) -> dict[str, Any]:
    """Per metric of ``a`` (seed -> metric -> per-prompt values), ``compare`` (:func:`hierarchical_difference`, or
    :func:`paired_difference` for the demo's seeds-as-run interval) of ``a − b`` on the seeds where both scored it
    (a metric added later, e.g. ASR under a judge run on some stages or cells only, is compared on the seeds that
    have it; the result's ``seeds`` says how many). A metric with nothing scored for both is left out with a
    warning naming ``label``, so one unscored metric never costs the others."""
    shared = [s for s in a if s in b]
    out = {}
    for metric in dict.fromkeys(m for s in shared for m in a[s]):
        seeds = [s for s in shared if a[s].get(metric) and b[s].get(metric)]
        if not seeds:
            logger.warning("%s: no paired comparison of %s: no seed has it scored for both", label or "paired", metric)
            continue
        try:
            out[metric] = compare({s: a[s][metric] for s in seeds}, {s: b[s][metric] for s in seeds},
                                  resamples=resamples)
        except UserError as err:
            logger.warning("%s: no paired comparison of %s: %s", label or "paired", metric, err)
    return out


def _crossed_draws(seeds: list, prompts: Mapping[Any, list], statistic: Callable[[Any, list], float],
                   resamples: int, seed: int) -> list[float]:
    """Bootstrap draws of the mean over seeds of ``statistic(seed, prompt sample)`` for crossed seeds and prompts:
    each draw resamples the seeds with replacement and, once, the prompts (with replacement, as many as there are,
    from the sorted union of ``prompts``: seed -> the prompts that seed scored), and every drawn seed gets that
    same prompt sample. A seed that scored only some of the prompts is given the drawn prompts it scored (with
    their multiplicity); a drawn seed that scored none of them is left out of that draw's mean, and a draw where
    no drawn seed scored any drawn prompt is drawn again (seeds and prompts), so there are always ``resamples``
    draws. It serves only :func:`hierarchical_mean` of seeds that scored different prompts: a full table gets the
    t interval of :func:`crossed_t_interval` instead. One seed is drawn without touching the random stream (the
    prompt bootstrap of :func:`paired_difference`, the same draws for the same ``seed``)."""
    union = sorted(set().union(*(prompts[s] for s in seeds)))
    # the prompts of a seed that lacks some of the union, for filtering a sample (None: it has them all)
    partial = {s: (set(prompts[s]) if len(set(prompts[s])) < len(union) else None) for s in seeds}
    rng = random.Random(seed)
    boot: list[float] = []
    while len(boot) < resamples:
        drawn = rng.choices(seeds, k=len(seeds)) if len(seeds) > 1 else seeds
        sample = rng.choices(union, k=len(union))
        # the shared sample makes a seed drawn twice score the same twice: one statistic per distinct seed
        per_seed = {}
        for s in dict.fromkeys(drawn):
            own = sample if partial[s] is None else [p for p in sample if p in partial[s]]
            if own:
                per_seed[s] = statistic(s, own)
        kept = [per_seed[s] for s in drawn if s in per_seed]
        if kept:
            boot.append(sum(kept) / len(kept))
    return boot


def percentile_interval(boot: list[float]) -> list[float]:
    """The 2.5th and 97.5th percentiles of the bootstrap draws by nearest rank (the ⌈p·n⌉-th smallest draw:
    0-based indices 24 and 974 of 1000, numpy's ``method="inverted_cdf"``): the project's one rule for a
    percentile bootstrap interval (paired differences here, the judge-agreement κ in eval/judges/agreement.py,
    the mean over attacks in eval/aggregate.py)."""
    boot = sorted(boot)
    return [_nearest_rank(boot, 25), _nearest_rank(boot, 975)]


def _nearest_rank(ordered: list[float], permille: int) -> float:
    """The ⌈permille·n/1000⌉-th smallest of ``ordered`` (at least the first), in integers: ``0.975 * n`` in floats
    can land just above a whole number and take the next draw."""
    rank = -(-permille * len(ordered) // 1000)
    return ordered[max(rank, 1) - 1]


def _mean(values: Mapping[str, Any], prompts: list[str]) -> float:
    # sum()/len rather than fmean: for outcomes this is the same rate the comparison always reported
    return sum(float(values[p]) for p in prompts) / len(prompts)
