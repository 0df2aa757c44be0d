"""An objective's training data: rows sorted into its roles, checked before any model loads, encoded, zipped.

Accepted layouts (docs/objectives.md):
- preference pairs with a ``harmful`` flag per row (the demo's pairs file, ``safealign data build-safety``):
  each pair is split into its chosen (desirable) and rejected (undesirable) completion;
- the unpaired layout ``prompt, completion, label, harmful``, one completion per row.

A pair carrying both safety labels (``chosen_safe``/``rejected_safe``: PKU-SafeRLHF, whose chosen side is the more
*helpful* answer) is sorted by them on a harmful prompt: its safe side is the desirable one (:func:`order_by_safety`).

Each row is then a :class:`RowKind` (harmful or benign prompt, desirable or not) and feeds the roles that
list its kind. A training item holds one row of every role: item ``i`` takes row ``i mod n`` of each role's
``n`` rows, so every row of the largest role is used once per epoch and the smaller roles cycle.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from safealign.data import PairEncoder, load_preferences
from safealign.data.collate import pad_sequences
from safealign.data.formats import ParseResult
from safealign.data.row_transforms import safety_order
from safealign.data.tokenize import EncodedUnpaired, TruncationReport
from safealign.errors import UserError
from safealign.train.config import TrainConfig
from safealign.train.objectives.base import Objective, RowKind
from safealign.train.unpaired import unpair_pairs
from safealign.types import PreferencePair, UnpairedExample

logger = logging.getLogger(__name__)


def load_role_rows(config: TrainConfig, objective: Objective) -> tuple[ParseResult, dict[str, list[UnpairedExample]]]:
    """Parse the data and sort its rows into the objective's roles; UserError naming the missing field and the
    layout that provides it when a role would be empty."""
    data = config.data
    parsed = _parse(config, data.harmful)
    rows = _role_examples(parsed, str(data.path))
    name = objective.name
    unflagged = [x.row for x in rows if x.harmful is None]
    if unflagged:
        raise UserError(f"objective {name!r} sorts rows by their prompt's 'harmful' flag, but {len(set(unflagged))} "
                        f"rows of {data.path} (format {parsed.format!r}) have none (e.g. row "
                        f"{', '.join(map(str, sorted(set(unflagged))[:5]))}); add a bool 'harmful' column (the demo's "
                        f"pairs file has one){_harmful_switch_advice(config, objective)}")
    by_role = _by_role(rows, objective)
    for role, (required, *_) in objective.roles.items():  # a role's first kind is required, the rest add to it
        if not any(RowKind(bool(x.harmful), x.label) == required for x in by_role[role]):
            raise UserError(f"objective {name!r} trains its '{role}' rows on {required.what}, but {data.path} "
                            f"(format {parsed.format!r}) has none: they come from {required.provided_by}")
    logger.info("objective %s: %s", name, ", ".join(f"{len(v)} {k} rows" for k, v in by_role.items()))
    return parsed, by_role


def _parse(config: TrainConfig, harmful: bool | None) -> ParseResult:
    data = config.data
    parsed = load_preferences(data.path, format=data.format, columns=dict(data.columns) or None,
                              split=data.split, harmful=harmful, limit=data.limit)
    if not parsed.items:
        raise UserError(f"{data.path}: no usable rows ({len(parsed.dropped)} dropped)")
    return parsed


def _role_examples(parsed: ParseResult, where: str) -> list[UnpairedExample]:
    """The parsed rows as unpaired examples, pairs ordered by their safety labels first."""
    rows = [x for x in parsed.items if isinstance(x, UnpairedExample)]
    return rows if len(rows) == len(parsed.items) else unpair_pairs(order_by_safety(parsed.items, where))


def _by_role(rows: Sequence[UnpairedExample], objective: Objective) -> dict[str, list[UnpairedExample]]:
    return {role: [x for x in rows if RowKind(bool(x.harmful), x.label) in kinds]
            for role, kinds in objective.roles.items()}


def _empty_roles(rows: Sequence[UnpairedExample], objective: Objective) -> list[str]:
    """The roles whose required kind no row provides, as ``'role' rows (what)``."""
    return [f"'{role}' rows ({required.what})" for role, (required, *_) in objective.roles.items()
            if not any(RowKind(bool(x.harmful), x.label) == required for x in rows)]


def _harmful_switch_advice(config: TrainConfig, objective: Objective) -> str:
    """``, or set data.harmful=...`` for the values that would give every role its rows; for a value that would
    not, the roles it would leave empty. The data is parsed again under each value (not just the missing flags
    filled in): a PKU-SafeRLHF row takes the switch over its own safety-derived flag, and a harmful row whose
    responses are both safe is dropped, so a file of PKU rows alone has no value that fills a benign role."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # a trial parse's warnings (rows dropped) are not the run's
    try:
        empty = {value: _empty_roles(_role_examples(_parse(config, value), str(config.data.path)), objective)
                 for value in (True, False)}
    finally:
        logging.disable(previous)
    fits = "/".join(str(value).lower() for value, roles in empty.items() if not roles)
    leaves = [f"data.harmful={str(value).lower()} would leave the {' and '.join(roles)} empty"
              for value, roles in empty.items() if roles]
    return (f", or set data.harmful={fits}" if fits else "") + "".join(f"; {leave}" for leave in leaves)


def order_by_safety(pairs: Sequence[PreferencePair], where: str) -> list[PreferencePair]:
    """Harmful rows with both safety labels, ordered so that chosen is the safe side, by ``safety_order``'s rule
    (objectives refuse data.transforms, so it cannot run before them).

    Without this, a PKU-SafeRLHF row (chosen = the more helpful answer, often the unsafe one) would give ReFAT its
    unsafe answer as the refusal and circuit breakers its safe refusal to reroute. A harmful row whose sides are both
    unsafe has no desirable side and is dropped, as ``safety_order`` drops it; one whose sides are both safe has no
    undesirable side and is dropped too (``safety_order`` keeps it as a helpfulness pair, which a role cannot use).
    Benign rows and rows without both labels (the demo's pairs file) keep their chosen/rejected order."""
    out: list[PreferencePair] = []
    same: dict[bool, list[int]] = {True: [], False: []}
    for pair in pairs:
        if not pair.harmful or pair.chosen_safe is None or pair.rejected_safe is None:
            out.append(pair)
        elif pair.chosen_safe == pair.rejected_safe:
            same[pair.chosen_safe].append(pair.row)
        else:
            out.extend(safety_order([pair]))
    if same[True] or same[False]:
        def listed(numbers: list[int], kind: str) -> str:
            example = f" (e.g. row {', '.join(map(str, numbers[:5]))})" if numbers else ""
            return f"{len(numbers)} with both sides {kind}{example}"
        logger.warning("%s: dropped %d harmful rows whose safety labels give no safe/unsafe side to train on: %s, %s",
                       where, len(same[True]) + len(same[False]), listed(same[True], "safe"),
                       listed(same[False], "unsafe"))
    return out


def encode_role_rows(config: TrainConfig, tokenizer: Any, by_role: Mapping[str, Sequence[UnpairedExample]],
                     ) -> tuple[dict[str, list[EncodedUnpaired]], TruncationReport]:
    """Tokenize every role's rows (prompt through the chat template, completion as an assistant turn)."""
    encoder = PairEncoder(tokenizer, max_length=config.data.max_length,
                          max_prompt_length=config.data.max_prompt_length)
    encoded, reports = {}, []
    for role, rows in by_role.items():
        encoded[role], report = encoder.encode_all_unpaired(rows)
        if not encoded[role]:
            raise UserError(f"{config.data.path}: every '{role}' row is too long for data.max_length="
                            f"{config.data.max_length}")
        reports.append(report)
    return encoded, TruncationReport.total(reports)


@dataclass(frozen=True)
class ObjectiveItem:
    """One training item: a row of every role."""

    index: int
    rows: dict[str, EncodedUnpaired]


def zip_roles(encoded: Mapping[str, Sequence[EncodedUnpaired]]) -> list[ObjectiveItem]:
    """Item ``i`` takes row ``i mod n_role`` of each role; as many items as the largest role has rows."""
    size = max(len(rows) for rows in encoded.values())
    return [ObjectiveItem(i, {role: rows[i % len(rows)] for role, rows in encoded.items()}) for i in range(size)]


class ObjectiveCollator:
    """``list[ObjectiveItem]`` → ``{role: {input_ids, attention_mask, response_mask}, "index": (B,)}``, each
    role right-padded on its own (the trainer moves nested mappings to the device)."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, items: Sequence[ObjectiveItem]) -> dict[str, Any]:
        if not items:
            raise ValueError("cannot collate an empty batch")
        batch: dict[str, Any] = {"index": torch.tensor([item.index for item in items], dtype=torch.long)}
        for role in items[0].rows:
            rows = [item.rows[role] for item in items]
            batch[role] = sequences([r.prompt_ids for r in rows], [r.completion_ids for r in rows], self.pad_token_id)
        return batch


def sequences(prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], pad_token_id: int,
              ) -> dict[str, Tensor]:
    """Right-padded ``prompt + completion`` rows as ``input_ids``, ``attention_mask``, ``response_mask``."""
    ids, attention, response = pad_sequences([tuple(p) for p in prompts], [tuple(c) for c in completions],
                                             pad_token_id)
    return {"input_ids": ids, "attention_mask": attention, "response_mask": response}
