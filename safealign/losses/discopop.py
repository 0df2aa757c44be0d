"""DiscoPOP: the discovered log-ratio modulated loss (LRML)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from safealign.losses.base import log_ratios, register_loss, reward_metrics
from safealign.types import LossOutput, PairLogps


@register_loss(
    "discopop",
    needs_reference=True,
    paper="Chris Lu et al. 2024, Discovering Preference Optimization Algorithms (DiscoPOP), arXiv:2406.08414",
)
def discopop(x: PairLogps, *, beta: float = 0.05, tau: float = 0.05) -> LossOutput:
    """LRML (Eq. 5): ``z = βΔ, m = σ(z/τ)``, loss ``−logσ(z)(1 − m) + e^{−z} m``.

    Blends the logistic (DPO) and exponential losses depending on the margin; the paper's defaults are
    β = 0.05, τ = 0.05. Matches TRL ``discopop`` (its ``beta`` and ``discopop_tau``).
    """
    cl, rl = log_ratios(x)
    z = beta * (cl - rl)
    m = torch.sigmoid(z / tau)
    # e^{−z}·m as exp(−z + logσ(z/τ)): the product overflows to inf·0 = NaN once z < −88 in float32
    exponential = torch.exp(-z + F.logsigmoid(z / tau))
    return LossOutput(-F.logsigmoid(z) * (1 - m) + exponential, reward_metrics(beta * cl, beta * rl))
