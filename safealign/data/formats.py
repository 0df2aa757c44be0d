"""Parse rows into :class:`PreferencePair` / :class:`UnpairedExample`, with format auto-detection.

Formats (each a row parser registered in :data:`PREFERENCE_FORMATS` with its required columns;
``format=`` overrides detection; ``columns={"prompt": "question"}`` maps the canonical field
names below to your column names):

- ``standard``: ``prompt``, ``chosen``, ``rejected`` strings; the prompt becomes one user message, unless it
  clearly is an HH-style transcript (starts with ``"\\n\\nHuman:"`` or ``"Human:"``, ends with ``"Assistant:"``,
  e.g. Dahoas/rm-static): then its turns are the conversation and the responses are stripped of surrounding
  whitespace, as the ``implicit`` format reads the same turns from whole transcripts. A response that repeats
  the prompt's transcript (whole-transcript responses) loses that copy; one that still holds a turn marker is
  dropped (it is not one reply), and so is a response to a plain prompt that holds one (kept as given otherwise).
- ``conversational``: ``prompt`` a list of ``{role, content}`` messages ending with a user turn (a
  plain string is accepted as one user message); ``chosen``/``rejected`` lists holding one assistant
  message each (the TRL convention).
- ``implicit``: ``chosen``/``rejected`` full conversations sharing a history: message lists, or
  HH-RLHF transcripts (``"\\n\\nHuman: … \\n\\nAssistant: …"``). The prompt is the shared history up to the
  final assistant turn, kept as a multi-turn conversation; the responses are the final assistant turns.
  Detected also beside a ``prompt`` column when the ``chosen`` conversation holds a user turn
  (UltraFeedback-binarized: ``prompt`` a string, ``chosen``/``rejected`` whole [user, assistant] lists); the
  ``prompt`` column is then not read.
- ``joint``: ``chosen_prompt``, ``chosen``, ``rejected_prompt``, ``rejected``: a preference between two
  (prompt, response) pairs whose prompts may differ (JPO; docs/loss-inputs.md). Prompts as in
  ``conversational`` (string or message list), responses a string or one assistant message.
- ``pku_saferlhf``: PKU-SafeRLHF's ``prompt``, ``response_0``, ``response_1``, ``is_response_0_safe``,
  ``is_response_1_safe``, ``better_response_id`` (``safer_response_id`` optional): chosen is the more helpful
  response, and each side carries its safety label (docs/safety-training.md).
- ``unpaired``: ``prompt``, ``completion`` (string or one assistant message), ``label`` (bool-ish) →
  :class:`UnpairedExample` for KTO/BCO.
- ``judgment``: ``prompt``, ``completion``, ``judgment`` (text; missing or empty → None, which only a positive row
  may be), ``score`` (a finite number) → :class:`JudgmentExample` for CUT (docs/seed-methods.md).

Every format accepts an optional bool-ish ``harmful`` column; the dataset-level ``harmful=`` argument
fills rows where it is missing. Every pair format accepts optional bool-ish ``chosen_safe`` /
``rejected_safe`` columns (per-response safety labels for SafeDPO; docs/safety-training.md), an optional
``chosen_scores`` column: a list of K finite numbers (in a CSV cell, its JSON text), the chosen response's
per-token-averaged log-probs under K aligned models (PoFT; docs/loss-inputs.md), and an optional ``attribute``
column naming the objective the preference is about (MAH-DPO; docs/seed-methods.md). Bad rows are dropped and reported
(:class:`DroppedRow`), never silently; unreadable files, undetectable formats, bad column mappings and a
file whose every row is dropped (the reasons named) raise UserError.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from safealign.data import messages as m
from safealign.data.sources import Record, read_rows, source_name
from safealign.errors import UserError
from safealign.registry import Registry
from safealign.types import JudgmentExample, PreferencePair, UnpairedExample

log = logging.getLogger(__name__)

# PKU-SafeRLHF's layout (docs/safety-training.md): two responses, a safety label for each, which one is more helpful
# (better_response_id) and which one is safer (safer_response_id).
PKU_FIELDS = ("response_0", "response_1", "is_response_0_safe", "is_response_1_safe", "better_response_id",
              "safer_response_id")
FIELDS = ("prompt", "chosen", "rejected", "completion", "label", "harmful", "chosen_prompt", "rejected_prompt",
          "chosen_scores", "judgment", "score", "attribute", "chosen_safe", "rejected_safe", *PKU_FIELDS)
# A format is a row parser registered under its name with the columns it needs and a one-line help;
# the registry key is the format's only name (safealign/registry.py).
PREFERENCE_FORMATS: Registry[Callable[..., PreferencePair | UnpairedExample | JudgmentExample]] = Registry("format")
_DETECT_SAMPLE = 100


@dataclass(frozen=True)
class DroppedRow:
    """A row that was not used: where it is and why."""

    source: str
    row: int
    field: str
    reason: str


@dataclass(frozen=True)
class ParseResult:
    """Parsed items plus every dropped row; ``rows`` = ``len(items) + len(dropped)``."""

    format: str
    rows: int
    items: list[PreferencePair | UnpairedExample | JudgmentExample]
    dropped: list[DroppedRow] = field(default_factory=list)

    def drop_counts(self) -> dict[str, int]:
        """Dropped rows per ``"field: reason"``, most frequent first."""
        return dict(Counter(f"{d.field}: {d.reason}" for d in self.dropped).most_common())

    def duplicates(self) -> list[tuple[int, int]]:
        """``(row, first_row)`` for each parsed row identical to an earlier one (prompt, responses, flags).

        Reported, not dropped: a repeated pair weighs twice in the loss, which may be deliberate."""
        first: dict[str, int] = {}
        out = []
        for item in self.items:
            content = {k: v for k, v in dataclasses.asdict(item).items() if k not in ("row", "source", "meta")}
            key = json.dumps(content, sort_keys=True, default=str)
            if key in first:
                out.append((item.row, first[key]))
            else:
                first[key] = item.row
        return out


def load_preferences(
    source: str | Path,
    *,
    format: str = "auto",
    columns: Mapping[str, str] | None = None,
    split: str | None = None,
    harmful: bool | None = None,
    limit: int | None = None,
) -> ParseResult:
    """Read ``source`` (file or HF dataset id) and parse every row; see the module docstring."""
    name = source_name(source)
    mapping = _check_mapping(columns)
    records = list(read_rows(source, split=split, limit=limit))
    seen = _columns_seen(records)
    _check_mapped_columns(name, mapping, seen)
    rows = [(i, _remap(r, mapping)) for i, r in records]
    fmt = _resolve_format(name, format, rows, mapping)
    parse = PREFERENCE_FORMATS.get(fmt)
    items, dropped = [], []
    for row, record in rows:
        try:
            items.append(parse(record, harmful, name, row))
        except m.RowDrop as drop:
            dropped.append(DroppedRow(name, row, mapping.get(drop.field, drop.field), drop.reason))
    result = ParseResult(format=fmt, rows=len(rows), items=items, dropped=dropped)
    if rows and not items:
        reasons = "; ".join(f"{reason} ({count} rows)" for reason, count in list(result.drop_counts().items())[:3])
        raise UserError(f"{name}: every row ({len(rows)}) was dropped as format {fmt!r}: {reasons}. Check the "
                        "format (format=, CLI --format) and the column mapping (columns=, CLI --column)")
    _log_summary(name, result)
    return result


def detect_format(record_columns: set[str], first: Mapping[str, Any]) -> str | None:
    """The format implied by canonical column names (``first`` gives sample values), or None."""
    if set(_required("unpaired")) <= record_columns:
        return "unpaired"
    if set(_required("judgment")) <= record_columns:
        return "judgment"
    if set(_required("pku_saferlhf")) <= record_columns:
        return "pku_saferlhf"
    if not {"chosen", "rejected"} <= record_columns:
        return None
    if {"chosen_prompt", "rejected_prompt"} <= record_columns:
        return "joint"
    if "prompt" not in record_columns or _holds_user_turn(first.get("chosen")):
        return "implicit"  # whole conversations (UltraFeedback-binarized keeps a prompt column beside them)
    return (
        "conversational"
        if any(isinstance(first.get(k), list) for k in ("prompt", "chosen", "rejected"))
        else "standard"
    )


def _holds_user_turn(value: Any) -> bool:
    return isinstance(value, list) and any(isinstance(v, dict) and v.get("role") == "user" for v in value)


# --------------------------------------------------------------------------- row parsers
def _harmful(record: Record, default: bool | None) -> bool | None:
    value = m.parse_bool(record.get("harmful"), "harmful")
    return default if value is None else value


def _text_response(value: Any, field: str) -> str:
    if isinstance(value, str):
        return m.require_response(value, field)
    return m.require_text(value, field)  # raises: missing value / wrong type


def _pair(prompt, chosen: str, rejected: str, record: Record, harmful, source: str, row: int,
          rejected_prompt=None) -> PreferencePair:
    if rejected_prompt == prompt:
        rejected_prompt = None
    # The same text can rightly win for one prompt and lose for another; for one prompt it is no preference.
    if rejected_prompt is None and chosen.strip() == rejected.strip():
        raise m.RowDrop("rejected", "chosen and rejected are identical")
    return PreferencePair(prompt, chosen, rejected, _harmful(record, harmful), source, row,
                          meta={**_attribute(record.get("attribute")), **_cut_sides(record)},
                          rejected_prompt=rejected_prompt,
                          chosen_scores=_scores(record.get("chosen_scores")),
                          chosen_safe=m.parse_bool(record.get("chosen_safe"), "chosen_safe"),
                          rejected_safe=m.parse_bool(record.get("rejected_safe"), "rejected_safe"))


def _attribute(value: Any) -> dict[str, str]:
    """The optional ``attribute`` column: the objective a pair's preference is about (MAH-DPO routes it to
    that attribute's head; docs/seed-methods.md), kept in ``meta["attribute"]``."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return {}
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise m.RowDrop("attribute", f"expected a name, got {type(value).__name__}")
    return {"attribute": str(value).strip()}


def _cut_sides(record: Record) -> dict[str, bool]:
    """The optional ``chosen_cut``/``rejected_cut`` flags (safety pairs built with ``cut_answers=open``): a
    side whose answer was cut at the generation limit, kept in ``meta`` only when true; the encoder trains it
    without the template's end-of-turn tokens (safealign/data/tokenize.py). Rows without them read as before."""
    return {key: True for key in ("chosen_cut", "rejected_cut") if m.parse_bool(record.get(key), key)}


def _from_text(value: Any, field: str, parse: Callable[[str], Any], expected: str) -> Any:
    """A CSV cell's value: CSV cells are text, so a string is parsed (``parse``; a ValueError drops the row as not
    ``expected``) and an empty one is a missing value (None). Other values (JSON rows) are returned as they are."""
    if not isinstance(value, str):
        return value
    if not value.strip():
        return None
    try:
        return parse(value)
    except ValueError:
        raise m.RowDrop(field, f"expected {expected}, got {value!r:.20}") from None


def _scores(value: Any) -> tuple[float, ...] | None:
    """The optional ``chosen_scores`` column: None, or a non-empty list of finite numbers (in a CSV cell, its JSON
    text: ``"[-1.2, -0.8]"``)."""
    value = _from_text(value, "chosen_scores", json.loads, "a JSON list of numbers such as [-1.2, -0.8]")
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or not value:
        raise m.RowDrop("chosen_scores", f"expected a non-empty list of numbers, got {type(value).__name__}")
    for i, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise m.RowDrop("chosen_scores", f"item {i} is {v!r:.20}, not a finite number")
    return tuple(float(v) for v in value)


@PREFERENCE_FORMATS.register("standard", required=("prompt", "chosen", "rejected"),
                            help="prompt, chosen, rejected (strings)")
def _parse_standard(record: Record, harmful, source: str, row: int) -> PreferencePair:
    if not isinstance(record.get("prompt"), str):
        m.require_text(record.get("prompt"), "prompt")
    transcript = m.transcript_prompt(record["prompt"], "prompt")
    prompt = transcript or m.parse_prompt(record["prompt"])
    chosen = _text_response(record.get("chosen"), "chosen")
    rejected = _text_response(record.get("rejected"), "rejected")
    if transcript:  # " Call a locksmith." follows "Assistant:" in the transcript; the turn's text is stripped
        chosen = _transcript_reply(record["prompt"], chosen, "chosen")
        rejected = _transcript_reply(record["prompt"], rejected, "rejected")
    else:  # kept as given (not stripped), unless it is no single reply
        _one_reply(chosen, "chosen")
        _one_reply(rejected, "rejected")
    return _pair(prompt, chosen, rejected, record, harmful, source, row)


def _one_reply(response: str, field: str) -> None:
    """Drop a response to a plain prompt that holds a ``Human:``/``Assistant:`` turn (a whole transcript, or a
    reply that goes on into further turns): trained as the answer, it would teach the model to write both sides of
    a conversation, as :func:`_transcript_reply` says for transcript prompts."""
    if m.has_turn_marker(response):
        raise m.RowDrop(field, "holds a '\\n\\nHuman:' / '\\n\\nAssistant:' turn; give the reply only, or whole "
                               "conversations without the prompt column (format 'implicit')")


def _transcript_reply(prompt: str, response: str, field: str) -> str:
    """A response to a transcript prompt as the reply alone, stripped: a leading copy of the prompt's transcript
    (whole-transcript responses) is removed, and a response that still holds a ``Human:``/``Assistant:`` turn is
    dropped -- trained as the answer, it would teach the model to write both sides of a conversation. (The
    implicit format reads such whole transcripts: the reply is the final assistant turn after the shared
    history.)"""
    copy = prompt.rstrip()
    if response.startswith(copy):
        response = m.require_response(response[len(copy):], field)
    if m.has_turn_marker(response):
        raise m.RowDrop(field, "holds a '\\n\\nHuman:' / '\\n\\nAssistant:' turn; after a transcript prompt give "
                               "the reply only, or whole conversations without the prompt column (format 'implicit')")
    return response.strip()


@PREFERENCE_FORMATS.register("conversational", required=("prompt", "chosen", "rejected"),
                            help="prompt (message list), chosen, rejected (assistant message lists)")
def _parse_conversational(record: Record, harmful, source: str, row: int) -> PreferencePair:
    prompt = m.parse_prompt(record.get("prompt"))
    chosen = m.assistant_text(record.get("chosen"), "chosen")
    rejected = m.assistant_text(record.get("rejected"), "rejected")
    return _pair(prompt, chosen, rejected, record, harmful, source, row)


def _conversation(value: Any, field: str):
    if isinstance(value, str):
        return m.parse_transcript(value, field)
    return m.parse_messages(value, field)


@PREFERENCE_FORMATS.register("implicit", required=("chosen", "rejected"),
                            help="chosen, rejected (full conversations or HH 'Human:/Assistant:' transcripts)")
def _parse_implicit(record: Record, harmful, source: str, row: int) -> PreferencePair:
    chosen_value, rejected_value = record.get("chosen"), record.get("rejected")
    if isinstance(chosen_value, str) != isinstance(rejected_value, str):
        raise m.RowDrop("rejected", "chosen and rejected must both be transcripts or both message lists")
    chosen = _conversation(chosen_value, "chosen")
    rejected = _conversation(rejected_value, "rejected")
    prompt, chosen_text, rejected_text = m.split_conversations(chosen, rejected)
    return _pair(prompt, chosen_text, rejected_text, record, harmful, source, row)


def _response(value: Any, field: str) -> str:
    return m.assistant_text(value, field) if isinstance(value, list) else _text_response(value, field)


@PREFERENCE_FORMATS.register("joint", required=("chosen_prompt", "chosen", "rejected_prompt", "rejected"),
                            help="chosen_prompt, chosen, rejected_prompt, rejected (a prompt per response)")
def _parse_joint(record: Record, harmful, source: str, row: int) -> PreferencePair:
    chosen_prompt = m.parse_prompt(record.get("chosen_prompt"), "chosen_prompt")
    rejected_prompt = m.parse_prompt(record.get("rejected_prompt"), "rejected_prompt")
    chosen, rejected = _response(record.get("chosen"), "chosen"), _response(record.get("rejected"), "rejected")
    return _pair(chosen_prompt, chosen, rejected, record, harmful, source, row, rejected_prompt=rejected_prompt)


@PREFERENCE_FORMATS.register("pku_saferlhf", required=("prompt", *PKU_FIELDS[:5]),
                            help="prompt, response_0, response_1, is_response_0_safe, is_response_1_safe, "
                                 "better_response_id (PKU-SafeRLHF; safer_response_id optional)")
def _parse_pku(record: Record, harmful, source: str, row: int) -> PreferencePair:
    """Chosen = the more helpful response (``better_response_id``), each side with its safety label; the
    safety-aware reordering is a data transform (``safety_order``), so other losses see the helpfulness pair.
    ``harmful`` (the E-variant's flag): the row's own column, else the data set's switch, else True when a
    response is unsafe (the prompt drew an unsafe answer) and unknown when both are safe."""
    prompt = m.parse_prompt(record.get("prompt"))
    responses = [_text_response(record.get(f"response_{k}"), f"response_{k}") for k in (0, 1)]
    safe = [m.parse_bool(record.get(f"is_response_{k}_safe"), f"is_response_{k}_safe") for k in (0, 1)]
    for k in (0, 1):
        if safe[k] is None:
            raise m.RowDrop(f"is_response_{k}_safe", "missing value")
    better = _response_id(record.get("better_response_id"), "better_response_id")
    _response_id(record.get("safer_response_id"), "safer_response_id", optional=True)
    default = harmful if harmful is not None else (True if not all(safe) else None)
    pair = _pair(prompt, responses[better], responses[1 - better], record, default, source, row)
    return dataclasses.replace(pair, chosen_safe=safe[better], rejected_safe=safe[1 - better])


def _response_id(value: Any, field: str, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, str) and value.strip() in ("0", "1"):
        value = int(value)
    if isinstance(value, bool) or value not in (0, 1):
        raise m.RowDrop(field, f"expected 0 or 1, got {value!r:.20}")
    return int(value)


@PREFERENCE_FORMATS.register("unpaired", required=("prompt", "completion", "label"),
                            help="prompt, completion, label")
def _parse_unpaired(record: Record, harmful, source: str, row: int) -> UnpairedExample:
    prompt = m.parse_prompt(record.get("prompt"))
    value = record.get("completion")
    completion = (
        _text_response(value, "completion") if not isinstance(value, list) else m.assistant_text(value, "completion")
    )
    label = m.parse_bool(record.get("label"), "label")
    if label is None:
        raise m.RowDrop("label", "missing value")
    return UnpairedExample(prompt, completion, label, _harmful(record, harmful), source, row)


@PREFERENCE_FORMATS.register("judgment", required=("prompt", "completion", "judgment", "score"),
                            help="prompt, completion, judgment (text), score (number)")
def _parse_judgment(record: Record, harmful, source: str, row: int) -> JudgmentExample:
    prompt = m.parse_prompt(record.get("prompt"))
    value = record.get("completion")
    completion = _response(value, "completion")
    judgment = _judgment(record.get("judgment"))
    score = _from_text(record.get("score"), "score", float, "a number")
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
        raise m.RowDrop("score", f"expected a finite number, got {score!r:.20}")
    return JudgmentExample(prompt, completion, judgment, float(score), _harmful(record, harmful), source, row)


def _judgment(value: Any) -> str | None:
    """The judgment text, or None when missing or empty: a positive row needs none (CUT trains it on the plain
    prompt only, and the official code gives it none); the objective refuses a negative row without one."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return m.require_text(value, "judgment")


FORMATS = tuple(PREFERENCE_FORMATS.names())  # the built-in formats


def _required(fmt: str) -> tuple[str, ...]:
    return PREFERENCE_FORMATS.meta(fmt)["required"]


def _help(fmt: str) -> str:
    return PREFERENCE_FORMATS.meta(fmt)["help"]


# --------------------------------------------------------------------------- columns and detection
def _check_mapping(columns: Mapping[str, str] | None) -> dict[str, str]:
    mapping = dict(columns or {})
    for key, value in mapping.items():
        if key not in FIELDS:
            raise UserError(f"column mapping: unknown field {key!r}; valid fields: {', '.join(FIELDS)}")
        if not isinstance(value, str) or not value:
            raise UserError(f"column mapping: {key}= needs a column name, got {value!r}")
    return mapping


def _columns_seen(records: list[tuple[int, Record]]) -> list[str]:
    seen: dict[str, None] = {}
    for _, record in records[:_DETECT_SAMPLE]:
        seen.update(dict.fromkeys(record))
    return list(seen)


def _check_mapped_columns(name: str, mapping: dict[str, str], seen: list[str]) -> None:
    for key, column in mapping.items():
        if seen and column not in seen:
            raise UserError(
                f"{name}: column mapping {key}={column}: no column {column!r}; columns seen: {', '.join(seen)}"
            )


def _remap(record: Record, mapping: dict[str, str]) -> Record:
    if not mapping:
        return record
    out = {k: v for k, v in record.items() if k not in FIELDS}
    for key in FIELDS:
        column = mapping.get(key, key)
        if column in record:
            out[key] = record[column]
    return out


def _resolve_format(name: str, format: str, rows: list[tuple[int, Record]], mapping: dict[str, str]) -> str:
    seen = set(_columns_seen(rows))
    if format != "auto":
        if format not in PREFERENCE_FORMATS:
            raise UserError(f"unknown format {format!r}; valid formats: auto, {', '.join(PREFERENCE_FORMATS.names())}")
        missing = [mapping.get(c, c) for c in _required(format) if c not in seen]
        if rows and missing:
            raise UserError(
                f"{name}: format {format!r} needs columns {_help(format)}; missing: {', '.join(missing)}; "
                f"columns seen: {', '.join(sorted(seen)) or '(none)'}"
            )
        return format
    if not rows:
        raise UserError(f"{name}: no rows; cannot detect the data format")
    first = {k: next((r[k] for _, r in rows[:_DETECT_SAMPLE] if r.get(k) is not None), None) for k in seen}
    detected = detect_format(seen, first)
    if detected is None:
        needs = "; ".join(f"{f}: {_help(f)}" for f in PREFERENCE_FORMATS.names())
        raise UserError(
            f"{name}: cannot detect the data format; columns seen: {', '.join(sorted(seen))}. Formats need — {needs}. "
            "Map your columns with columns={'prompt': 'question'} (CLI: --column prompt=question) or pass format="
        )
    return detected


def _log_summary(name: str, result: ParseResult) -> None:
    log.info(
        "%s: %s format, %d rows, %d parsed, %d dropped",
        name,
        result.format,
        result.rows,
        len(result.items),
        len(result.dropped),
    )
    for reason, count in result.drop_counts().items():
        log.warning("%s: dropped %d row(s): %s", name, count, reason)
    duplicates = result.duplicates()
    if duplicates:
        examples = ", ".join(f"row {row} = row {first}" for row, first in duplicates[:3])
        log.warning("%s: %d duplicate row(s) (%s%s); kept, so each weighs more than once", name, len(duplicates),
                    examples, ", ..." if len(duplicates) > 3 else "")
