"""CUT's token-level terms over response-token log-probs (Xu et al., "Reasons to Reject? Aligning Language
Models with Judgments", ACL 2024, arXiv 2312.14591; docs/seed-methods.md).

Pure: the caller scores the same response tokens after the plain prompt x and the judgment view [x; j]
(safealign/data/judgment.py) and passes the flat per-token log-probs. Per example:

- positive (score ≥ ``positive_score``), **Align-P**: mean token NLL of y after x;
- negative, **Align-N**: mean token NLL of y after [x; j]; **misalign**: after x, a token whose probability
  the judgment raises by more than ``threshold`` (``p(y_t|x,j,y<t) / p(y_t|x,y<t) > threshold``, detached) is
  judged inappropriate and gets the unlikelihood ``−alpha·log(1 − p(y_t|x,y<t))``, every other token the
  plain NLL; the example's loss is ``(Align-N + mean_t misalign_t) / 2``.

Departure from the official code (wwxu21/CUT): there, a batch's loss is ``(token-mean NLL over every "first"
sequence + token-mean misalign) / 2`` when the batch holds negatives and the plain NLL otherwise, so a
positive example's weight depends on what else is in its batch. Here each example's loss depends on itself
only (positives are not halved) and the batch mean is over examples.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

EPS = 1e-5  # inside log(1 − p), as the official code: p rounds to 1 in float32 for confident tokens


def cut_losses(plain_logps: Tensor, judged_logps: Tensor, rows: Tensor, negative: Tensor, *,
               threshold: float = 1.1, alpha: float = 1.0) -> tuple[Tensor, dict[str, Tensor]]:
    """Per-example CUT losses ``(B,)`` and metrics.

    ``plain_logps``/``judged_logps``: ``(P,)`` log-probs of the same response tokens after x and after
    [x; j]; ``rows``: ``(P,)`` the example each token belongs to; ``negative``: ``(B,)`` bool.
    """
    b = negative.shape[0]
    counts = torch.bincount(rows, minlength=b).to(plain_logps.dtype).clamp(min=1)

    def mean(per_token: Tensor) -> Tensor:
        return per_token.new_zeros(b).index_add(0, rows, per_token) / counts

    flagged = (judged_logps - plain_logps).detach() > math.log(threshold)
    unlikelihood = -alpha * torch.log1p(-plain_logps.exp() + EPS)
    misalign = torch.where(flagged, unlikelihood, -plain_logps)
    align_p, align_n, misalign_mean = mean(-plain_logps), mean(-judged_logps), mean(misalign)
    losses = torch.where(negative, 0.5 * (align_n + misalign_mean), align_p)
    neg_tokens = negative[rows]
    # per-example (or per-token) values of the subset they describe, possibly empty: a logging window
    # averages them over the examples it saw (safealign/train/metrics.py), never over a NaN
    metrics = {
        "cut/align_p": align_p.detach()[~negative],
        "cut/align_n": align_n.detach()[negative],
        "cut/misalign": misalign_mean.detach()[negative],
        "cut/flagged_fraction": flagged[neg_tokens].float(),
        "cut/negative_fraction": negative.float(),
    }
    return losses, metrics
