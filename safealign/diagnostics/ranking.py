"""Ranking accuracy and idealized ranking accuracy (Chen et al. 2024, arXiv:2405.19534).

Notation (docs/algorithms.md, "Ranking accuracy"): pc, pr = summed log-probs of chosen / rejected under the
model scored; rc, rr = the same under the reference.

- Ranking accuracy ``R = mean 1[pc ≥ pr]`` (the paper's ``≥``), also length-normalised
  (``pc/Lw ≥ pr/Ll``).
- Idealized ranking accuracy of a perfect DPO/RLHF optimum (the paper's Thm 3.1):
  ``R* = mean 1[(rc − rr) + (1/β) log(α/(1−α)) > 0]``, α = share of raters preferring y_w. A data set
  without a rater-agreement column gets α = 1 − ε (α = 1 would make every pair rankable).
- Difficulty ``c = rr − rc`` (> 0: the reference mis-ranks the pair); a pair ends up ranked correctly
  iff its DPO loss ≤ ``softplus(−βc)``.
- Of the pairs the reference mis-ranks, the share the model ranks correctly ("fixed").

Pure functions over :class:`~safealign.types.PairLogps`; scoring a model lives in
:mod:`safealign.diagnostics.scoring`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from safealign.diagnostics.stats import median
from safealign.errors import UserError
from safealign.io import finite_or_none
from safealign.losses.base import per_token
from safealign.train.metrics import ranked_correctly
from safealign.types import PairLogps

DEFAULT_EPSILON = 0.1


def ranking_accuracy(x: PairLogps) -> dict[str, float]:
    """``{"summed": R, "normalized": R on per-token log-probs}`` of the policy log-probs in ``x``."""
    _check_nonempty(x.chosen)
    summed = ranked_correctly(x.chosen, x.rejected).double().mean().item()
    normalized = ranked_correctly(per_token(x.chosen, x.chosen_tokens), per_token(x.rejected, x.rejected_tokens))
    return {"summed": summed, "normalized": normalized.double().mean().item()}


def rater_alpha(n: int, alpha: Tensor | float | None = None, *, epsilon: float = DEFAULT_EPSILON) -> Tensor:
    """Rater agreement ``(N,)`` with unanimity replaced by ε noise (docs/algorithms.md, ranking accuracy): α = 1
    becomes 1 − ε (and α = 0 becomes ε, its mirror), every other α is kept; ``None`` means unanimous raters."""
    if not 0.0 < epsilon < 0.5:
        raise UserError(f"epsilon must be in (0, 0.5), got {epsilon}")
    if alpha is None:
        alpha = 1.0
    values = torch.as_tensor(alpha, dtype=torch.float64).expand(n).clone()
    if bool(((values < 0) | (values > 1) | values.isnan()).any()):
        bad = ((values < 0) | (values > 1) | values.isnan()).nonzero().flatten()[:5].tolist()
        raise UserError(f"rater agreement alpha must lie in [0, 1]; rows {bad} do not")
    return torch.where(values == 1.0, 1.0 - epsilon, torch.where(values == 0.0, epsilon, values))


def idealized_correct(ref_chosen: Tensor, ref_rejected: Tensor, *, beta: float, alpha: Tensor) -> Tensor:
    """``(N,)`` bool: would the pair be ranked correctly at the exact DPO/RLHF optimum (Thm 3.1)?"""
    if beta <= 0:
        raise UserError(f"beta must be positive, got {beta}")
    shift = torch.log(alpha / (1 - alpha)) / beta  # (N,) float64
    return (ref_chosen.double() - ref_rejected.double()) + shift > 0


def difficulty(ref_chosen: Tensor, ref_rejected: Tensor) -> Tensor:
    """Pair difficulty ``c = rr − rc`` ``(N,)``: positive when the reference prefers the rejected response."""
    return ref_rejected.double() - ref_chosen.double()


def dpo_loss_threshold(c: Tensor, *, beta: float) -> Tensor:
    """``softplus(−βc)`` ``(N,)``: a pair is ranked correctly iff its DPO loss is at most this."""
    return F.softplus(-beta * c)


def dpo_pair_losses(x: PairLogps, *, beta: float) -> Tensor:
    """Per-pair DPO loss ``(N,)`` from the registered ``dpo`` loss (one definition of DPO)."""
    from safealign.losses import get_loss

    return get_loss("dpo")(x, beta=beta).losses.detach()


@dataclass(frozen=True)
class RankingReport:
    """Per-pair and aggregate ranking figures. ``ref_*`` fields are None without reference log-probs."""

    logps: PairLogps
    beta: float
    alpha: Tensor | None  # (N,) clipped rater agreement
    epsilon: float

    def summary(self) -> dict[str, Any]:
        x = self.logps
        out: dict[str, Any] = {"pairs": int(x.chosen.shape[0]), "beta": self.beta, "epsilon": self.epsilon}
        out["ranking_accuracy"] = ranking_accuracy(x)
        if x.ref_chosen is None or x.ref_rejected is None:
            return out
        ref = PairLogps(x.ref_chosen, x.ref_rejected, x.chosen_tokens, x.rejected_tokens)
        assert self.alpha is not None
        c = difficulty(x.ref_chosen, x.ref_rejected)
        out["reference_ranking_accuracy"] = ranking_accuracy(ref)
        out["alpha_mean"] = self.alpha.mean().item()
        out["idealized_ranking_accuracy"] = (
            idealized_correct(x.ref_chosen, x.ref_rejected, beta=self.beta, alpha=self.alpha).double().mean().item()
        )
        out["difficulty"] = {
            "mean": c.mean().item(),
            "median": median(c),
            "share_positive": (c > 0).double().mean().item(),
        }
        out["dpo_loss_mean"] = dpo_pair_losses(x, beta=self.beta).double().mean().item()
        out.update(fixed_by_model(x))
        return out

    def pairs(self) -> list[dict[str, Any]]:
        """One JSON-ready dict per pair, in input order."""
        x = self.logps
        rows: dict[str, Tensor] = {
            "chosen_logps": x.chosen, "rejected_logps": x.rejected,
            "chosen_tokens": x.chosen_tokens, "rejected_tokens": x.rejected_tokens,
            "correct": ranked_correctly(x.chosen, x.rejected),
            "correct_normalized": ranked_correctly(per_token(x.chosen, x.chosen_tokens),
                                                   per_token(x.rejected, x.rejected_tokens)),
        }
        if x.ref_chosen is not None and x.ref_rejected is not None and self.alpha is not None:
            c = difficulty(x.ref_chosen, x.ref_rejected)
            rows.update({
                "ref_chosen_logps": x.ref_chosen, "ref_rejected_logps": x.ref_rejected, "alpha": self.alpha,
                "difficulty": c, "dpo_loss": dpo_pair_losses(x, beta=self.beta),
                "dpo_loss_threshold": dpo_loss_threshold(c, beta=self.beta),
                "idealized_correct": idealized_correct(x.ref_chosen, x.ref_rejected, beta=self.beta, alpha=self.alpha),
            })
        columns = {k: v.detach().cpu().tolist() for k, v in rows.items()}
        return [{k: finite_or_none(columns[k][i]) for k in columns} for i in range(int(x.chosen.shape[0]))]


def ranking_report(x: PairLogps, *, beta: float = 0.1, alpha: Tensor | float | None = None,
                   epsilon: float = DEFAULT_EPSILON) -> RankingReport:
    """Bundle the model's (and optionally the reference's) log-probs with β and α for reporting."""
    _check_nonempty(x.chosen)
    if beta <= 0:
        raise UserError(f"beta must be positive, got {beta}")
    has_ref = x.ref_chosen is not None and x.ref_rejected is not None
    alphas = rater_alpha(int(x.chosen.shape[0]), alpha, epsilon=epsilon) if has_ref else None
    return RankingReport(logps=x, beta=beta, alpha=alphas, epsilon=epsilon)


def fixed_by_model(x: PairLogps) -> dict[str, Any]:
    """Of the pairs the reference mis-ranks (rc < rr), how many the model ranks correctly (pc ≥ pr).

    Also the converse: pairs the reference ranks correctly that the model now mis-ranks ("broken").
    Shares are None when their denominator is empty.
    """
    assert x.ref_chosen is not None and x.ref_rejected is not None
    ref_ok = ranked_correctly(x.ref_chosen, x.ref_rejected)
    ok = ranked_correctly(x.chosen, x.rejected)
    misranked, ranked = int((~ref_ok).sum()), int(ref_ok.sum())
    fixed, broken = int((~ref_ok & ok).sum()), int((ref_ok & ~ok).sum())
    return {
        "reference_misranked": misranked, "fixed": fixed, "fixed_share": fixed / misranked if misranked else None,
        "reference_ranked": ranked, "broken": broken, "broken_share": broken / ranked if ranked else None,
    }


def _check_nonempty(t: Tensor) -> None:
    if t.numel() == 0:
        raise UserError("no pairs to rank")
