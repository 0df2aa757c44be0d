"""Pairwise-normalised updates (Yuan et al., arXiv:2410.13828, §"pairwise normalised gradient descent").

A margin loss moves the weights along ``a·g_w + b·g_l`` per pair (``a = ∂L/∂log πθ(y_w|x)``,
``b = ∂L/∂log πθ(y_l|x)``, ``g`` the log-prob gradients). When ``g_w`` and ``g_l`` are entangled
(⟨g_w,g_l⟩ > ‖g_w‖²), a descent step lowers the chosen log-prob together with the rejected one. The
paper's remedy normalises each direction: ``θ ← θ + η(g_w/‖g_w‖ − g_l/‖g_l‖)``. To first order the
chosen log-prob then changes by ``η‖g_w‖(1 − cos)`` ≥ 0 and the rejected one by ``−η‖g_l‖(1 − cos)``
≤ 0, whatever the entanglement.

Here the normalisation wraps any pair loss: each pair keeps the loss's own weights ``a_i`` and ``b_i``
(for DPO ``∓β·σ(−β·margin)``), and only the directions are normalised, so the update is
``−Σ_i (a_i g_w,i/‖g_w,i‖ + b_i g_l,i/‖g_l,i‖)``. With DPO this is the paper's update weighted by how
wrong each pair still is. Per-pair norms are over the trainable parameters and cost one extra forward
and two extra backward passes per pair (about twice the price of a plain step). Gradient norms are
O(1–100) while the normalised directions are unit vectors, so the learning rate means something
different than in a plain run; the logged loss is the loss itself.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

from safealign.train.grads import pair_entanglement

# target_ids: DeRTa's transition rows score another token at each position, and the loss differentiates that
POLICY_KEYS = ("input_ids", "attention_mask", "response_mask", "position_ids", "target_ids")


def single_pair(batch: Mapping[str, Tensor], i: int) -> dict[str, Tensor]:
    """Pair ``i`` of a collated pair batch (rows ``i`` and ``B + i``) with every key the policy is scored on, so it
    scores as in the batch; trailing all-padding columns trimmed (leading ones are kept: without position ids a
    model numbers positions from the first column)."""
    b = batch["input_ids"].shape[0] // 2
    rows = torch.tensor([i, b + i], device=batch["input_ids"].device)
    pair = {k: batch[k].index_select(0, rows) for k in POLICY_KEYS if batch.get(k) is not None}
    used = pair["attention_mask"].bool().any(dim=0).nonzero().flatten()
    last = int(used.max()) + 1
    return {k: v[:, :last] for k, v in pair.items()}


def pair_gradient_norms(model: nn.Module, batch: Mapping[str, Tensor], params: Sequence[nn.Parameter], *,
                        chunk_size: int = 1024) -> tuple[Tensor, Tensor]:
    """``(‖g_w‖, ‖g_l‖)``, each ``(B,)`` float32: per-pair log-prob gradient norms over ``params``."""
    b = batch["input_ids"].shape[0] // 2
    norms = [pair_entanglement(model, single_pair(batch, i), params, chunk_size=chunk_size) for i in range(b)]
    device = batch["input_ids"].device
    chosen = torch.tensor([n.chosen_norm for n in norms], dtype=torch.float32, device=device)
    rejected = torch.tensor([n.rejected_norm for n in norms], dtype=torch.float32, device=device)
    return chosen, rejected


def normalized_objective(loss: Tensor, chosen: Tensor, rejected: Tensor, chosen_norm: Tensor,
                         rejected_norm: Tensor, eps: float = 1e-12) -> Tensor:
    """A tensor whose value is ``loss`` and whose gradient is ``Σ_i a_i g_w,i/‖g_w,i‖ + b_i g_l,i/‖g_l,i‖``.

    ``a = ∂loss/∂chosen`` and ``b = ∂loss/∂rejected`` are taken from the loss's graph (kept for the
    backward pass); ``chosen``/``rejected`` are the policy log-probs ``(B,)`` the loss was computed from.
    """
    a, b = torch.autograd.grad(loss, (chosen, rejected), retain_graph=True, allow_unused=True)
    a = torch.zeros_like(chosen) if a is None else a
    b = torch.zeros_like(rejected) if b is None else b
    surrogate = ((a / chosen_norm.clamp_min(eps)).detach() * chosen
                 + (b / rejected_norm.clamp_min(eps)).detach() * rejected).sum()
    return loss.detach() + surrogate - surrogate.detach()
