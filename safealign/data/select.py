"""Pair selection by response similarity (REAL, Zhang et al. 2024, arXiv 2409.17169; docs/seed-methods.md).

Pure: given each pair's cosine similarity between its two responses, choose which pairs to keep. REAL's
finding is that the most *dissimilar* pairs ("easy") train DPO better than the most similar ("hard") or a
random subset of the same size. Which response is chosen stays as the data's labels say: selection never
re-orients a pair (REAL's released script took the orientation from index order; docs/seed-methods.md).
"""

from __future__ import annotations

import math
import random
from typing import Literal, Sequence

from safealign.errors import UserError

Keep = Literal["easy", "hard", "random"]
KEEP_MODES = ("easy", "hard", "random")


def select_pairs(similarities: Sequence[float], fraction: float, *, keep: Keep = "easy", seed: int = 0) -> list[int]:
    """Positions of the pairs to keep, in their original order.

    ``easy`` keeps the ``fraction`` with the lowest similarity, ``hard`` the highest, ``random`` a
    seeded uniform subset of the same size. The count is ``round(fraction · N)``, at least 1 for N ≥ 1;
    ties are broken by position (the earlier pair first), so the choice is deterministic.
    """
    if not 0 < fraction <= 1 or isinstance(fraction, bool):
        raise UserError(f"REAL selection: fraction must be in (0, 1], got {fraction!r}")
    if keep not in KEEP_MODES:
        raise UserError(f"REAL selection: keep must be one of {', '.join(KEEP_MODES)}, got {keep!r}")
    for i, s in enumerate(similarities):
        if not math.isfinite(s):
            raise UserError(f"REAL selection: similarity of pair {i} is {s}, not a finite number")
    n = len(similarities)
    count = max(1, round(fraction * n)) if n else 0
    order = list(range(n))
    if keep == "random":
        chosen = random.Random(seed).sample(order, count)
    else:
        sign = 1.0 if keep == "easy" else -1.0
        chosen = sorted(order, key=lambda i: (sign * similarities[i], i))[:count]
    return sorted(chosen)
