"""Losses that pull the log-ratio margin (or each log-ratio) toward a target: hinge, ipo, sppo_hard."""

from __future__ import annotations

import torch

from safealign.losses.base import log_ratios, per_token, register_loss, reward_metrics
from safealign.types import LossOutput, PairLogps


@register_loss("hinge", needs_reference=True, paper="Zhao et al. 2023, SLiC-HF, arXiv:2305.10425")
def hinge(x: PairLogps, *, beta: float = 0.1) -> LossOutput:
    """SLiC hinge on the DPO margin: ``relu(1 − βΔ)``; zero once Δ ≥ 1/β (margin δ = 1/β).

    SLiC's calibration loss uses the policy margin only; applying it to the reference-normalised
    margin Δ follows the DPO paper's/TRL's ``hinge``. Matches TRL ``hinge``.
    """
    cl, rl = log_ratios(x)
    return LossOutput(torch.relu(1 - beta * (cl - rl)), reward_metrics(beta * cl, beta * rl))


@register_loss("ipo", needs_reference=True, paper="Azar et al. 2023, IPO (ΨPO), arXiv:2310.12036")
def ipo(x: PairLogps, *, tau: float = 0.1, length_normalize: bool = True) -> LossOutput:
    """IPO: ``(cl/Lw − rl/Ll − 1/(2τ))²`` (Azar et al. 2023, Eq. 17); minimum at margin 1/(2τ).

    ``tau`` is the regularisation strength (TRL reuses ``beta`` for it). ``length_normalize`` (default,
    as in docs/algorithms.md and TRL 1.16) averages each log-ratio over its response tokens; the paper writes
    sequence-level log-ratios (``length_normalize=False``: ``(cl − rl − 1/(2τ))²``). Rewards are τ times the
    log-ratio the loss uses: τ·cl/Lw by default (TRL logs β·cl), τ·cl without length normalisation.
    """
    cl, rl = log_ratios(x)
    if length_normalize:
        cl, rl = per_token(cl, x.chosen_tokens), per_token(rl, x.rejected_tokens)
    return LossOutput((cl - rl - 1 / (2 * tau)) ** 2, reward_metrics(tau * cl, tau * rl))


@register_loss(
    "sppo_hard", needs_reference=True, paper="Wu et al. 2024, Self-Play Preference Optimization, arXiv:2405.00675"
)
def sppo_hard(x: PairLogps, *, beta: float = 0.1) -> LossOutput:
    """SPPO with hard probabilities: ``(cl − 1/(2β))² + (rl + 1/(2β))²``.

    Algorithm 1, Eq. (4.7) with P(y_w ≻ ·) = 1 and P(y_l ≻ ·) = 0, i.e. target log-ratios ±η/2 with
    η = 1/β; minimised at cl = 1/(2β), rl = −1/(2β). The reference is the previous self-play iterate
    (or the frozen SFT model for one offline round). Matches TRL ``sppo_hard``.
    """
    cl, rl = log_ratios(x)
    losses = (cl - 1 / (2 * beta)) ** 2 + (rl + 1 / (2 * beta)) ** 2
    return LossOutput(losses, reward_metrics(beta * cl, beta * rl))
