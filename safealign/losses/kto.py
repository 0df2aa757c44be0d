"""Kahneman–Tversky Optimization on unpaired (desirable / undesirable) examples."""

from __future__ import annotations

import torch
from torch import Tensor

from safealign.losses.base import Range, as_tensor, register_loss
from safealign.types import LossOutput, UnpairedLogps


def unpaired_metrics(rewards: Tensor, label: Tensor) -> dict[str, Tensor]:
    """Per-example ``rewards`` (B,) plus scalar group means; a group absent from the batch is omitted
    (never NaN), and ``rewards/margins`` needs both groups."""
    r = rewards.detach()
    out: dict[str, Tensor] = {"rewards": r}
    if label.any():
        out["rewards/chosen"] = r[label].mean()
    if (~label).any():
        out["rewards/rejected"] = r[~label].mean()
    if "rewards/chosen" in out and "rewards/rejected" in out:
        out["rewards/margins"] = out["rewards/chosen"] - out["rewards/rejected"]
    return out


def kl_estimate(x: UnpairedLogps) -> Tensor:
    """KTO's reference point z = max(0, mean(kl_logps − ref_kl_logps)), detached.

    ``kl_logps``/``ref_kl_logps`` score mismatched (prompt, completion) pairs (e.g. completions shifted
    by one within the batch). For a global estimate under DDP, gather those two columns across
    processes before building :class:`UnpairedLogps` (PreferenceTrainer does; their length may then differ
    from the batch's), or pass ``kl=`` explicitly.
    """
    if x.kl_logps is None or x.ref_kl_logps is None:
        raise ValueError(
            "loss 'kto' needs a KL reference point: supply UnpairedLogps.kl_logps and ref_kl_logps "
            "(log-probs of mismatched completions) or set the parameter kl (e.g. kl=0.0)"
        )
    if x.kl_logps.shape != x.ref_kl_logps.shape:
        raise ValueError(
            f"loss 'kto': kl_logps {tuple(x.kl_logps.shape)} and ref_kl_logps "
            f"{tuple(x.ref_kl_logps.shape)} must score the same mismatched sequences"
        )
    return (x.kl_logps - x.ref_kl_logps).detach().mean().clamp(min=0)


@register_loss(
    "kto",
    needs_reference=True,
    paper="Ethayarajh et al. 2024, KTO: Model Alignment as Prospect Theoretic Optimization, arXiv:2402.01306",
    input="unpaired",
    needs_kl_partners=True,
    ranges={"desirable_weight": Range(0.0), "undesirable_weight": Range(0.0),
            "kl": Range(0.0, why="the reference point z is a KL estimate, clamped at 0 when estimated")},
)
def kto(
    x: UnpairedLogps,
    *,
    beta: float = 0.1,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
    kl: float | None = None,
) -> LossOutput:
    """KTO (Eqs. 7–8): with r = logps − ref_logps and reference point z,
    desirable ``λD(1 − σ(β(r − z)))``, undesirable ``λU(1 − σ(β(z − r)))``.

    z is ``kl`` when given, otherwise :func:`kl_estimate` on ``x.kl_logps``/``x.ref_kl_logps`` (detached,
    clamped at 0, as in the paper's implementation). ``desirable_weight``/``undesirable_weight`` are
    λD/λU (the paper keeps λD·n_D / (λU·n_U) in [1, 4/3]). Per-example losses in input order.
    """
    z = kl_estimate(x) if kl is None else as_tensor(kl, x.logps)
    assert x.ref_logps is not None
    r = x.logps - x.ref_logps
    label = x.label.bool()
    desirable = desirable_weight * (1 - torch.sigmoid(beta * (r - z)))
    undesirable = undesirable_weight * (1 - torch.sigmoid(beta * (z - r)))
    losses = torch.where(label, desirable, undesirable)
    return LossOutput(losses, {**unpaired_metrics(beta * r, label), "kto/kl": z.detach()})
