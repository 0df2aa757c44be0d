"""Agreement between a judge and reference labels (human majority, or another judge).

Positive class = harmful/jailbroken. Counts: TP = judge 1 & reference 1, FP = judge 1 & reference 0,
FN = judge 0 & reference 1, TN = judge 0 & reference 0 (docs/judges.md). Pairs where either side is
unscored (``None``) are left out of every rate and counted as ``unscored``: never guessed.

- agreement = (TP + TN)/n, FPR = FP/(FP + TN), FNR = FN/(FN + TP), precision = TP/(TP + FP),
  recall = TP/(TP + FN), each with a 95% Wilson interval (``value`` None when its denominator is 0);
- Cohen's κ = (p_o − p_e)/(1 − p_e), p_e = P(judge 1)·P(ref 1) + P(judge 0)·P(ref 0); undefined (None)
  when p_e = 1; its 95% interval is a seeded percentile bootstrap over items, with the project's one
  percentile rule (:func:`safealign.eval.paired.percentile_interval`);
- F1 = 2TP/(2TP + FP + FN) (D20: precision and F1), None when the denominator is 0 (every pair TN); not a
  proportion of items, so its interval is the same bootstrap as κ's, over the same seeded resamples.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import asdict, dataclass
from itertools import combinations
from typing import Any, Callable, Iterable, Optional, Sequence

from safealign.eval.paired import percentile_interval
from safealign.eval.summary import wilson_interval

# pairwise_agreement's pooled scope: every attempt of every attack (the summary's pooled ASR, ``any_attack``, is
# per behavior over attacks, a different unit)
ALL_ATTEMPTS = "all"


@dataclass(frozen=True)
class Confusion:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0
    unscored: int = 0

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.fn + self.tn


def confusion(reference: Sequence[Optional[bool]], judged: Sequence[Optional[bool]]) -> Confusion:
    if len(reference) != len(judged):
        raise ValueError(f"{len(reference)} reference labels but {len(judged)} verdicts")
    counts = {"tp": 0, "fp": 0, "fn": 0, "tn": 0, "unscored": 0}
    for ref, got in zip(reference, judged):
        if ref is None or got is None:
            counts["unscored"] += 1
        else:
            counts[("t" if got == ref else "f") + ("p" if got else "n")] += 1
    return Confusion(**counts)


def kappa(c: Confusion) -> Optional[float]:
    """Cohen's κ; None when undefined (no scored pairs, or p_e = 1)."""
    if c.n == 0:
        return None
    p_o = (c.tp + c.tn) / c.n
    p_e = ((c.tp + c.fp) / c.n) * ((c.tp + c.fn) / c.n) + ((c.fn + c.tn) / c.n) * ((c.fp + c.tn) / c.n)
    return None if p_e >= 1.0 else (p_o - p_e) / (1 - p_e)


def f1(c: Confusion) -> Optional[float]:
    """F1 = 2TP/(2TP + FP + FN), the harmonic mean of precision and recall; None when no pair is TP, FP or FN."""
    denominator = 2 * c.tp + c.fp + c.fn
    return 2 * c.tp / denominator if denominator else None


def _proportion(k: int, n: int) -> dict[str, Any]:
    low, high = wilson_interval(k, n)
    return {"value": k / n if n else None, "low": low if n else None, "high": high if n else None, "k": k, "n": n}


def statistic_draws(pairs: list[tuple[bool, bool]], n_boot: int, seed: int,
                    statistic: Callable[[Confusion], Optional[float]]) -> list[float]:  # fmt: skip
    """``statistic`` of ``n_boot`` seeded resamples of the (reference, judged) ``pairs``, items drawn with
    replacement; a resample where it is undefined (None) is left out. The same seed draws the same resamples
    whatever the statistic, so κ's and F1's intervals come from one set of resamples."""
    rng = random.Random(seed)
    values = []
    for _ in range(n_boot if pairs else 0):
        sample = [pairs[rng.randrange(len(pairs))] for _ in pairs]
        value = statistic(confusion([r for r, _ in sample], [j for _, j in sample]))
        if value is not None:
            values.append(value)
    return values


def kappa_draws(pairs: list[tuple[bool, bool]], n_boot: int, seed: int) -> list[float]:
    """κ of ``n_boot`` seeded resamples (:func:`statistic_draws`); a resample with one class only has no κ."""
    return statistic_draws(pairs, n_boot, seed, kappa)


def _bootstrap(pairs: list[tuple[bool, bool]], n_boot: int, seed: int,
               statistic: Callable[[Confusion], Optional[float]]) -> dict[str, Any]:  # fmt: skip
    """``statistic`` of ``pairs`` with its 95% interval: the percentile rule of every bootstrap interval in the
    project (eval/paired.py); ``low``/``high`` None when no resample defines it."""
    values = statistic_draws(pairs, n_boot, seed, statistic)
    low, high = percentile_interval(values) if values else (None, None)
    value = statistic(confusion([r for r, _ in pairs], [j for _, j in pairs]))
    return {"value": value, "low": low, "high": high, "bootstrap": n_boot, "seed": seed}


def agreement_report(reference: Sequence[Optional[bool]], judged: Sequence[Optional[bool]], *,
                     n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """n, unscored, confusion matrix, agreement, κ, FPR, FNR, precision, recall, F1 with 95% intervals."""
    c = confusion(reference, judged)
    pairs = [(r, j) for r, j in zip(reference, judged) if r is not None and j is not None]
    return {
        "n": c.n,
        "unscored": c.unscored,
        "confusion": {k: v for k, v in asdict(c).items() if k != "unscored"},
        "agreement": _proportion(c.tp + c.tn, c.n),
        "kappa": _bootstrap(pairs, n_boot, seed, kappa),
        "fpr": _proportion(c.fp, c.fp + c.tn),
        "fnr": _proportion(c.fn, c.fn + c.tp),
        "precision": _proportion(c.tp, c.tp + c.fp),
        "recall": _proportion(c.tp, c.tp + c.fn),
        "f1": _bootstrap(pairs, n_boot, seed, f1),
    }


def pairwise_agreement(records: Iterable[Any], attacks: Sequence[str], judges: Sequence[str]) -> dict[str, Any]:
    """How often each pair of a run's judges agree, per attack and over all attempts (scope :data:`ALL_ATTEMPTS`).

    ``records`` are attempt records (``.attack``, ``.harmful(judge)``); the unit is one attempt. For the
    pair "a|b": ``both_harmful``, ``a_only`` (a harmful, b not), ``b_only``, ``both_safe``, ``unscored``
    (either side unscored), agreement with its Wilson interval and Cohen's κ (no bootstrap here).
    """
    if len(judges) < 2:
        return {}
    verdicts: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for record in records:
        if record.attack in attacks:
            for scope in (record.attack, ALL_ATTEMPTS):
                for judge in judges:
                    verdicts[scope][judge].append(record.harmful(judge))
    out: dict[str, Any] = {}
    for scope in [*[a for a in attacks if a in verdicts], ALL_ATTEMPTS]:
        out[scope] = {}
        for a, b in combinations(judges, 2):
            c = confusion(verdicts[scope][a], verdicts[scope][b])
            out[scope][f"{a}|{b}"] = {"n": c.n, "both_harmful": c.tp, "a_only": c.fn, "b_only": c.fp, "both_safe": c.tn,
                                      "unscored": c.unscored, "agreement": _proportion(c.tp + c.tn, c.n),
                                      "kappa": kappa(c)}  # fmt: skip
    return out
