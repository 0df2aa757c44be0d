"""Per-token log-probs of a pair batch's chosen responses, for losses over each token (``input="token"``).

The chosen rows are the first B rows of a pair batch. Their response tokens are left-aligned into ``(B, L)``
so that column t is response token t in the policy view and in the reference view alike, although a
reference prompt (the E-variant's safety prefix) shifts the tokens' positions in the sequence.
"""

from __future__ import annotations

import contextlib
from typing import Mapping

import torch
from torch import Tensor, nn

from safealign.errors import UserError
from safealign.models.modes import eval_mode
from safealign.train.logps import token_logps
from safealign.train.reference import adapter_disabled

_VIEW = ("input_ids", "attention_mask", "response_mask")


def left_aligned(per_position: Tensor, response_mask: Tensor) -> tuple[Tensor, Tensor]:
    """``(values, mask)``, each ``(N, L)``: row i's response tokens in order from column 0, L the longest response.

    ``per_position`` is ``token_logps``' output: the log-prob of token t at column t, 0 elsewhere."""
    mask = response_mask.bool()
    lengths = mask.sum(dim=1)
    width = int(lengths.max().item()) if mask.numel() else 0
    columns = (mask.cumsum(dim=1) - 1)[mask]  # each response token's index within its response
    rows = mask.nonzero(as_tuple=True)[0]
    values = per_position.new_zeros(mask.shape[0], width).index_put((rows, columns), per_position[mask])
    aligned_mask = torch.arange(width, device=mask.device)[None, :] < lengths[:, None]
    return values, aligned_mask


def chosen_token_logps(model: nn.Module, batch: Mapping[str, Tensor], *, reference: bool = False,
                       chunk_size: int = 1024, impl: str = "fused") -> tuple[Tensor, Tensor]:
    """Left-aligned ``(logps, mask)`` of the chosen responses; ``reference=True`` scores the ``ref_`` view
    when the batch has one, without gradients."""
    b = batch["index"].shape[0]
    if "sequence_index" in batch:  # packed rows hold chosen and rejected together
        raise UserError("a per-token loss reads unpacked pair batches: set packing off")
    prefix = "ref_" if reference and "ref_input_ids" in batch else ""
    ids, attention, response = (batch[prefix + k][:b] for k in _VIEW)
    targets = batch.get("target_ids")
    if targets is not None and prefix:
        raise ValueError("a batch with target_ids has no reference-view targets")
    with torch.no_grad() if reference else contextlib.nullcontext():
        per_position = token_logps(model, ids, attention, response, chunk_size=chunk_size, impl=impl,
                                   target_ids=None if targets is None else targets[:b])
    return left_aligned(per_position, response)


@torch.no_grad()
def reference_token_logps(live, policy: nn.Module, batch: Mapping[str, Tensor]) -> Tensor:
    """The live reference's left-aligned chosen-token log-probs (``live``: a ``LiveReference``)."""
    if live.model is not None:
        return chosen_token_logps(live.model, batch, reference=True, chunk_size=live.chunk_size, impl=live.impl)[0]
    # eval mode: the policy trains with dropout on, but its starting weights must score like a fixed reference
    with adapter_disabled(policy), eval_mode(policy):
        return chosen_token_logps(policy, batch, reference=True, chunk_size=live.chunk_size, impl=live.impl)[0]
