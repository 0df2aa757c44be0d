"""CUT's batched terms: one model, two prompt views of each negative response, the plain one of each positive
(docs/seed-methods.md).

The batch comes from :class:`safealign.data.judgment.JudgmentCollator`; the arithmetic is
:func:`safealign.losses.cut.cut_losses`; the trainer objective is ``safealign.train.objectives.cut``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from safealign.losses.cut import cut_losses
from safealign.train.logps import token_logps
from safealign.types import LossOutput


def cut_objective(model: nn.Module, batch: dict[str, Tensor], *, positive_score: float = 7.0,
                  threshold: float = 1.1, alpha: float = 1.0, chunk_size: int = 1024) -> LossOutput:
    """Per-example CUT losses; an example with ``score >= positive_score`` is positive (Align-P).

    Only the negatives (``batch["judged_rows"]``) are scored after their judgment: a positive's loss reads the
    plain view alone, so its judgment-view slot holds the detached plain log-probs, which no term it keeps uses."""
    negative = batch["score"] < positive_score
    plain, rows = _view(model, batch, "", chunk_size)
    if not torch.equal(batch["judged_rows"].to(negative.device), negative.nonzero().flatten()):
        raise ValueError(f"the judgment view must cover exactly the negatives (score < {positive_score:g}): encode the "
                         "rows with the objective's positive_score")
    judged = plain.detach()
    if len(batch["judged_rows"]):
        scored, judged_rows = _view(model, batch, "judged_", chunk_size)
        tokens = negative[rows]  # the negatives' plain tokens, row-major as the judgment view lists them
        if scored.shape[0] != int(tokens.sum()) or not torch.equal(batch["judged_rows"][judged_rows], rows[tokens]):
            raise ValueError("the plain and judgment views of a batch must score the same response tokens")
        judged = judged.masked_scatter(tokens, scored)
    losses, metrics = cut_losses(plain, judged, rows, negative, threshold=threshold, alpha=alpha)
    return LossOutput(losses, metrics)


def _view(model: nn.Module, batch: dict[str, Tensor], prefix: str, chunk_size: int) -> tuple[Tensor, Tensor]:
    """The response tokens' log-probs after one prompt view, flat and row-major, and the row of each."""
    mask = batch[f"{prefix}response_mask"].bool()
    per_position = token_logps(model, batch[f"{prefix}input_ids"], batch[f"{prefix}attention_mask"], mask,
                               chunk_size=chunk_size)
    return per_position[mask], mask.nonzero(as_tuple=True)[0]
