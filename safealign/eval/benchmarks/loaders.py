"""Public benchmark files → harmful behaviors and benign prompts, the layout detected from the columns.

Layouts (column names as the upstream files spell them; see docs/benchmarks.md):

- StrongREJECT CSV: ``category, source, forbidden_prompt`` — every row harmful.
- XSTest CSV: ``prompt, type, label`` (``label`` safe | unsafe; ``id`` optional) — safe rows are benign
  prompts, unsafe rows (the ``contrast_*`` types) harmful; the type is the category. The v2 file
  (``xstest_v2_prompts.csv``: ``id_v1, id_v2, type, prompt, focus, note``) has no label: its ``contrast_*``
  types are the unsafe prompts, the others safe; ids from ``id_v2``.
- JailbreakBench behaviors CSV: ``Goal, Target, Behavior, Category`` (``Index``, ``Source`` optional) — the
  file holds one split; a file whose name contains "benign" is the benign split, any other the harmful one (the
  split each file was read as is logged).
- SORRY-Bench JSONL: ``question_id, category, turns`` (a list holding the request) — every row harmful.
- WildJailbreak TSV: ``data_type`` (vanilla_harmful | vanilla_benign | adversarial_harmful |
  adversarial_benign) with the ``vanilla`` and/or ``adversarial`` text column the type names.
- Do-Not-Answer CSV (``data_en.csv``): ``id, risk_area, types_of_harm, specific_harms, question`` — every row
  harmful (questions a responsible model declines), the risk area as category.
- SimpleSafetyTests CSV: ``id, harm_area, counter, category, prompts_final`` — every row harmful.
- OR-Bench CSV (``or-bench-80k.csv``, ``or-bench-hard-1k.csv``, ``or-bench-toxic.csv``): ``prompt, category``, told
  from other files by the name; the toxic file is harmful, the other two benign (over-refusal prompts). A file with
  exactly these columns whose name does not say which of the three it is gets a warning.
- Anything else is read as behaviors (:func:`safealign.data.behaviors.parse_behaviors`: HarmBench, AdvBench,
  generic JSONL; :func:`safealign.data.behaviors.benchmark_layout` tells the layouts above from them). HarmBench
  copyright behaviors are kept apart (``BenchmarkSet.copyright``) and counted as skipped unless the run includes
  them (``behaviors.copyright``), since only a hashing judge scores them. They are told by the ``copyright``
  category or the ``hash_check`` tag, in the HarmBench layout and in the generic one alike, so they stay apart
  after a round trip through ``behaviors.jsonl`` (:func:`safealign.data.behaviors.write_behaviors`). HarmBench's
  multimodal behaviors (``FunctionalCategory`` multimodal, an ``ImageFileName``) need their image: they are left out
  with a warning and counted as skipped.

In a CSV or TSV file a line break is refused (naming the file, row and field) in any field of a layout whose
published rows are single-line, and in the others where a line after it reads as a whole row (:data:`SPANS_LINES`):
a stray double quote makes the CSV reader join the rows up to the next quote into one field without an error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from safealign.data.behaviors import (
    BENCHMARKS,
    _line,
    behaviors_layout,
    benchmark_layout,
    parse_behaviors,
    with_targets,
)
from safealign.data.sources import Record, file_kind, read_rows
from safealign.errors import UserError
from safealign.types import Behavior

logger = logging.getLogger(__name__)

WILDJAILBREAK_TYPES = ("vanilla_harmful", "vanilla_benign", "adversarial_harmful", "adversarial_benign")
# Layouts whose published texts may span lines (2 of StrongREJECT's 313 prompts; WildJailbreak's prompts; OR-Bench's
# files were not checked): a line break in a field is refused only where a line after it reads as a whole row. The
# others' published rows are single-line (checked: XSTest's, SimpleSafetyTests', JailbreakBench's goals).
SPANS_LINES = frozenset({"strongreject", "wildjailbreak", "or_bench"})
# The columns a layout's ids come from, named when two rows share an id (the other layouts number their rows)
ID_COLUMNS = {"xstest": ("id", "id_v2"), "jailbreakbench": ("Index",), "sorry_bench": ("question_id", "prompt_style"),
              "do_not_answer": ("id",), "simple_safety_tests": ("id",)}
OR_BENCH_COLUMNS = {"prompt", "category"}


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
    _warn_unnamed_or_bench(name, set(records[0][1]), layout)
    if layout is None:
        return _behaviors_file(path, records, targets)
    parse = PARSERS[layout]
    shape = _row_shape(path, records)
    harmful: list[Behavior] = []
    benign: list[Behavior] = []
    for row, record in records:
        _check_line_breaks(record, name, row, layout, shape)
        behavior, is_harmful = parse(record, name, row)
        (harmful if is_harmful else benign).append(behavior)
    _check_unique(name, harmful + benign, [k for k in ID_COLUMNS.get(layout, ()) if k in records[0][1]])
    result = BenchmarkSet(layout, tuple(harmful), tuple(benign))
    if targets is not None:
        result = replace(result, harmful=tuple(with_targets(list(result.harmful), targets)))
    logger.info("%s: read as %s%s: %d harmful, %d benign", name, BENCHMARKS[layout], _split_read(layout, name),
                len(result.harmful), len(result.benign))
    return result


def _row_shape(path: str | Path, records: list[tuple[int, Record]]) -> tuple[str, int] | None:
    """A CSV or TSV file's delimiter and its header's field count; None for a source whose rows no stray quote
    can join (JSON, JSONL, parquet, a hub dataset)."""
    local = Path(path)
    kind = file_kind(local) if local.is_file() else None
    return ("," if kind == "csv" else "\t", len(records[0][1])) if kind in ("csv", "tsv") else None


def _check_line_breaks(record: Record, name: str, row: int, layout: str, shape: tuple[str, int] | None) -> None:
    """The lenient CSV reader reads a field that a stray double quote opens on to the next quote, so the rows
    between vanish into it without an error (only a quote never closed is caught, ``sources._check_closed_quotes``),
    in any column: a line break in a field of a single-line layout is refused, and in a multi-line layout's
    (:data:`SPANS_LINES`) one followed by a line that reads as a whole row."""
    if shape is None:
        return
    for key, value in record.items():
        if isinstance(value, str):
            _line(record, key, name, row, required=False, whole_row=shape if layout in SPANS_LINES else None)


def _split_read(layout: str, name: str) -> str:
    """Which split a file holding one was read as, and why (JailbreakBench's and OR-Bench's tell it by name)."""
    if layout == "jailbreakbench":
        split = _jailbreakbench_split(name)
        return f", {split} split (the file name has {'' if split == 'benign' else 'no '}'benign')"
    if layout == "or_bench":
        toxic = _or_bench_toxic(name)
        return f", {'toxic (harmful)' if toxic else 'benign'} split (the file name has {'' if toxic else 'no '}'toxic')"
    return ""


def _warn_unnamed_or_bench(name: str, columns: set[str], layout: str | None) -> None:
    """OR-Bench's files have no column telling them apart from each other or from a generic prompt list: a copy
    renamed to no OR-Bench name is read as harmful behaviors, and an OR-Bench name without its file's part as
    benign prompts."""
    if columns != OR_BENCH_COLUMNS or (layout == "or_bench" and _or_bench_named_split(name)):
        return
    read_as = "OR-Bench's benign prompts" if layout == "or_bench" else "generic behaviors, all harmful"
    logger.warning("%s: has exactly OR-Bench's columns (prompt, category), but its file name does not say which "
                   "OR-Bench file it is (or-bench-toxic: harmful; or-bench-80k, or-bench-hard-1k: benign), so it "
                   "is read as %s; if it is one, give it that file's name", name, read_as)


def _or_bench_named_split(name: str) -> bool:
    lowered = Path(name).name.lower()
    return any(part in lowered for part in ("toxic", "80k", "hard-1k", "hard_1k"))


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
    multimodal = {row for row, record in records if _is_multimodal(record)} if layout != "advbench" else set()
    if multimodal:
        logger.warning("%s: %d HarmBench multimodal behavior(s) left out (FunctionalCategory 'multimodal' or an "
                       "ImageFileName): each needs its image, which a text prompt does not carry", path,
                       len(multimodal))
        behaviors = [b for b in behaviors if b.row not in multimodal]
    copyright_rows = {row for row, record in records if _is_copyright(record)} if layout != "advbench" else set()
    kept = tuple(b for b in behaviors if b.row not in copyright_rows)
    copied = tuple(b for b in behaviors if b.row in copyright_rows)
    skipped = {"copyright": len(copied)} if copied else {}
    if multimodal:
        skipped["multimodal"] = len(multimodal)
    logger.info("%s: read as %s behaviors: %d harmful, skipped %s", path, layout, len(kept), skipped or "none")
    return BenchmarkSet(layout, kept, skipped=skipped, copyright=copied)


def _is_multimodal(record: Record) -> bool:
    """HarmBench's multimodal CSV: its behaviors ask about an image (``ImageFileName``) a text run cannot send."""
    category = str(record.get("FunctionalCategory") or "").strip().lower()
    return category == "multimodal" or bool(str(record.get("ImageFileName") or "").strip())


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


def _jailbreakbench_split(name: str) -> str:
    return "benign" if "benign" in Path(name).name.lower() else "harmful"


def _or_bench_toxic(name: str) -> bool:
    return "toxic" in Path(name).name.lower()


def _jailbreakbench(record: Record, name: str, row: int) -> tuple[Behavior, bool]:
    split = _jailbreakbench_split(name)
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
                    row=row), _or_bench_toxic(name)


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


def _check_unique(name: str, behaviors: list[Behavior], id_columns: list[str]) -> None:
    """No two rows with one id; the message names the columns the ids come from (none: row numbers)."""
    where = f"field{'s' if len(id_columns) > 1 else ''} {', '.join(map(repr, id_columns))}: " if id_columns else ""
    first: dict[str, int] = {}
    for b in behaviors:
        if b.id in first:
            raise UserError(f"{name}: row {b.row}: {where}duplicate behavior id {b.id!r} (first at row {first[b.id]})")
        first[b.id] = b.row
