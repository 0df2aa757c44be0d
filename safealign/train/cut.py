"""CUT's batched terms: one model, two prompt views of each judged response (docs/seed-methods.md).

The batch comes from :class:`safealign.data.judgment.JudgmentCollator`; the arithmetic is
:func:`safealign.losses.cut.cut_losses`; the trainer objective is ``safealign.train.objectives.cut``.
"""

from __future__ import annotations

from torch import Tensor, nn

from safealign.losses.cut import cut_losses
from safealign.train.logps import token_logps
from safealign.types import LossOutput


def cut_objective(model: nn.Module, batch: dict[str, Tensor], *, positive_score: float = 7.0,
                  threshold: float = 1.1, alpha: float = 1.0, chunk_size: int = 1024) -> LossOutput:
    """Per-example CUT losses; an example with ``score >= positive_score`` is positive (Align-P)."""
    views = []
    for prefix in ("", "judged_"):
        mask = batch[f"{prefix}response_mask"]
        per_position = token_logps(model, batch[f"{prefix}input_ids"], batch[f"{prefix}attention_mask"], mask,
                                   chunk_size=chunk_size)
        rows = mask.bool().nonzero(as_tuple=True)[0]
        views.append((per_position[mask.bool()], rows))  # row-major: the same tokens in the same order
    (plain, rows), (judged, judged_rows) = views
    if plain.shape != judged.shape or not bool((rows == judged_rows).all()):
        raise ValueError("the plain and judgment views of a batch must score the same response tokens")
    losses, metrics = cut_losses(plain, judged, rows, batch["score"] < positive_score, threshold=threshold,
                                 alpha=alpha)
    return LossOutput(losses, metrics)
