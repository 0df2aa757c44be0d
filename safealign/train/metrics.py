"""Alignment metrics per training step: (sum, count) statistics, gathered across processes.

Every statistic is a sum and a count, so a metric is an example-weighted mean over the logging window
and over processes, and a group absent from a batch (no undesirable example in an unpaired batch)
counts zero instead of producing NaN. The key set of a loss never changes between steps or
processes, which a gather needs.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable

import torch
from torch import Tensor

from safealign.types import PairLogps, TokenLogps, UnpairedLogps

Stats = dict[str, tuple[Tensor, Tensor]]  # name -> (sum, count), 0-d tensors


def _mean_stat(values: Tensor) -> tuple[Tensor, Tensor]:
    values = values.detach().float().reshape(-1)
    return values.sum(), torch.tensor(float(values.numel()), device=values.device)


def ranked_correctly(chosen: Tensor, rejected: Tensor) -> Tensor:
    """``(N,)`` bool: ``chosen ≥ rejected`` (Chen et al. 2024 count ties as correct; docs/algorithms.md). The one
    definition: the training log's ranking accuracy and ``safealign diagnose ranking`` (diagnostics/ranking.py)."""
    return chosen >= rejected


def pair_stats(x: PairLogps, metrics: dict[str, Tensor]) -> Stats:
    """Policy log-probs, ranking accuracy (raw and length-normalised) and the loss's own metrics."""
    chosen, rejected = x.chosen.detach(), x.rejected.detach()
    normalized = ranked_correctly(chosen / x.chosen_tokens.clamp(min=1), rejected / x.rejected_tokens.clamp(min=1))
    stats = {
        "logps/chosen": _mean_stat(chosen),
        "logps/rejected": _mean_stat(rejected),
        "ranking_accuracy": _mean_stat(ranked_correctly(chosen, rejected).float()),
        "ranking_accuracy/normalized": _mean_stat(normalized.float()),
    }
    stats.update({k: _mean_stat(v) for k, v in metrics.items()})
    return stats


def token_stats(x: TokenLogps, metrics: dict[str, Tensor]) -> Stats:
    """The chosen responses' summed log-probs and the loss's own metrics."""
    stats = {"logps/chosen": _mean_stat((x.logps.detach() * x.mask).sum(dim=1))}
    stats.update({k: _mean_stat(v) for k, v in metrics.items()})
    return stats


def unpaired_stats(x: UnpairedLogps, metrics: dict[str, Tensor]) -> Stats:
    """Per-label means: ``logps/chosen`` (desirable) and ``logps/rejected`` (undesirable), and every
    per-example loss metric ``m`` as ``m/chosen`` / ``m/rejected``; the loss's own per-batch group
    means of those (present only when the group is) are replaced by these; other scalars kept."""
    label = x.label.bool()
    per_example = {k: v for k, v in metrics.items() if v.dim() == 1 and v.shape[0] == label.shape[0]}
    stats = _by_label("logps", x.logps, label)
    for name, values in per_example.items():
        stats.update(_by_label(name, values, label))
    for name, value in metrics.items():
        base, _, group = name.rpartition("/")
        if name in per_example or (base in per_example and group in ("chosen", "rejected", "margins")):
            continue
        stats[name] = _mean_stat(value)
    return stats


def _by_label(name: str, values: Tensor, label: Tensor) -> Stats:
    values = values.detach().float()
    return {
        f"{name}/chosen": (values[label].sum(), label.sum().float()),
        f"{name}/rejected": (values[~label].sum(), (~label).sum().float()),
    }


class MetricWindow:
    """Accumulates statistics between two training logs; ``flush`` returns the means and resets."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = defaultdict(float)
        self.counts: dict[str, float] = defaultdict(float)

    def add(self, stats: Stats, gather: Callable[[Tensor], Tensor]) -> None:
        names = sorted(stats)
        local = torch.stack([torch.stack([stats[n][0].float(), stats[n][1].float()]) for n in names])  # (K, 2)
        total = gather(local.unsqueeze(0)).reshape(-1, len(names), 2).sum(0)  # over processes
        for name, (value, count) in zip(names, total.tolist()):
            self.sums[name] += value
            self.counts[name] += count

    def __bool__(self) -> bool:
        return bool(self.counts)

    def flush(self) -> dict[str, float]:
        """Means of every statistic seen with a non-zero count, plus ``m/margins`` = ``m/chosen − m/rejected``
        where a metric has both groups but no margin of its own (unpaired rewards)."""
        out = {n: self.sums[n] / self.counts[n] for n in sorted(self.sums) if self.counts[n] > 0}
        for name in list(out):
            base = name[: -len("/chosen")] if name.endswith("/chosen") else None
            if base and base != "logps" and f"{base}/rejected" in out and f"{base}/margins" not in out:
                out[f"{base}/margins"] = out[name] - out[f"{base}/rejected"]
        self.sums.clear()
        self.counts.clear()
        return out
