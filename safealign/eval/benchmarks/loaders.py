"""Public benchmark files → harmful behaviors and benign prompts, the layout detected from the columns.

Layouts (column names as the upstream files spell them; see docs/benchmarks.md):

- StrongREJECT CSV: ``category, source, forbidden_prompt`` — every row harmful.
- XSTest CSV: ``prompt, type, label`` (``label`` safe | unsafe; ``id`` optional) — safe rows are benign
  prompts, unsafe rows (the ``contrast_*`` types) harmful; the type is the category. The v2 file
  (``xstest_v2_prompts.csv``: ``id_v1, id_v2, type, prompt, focus, note``) has no label: its ``contrast_*``
  types are the unsafe prompts, the others safe; ids from ``id_v2``.
- JailbreakBench behaviors CSV: ``Goal, Target, Behavior, Category`` (``Index``, ``Source`` optional) — the
  file holds one split; a file whose name contains "benign" is the benign split, any other the harmful one.
- SORRY-Bench JSONL: ``question_id, category, turns`` (a list holding the request) — every row harmful.
- WildJailbreak TSV: ``data_type`` (vanilla_harmful | vanilla_benign | adversarial_harmful |
  adversarial_benign) with the ``vanilla`` and/or ``adversarial`` text column the type names.
- Do-Not-Answer CSV (``data_en.csv``): ``id, risk_area, types_of_harm, specific_harms, question`` — every row
  harmful (questions a responsible model declines), the risk area as category.
- SimpleSafetyTests CSV: ``id, harm_area, counter, category, prompts_final`` — every row harmful.
- OR-Bench CSV (``or-bench-80k.csv``, ``or-bench-hard-1k.csv``, ``or-bench-toxic.csv``): ``prompt, category``, told
  from other files by the name; the toxic file is harmful, the other two benign (over-refusal prompts).
- Anything else is read as behaviors (:func:`safealign.data.behaviors.parse_behaviors`: HarmBench, AdvBench,
  generic JSONL; :func:`safealign.data.behaviors.benchmark_layout` tells the layouts above from them). HarmBench
  copyright behaviors are kept apart (``BenchmarkSet.copyright``) and counted as skipped unless the run includes
  them (``behaviors.copyright``), since only a hashing judge scores them. They are told by the ``copyright``
  category or the ``hash_check`` tag, in the HarmBench layout and in the generic one alike, so they stay apart
  after a round trip through ``behaviors.jsonl`` (:func:`safealign.data.behaviors.write_behaviors`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from safealign.data.behaviors import behaviors_layout, benchmark_layout, parse_behaviors, with_targets
from safealign.data.sources import Record, read_rows
from safealign.errors import UserError
from safealign.types import Behavior

logger = logging.getLogger(__name__)

WILDJAILBREAK_TYPES = ("vanilla_harmful", "vanilla_benign", "adversarial_harmful", "adversarial_benign")


@dataclass(frozen=True)
class BenchmarkSet:
    """One benchmark file read: its layout, harmful behaviors, benign prompts and rows left out (reason → count)."""

    layout: str
    harmful: tuple[Behavior, ...] = ()
    benign: tuple[Behavior, ...] = ()
    skipped: dict[str, int] = field(default_factory=dict)
    copyright: tuple[Behavior, ...] = ()  # HarmBench's hash_check behaviors, left out of ``harmful`` (skipped)

    def including_copyright(self) -> BenchmarkSet:
        """The set with the copyright behaviors among the harmful ones, in file order (a hashing judge scores them)."""
        skipped = {k: v for k, v in self.skipped.items() if k != "copyright"}
        harmful = tuple(sorted((*self.harmful, *self.copyright), key=lambda b: b.row))
        return replace(self, harmful=harmful, copyright=(), skipped=skipped)

    def describe(self) -> dict[str, Any]:
        """What a summary records about the file."""
        return {"layout": self.layout, "harmful": len(self.harmful), "benign": len(self.benign),
                "skipped": dict(self.skipped)}  # fmt: skip


def read_benchmark(path: str | Path, *, targets: str | Path | None = None, what: str | None = None) -> BenchmarkSet:
    """Read ``path`` in whichever layout its columns match; bad rows raise UserError naming file, row and field (and
    a missing file ``what``, the config key that named it)."""
    name = str(path)
    records = list(read_rows(path, what=what))
    if not records:
        raise UserError(f"{name}: no rows")
    layout = benchmark_layout(records[0][1].keys(), name)
    if layout is None:
        return _behaviors_file(path, records, targets)
    parse = PARSERS[layout]
    harmful: list[Behavior] = []
    benign: list[Behavior] = []
    for row, record in records:
        behavior, is_harmful = parse(record, name, row)
        (harmful if is_harmful else benign).append(behavior)
    _check_unique(name, harmful + benign)
    result = BenchmarkSet(layout, tuple(harmful), tuple(benign))
    if targets is not None:
        result = replace(result, harmful=tuple(with_targets(list(result.harmful), targets)))
    return result


def _behaviors_file(path: str | Path, records: list[tuple[int, Record]], targets: Any) -> BenchmarkSet:
    layout = behaviors_layout(records[0][1].keys())
    if layout is None:
        raise UserError(
            f"{path}: not a behaviors or benchmark file; columns seen: {', '.join(map(str, records[0][1]))}. "
            "Expected one of: HarmBench (Behavior, BehaviorID, ...), AdvBench (goal, target), StrongREJECT "
            "(category, source, forbidden_prompt), XSTest (prompt, type, label), JailbreakBench (Goal, Target, "
            "Behavior, Category), SORRY-Bench JSONL (question_id, category, turns), WildJailbreak TSV "
            "(data_type + vanilla/adversarial), Do-Not-Answer (risk_area, types_of_harm, question), "
            "SimpleSafetyTests (harm_area, prompts_final), OR-Bench (prompt, category), or JSON fields "
            "behavior|prompt|goal"
        )
    behaviors = parse_behaviors(str(path), records, layout, targets=targets)
    copyright_rows = {row for row, record in records if _is_copyright(record)} if layout != "advbench" else set()
    kept = tuple(b for b in behaviors if b.row not in copyright_rows)
    copied = tuple(b for b in behaviors if b.row in copyright_rows)
    return BenchmarkSet(layout, kept, skipped={"copyright": len(copied)} if copied else {}, copyright=copied)


def _is_copyright(record: Record) -> bool:
    """HarmBench marks copyright behaviors by functional category and the ``hash_check`` tag; the generic layout
    (what write_behaviors writes back) keeps them as ``category`` and ``tags`` (a list or comma-separated)."""
    keys = ("FunctionalCategory", "SemanticCategory", "category")
    categories = {str(record.get(k) or "").strip().lower() for k in keys}
    tags = [record.get(k) for k in ("Tags", "tags")]
    return "copyright" in categories or any("hash_check" in _tag_list(t) for t in tags)


def _tag_list(value: Any) -> list[str]:
    items = value if isinstance(value, (list, tuple)) else str(value or "").split(",")
    return [str(item).strip() for item in items]


def _text(record: Record, key: str, name: str, row: int, *, required: bool = True) -> str:
    value = record.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise UserError(f"{name}: row {row}: field {key!r} is empty")
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise UserError(f"{name}: row {row}: field {key!r} must be text, got {type(value).__name__} {value!r}")
    return str(value).strip()


def _stem(name: str) -> str:
    return Path(name).name.split(".")[0]


def _strongreject(record: Record, name: str, row: int) -> tuple[Behavior, bool]:
    return Behavior(f"strongreject_{row}", _text(record, "forbidden_prompt", name, row),
                    category=_text(record, "category", name, row, required=False), source=name, row=row), True


def _xstest(record: Record, name: str, row: int) -> tuple[Behavior, bool]:
    kind = _text(record, "type", name, row)
    if "label" in record:
        label = _text(record, "label", name, row).lower()
        if label not in ("safe", "unsafe"):
            raise UserError(f"{name}: row {row}: field 'label' is {label!r}; XSTest labels are 'safe' or 'unsafe'")
    else:  # xstest_v2_prompts.csv: no label column; the contrast_* types are the unsafe prompts
        label = "unsafe" if kind.startswith("contrast_") else "safe"
    pid = _text(record, "id", name, row, required=False) or _text(record, "id_v2", name, row, required=False) \
        or str(row)
    behavior = Behavior(f"xstest_{pid}", _text(record, "prompt", name, row), category=kind, source=name, row=row)
    return behavior, label == "unsafe"


def _jailbreakbench(record: Record, name: str, row: int) -> tuple[Behavior, bool]:
    split = "benign" if "benign" in Path(name).name.lower() else "harmful"
    index = _text(record, "Index", name, row, required=False) or str(row)
    behavior = Behavior(f"jbb_{split}_{index}", _text(record, "Goal", name, row),
                        category=_text(record, "Category", name, row, required=False),
                        target=_text(record, "Target", name, row, required=False), source=name, row=row)
    return behavior, split == "harmful"


def _sorry_bench(record: Record, name: str, row: int) -> tuple[Behavior, bool]:
    turns = record.get("turns")
    if not isinstance(turns, list) or not turns or not all(isinstance(t, str) and t.strip() for t in turns):
        raise UserError(f"{name}: row {row}: field 'turns' must be a non-empty list of text, got {turns!r}")
    # SORRY-Bench questions are single-turn; a multi-turn entry would be joined silently otherwise.
    if len(turns) > 1:
        raise UserError(f"{name}: row {row}: field 'turns' has {len(turns)} turns; only single-turn is supported")
    qid = _text(record, "question_id", name, row)
    style = _text(record, "prompt_style", name, row, required=False)
    suffix = f"_{style}" if style and style != "base" else ""
    return Behavior(f"sorry_{qid}{suffix}", turns[0].strip(), category=_text(record, "category", name, row),
                    source=name, row=row), True


def _wildjailbreak(record: Record, name: str, row: int) -> tuple[Behavior, bool]:
    kind = _text(record, "data_type", name, row)
    if kind not in WILDJAILBREAK_TYPES:
        raise UserError(f"{name}: row {row}: field 'data_type' is {kind!r}; valid: {', '.join(WILDJAILBREAK_TYPES)}")
    column = kind.split("_")[0]  # vanilla_* rows carry their text in 'vanilla', adversarial_* in 'adversarial'
    return Behavior(f"{_stem(name)}_{row}", _text(record, column, name, row), category=kind, source=name,
                    row=row), kind.endswith("_harmful")


def _do_not_answer(record: Record, name: str, row: int) -> tuple[Behavior, bool]:
    pid = _text(record, "id", name, row, required=False) or str(row)
    return Behavior(f"dna_{pid}", _text(record, "question", name, row),
                    category=_text(record, "risk_area", name, row, required=False), source=name, row=row), True


def _simple_safety_tests(record: Record, name: str, row: int) -> tuple[Behavior, bool]:
    pid = _text(record, "id", name, row, required=False) or str(row)
    return Behavior(pid if pid.startswith("sst_") else f"sst_{pid}", _text(record, "prompts_final", name, row),
                    category=_text(record, "harm_area", name, row, required=False), source=name, row=row), True


def _or_bench(record: Record, name: str, row: int) -> tuple[Behavior, bool]:
    # or-bench-toxic.csv holds the toxic prompts; or-bench-80k.csv and or-bench-hard-1k.csv the seemingly toxic,
    # benign ones an over-refusing model declines
    return Behavior(f"{_stem(name)}_{row}", _text(record, "prompt", name, row),
                    category=_text(record, "category", name, row, required=False), source=name,
                    row=row), "toxic" in Path(name).name.lower()


PARSERS: dict[str, Callable[[Record, str, int], tuple[Behavior, bool]]] = {
    "do_not_answer": _do_not_answer,
    "simple_safety_tests": _simple_safety_tests,
    "or_bench": _or_bench,
    "strongreject": _strongreject,
    "xstest": _xstest,
    "jailbreakbench": _jailbreakbench,
    "sorry_bench": _sorry_bench,
    "wildjailbreak": _wildjailbreak,
}


def _check_unique(name: str, behaviors: list[Behavior]) -> None:
    first: dict[str, int] = {}
    for b in behaviors:
        if b.id in first:
            raise UserError(f"{name}: row {b.row}: duplicate id {b.id!r} (first at row {first[b.id]})")
        first[b.id] = b.row
