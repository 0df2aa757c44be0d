"""Direct Imitation Learning (DIL): alignment as density-ratio estimation between chosen and rejected."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from safealign.errors import UserError
from safealign.losses.base import log_ratios, per_token, register_loss, reward_metrics
from safealign.types import LossOutput, PairLogps


@register_loss(
    "dil",
    needs_reference=True,
    paper="Xiao et al. 2025, On a Connection Between Imitation Learning and RLHF (DIL), arXiv:2503.05079",
)
def dil(x: PairLogps, *, variant: Literal["lsif", "ukl", "bce"] = "lsif") -> LossOutput:
    """DIL with a Bregman density-ratio estimator, on per-token-averaged log-ratios c̄ = cl/Lw, r̄ = rl/Ll
    (the density ratio is π/πref; chosen samples play the "expert" distribution, rejected the other):

    - ``lsif``: ``−e^{c̄} + ½ e^{2r̄}`` (least-squares importance fitting)
    - ``ukl``:  ``−c̄ + e^{r̄}`` (unnormalised KL; docs/algorithms.md). The form ``−p̄c + e^{r̄}`` differs by
      the constant p̄ref_c (same gradient); we keep −c̄ so the value is the paper's UKL estimator.
    - ``bce``:  ``−logσ(c̄) − logσ(−r̄)`` (binary classification of chosen vs rejected)

    One name with a ``variant`` parameter (not three names): the estimators share data, reference and
    metrics and differ only in the Bregman function. No β: the paper's objective has none. Rewards: c̄, r̄.
    """
    cl, rl = log_ratios(x)
    c, r = per_token(cl, x.chosen_tokens), per_token(rl, x.rejected_tokens)
    if variant == "lsif":
        losses = -torch.exp(c) + 0.5 * torch.exp(2 * r)
    elif variant == "ukl":
        losses = -c + torch.exp(r)
    elif variant == "bce":
        losses = -F.logsigmoid(c) - F.logsigmoid(-r)
    else:
        raise UserError(f"loss 'dil': variant must be one of 'lsif', 'ukl', 'bce'; got {variant!r}")
    return LossOutput(losses, reward_metrics(c, r))
