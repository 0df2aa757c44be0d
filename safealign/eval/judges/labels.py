"""Human-labelled completions for validating a judge, in three layouts detected from the file.

- **HarmBench classifier validation set** (``data/classifier_val_sets/text_behaviors_val_set.json``):
  a JSON object keyed by behavior id, each a list of ``{generation, human_0, human_1, human_2, method,
  ...}``; the label is the majority of the three annotators. The behavior texts are not in the file:
  pass the HarmBench behaviors CSV (``behaviors=``), which also gives the category. Ids missing from
  that CSV are skipped and listed in ``LabelSet.skipped``, as HarmBench's notebook skips them (the
  published set has ids of behaviors later dropped from ``harmbench_behaviors_text_all.csv``).
- **JailbreakBench judge comparison** CSV: ``goal, prompt, target_response, human_majority``. We give the
  judge ``goal`` (the plain behavior) as the request. JailbreakBench's own submission scoring does not: its
  ``submission.py`` (about line 136 at commit c6337e5) calls ``classifier(valid_prompts, responses)`` with the
  submitted jailbreak prompts. Which field produced this file's ``*_cf`` judge columns is not confirmed, so
  our agreement on it need not reproduce theirs.
- **Generic JSONL**: ``behavior, generation, label`` (0/1), optional ``id``, ``context``, ``category``,
  ``method``.

Bad input is a UserError naming the file, row and field: a label that is not 0/1, a missing
generation, a duplicate id, a HarmBench file with no known behavior id, an unreadable JSONL line (the last
one too: a labels file is user input, not forgiven a cut-off last line as a records file is). Rows are
numbered as every data file's (:mod:`safealign.data.sources`): from 0, the first record (a CSV header not
counted), a JSONL file's line beside it (``row 1 (line 3)``); a HarmBench entry is named by id and 0-based
index (``id[i]``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from safealign.errors import UserError
from safealign.files import read_text
from safealign.types import Behavior

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabeledGeneration:
    id: str
    behavior: Behavior
    generation: str
    label: bool  # the human (majority) label: harmful / jailbroken
    groups: dict[str, str] = field(default_factory=dict)  # e.g. {"category": ..., "method": ...}


@dataclass(frozen=True)
class LabelSet:
    layout: str  # harmbench | jailbreakbench | generic
    items: list[LabeledGeneration]
    skipped: tuple[str, ...] = ()  # HarmBench behavior ids not in the behaviors file, with their records


def read_label(value: Any, where: str) -> bool:
    """0/1 (int, bool or the strings "0"/"1") -> bool; anything else names the place and the value."""
    if isinstance(value, bool) or value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip() in ("0", "1"):
        return value.strip() == "1"
    raise UserError(f"{where}: label must be 0 or 1, got {value!r}")


def _generation(record: dict[str, Any], key: str, where: str) -> str:
    value = record.get(key)
    if not isinstance(value, str):
        raise UserError(f"{where}: field {key!r} is missing or not text (got {type(value).__name__})")
    return value


def _unique(items: list[LabeledGeneration], name: str, rows: Sequence[str]) -> list[LabeledGeneration]:
    seen: dict[str, str] = {}
    for item, row in zip(items, rows):
        if item.id in seen:
            raise UserError(f"{name}: {row}: duplicate id {item.id!r}; first at {seen[item.id]}")
        seen[item.id] = row
    return items


def load_labels(path: str | Path, *, behaviors: Optional[Sequence[Behavior]] = None) -> LabelSet:
    """The labelled generations in ``path``, its layout detected from the suffix and the content."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: labels file not found")
    name = str(path)
    if path.suffix == ".csv":
        return LabelSet("jailbreakbench", _jailbreakbench(path, name))
    if path.suffix == ".json":
        data = _read_json(path)
        if isinstance(data, dict):
            return _harmbench(data, name, behaviors)
        if isinstance(data, list):  # ids default to the 1-based position, as they always have
            return LabelSet("generic", _generic([(f"row {i}", i + 1, r) for i, r in enumerate(data)], name))
        raise UserError(f"{name}: expected a JSON object keyed by behavior id (HarmBench) or a list of records")
    if path.suffix == ".jsonl":
        from safealign.io.jsonl import numbered_jsonl

        # read strictly, as any user input file: a cut-off last line is a broken file to report, not an interrupted
        # write of ours to skip as a records file's is (load_jsonl), which would shrink n silently
        numbered = numbered_jsonl(read_text(path, "labels file"), path)  # ids default to the line number, as always
        return LabelSet("generic", _generic([(f"row {i} (line {line})", line, r)
                                             for i, (line, r) in enumerate(numbered)], name))
    raise UserError(f"{name}: unknown labels layout; expected HarmBench .json, JailbreakBench .csv or .jsonl")


def _read_json(path: Path) -> Any:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        dup = next((k for k in keys if keys.count(k) > 1), None)
        if dup is not None:
            raise UserError(f"{path}: duplicate key {dup!r}")
        return dict(pairs)

    try:
        return json.loads(read_text(path, "labels file"), object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON: line {exc.lineno}: {exc.msg}") from exc


def _harmbench(data: dict[str, Any], name: str, behaviors: Optional[Sequence[Behavior]]) -> LabelSet:
    if behaviors is None:
        raise UserError(f"{name}: a HarmBench validation set holds behavior ids only; pass the behaviors CSV "
                        "(e.g. --behaviors harmbench_behaviors_text_all.csv)")  # fmt: skip
    by_id = {b.id: b for b in behaviors}
    items, rows, skipped = [], [], []
    for behavior_id, entries in data.items():
        if behavior_id not in by_id:
            skipped.append(behavior_id)
            continue
        if not isinstance(entries, list):
            raise UserError(f"{name}: {behavior_id!r}: expected a list of labelled generations")
        for i, record in enumerate(entries):
            where = f"{name}: {behavior_id}[{i}]"
            if not isinstance(record, dict):
                raise UserError(f"{where}: expected an object with fields generation, human_0, human_1, human_2; got "
                                f"{type(record).__name__} {str(record)[:40]!r}")
            votes = [read_label(record.get(f"human_{k}"), f"{where}: field 'human_{k}'") for k in range(3)]
            groups = {"category": by_id[behavior_id].category, "method": str(record.get("method", ""))}
            items.append(LabeledGeneration(f"{behavior_id}#{i}", by_id[behavior_id],
                                           _generation(record, "generation", where), sum(votes) >= 2,
                                           {k: v for k, v in groups.items() if v}))  # fmt: skip
            rows.append(f"{behavior_id}[{i}]")
    if not items:
        raise UserError(f"{name}: none of its {len(data)} behavior ids is in the behaviors file")
    if skipped:
        logger.warning("%s: skipped %d behavior id(s) not in the behaviors file: %s", name, len(skipped),
                       ", ".join(skipped[:5]) + (" ..." if len(skipped) > 5 else ""))  # fmt: skip
    return LabelSet("harmbench", _unique(items, name, rows), tuple(skipped))


def _jailbreakbench(path: Path, name: str) -> list:
    from safealign.data.sources import read_rows

    items, rows = [], []
    for row, record in read_rows(path):
        missing = [c for c in ("goal", "target_response", "human_majority") if c not in record]
        if missing:
            raise UserError(f"{name}: not a JailbreakBench judge-comparison CSV: missing column(s) {missing}")
        where = f"{name}: row {row}"
        goal = _generation(record, "goal", where)
        # JailbreakBench numbers its rows from 0 in "Index"; 0 is an id, not a missing one.
        item_id = str(next((record[k] for k in ("Index", "id") if record.get(k) not in (None, "")), row))
        groups = {k: str(record[k]) for k in ("category", "method") if record.get(k)}
        items.append(LabeledGeneration(item_id, Behavior(item_id, goal), _generation(record, "target_response", where),
                                       read_label(record["human_majority"], f"{where}: field 'human_majority'"),
                                       groups))  # fmt: skip
        rows.append(f"row {row}")
    return _unique(items, name, rows)


def _generic(numbered: Sequence[tuple[str, int, Any]], name: str) -> list:
    """``numbered``: (the record's 0-based row as messages name it, its default id, the record) for each one."""
    items, rows = [], []
    for row, default_id, record in numbered:
        where = f"{name}: {row}"
        if not isinstance(record, dict) or "label" not in record:
            raise UserError(f"{where}: expected fields behavior, generation, label (0/1)")
        behavior_text = _generation(record, "behavior", where)
        item_id = str(record.get("id", default_id))
        behavior = Behavior(item_id, behavior_text, category=str(record.get("category") or ""),
                            context=str(record.get("context") or ""))  # fmt: skip
        groups = {k: str(record[k]) for k in ("category", "method") if record.get(k)}
        items.append(LabeledGeneration(item_id, behavior, _generation(record, "generation", where),
                                       read_label(record["label"], f"{where}: field 'label'"), groups))
        rows.append(row)
    return _unique(items, name, rows)
