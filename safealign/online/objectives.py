"""Pure tensor math of online training: advantages, KL estimators, the clipped policy-gradient losses, IPO.

Shapes: ``N = P·K`` samples, grouped by prompt (the K samples of a prompt are consecutive); per-token
tensors are ``(N, C)`` over completion positions with ``mask`` 1 on real completion tokens. Formulas and
their sources: docs/online.md. TRL 1.16's RLOOTrainer / GRPOTrainer compute the same numbers for the
identity transform (tests/online/test_trl_crosscheck.py).
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import Tensor

STD_EPS = 1e-4  # TRL's: a group whose rewards are all equal gets advantage 0, not 0/0


def clip_gradients(params: Iterable[Tensor], max_norm: float) -> float:
    """Clip the gradients' total norm to ``max_norm`` and return the norm before clipping. ``max_norm`` 0 is no
    clipping (as the offline trainer and HF's Trainer take it): ``clip_grad_norm_`` with 0 would zero every
    gradient while the returned norm looked healthy (and a negative one would flip them; the configs refuse it)."""
    return float(torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else math.inf))


def rloo_advantages(rewards: Tensor, k: int) -> Tensor:
    """Leave-one-out: ``A_i = R_i − mean_{j≠i} R_j`` within each group of ``k`` (Ahmadian et al. 2024)."""
    grouped = rewards.view(-1, k)
    baseline = (grouped.sum(1, keepdim=True) - grouped) / (k - 1)
    return (grouped - baseline).reshape(-1)


def grpo_advantages(rewards: Tensor, k: int, scale: str = "group") -> Tensor:
    """Group-normalised: ``(r − mean_group)/(std + 1e-4)`` (Shao et al. 2024; std unbiased, as TRL).
    ``scale``: ``group`` std, ``batch`` std, or ``none`` (no division)."""
    grouped = rewards.view(-1, k)
    centred = (grouped - grouped.mean(1, keepdim=True)).reshape(-1)
    if scale == "none":
        return centred
    std = grouped.std(1, keepdim=True).expand_as(grouped).reshape(-1) if scale == "group" else rewards.std()
    return centred / (std + STD_EPS)


def kl_per_token(policy: Tensor, reference: Tensor, estimator: str, clamp: float | None = None) -> Tensor:
    """Per-token KL estimate of π‖πref from samples of π (Schulman's k1 / k3), ``ρ = ℓref − ℓ``:
    k1 = −ρ (unbiased, may be negative), k3 = e^ρ − ρ − 1 (unbiased, ≥ 0). ``clamp`` bounds ρ first: under
    E-RLHF the safety prefix can make the reference far likelier than the policy on some tokens."""
    rho = reference - policy
    if clamp is not None:
        rho = rho.clamp(-clamp, clamp)
    if estimator == "k1":
        return -rho
    if estimator == "k3":
        return torch.exp(rho) - rho - 1
    raise ValueError(f"unknown KL estimator {estimator!r}")


def masked_sum(values: Tensor, mask: Tensor) -> Tensor:
    return (values * mask).sum(-1)


def rloo_loss(logps: Tensor, old_logps: Tensor, advantages: Tensor, mask: Tensor, eps_low: float,
              eps_high: float) -> tuple[Tensor, Tensor]:  # fmt: skip
    """Sequence-level clipped REINFORCE (TRL's RLOO): ``(per-sequence losses (N,), clipped (N,) bool)``.
    ``ratio = exp(Σ_t m ℓ − old)``; with one update per batch it is 1 and this is plain REINFORCE."""
    ratio = torch.exp(masked_sum(logps, mask) - old_logps)
    clipped_ratio = ratio.clamp(1 - eps_low, 1 + eps_high)
    losses = -torch.min(ratio * advantages, clipped_ratio * advantages)
    return losses, _clipped(ratio, advantages, eps_low, eps_high)


def grpo_token_loss(logps: Tensor, old_logps: Tensor, advantages: Tensor, kl: Tensor | None, beta: float,
                    eps_low: float, eps_high: float, kl_ratio: bool = True) -> tuple[Tensor, Tensor]:  # fmt: skip
    """Per-token clipped surrogate plus ``β·kl_t`` (GRPO, TRL's token-level form): ``(loss (N, C), clipped)``.
    ``kl_ratio`` multiplies the KL term by the ratio π/π_old (1 in value, not in gradient): the gradient of
    the k3 term is then the unbiased gradient of each token's reverse KL given its prefix (TRL's
    ``use_bias_correction_kl``, default on) — not the sequence-level KL's, whose credit from later tokens it drops
    (docs/online.md)."""
    ratio = torch.exp(logps - old_logps)
    adv = advantages.unsqueeze(1)
    losses = -torch.min(ratio * adv, ratio.clamp(1 - eps_low, 1 + eps_high) * adv)
    if kl is not None and beta:
        losses = losses + beta * (kl * ratio if kl_ratio else kl)
    return losses, _clipped(ratio, adv, eps_low, eps_high)


def aggregate_tokens(losses: Tensor, mask: Tensor, how: str) -> Tensor:
    """``sequence``: each sequence's token mean, then the mean (TRL ``grpo``); ``token``: the mean over all
    masked tokens of the batch (TRL ``bnpo``)."""
    if how == "sequence":
        return (masked_sum(losses, mask) / mask.sum(-1).clamp(min=1.0)).mean()
    return (losses * mask).sum() / mask.sum().clamp(min=1.0)


def ipo_loss(log_ratios: Tensor, rewards: Tensor, k: int, tau: float, labels: str = "hard",
             total_pairs: int | None = None) -> tuple[Tensor, Tensor]:  # fmt: skip
    """Online IPO (Calandriello et al. 2024, arXiv 2403.08635) over every pair i < j of each group:
    ``(h_ij − (P_ij − ½)/τ)²`` with ``h_ij`` the difference of summed log-ratios log π/πref. ``hard``: P is 1
    or 0 by which sample scored higher (ties are no pair); ``soft``: P = σ(r_i − r_j). Returns (mean loss,
    number of pairs). ``total_pairs``: the pairs of the whole batch this is a micro-batch of; the summed loss is
    divided by it instead, so the micro-batches' losses add up to the batch's mean whatever ties each holds."""
    grouped_h = log_ratios.view(-1, k)
    grouped_r = rewards.view(-1, k)
    i, j = torch.triu_indices(k, k, offset=1)
    h = grouped_h[:, i] - grouped_h[:, j]
    diff = grouped_r[:, i] - grouped_r[:, j]
    if labels == "soft":
        target, keep = torch.sigmoid(diff) - 0.5, torch.ones_like(diff, dtype=torch.bool)
    else:
        target, keep = torch.sign(diff) * 0.5, diff != 0
    losses = (h - target / tau) ** 2
    pairs = keep.sum()
    if pairs == 0 or total_pairs == 0:
        return losses.sum() * 0.0, pairs
    if total_pairs is None:
        return losses[keep].mean(), pairs
    return losses[keep].sum() / total_pairs, pairs


def ipo_pair_count(rewards: Tensor, k: int, labels: str = "hard") -> int:
    """How many pairs :func:`ipo_loss` scores in ``rewards`` (groups of ``k``): all i < j, less ties for ``hard``."""
    grouped = rewards.view(-1, k)
    i, j = torch.triu_indices(k, k, offset=1)
    if labels == "soft":
        return grouped.shape[0] * i.numel()
    return int((grouped[:, i] != grouped[:, j]).sum())


def _clipped(ratio: Tensor, advantages: Tensor, eps_low: float, eps_high: float) -> Tensor:
    return ((ratio < 1 - eps_low) & (advantages < 0)) | ((ratio > 1 + eps_high) & (advantages > 0))
