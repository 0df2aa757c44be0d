"""Prompt-only harmful behaviors for evaluation (HarmBench / AdvBench layouts) → :class:`Behavior`.

Layouts, detected from the columns:

- HarmBench CSV: ``Behavior``, ``FunctionalCategory``/``SemanticCategory`` or ``Category``, ``Tags``,
  ``ContextString``, ``BehaviorID`` (the category is ``SemanticCategory`` when present, else ``Category``,
  else ``FunctionalCategory``).
- AdvBench original CSV: exactly the columns ``goal``, ``target`` (upstream ``harmful_behaviors.csv``); ids are
  ``advbench_<row+1>`` (1-based, matching the HarmBench-layout AdvBench file and its targets JSON). A file with
  any other column besides (``id``, ``category``, …) is the generic layout below, whatever its type.
- Generic (JSONL / JSON / CSV): fields ``behavior`` | ``prompt`` | ``goal`` | ``instruction``, and optional ``id``,
  ``category``, ``context``, ``target``, ``tags`` (a list or comma-separated; ids default to ``<file stem>_<row>``).

Benchmark files whose columns these layouts would misread (JailbreakBench's ``Behavior`` column is a short
name, not the request; XSTest and OR-Bench mix benign and harmful prompts; :func:`benchmark_layout`) are refused
by :func:`load_behaviors` with the loader that reads them: ``safealign eval``'s ``behaviors.path`` /
``benign.path`` (``safealign.eval.benchmarks.loaders.read_benchmark``).

In the HarmBench and AdvBench layouts a line break in ``Behavior``, ``BehaviorID`` or ``goal`` is refused (naming
the file, row and field): none of the published rows has one, and a stray double quote makes the CSV reader join
the rows up to the next quote into that one field (``ContextString``, code or a document, may span lines). The
benchmark loader checks its layouts' CSV and TSV fields with the same :func:`_line`.

An optional targets JSON (``{BehaviorID: "Sure, here is …"}``) fills ``target``.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable

from safealign.data.sources import Record, read_rows
from safealign.errors import UserError
from safealign.types import Behavior

logger = logging.getLogger(__name__)

TEXT_FIELDS = ("behavior", "prompt", "goal", "instruction")
ADVBENCH_COLUMNS = {"goal", "target"}  # the upstream harmful_behaviors.csv, nothing else
ID_COLUMN = {"harmbench": "BehaviorID", "advbench": "id", "generic": "id"}  # where a layout's ids come from
BENCHMARKS = {"do_not_answer": "Do-Not-Answer", "simple_safety_tests": "SimpleSafetyTests", "or_bench": "OR-Bench",
              "strongreject": "StrongREJECT", "xstest": "XSTest", "jailbreakbench": "JailbreakBench",
              "sorry_bench": "SORRY-Bench", "wildjailbreak": "WildJailbreak"}


def load_behaviors(path: str | Path, *, targets: str | Path | None = None, what: str | None = None) -> list[Behavior]:
    """Parse a behaviors file; malformed rows raise UserError naming the file, row and field (and a missing file
    ``what``, the config key that named it)."""
    name = str(path)
    records = list(read_rows(path, what=what))
    if not records:
        raise UserError(f"{name}: no behaviors")
    benchmark = benchmark_layout(records[0][1].keys(), name)
    if benchmark is not None:
        raise UserError(
            f"{name}: {BENCHMARKS[benchmark]} benchmark file (columns {', '.join(records[0][1])}), which only the "
            "benchmark loader reads right (which rows are harmful, which benign, the request column): give it to "
            "`safealign eval` as behaviors.path (benign.path for its benign prompts), or read it in Python with "
            "safealign.eval.benchmarks.loaders.read_benchmark"
        )
    layout = behaviors_layout(records[0][1].keys())
    if layout is None:
        raise UserError(
            f"{name}: not a behaviors file; columns seen: {', '.join(records[0][1])}. Expected HarmBench "
            "(Behavior, BehaviorID, ...), AdvBench (goal, target) or JSON fields behavior|prompt|goal"
        )
    return parse_behaviors(name, records, layout, targets=targets)


def write_behaviors(path: str | Path, behaviors: Iterable[Behavior]) -> None:
    """The behaviors as a JSONL file :func:`load_behaviors` reads back (id, behavior, category, context, target)."""
    from safealign.io import write_jsonl

    keep = ("context", "target")
    write_jsonl(path, [{"id": b.id, "behavior": b.behavior, "category": b.category,
                        **{k: getattr(b, k) for k in keep if getattr(b, k)},
                        **({"tags": list(b.tags)} if b.tags else {})} for b in behaviors])


def parse_behaviors(name: str, records: list[tuple[int, Record]], layout: str, *,
                    targets: str | Path | None = None) -> list[Behavior]:
    """Behaviors from rows already read (``read_rows``) in a ``behaviors_layout``; ``name`` names the file."""
    if layout == "harmbench" and "BehaviorID" not in records[0][1]:
        raise UserError(f"{name}: column 'BehaviorID' is missing (HarmBench layout, from its 'Behavior' column); "
                        f"columns seen: {', '.join(records[0][1])}")
    parse = {"harmbench": _harmbench, "advbench": _advbench, "generic": _generic}[layout]
    behaviors = [parse(record, name, row) for row, record in records]
    _check_unique(name, behaviors, ID_COLUMN[layout])
    if targets is not None:
        behaviors = with_targets(behaviors, targets)
    return behaviors


def behaviors_layout(columns: Iterable[str]) -> str | None:
    """"harmbench", "advbench" or "generic" when ``columns`` look like a behaviors file, else None."""
    cols = set(columns)
    if {"chosen", "rejected"} & cols or "completion" in cols:
        return None
    if "Behavior" in cols:
        return "harmbench"
    if cols == ADVBENCH_COLUMNS:
        return "advbench"
    if cols & set(TEXT_FIELDS) and "completion" not in cols:
        return "generic"
    return None


def benchmark_layout(columns: Iterable[str], name: str = "") -> str | None:
    """The public benchmark layout ``columns`` match, else None; checked before the behaviors layouts (its
    parsers are in ``safealign.eval.benchmarks.loaders``). ``name``, the file's, tells OR-Bench's files (just
    ``prompt, category``) from any other such file."""
    cols = set(columns)
    if {"risk_area", "types_of_harm", "question"} <= cols:
        return "do_not_answer"
    if {"harm_area", "prompts_final"} <= cols:
        return "simple_safety_tests"
    if cols == {"prompt", "category"} and any(k in Path(name).name.lower() for k in ("or-bench", "or_bench")):
        return "or_bench"
    if {"forbidden_prompt", "category", "source"} <= cols:
        return "strongreject"
    # XSTest: prompts.csv has a label column; xstest_v2_prompts.csv (id_v1, id_v2, type, prompt, focus, note)
    # has none, the contrast_* types being the unsafe prompts (the loader reads both)
    if {"prompt", "type", "label"} <= cols or {"prompt", "type", "id_v2", "focus"} <= cols:
        return "xstest"
    if {"Goal", "Target", "Behavior", "Category"} <= cols:
        return "jailbreakbench"
    if {"question_id", "category", "turns"} <= cols:
        return "sorry_bench"
    if "data_type" in cols and cols & {"vanilla", "adversarial"}:
        return "wildjailbreak"
    return None


# HarmBench's join of a contextual behavior's context and request, as its direct requests and attacks such as
# human jailbreaks and few-shot build the test case (baselines/: f"{context_str}\n\n---\n\n{behavior}"). Every
# attack here sends the target this join (behavior_prompt, attacks.base.with_context). HarmBench's zero-shot attack
# joins with five dashes instead, "\n\n-----\n\n", both in its attacker prompt and in the test cases it sends;
# our zero_shot has the five dashes in its attacker prompt only (zero_shot.CONTEXT_PART) and sends the target this
# join. Until 2026-12-07 this project joined them with a blank line only; eval.resume_check refuses to resume a
# run whose recorded prompts were built that way (for the attacks whose prompts it can rebuild)
CONTEXT_JOIN = "\n\n---\n\n"


def behavior_prompt(b: Behavior) -> str:
    """The user prompt for a behavior: a contextual behavior's context first, then HarmBench's separator
    (:data:`CONTEXT_JOIN`), then the behavior, so a contextual test case is the text HarmBench sends."""
    return f"{b.context}{CONTEXT_JOIN}{b.behavior}" if b.context.strip() else b.behavior


def _text(record: Record, key: str, name: str, row: int, *, required: bool, number_ok: bool = False) -> str:
    """A text field; ``number_ok`` lets ids and categories be numbers. A bool is never text (YAML/JSON ``true``)."""
    value = record.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise UserError(f"{name}: row {row}: field {key!r} is empty")
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int) if number_ok else str):
        raise UserError(f"{name}: row {row}: field {key!r} must be text, got {type(value).__name__} {value!r}")
    # Stripped, every field, HarmBench's ContextString included, where HarmBench joins the raw ContextString
    # (f"{context_str}\n\n---\n\n{behavior}"): in harmbench_behaviors_text_val.csv sqli_payload_waf_ml_bypass_3's
    # context loses a leading space, blind_sql_injection_log_evasion's a trailing newline and
    # jeep_cherokee_exploit_equipment_list's a trailing space (docs/attacks.md, "Contextual behaviors"). Kept until
    # the E-effect sweep (results/sweep/e_effect) finishes: not stripping would change the prompts its committed
    # cells were evaluated on.
    return str(value).strip()


def _line(record: Record, key: str, name: str, row: int, *, whole_row: tuple[str, int] | None = None,
          **kwargs: Any) -> str:
    """A one-line text field (:func:`_text`): HarmBench's and AdvBench's requests and ids never span lines, so
    a line break in one is a stray double quote that made the CSV reader join the rows after it into this
    field; only the last record's unclosed quote is caught while reading (``sources._check_closed_quotes``).

    ``whole_row`` (the file's delimiter and its header's field count) is for a field whose published texts may
    span lines (two of StrongREJECT's 313 prompts, WildJailbreak's): a line break is refused there only when a
    line after it reads as a whole row of the file, as the rows a stray quote joins do (none of them holds a
    quote: it would have closed the field): the header's field count, the first field not blank (a line of
    tab-indented code is no row)."""
    text = _text(record, key, name, row, **kwargs)
    if "\n" not in text and "\r" not in text:
        return text
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if whole_row is None:
        what = f"holds a line break ({lines[0][:60]!r} is followed by more lines)"
    else:
        rows = [line for line in lines[1:] if _reads_as_row(line, *whole_row)]
        if not rows:
            return text
        what = f"holds a line break followed by a line that reads as a whole row ({rows[0][:60]!r})"
    raise UserError(f"{name}: row {row}: field {key!r} {what}, so rows of the file were probably read as one: a "
                    "stray double quote opens a quoted field there; remove it or write it doubled (\"\") inside a "
                    "quoted field")


def _reads_as_row(line: str, delimiter: str, fields: int) -> bool:
    cells = next(csv.reader([line], delimiter=delimiter), [])
    return len(cells) == fields and bool(cells[0].strip())


def _harmbench(record: Record, name: str, row: int) -> Behavior:
    category_key = next(
        (k for k in ("SemanticCategory", "Category", "FunctionalCategory") if record.get(k)), "Category"
    )
    return Behavior(
        id=_line(record, "BehaviorID", name, row, required=True, number_ok=True),
        behavior=_line(record, "Behavior", name, row, required=True),
        category=_text(record, category_key, name, row, required=False, number_ok=True),
        context=_text(record, "ContextString", name, row, required=False),
        source=name,
        row=row,
        tags=_tags(record.get("Tags")),
    )


def _advbench(record: Record, name: str, row: int) -> Behavior:
    return Behavior(
        id=f"advbench_{row + 1}",
        behavior=_line(record, "goal", name, row, required=True),
        target=_text(record, "target", name, row, required=False),
        source=name,
        row=row,
    )


def _generic(record: Record, name: str, row: int) -> Behavior:
    key = next((k for k in TEXT_FIELDS if record.get(k) is not None), TEXT_FIELDS[0])
    return Behavior(
        id=_text(record, "id", name, row, required=False, number_ok=True) or f"{Path(name).stem.split('.')[0]}_{row}",
        behavior=_text(record, key, name, row, required=True),
        category=_text(record, "category", name, row, required=False, number_ok=True),
        context=_text(record, "context", name, row, required=False),
        target=_text(record, "target", name, row, required=False),
        source=name,
        row=row,
        tags=_tags(record.get("tags")),
    )


def _tags(value: Any) -> tuple[str, ...]:
    """HarmBench's comma-separated ``Tags`` (or a JSON list): ``"book, hash_check"`` -> ("book", "hash_check")."""
    items = value if isinstance(value, (list, tuple)) else str(value or "").split(",")
    return tuple(t for t in (str(item).strip() for item in items) if t)


def _check_unique(name: str, behaviors: list[Behavior], id_column: str) -> None:
    first: dict[str, int] = {}
    for b in behaviors:
        if b.id in first:
            raise UserError(
                f"{name}: row {b.row}: field {id_column!r}: duplicate behavior id {b.id!r} (first at row {first[b.id]})"
            )
        first[b.id] = b.row


def with_targets(behaviors: list[Behavior], targets: str | Path) -> list[Behavior]:
    """Each behavior with its target from the targets JSON (``{BehaviorID: "Sure, here is ..."}``), else its own.

    A file that names none of the behaviors' ids (another benchmark's targets: AdvBench's for HarmBench's
    behaviors) is refused naming a few ids of each, and behaviors left without a target are counted in a warning:
    unmatched, the file was ignored without a word, PAIR then started without a target and GCG/prefill asked for
    behaviors.targets though it was passed."""
    path = Path(targets).expanduser()  # as the behaviors file's own path (safealign.data.sources.read_rows)
    table = _read_targets(path)
    if behaviors and not any(b.id in table for b in behaviors):
        raise UserError(f"{path}: no target matches a behavior id of the {len(behaviors)} behaviors (behavior ids: "
                        f"{_some(b.id for b in behaviors)}; target ids: {_some(table) or 'none'}); pass the targets "
                        "file written for these behaviors")
    out = [replace(b, target=table.get(b.id, b.target)) for b in behaviors]
    missing = [b.id for b in out if not b.target]
    if missing:
        logger.warning("%s: %d of %d behaviors have no target (%s): attacks that need one (gcg, prefill) refuse "
                       "them, pair starts without one", path, len(missing), len(out), _some(missing))
    return out


def _some(ids: Iterable[str], shown: int = 3) -> str:
    ids = list(ids)
    return ", ".join(ids[:shown]) + (f", ... ({len(ids) - shown} more)" if len(ids) > shown else "")


def _read_targets(path: Path) -> dict[str, str]:
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read targets file: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno})") from exc
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise UserError(f"{path}: targets must be a JSON object mapping BehaviorID to a target string")
    return data
