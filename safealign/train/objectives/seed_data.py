"""What the seed-paper objectives (CUT, DCKD, ADPA, MAH-DPO; docs/seed-methods.md) train on: their own data
layouts instead of the harmful/benign roles of the hidden-state objectives.

An objective that defines ``load_rows`` and ``setup`` (see :class:`SeedObjective`) is fed by them: ``load_rows``
parses and checks the data before any model loads; ``setup`` encodes it with the loaded tokenizer, prepares
the model (extra heads) and precomputed columns (teacher distributions, reference log-probs), and returns the
training items, their collator and any trainer callbacks.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from safealign.data import PairEncoder, load_preferences
from safealign.data.formats import ParseResult
from safealign.errors import UserError
from safealign.train.config import TrainConfig
from safealign.train.objectives.base import Objective
from safealign.types import PreferencePair

logger = logging.getLogger(__name__)


@dataclass
class ObjectiveData:
    """What ``setup`` hands the trainer."""

    items: list[Any]
    collator: Callable[[list[Any]], dict[str, Any]]
    report: Any  # a TruncationReport
    callbacks: list[Any] = field(default_factory=list)
    describe: str = "none"  # the reference / teacher, for the run's log and summary


class SeedObjective(Objective):
    """An objective with its own data layout (docs/seed-methods.md)."""

    roles: dict = {}  # no harmful/benign roles: ``load_rows`` and ``setup`` feed it
    needs_reference = False  # no frozen copy: what a method compares against is precomputed in ``setup``
    data_layout = ""  # what the data must hold, for ``safealign losses``

    def load_rows(self, config: TrainConfig) -> tuple[ParseResult, list[Any]]:
        raise NotImplementedError

    def setup(self, config: TrainConfig, model: Any, tokenizer: Any, rows: list[Any], device: Any) -> ObjectiveData:
        raise NotImplementedError


def parse(config: TrainConfig, name: str, kind: type, layout: str) -> tuple[ParseResult, list[Any]]:
    """Parsed rows of ``kind``; UserError naming the objective, the file and the layout it needs."""
    data = config.data
    parsed = load_preferences(data.path, format=data.format, columns=dict(data.columns) or None, split=data.split,
                              harmful=data.harmful, limit=data.limit)
    rows = [item for item in parsed.items if isinstance(item, kind)]
    if not rows or len(rows) != len(parsed.items):
        raise UserError(f"objective {name!r} trains on {layout}, but {data.path} has format {parsed.format!r} "
                        f"({len(parsed.items)} rows parsed, {len(parsed.dropped)} dropped; docs/seed-methods.md)")
    return parsed, rows


def parse_pairs(config: TrainConfig, name: str) -> tuple[ParseResult, list[PreferencePair]]:
    parsed, rows = parse(config, name, PreferencePair, "preference pairs (prompt, chosen, rejected)")
    cross = [p.row for p in rows if p.rejected_prompt is not None]
    if cross:
        raise UserError(f"objective {name!r}: rows {cross[:5]} of {config.data.path} pair answers to different "
                        "prompts; it compares two answers to one prompt")
    return parsed, rows


def encode_pairs(config: TrainConfig, tokenizer: Any, pairs: Sequence[PreferencePair]):
    """Pairs as the trainer encodes them (identity reference view), ``index`` = position among the kept rows."""
    encoded, report, _ = encode_kept_pairs(config, tokenizer, pairs)
    return encoded, report


def encode_kept_pairs(config: TrainConfig, tokenizer: Any, pairs: Sequence[PreferencePair]):
    """:func:`encode_pairs` plus the source pair of each kept item (``kept[i]`` is the row item ``i`` encodes):
    a row whose prompt leaves no room for a response is dropped, so positions among the kept rows are not
    positions in ``pairs``."""
    encoder = PairEncoder(tokenizer, max_length=config.data.max_length, max_prompt_length=config.data.max_prompt_length)
    encoded, report = encoder.encode_all(pairs)
    if not encoded:
        raise UserError(f"{config.data.path}: every row is too long for data.max_length={config.data.max_length}")
    kept = [pairs[item.index] for item in encoded]  # encode_all's index: the position in ``pairs``
    return [dataclasses.replace(item, index=i) for i, item in enumerate(encoded)], report, kept
