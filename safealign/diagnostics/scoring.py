"""Score encoded pairs with the model being diagnosed (no gradients): the policy view, adapter on.

Reference log-probs (adapter off, reference view) come from the training's cached reference table,
:func:`safealign.train.reference.load_or_compute_reference`; this is its counterpart for the model
itself, which also needs the response lengths.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from safealign.checks import at_least
from safealign.errors import UserError
from safealign.models.modes import eval_mode
from safealign.train.logps import pair_logps
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
    """Policy log-probs and response lengths of every pair, in ``encoded`` order (``ref_*`` unset).

    Pairs are batched by length so little compute goes to padding; results are scattered back. The
    model runs in eval mode and is restored afterwards.
    """
    if not encoded:
        raise UserError("no pairs to score")
    at_least("batch_size", batch_size, 1)
    device = next(model.parameters()).device
    order = sorted(range(len(encoded)), key=lambda i: _length(encoded[i]))
    # chosen, rejected, their token counts; NaN until scored, so a row left out can never pass for a score
    table = torch.full((len(encoded), 4), math.nan, dtype=torch.float32)
    written = torch.zeros(len(encoded), dtype=torch.bool)
    with eval_mode(model):
        for start in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch"):
            rows = order[start : start + batch_size]
            batch = {k: v.to(device) for k, v in collate([encoded[i] for i in rows]).items()}
            table[rows] = torch.stack([v.float().cpu() for v in pair_logps(model, batch, chunk_size=chunk_size)], dim=1)
            written[rows] = True
    assert bool(written.all()), f"score_pairs: {int((~written).sum())} of {len(encoded)} pairs were not scored"
    return PairLogps(chosen=table[:, 0], rejected=table[:, 1], chosen_tokens=table[:, 2], rejected_tokens=table[:, 3])


def _length(item: Any) -> int:
    return len(item.prompt_ids) + max(len(item.chosen_ids), len(item.rejected_ids))
