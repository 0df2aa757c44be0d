"""Paired comparison of two trained variants on the same prompts, over one or more training seeds.

Two variants (e.g. E-DPO and DPO) trained from the same pairs with the same seeds and evaluated on the
same prompts give paired per-prompt outcomes. The difference of their rates is estimated as the mean
over seeds of ``rate_a − rate_b``; its 95% interval comes from a paired bootstrap that resamples
prompts (the same resample for every seed and both variants), so the interval reflects prompt sampling
while the seeds are kept as run. Discordant prompts (one variant succeeds, the other not) are counted
too: they are what the difference is made of. Per-prompt numbers (log-prob margins from
``safealign diagnose ranking``) are compared the same way by :func:`paired_mean_difference`
(``safealign diagnose paired-margin``; docs/algorithms.md, "Paired comparison of two variants").

:func:`hierarchical_difference` is the interval for a sweep over several training seeds (``safealign
sweep``): it resamples the seeds too, so the interval covers seed-to-seed variation as well as prompt
sampling instead of holding the seeds fixed. Seeds and prompts are crossed, not nested (every seed's model
answers the same held-out prompts), so each draw resamples the seeds and, once, the prompts, and every drawn
seed is scored on that one prompt resample (a two-way "pigeonhole" bootstrap). Resampling the prompts anew for
each drawn seed instead would treat every seed as a fresh sample of prompts: the prompt part of the variance
would shrink with the number of seeds and the interval would undercover when the outcome is driven by which
prompts were asked (the same few prompts flipping in every seed).
"""

from __future__ import annotations

import logging
import random
import statistics
from typing import Any, Callable, Mapping

from safealign.errors import UserError
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
    error."""
    seeds, prompts = _paired_keys(a, b)
    # the key order of earlier summaries: rate_a, rate_b where the numeric comparison says mean_a, mean_b
    out = {("rate" + k[4:] if k.startswith("mean_") else k): v
           for k, v in _summary(a, b, seeds, prompts, _prompt_draws(a, b, seeds, prompts, resamples, seed)).items()}
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
    boot = _prompt_draws(a, b, seeds, prompts, resamples, seed)
    return {**_summary(a, b, seeds, prompts, boot), **_higher_counts(a, b, seeds, prompts)}


def mean_difference_stats(a: Values, b: Values, total: int) -> ScoreStats:
    """``mean(a − b)`` over the prompt ids both mappings score, with the paired bootstrap interval of
    :func:`paired_mean_difference`; ``total`` prompts were asked, the ones not scored by both are unscored."""
    shared = sorted(set(a) & set(b))
    if not shared:
        return ScoreStats(mean=None, n=0, unscored=total)
    d = paired_mean_difference({0: {i: a[i] for i in shared}}, {0: {i: b[i] for i in shared}})
    return ScoreStats(mean=d["diff"], ci95=(d["ci95"][0], d["ci95"][1]), n=len(shared), unscored=total - len(shared))


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
             boot: list[float], **extra: Any) -> dict[str, Any]:
    """The point estimates of a paired comparison and the interval of its bootstrap draws."""
    per_seed = {s: _mean(a[s], prompts) - _mean(b[s], prompts) for s in seeds}
    return {
        "diff": statistics.fmean(per_seed.values()),
        "ci95": percentile_interval(boot),
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
    :func:`paired_difference`: the prompts scored for both variants under every seed) with a crossed bootstrap
    interval: each draw resamples the seeds with replacement and, once, the prompts, and takes the mean over the
    drawn seeds of ``mean_a − mean_b`` on that one prompt resample (shared by every drawn seed and both
    variants, keeping the pairing). With one seed this is exactly :func:`paired_difference`'s interval (the
    same draws for the same ``seed``). ``a_higher``/``b_higher`` count prompt×seed cases where one side
    exceeds the other (for outcomes: prompts only one variant failed)."""
    seeds, prompts = _paired_keys(a, b)
    boot = _crossed_draws(seeds, {s: prompts for s in seeds},
                          lambda s, sample: _mean(a[s], sample) - _mean(b[s], sample), resamples, seed)
    return {**_summary(a, b, seeds, prompts, boot,
                       interval="hierarchical bootstrap (seeds and prompts crossed: one prompt resample per draw)"),
            **_higher_counts(a, b, seeds, prompts)}


def hierarchical_mean(values: Mapping[Any, Mapping[str, Any]], *, resamples: int = 2000,
                      seed: int = 0) -> dict[str, Any]:
    """One variant's mean over seeds of its per-seed mean over the prompts it scored (seed -> prompt id -> outcome
    or number), with the crossed interval of :func:`hierarchical_difference`. Seeds may have scored different
    prompts (an unscored prompt, a group of prompts defined per seed as in ``safealign diagnose margin-split``):
    the one prompt resample of a draw is taken from the union of the seeds' prompts, and each drawn seed is
    averaged over the drawn prompts it scored (see :func:`_crossed_draws`). ``n_prompts``: the most any seed
    scored."""
    seeds = sorted(s for s in values if values[s])
    if not seeds:
        raise UserError("hierarchical mean: no prompt was scored under any seed")
    prompts = {s: sorted(values[s]) for s in seeds}
    boot = _crossed_draws(seeds, prompts, lambda s, sample: _mean(values[s], sample), resamples, seed)
    return {"mean": statistics.fmean(_mean(values[s], prompts[s]) for s in seeds), "ci95": percentile_interval(boot),
            "seeds": len(seeds), "n_prompts": max(len(p) for p in prompts.values())}


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
    draws. Where every seed scored the same prompts (every paired difference) none of this arises. One seed is
    drawn without touching the random stream, so the one-seed case is exactly the prompt bootstrap of
    :func:`paired_difference` (the same draws for the same ``seed``)."""
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
