"""MAH-DPO as a trainer objective: DPO per attribute, each attribute's pairs scored by its own LM head
(Shen, Xia, Chang, Ammanabrolu 2025, arXiv 2510.01167; docs/seed-methods.md).

Policy log-probs of pair i come from head ``head[i]`` on the shared backbone
(:func:`safealign.train.logps.routed_sequence_logps`). The reference is the frozen starting model with
*unperturbed* heads; every extra head starts as a copy of head 0, so each reference head is the starting
model's own head and the reference log-probs are the ordinary ones (the reference cache serves them). The
loss is the mean over the attributes present in the batch of each attribute's mean DPO loss (the official
``mahdpo_trainers.py``); per-example values are scaled so that their plain mean is that quantity.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from safealign.errors import UserError
from safealign.models.heads import base_model, lm_heads
from safealign.train.logps import head_split_problem, routed_sequence_logps


def processes() -> int:
    """How many processes train together: ``WORLD_SIZE`` (torchrun, accelerate launch) or the started process
    group, whichever is larger."""
    try:
        env = int(os.environ.get("WORLD_SIZE", "1") or 1)
    except ValueError:
        env = 1
    dist = torch.distributed
    started = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    return max(env, started)


def require_one_process() -> None:
    """UserError when several processes train: the routed heads run the decoder and heads directly, under the
    DDP/FSDP wrapper, whose forward then never runs, so its gradients are never all-reduced."""
    n = processes()
    if n > 1:
        raise UserError(f"objective 'mah_dpo' trains in one process only, and this run has {n} (WORLD_SIZE / "
                        "torch.distributed): it scores each pair with its attribute's head by calling the shared "
                        "decoder and the heads directly, not through the DDP/FSDP wrapper's forward, so the "
                        "gradients would never be synchronised and every process would train its own copy apart. "
                        "Launch it as a single process (docs/seed-methods.md)")


def require_routable(model: nn.Module, input_ids: Tensor, attention_mask: Tensor) -> None:
    """UserError unless the model's logits are ``lm_head(decoder(x))``: routed log-probs apply each head to the
    decoder's last hidden state, so a transform between the decoder and the head (Gemma-2's final logit
    soft-capping, a logit scale, ...) would score the policy on other logits than the reference cache."""
    problem = head_split_problem(model, input_ids, attention_mask)
    if problem is not None:
        raise UserError(f"objective 'mah_dpo' applies each attribute's head to the decoder's last hidden state, "
                        f"which matches the model's own logits only when they are lm_head(decoder(x)); "
                        f"{type(base_model(model)).__name__} is not such a model: {problem}. Train MAH-DPO on a "
                        "model without a logit transform (docs/seed-methods.md)")


def routed_pair_logps(model: nn.Module, batch: dict[str, Tensor], *, chunk_size: int = 1024
                      ) -> tuple[Tensor, Tensor]:
    """(chosen, rejected) summed log-probs ``(B,)``, pair i's both sides under head ``batch["head"][i]``.

    Refused (UserError) under several processes (:func:`require_one_process`) and for a model whose logits are
    not ``lm_head(decoder(x))`` (:func:`require_routable`)."""
    require_one_process()
    require_routable(model, batch["input_ids"], batch["attention_mask"])
    heads = lm_heads(model)
    head = batch["head"]
    if int(head.max()) >= len(heads) or int(head.min()) < 0:
        raise ValueError(f"a pair is routed to head {int(head.max())} but the model has {len(heads)} heads")
    decoder = base_model(model).get_decoder()
    out = routed_sequence_logps(decoder, heads, torch.cat([head, head]), batch["input_ids"], batch["attention_mask"],
                                batch["response_mask"], chunk_size=chunk_size)
    b = head.shape[0]
    return out.logps[:b], out.logps[b:]


def mah_dpo_losses(chosen: Tensor, rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor, head: Tensor, *,
                   beta: float, heads: int) -> tuple[Tensor, dict[str, Tensor]]:
    """Per-example values whose mean is ``(1/K_b) Σ_k mean_{i: head_i = k} −logσ(β Δ_i)`` over the ``K_b`` heads
    present in the batch, and metrics: per head ``k < heads``, each of its pairs' reward accuracy and DPO loss
    (empty for a head with no pair in the batch, so a logging window averages over the pairs it saw)."""
    margin = (chosen - ref_chosen) - (rejected - ref_rejected)
    dpo = -F.logsigmoid(beta * margin)
    present, counts = head.unique(return_counts=True)
    per_head_count = torch.zeros(heads, dtype=dpo.dtype, device=dpo.device)
    per_head_count[present] = counts.to(dpo.dtype)
    weights = head.shape[0] / (present.numel() * per_head_count[head])
    metrics = {"rewards/margins": (beta * margin).detach(), "rewards/accuracies": (margin > 0).float()}
    for k in range(heads):
        sel = head == k
        metrics[f"head{k}/accuracy"] = (margin[sel] > 0).float()
        metrics[f"head{k}/dpo_loss"] = dpo[sel].detach()
    return dpo * weights, metrics
