"""Alignment via Optimal Transport: aot (paired), aot_unpaired.

Both are batch-level: the loss at slot i compares the i-th smallest values of two batch
distributions, so per-example entries are in *sorted* order, not aligned with the input rows. Only
their mean (what the trainer optimises) is meaningful. The batch is the per-device micro-batch: a batch of
one pair is plain cDPO, so training refuses ``per_device_train_batch_size`` < 2 (``batch_coupled``). An
epoch's last micro-batch holds what is left over and may be a single pair (that one step is cDPO); set
``training_args: {dataloader_drop_last: true}`` to drop it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from safealign.losses.base import Range, log_ratios, register_loss, reward_metrics
from safealign.types import LossOutput, PairLogps

# label smoothing, as cdpo's
_RANGES = {"epsilon": Range(0.0, 0.5, why="a label-flip probability above 0.5 reverses the labels")}
_PAPER = "Melnyk et al. 2024, Distributional Preference Alignment of LLMs via Optimal Transport (AOT), arXiv:2406.05882"


def _smoothed_logistic(delta: Tensor, beta: float, epsilon: float) -> Tensor:
    return -(1 - epsilon) * F.logsigmoid(beta * delta) - epsilon * F.logsigmoid(-beta * delta)


@register_loss("aot", needs_reference=True, paper=_PAPER, ranges=_RANGES, batch_coupled=True)
def aot(x: PairLogps, *, beta: float = 0.1, epsilon: float = 0.0) -> LossOutput:
    """AOT, paired: ``δ_(i) = sort(pc − pr)_(i) − sort(rc − rr)_(i)``, then cDPO on δ:
    ``−(1−ε)logσ(βδ) − ε logσ(−βδ)``.

    First-order stochastic dominance of the policy's margin distribution over the reference's, via the
    1-D optimal transport (sorting) plan. ``epsilon`` is label smoothing. Matches TRL ``aot``.
    """
    cl, rl = log_ratios(x)
    assert x.ref_chosen is not None and x.ref_rejected is not None
    policy_sorted, _ = torch.sort(x.chosen - x.rejected, dim=0)
    ref_sorted, _ = torch.sort(x.ref_chosen - x.ref_rejected, dim=0)
    return LossOutput(
        _smoothed_logistic(policy_sorted - ref_sorted, beta, epsilon), reward_metrics(beta * cl, beta * rl)
    )


@register_loss("aot_unpaired", needs_reference=True, paper=_PAPER, ranges=_RANGES, batch_coupled=True)
def aot_unpaired(x: PairLogps, *, beta: float = 0.1, epsilon: float = 0.0) -> LossOutput:
    """AOT, unpaired: ``δ_(i) = sort(cl)_(i) − sort(rl)_(i)``, then cDPO on δ.

    Dominance of the chosen log-ratio distribution over the rejected one; the pairing inside a row is
    ignored, so chosen and rejected may come from unrelated examples. Still takes :class:`PairLogps`
    (two equally long columns). Matches TRL ``aot_unpaired``.
    """
    cl, rl = log_ratios(x)
    delta = torch.sort(cl, dim=0)[0] - torch.sort(rl, dim=0)[0]
    return LossOutput(_smoothed_logistic(delta, beta, epsilon), reward_metrics(beta * cl, beta * rl))
