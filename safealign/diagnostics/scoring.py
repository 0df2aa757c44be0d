"""Score encoded pairs with a model (no gradients): the policy view, adapter on.

Reference log-probs (adapter off, reference view) come from
:func:`safealign.train.reference.compute_reference_table`; this is its counterpart for the model
being diagnosed, which also needs the response lengths.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from safealign.train.reference import score_in_length_order
from safealign.types import PairLogps


@torch.no_grad()
def score_pairs(
    model: nn.Module,
    encoded: Sequence[Any],
    collate: Callable[[list[Any]], dict[str, Tensor]],
    *,
    batch_size: int = 8,
    chunk_size: int = 1024,
    desc: str = "model log-probs",
) -> PairLogps:
    """Policy log-probs and response lengths of every pair, in ``encoded`` order (``ref_*`` unset)."""
    if not encoded:
        raise ValueError("no pairs to score")
    table = score_in_length_order(model, encoded, collate, reference=False, batch_size=batch_size,
                                  chunk_size=chunk_size, desc=desc)
    return PairLogps(chosen=table[:, 0], rejected=table[:, 1], chosen_tokens=table[:, 2], rejected_tokens=table[:, 3])
