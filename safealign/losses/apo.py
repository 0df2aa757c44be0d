"""Anchored Preference Optimization: apo_zero, apo_down."""

from __future__ import annotations

import torch

from safealign.losses.base import log_ratios, register_loss, reward_metrics
from safealign.types import LossOutput, PairLogps

_PAPER = "D'Oosterlinck et al. 2024, Anchored Preference Optimization (APO), arXiv:2408.06266"


@register_loss("apo_zero", needs_reference=True, paper=_PAPER)
def apo_zero(x: PairLogps, *, beta: float = 0.1) -> LossOutput:
    """APO-zero (Eq. 7): ``(1 − σ(β cl)) + σ(β rl)``: raise the chosen likelihood, lower the rejected.

    Use when the chosen responses are better than the model's own outputs. Matches TRL ``apo_zero``.
    """
    cl, rl = log_ratios(x)
    losses = (1 - torch.sigmoid(beta * cl)) + torch.sigmoid(beta * rl)
    return LossOutput(losses, reward_metrics(beta * cl, beta * rl))


@register_loss("apo_down", needs_reference=True, paper=_PAPER)
def apo_down(x: PairLogps, *, beta: float = 0.1) -> LossOutput:
    """APO-down (Eq. 8): ``σ(β cl) + (1 − σ(βΔ))``: lower both, the rejected more.

    Use when the chosen responses are worse than the model's own outputs. Matches TRL ``apo_down``.
    """
    cl, rl = log_ratios(x)
    losses = torch.sigmoid(beta * cl) + (1 - torch.sigmoid(beta * (cl - rl)))
    return LossOutput(losses, reward_metrics(beta * cl, beta * rl))
