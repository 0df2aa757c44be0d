"""``safealign data score``: add aligned models' scores of each chosen response to a pair file (PoFT).

Writes the source rows that parsed, each with a ``chosen_scores`` list extended by one value per model
(the chosen response's per-token-averaged log-prob; :func:`safealign.train.scores.chosen_scores`), so
scores from several runs accumulate. Rows no model could score (prompt too long) are left out and
counted. The output trains ``poft`` directly (docs/loss-inputs.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from safealign.data import load_preferences
from safealign.data.sources import read_rows
from safealign.errors import UserError
from safealign.io.jsonl import write_jsonl
from safealign.types import PreferencePair

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoreReport:
    out: Path
    models: tuple[str, ...]
    written: int
    unscored: int  # parsed rows left out: a prompt left no room for the response
    dropped: int  # rows the parser dropped (see the log for reasons)

    def describe(self) -> str:
        return (f"{self.out}: {self.written} rows with chosen_scores from {len(self.models)} model(s) "
                f"({', '.join(self.models)}); {self.unscored} unscored, {self.dropped} unparsable rows left out")


def score_chosen_file(source: str | Path, models: Sequence[str], out: str | Path, *, format: str = "auto",
                      columns: Mapping[str, str] | None = None, split: str | None = None, limit: int | None = None,
                      max_length: int = 512, max_prompt_length: int | None = 256, batch_size: int = 8,
                      trust_remote_code: bool = False) -> ScoreReport:
    """Score every chosen response of ``source`` with each of ``models`` and write ``out`` (JSONL)."""
    from safealign.files import check_jsonl_output
    from safealign.models import load_model
    from safealign.train.scores import chosen_scores

    check_jsonl_output(out, "--out")  # before the models load
    if not models:
        raise UserError("give at least one aligned model to score with (--model, repeatable)")
    parsed = load_preferences(source, format=format, columns=columns, split=split, limit=limit)
    pairs = [item for item in parsed.items if isinstance(item, PreferencePair)]
    if len(pairs) != len(parsed.items) or not pairs:
        raise UserError(f"{source}: format {parsed.format!r} holds no preference pairs; PoFT scores the chosen "
                        "response of pairs (docs/loss-inputs.md)")
    per_model = []
    for name in models:
        model, tokenizer = load_model(name, trust_remote_code=trust_remote_code)
        per_model.append(chosen_scores(model, tokenizer, pairs, max_length=max_length,
                                       max_prompt_length=max_prompt_length, batch_size=batch_size))
        del model
    records = dict(read_rows(source, split=split, limit=limit))
    column = dict(columns or {}).get("chosen_scores", "chosen_scores")
    rows, unscored = [], 0
    for i, pair in enumerate(pairs):
        values = [scores[i] for scores in per_model]
        if any(v is None for v in values):
            unscored += 1
            continue
        rows.append({**records[pair.row], column: [*(pair.chosen_scores or ()), *values]})
    write_jsonl(out, rows)
    report = ScoreReport(Path(out), tuple(models), len(rows), unscored, len(parsed.dropped))
    logger.info("%s", report.describe())
    return report
