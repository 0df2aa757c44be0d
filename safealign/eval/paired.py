"""Paired comparison of two trained variants on the same prompts, over one or more training seeds.

Two variants (e.g. E-DPO and DPO) trained from the same pairs with the same seeds and evaluated on the
same prompts give paired per-prompt outcomes. The difference of their rates is estimated as the mean
over seeds of ``rate_a − rate_b``; its 95% interval comes from a paired bootstrap that resamples
prompts (the same resample for every seed and both variants), so the interval reflects prompt sampling
while the seeds are kept as run. Discordant prompts (one variant succeeds, the other not) are counted
too: they are what the difference is made of.
"""

from __future__ import annotations

import random
import statistics
from typing import Any, Mapping

Outcomes = Mapping[str, bool]  # prompt id -> outcome (True = attack succeeded / model refused ...)


def paired_difference(a: Mapping[Any, Outcomes], b: Mapping[Any, Outcomes], *, resamples: int = 2000,
                      seed: int = 0) -> dict[str, Any]:
    """``a`` and ``b``: seed -> prompt id -> outcome. Only prompts scored for both variants under every
    shared seed are compared; a seed present for one variant only is an error."""
    if set(a) != set(b) or not a:
        raise ValueError(f"paired comparison needs the same seeds for both variants, got {sorted(a)} and {sorted(b)}")
    seeds = sorted(a)
    prompts = sorted(set.intersection(*(set(a[s]) & set(b[s]) for s in seeds)))
    if not prompts:
        raise ValueError("paired comparison: no prompt was scored for both variants")
    per_seed = {s: _rate(a[s], prompts) - _rate(b[s], prompts) for s in seeds}
    rng = random.Random(seed)
    boot = []
    for _ in range(resamples):
        sample = rng.choices(prompts, k=len(prompts))
        boot.append(statistics.fmean(_rate(a[s], sample) - _rate(b[s], sample) for s in seeds))
    boot.sort()
    lo, hi = boot[int(0.025 * resamples)], boot[min(resamples - 1, int(0.975 * resamples))]
    only_a = sum(a[s][p] and not b[s][p] for s in seeds for p in prompts)
    only_b = sum(b[s][p] and not a[s][p] for s in seeds for p in prompts)
    return {
        "diff": statistics.fmean(per_seed.values()),
        "ci95": [lo, hi],
        "per_seed": {str(s): v for s, v in per_seed.items()},
        "rate_a": statistics.fmean(_rate(a[s], prompts) for s in seeds),
        "rate_b": statistics.fmean(_rate(b[s], prompts) for s in seeds),
        "n_prompts": len(prompts),
        "seeds": len(seeds),
        "only_a": only_a,
        "only_b": only_b,
    }


def _rate(outcomes: Outcomes, prompts: list[str]) -> float:
    return sum(bool(outcomes[p]) for p in prompts) / len(prompts)
