"""Reference-free pairwise losses: simpo, orpo, cpo. They accept ``ref_* = None`` (and ignore refs).

Rewards in their metrics are each loss's own implicit reward (documented per loss), not β·(π − ref).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from safealign.losses.base import Range, chosen_nll, per_token, register_loss, reward_metrics
from safealign.types import LossOutput, PairLogps


@register_loss("simpo", needs_reference=False, paper="Meng et al. 2024, SimPO, arXiv:2405.14734")
def simpo(x: PairLogps, *, beta: float = 2.0, gamma: float = 0.5) -> LossOutput:
    """SimPO (Eq. 6): ``−logσ(β(p̄c − p̄r) − γ)`` with p̄ = log-prob averaged over response tokens.

    ``gamma`` is the target reward margin (the paper tunes γ/β); with γ = 0 the loss is symmetric:
    swapping chosen and rejected maps −logσ(u) to −logσ(−u). Rewards: β·p̄.
    """
    c = beta * per_token(x.chosen, x.chosen_tokens)
    r = beta * per_token(x.rejected, x.rejected_tokens)
    return LossOutput(-F.logsigmoid(c - r - gamma), reward_metrics(c, r))


# Averaged log-probs above this are read as it: p̄ = 0 (p = 1, a response the policy is certain of, which float32
# rounding reaches) has an infinite log-odds, and its gradient inf − inf is NaN while the loss stays finite.
MAX_AVG_LOGP = -1e-6


def _log_odds(avg_logps: Tensor) -> Tensor:
    # log(p / (1 − p)) for p = exp(avg_logps) < 1; −expm1 is exact where log1p(−exp) loses digits near 0.
    avg_logps = avg_logps.clamp(max=MAX_AVG_LOGP)
    return avg_logps - torch.log(-torch.expm1(avg_logps))


@register_loss(
    "orpo",
    needs_reference=False,
    paper="Hong et al. 2024, ORPO: Monolithic Preference Optimization without Reference Model, arXiv:2403.07691",
    ranges={"lam": Range(0.0, why="a negative λ rewards ranking the rejected response above the chosen one")},
)
def orpo(x: PairLogps, *, lam: float = 0.1) -> LossOutput:
    """ORPO (Eqs. 6–7): ``NLL_w − λ logσ(log-odds(p̄c) − log-odds(p̄r))``, ``odds(p) = p / (1 − p)``,
    p = exp(p̄), p̄ the per-token-averaged log-prob; NLL_w = −p̄c.

    ``lam`` is the paper's λ (TRL calls it ``beta``). Rewards: the log-odds of each response, the
    quantity ORPO ranks by (TRL logs β·p̄ instead). The log-odds read averaged log-probs above −1e-6 as −1e-6
    (:data:`MAX_AVG_LOGP`): exactly 0 would give an infinite log-odds and a NaN gradient.
    """
    pc, pr = per_token(x.chosen, x.chosen_tokens), per_token(x.rejected, x.rejected_tokens)
    oc, orr = _log_odds(pc), _log_odds(pr)
    ratio = F.logsigmoid(oc - orr)
    losses = chosen_nll(x) - lam * ratio
    return LossOutput(losses, {**reward_metrics(oc, orr), "orpo/log_odds_ratio": ratio.detach()})


@register_loss(
    "cpo", needs_reference=False, paper="Xu et al. 2024, Contrastive Preference Optimization (CPO), arXiv:2401.08417",
    ranges={"alpha": Range(0.0, why="a negative weight rewards raising the chosen NLL: the loss is unbounded below")},
)
def cpo(x: PairLogps, *, beta: float = 0.1, alpha: float = 1.0) -> LossOutput:
    """CPO: ``−logσ(β(pc − pr)) + α · NLL_w`` (the paper's L_prefer + L_NLL, §3), pc/pr summed.

    Deviation: the paper's NLL is the summed log-likelihood of y_w; we use each example's per-token
    average −pc/Lw so α does not scale with length (TRL's CPOTrainer averages over all chosen tokens of
    the batch). Rewards: β·pc.
    """
    c, r = beta * x.chosen, beta * x.rejected
    nll = chosen_nll(x)
    return LossOutput(-F.logsigmoid(c - r) + alpha * nll, {**reward_metrics(c, r), "sft/nll": nll.detach()})
