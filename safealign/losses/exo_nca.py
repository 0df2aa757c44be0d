"""Distribution-matching pairwise losses: exo_pair (reverse-KL to a smoothed label), nca_pair."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from safealign.losses.base import Range, log_ratios, register_loss, reward_metrics
from safealign.types import LossOutput, PairLogps


@register_loss(
    "exo_pair", needs_reference=True, paper="Ji et al. 2024, Efficient Exact Optimization (EXO), arXiv:2402.00856",
    ranges={"epsilon": Range(0.0, 0.5, low_open=True, high_open=True,
                             why="log ε must be finite, and a target smoothing of 0.5 or more makes the target "
                                 "uniform (no preference) or reverses the labels")},
)
def exo_pair(x: PairLogps, *, beta: float = 0.1, epsilon: float = 1e-3) -> LossOutput:
    """EXO-pref, K = 2 (Ji et al. 2024, Eq. 16): KL(q ‖ p) with q = softmax over the pair of βΔ and
    p = (1−ε, ε):  ``σ(βΔ)(logσ(βΔ) − log(1−ε)) + σ(−βΔ)(logσ(−βΔ) − log ε)``.

    ``epsilon`` ∈ (0, ½) smooths the target (ε = 0 makes log ε infinite; ε = ½ makes the target uniform, so the
    loss pulls the margin to 0, and ε > ½ prefers the rejected response, as cdpo's flip rate above ½ does). Matches
    TRL ``exo_pair`` with ``label_smoothing = ε`` (TRL refuses only ε = 0).
    """
    cl, rl = log_ratios(x)
    z = beta * (cl - rl)
    losses = torch.sigmoid(z) * (F.logsigmoid(z) - math.log1p(-epsilon)) + torch.sigmoid(-z) * (
        F.logsigmoid(-z) - math.log(epsilon)
    )
    return LossOutput(losses, reward_metrics(beta * cl, beta * rl))


@register_loss(
    "nca_pair", needs_reference=True, paper="Chen et al. 2024, Noise Contrastive Alignment (NCA), arXiv:2402.05369"
)
def nca_pair(x: PairLogps, *, beta: float = 0.1) -> LossOutput:
    """NCA, pairwise: ``−logσ(β cl) − ½logσ(−β cl) − ½logσ(−β rl)``.

    Optimises absolute log-ratios (not only their difference), so the chosen likelihood is not pushed
    down together with the rejected one. Matches TRL ``nca_pair``.
    """
    cl, rl = log_ratios(x)
    c, r = beta * cl, beta * rl
    losses = -F.logsigmoid(c) - 0.5 * F.logsigmoid(-c) - 0.5 * F.logsigmoid(-r)
    return LossOutput(losses, reward_metrics(c, r))
