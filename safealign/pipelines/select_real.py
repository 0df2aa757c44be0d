"""``safealign data select --method real``: keep the pairs whose two responses differ most (REAL).

REAL (Zhang, Zhao, Molybog, Zhang 2024, arXiv 2409.17169; docs/seed-methods.md) embeds each response
with a language model (:func:`safealign.train.embed.embed_texts`), takes the cosine similarity of a pair's
two responses and keeps the most dissimilar fraction before any training. The output is the source rows
that were kept, unchanged apart from a ``real_similarity`` column, so it trains with the same recipe as the
full file. A pair's orientation comes from its labels (chosen / rejected), never from the similarity.
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

from safealign.checks import at_least
from safealign.data import load_preferences
from safealign.data.select import Keep, select_pairs
from safealign.data.sources import read_rows
from safealign.errors import UserError
from safealign.io import write_json
from safealign.io.jsonl import write_jsonl
from safealign.types import PreferencePair

logger = logging.getLogger(__name__)
SIMILARITY_COLUMN = "real_similarity"


@dataclass(frozen=True)
class SelectionReport:
    out: str
    model: str
    keep: str
    fraction: float
    pairs: int  # parsed pairs that were scored
    kept: int
    dropped_rows: int  # rows the parser dropped (reasons in the log)
    similarity_all: dict[str, float]  # mean / min / median / max cosine over every scored pair
    similarity_kept: dict[str, float]
    threshold: float | None  # the largest kept cosine (easy) / the smallest (hard); None for random

    def describe(self) -> str:
        kept, every = self.similarity_kept, self.similarity_all
        return (f"{self.out}: kept {self.kept} of {self.pairs} pairs ({self.keep}, fraction {self.fraction}) by "
                f"{self.model}; cosine mean {every['mean']:.3f} over all pairs, {kept['mean']:.3f} over the kept "
                f"(min {kept['min']:.3f}, max {kept['max']:.3f}); {self.dropped_rows} unparsable rows left out")


def select_real_file(source: str | Path, model: str, out: str | Path, *, fraction: float = 0.5, keep: Keep = "easy",
                     seed: int = 0, format: str = "auto", columns: Mapping[str, str] | None = None,
                     split: str | None = None, limit: int | None = None, max_length: int = 512,
                     batch_size: int = 8, trust_remote_code: bool = False) -> SelectionReport:
    """Embed every pair's responses with ``model``, keep a ``fraction`` of pairs, write ``out`` (JSONL) and
    ``out`` + ``.stats.json`` (the report)."""
    from safealign.models import load_model
    from safealign.train.embed import embed_texts

    select_pairs([], fraction, keep=keep)  # check the settings before loading anything
    # 0 embedded no token (every cosine 0: the first rows kept), -3 cut each response's last 3 tokens
    at_least("--max-length", max_length, 1)
    at_least("--batch-size", batch_size, 1)
    parsed = load_preferences(source, format=format, columns=columns, split=split, limit=limit)
    pairs = [item for item in parsed.items if isinstance(item, PreferencePair)]
    if len(pairs) != len(parsed.items) or not pairs:
        raise UserError(f"{source}: format {parsed.format!r} holds no preference pairs; REAL selects among "
                        "pairs (prompt, chosen, rejected)")
    lm, tokenizer = load_model(model, trust_remote_code=trust_remote_code)
    vectors = embed_texts(lm, tokenizer, [p.chosen for p in pairs] + [p.rejected for p in pairs],
                          max_length=max_length, batch_size=batch_size)
    n = len(pairs)
    similarities = (vectors[:n] * vectors[n:]).sum(-1).tolist()
    kept = select_pairs(similarities, fraction, keep=keep, seed=seed)
    records = dict(read_rows(source, split=split, limit=limit))
    rows = [{**records[pairs[i].row], SIMILARITY_COLUMN: round(similarities[i], 6)} for i in kept]
    write_jsonl(out, rows)
    chosen = [similarities[i] for i in kept]
    threshold = None if keep == "random" else (max(chosen) if keep == "easy" else min(chosen))
    report = SelectionReport(str(out), model, keep, fraction, n, len(kept), len(parsed.dropped),
                             _stats(similarities), _stats(chosen), threshold)
    write_json(Path(f"{out}.stats.json"), asdict(report))
    logger.info("%s", report.describe())
    return report


def _stats(values: list[float]) -> dict[str, Any]:
    return {"mean": statistics.fmean(values), "min": min(values), "median": statistics.median(values),
            "max": max(values)}
