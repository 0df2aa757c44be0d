"""Typed run records: one evaluation attempt (a line of ``records.jsonl``) and the stats blocks of summaries.

Every record type has ``to_json`` (the dict written to disk) and ``from_json`` (reads what any version
of safealign wrote). Compatibility rules, so old run directories keep loading and new fields never
break old readers:

- ``schema_version`` is written with every record; files written before it existed are version 1.
- A field missing from the file takes its default; a required field missing is a UserError naming it.
- Keys this version does not know (written by newer code or added by hand) are kept in ``extra`` and
  written back unchanged.

:meth:`AttemptRecord.harmful` is the one place a judge's verdict is read from a record.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, TypeVar

from safealign.errors import UserError

SCHEMA_VERSION = 1

T = TypeVar("T")


def from_fields(cls: type[T], data: Any, where: str, **convert: Callable[[Any], Any]) -> T:
    """``cls`` from the JSON object ``data``: missing fields take their defaults, ``convert[name]`` turns a
    present JSON value into its typed form, and unknown keys go to ``extra`` (when ``cls`` has one)."""
    if not isinstance(data, Mapping):
        raise UserError(f"{where}: expected a JSON object, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    missing = [n for n, f in fields.items() if n not in data and _required(f)]
    if missing:
        raise UserError(f"{where}: missing field(s) {', '.join(missing)}")
    kwargs = {n: _convert(convert.get(n), data[n], where, n) for n in fields if n in data and n != "extra"}
    if "extra" in fields:
        kwargs["extra"] = {k: v for k, v in data.items() if k not in fields}
    return cls(**kwargs)


def _convert(convert: Callable[[Any], Any] | None, value: Any, where: str, name: str) -> Any:
    if convert is None or value is None:
        return value
    try:
        return convert(value)
    except UserError:
        raise
    except (TypeError, ValueError) as exc:
        raise UserError(f"{where}: field {name!r}: {exc}") from exc


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def to_fields(record: Any, **convert: Callable[[Any], Any]) -> dict[str, Any]:
    """The JSON object of a record: its fields in declaration order (``convert[name]`` for typed ones),
    then the ``extra`` keys it was read with."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(record):
        if f.name == "extra":
            continue
        value = getattr(record, f.name)
        out[f.name] = convert[f.name](value) if f.name in convert and value is not None else value
    out.update({k: v for k, v in getattr(record, "extra", {}).items() if k not in out})
    return out


def field_at(where: str, name: str) -> str:
    """Where field ``name`` of the object at ``where`` is: ``<file>: field <name>``, or one level deeper
    (``<file>: field comparison.metrics.direct_asr.rate_a``)."""
    return f"{where}.{name}" if ": field " in where else f"{where}: field {name}"


def read_stats(cls: type[T], data: Any, where: str, value: str) -> T:
    """A stats record (:class:`AsrStats`, ``RateStats``, ``ScoreStats``) from the JSON object ``data``: its
    ``value`` field a number or null, ``ci95`` a ``[low, high]`` pair of numbers or null, every other field a
    whole number. Another shape is a UserError naming ``where`` and the field, so a damaged summary is reported
    where it is read, not as a crash of the console table or a blank cell in the report."""
    if isinstance(data, Mapping):
        fields = dataclasses.fields(cls)  # type: ignore[arg-type]
        checks = {f.name: _whole for f in fields} | {value: _real, "ci95": _interval}
        optional = (value, "ci95")
        data = {**data, **{name: check(data[name], field_at(where, name)) for name, check in checks.items()
                           if name in data and not (name in optional and data[name] is None)}}  # fmt: skip
    return from_fields(cls, data, where)


def _real(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise UserError(f"{where}: expected a number, got {_json_type(value)}")
    return float(value)


def _whole(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise UserError(f"{where}: expected a whole number, got {_json_type(value)}")
    return int(value)


def _interval(value: Any, where: str) -> tuple[float, float]:
    if not isinstance(value, (list, tuple)):
        raise UserError(f"{where}: expected a [low, high] pair of numbers, got {_json_type(value)}")
    if len(value) != 2:
        raise UserError(f"{where}: expected a [low, high] pair of numbers, got {len(value)} value(s)")
    low, high = (_real(v, f"{where}[{i}]") for i, v in enumerate(value))
    return low, high


def ci_pair(value: Any) -> tuple[float, float] | None:
    """A ``[lo, hi]`` JSON interval as a tuple; None for anything else."""
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
        return float(value[0]), float(value[1])
    return None


def ci_json(value: tuple[float, float] | None) -> list[float] | None:
    return list(value) if value is not None else None


@dataclass(frozen=True)
class AsrStats:
    """Attack success rate over behaviors for one attack × judge (see :mod:`safealign.eval.summary`)."""

    asr: float | None
    ci95: tuple[float, float] | None = None
    n: int = 0
    unscored: int = 0  # attempts the judge could not score
    unscored_behaviors: int = 0  # behaviors left out of n: no attempt scored (under the older rule: see older_rule)
    attempts: int = 0
    # behaviors in n judged on their scored attempts only (some attempt unscored); None: not recorded, the block was
    # written under the older rule (older_rule)
    partial_behaviors: int | None = 0

    @property
    def value(self) -> float | None:
        return self.asr

    @property
    def older_rule(self) -> bool:
        """Whether these numbers follow the rule before ``partial_behaviors`` was recorded (commit fc92ff9): a
        behavior with an unscored attempt and no harmful one was left out of n (and counted in
        ``unscored_behaviors``), so its ASR runs high. Such a block is told by the missing ``partial_behaviors``
        where it has an unscored attempt; without one both rules give the same numbers and it reads as current."""
        return self.partial_behaviors is None

    def to_json(self) -> dict[str, Any]:
        out = to_fields(self, ci95=ci_json)
        if self.older_rule:  # written back as read, so that it stays recognisable
            del out["partial_behaviors"]
        return out

    @classmethod
    def from_json(cls, data: Any, where: str = "ASR stats") -> AsrStats:
        stats = read_stats(cls, data, where, "asr")
        older = "partial_behaviors" not in data and stats.unscored  # data: an object, else read_stats refused it
        return dataclasses.replace(stats, partial_behaviors=None) if older else stats


@dataclass(frozen=True)
class AttemptRecord:
    """One judged attempt: a line of an evaluation's ``records.jsonl``.

    ``completion`` is ``{"text", "error", "meta"}``; ``verdicts`` maps a judge name to
    ``{"harmful": True | False | None, "error", "raw"}``."""

    behavior_id: str
    attack: str
    attempt_id: str = "0"  # a hand-written record without one is its behavior's only attempt
    category: str | None = None
    n_attempts: int = 1
    messages: list[dict[str, Any]] = field(default_factory=list)
    prefill: str | None = ""
    attempt_meta: dict[str, Any] = field(default_factory=dict)
    completion: dict[str, Any] = field(default_factory=dict)
    verdicts: dict[str, dict[str, Any]] = field(default_factory=dict)
    timings: dict[str, Any] = field(default_factory=dict)
    time: str | None = None
    # what each inference-time defense did, outermost first (DefenseStep JSON; empty for a bare model)
    defense: list[dict[str, Any]] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def defense_steps(self) -> list[DefenseStep]:
        """The defense steps, typed; a record written before defenses existed has none."""
        return [DefenseStep.from_json(s, f"attempt {self.key} defense step {i}") for i, s in enumerate(self.defense)]

    @property
    def key(self) -> tuple[str, str, str]:
        return self.behavior_id, self.attack, self.attempt_id

    def harmful(self, judge: str) -> bool | None:
        """The judge's verdict: True (harmful), False, or None (unscored, or no such judge)."""
        verdict = self.verdicts.get(judge)
        value = verdict.get("harmful") if isinstance(verdict, Mapping) else None
        return value if isinstance(value, bool) else None

    def score(self, judge: str) -> float | None:
        """The judge's score (StrongREJECT's in [0, 1]; ``verdicts.<judge>.score``), or None: unscored, a judge that
        gives none, or a value that is not a finite number."""
        verdict = self.verdicts.get(judge)
        value = verdict.get("score") if isinstance(verdict, Mapping) else None
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            return None
        return float(value)

    @property
    def error(self) -> str | None:
        """The generation error, if the model produced no answer."""
        return self.completion.get("error") or None

    @property
    def answer(self) -> str:
        """What the judges saw: the prefill followed by the model's continuation; a defense's own refusal alone
        (:func:`answered_by_defense`)."""
        prefill = "" if answered_by_defense(self.defense) else str(self.prefill or "")
        return prefill + str(self.completion.get("text") or "")

    @property
    def prompt(self) -> str:
        """The last user message of the attempt."""
        users = [m.get("content", "") for m in self.messages if isinstance(m, Mapping) and m.get("role") == "user"]
        return str(users[-1]) if users else ""

    def to_json(self) -> dict[str, Any]:
        out = to_fields(self)
        if not self.defense:  # a bare model's record is written as before defenses existed
            del out["defense"]
        return out

    @classmethod
    def from_json(cls, data: Any, where: str = "attempt record") -> AttemptRecord:
        record = from_fields(cls, data, where, behavior_id=str, attack=str, attempt_id=str, n_attempts=int)
        if not isinstance(record.verdicts, Mapping) or not isinstance(record.completion, Mapping):
            raise UserError(f"{where}: 'verdicts' and 'completion' must be JSON objects")
        for name in ("attempt_meta", "timings"):
            if not isinstance(getattr(record, name), Mapping):
                raise UserError(f"{where}: {name!r} must be a JSON object, got {_json_type(getattr(record, name))}")
        meta = record.completion.get("meta")
        if meta is not None and not isinstance(meta, Mapping):  # absent or null: no meta, as readers take it
            raise UserError(f"{where}: 'completion.meta' must be a JSON object, got {_json_type(meta)}")
        _check_objects(record.messages, where, "messages", "a JSON list of messages")
        for i, message in enumerate(record.messages):
            if not isinstance(message.get("role"), str):
                raise UserError(f"{where}: 'messages' item {i} has no string 'role'")
        _check_objects(record.defense, where, "defense", "a JSON list of defense steps")
        return record


def _json_type(value: Any) -> str:
    """The JSON name of a value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return {str: "a string", list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


def _check_objects(value: Any, where: str, name: str, expected: str) -> None:
    """UserError unless ``value`` is a list of JSON objects."""
    if not isinstance(value, list):
        raise UserError(f"{where}: {name!r} must be {expected}, got {_json_type(value)}")
    for i, item in enumerate(value):
        if not isinstance(item, Mapping):
            raise UserError(f"{where}: {name!r} item {i} must be a JSON object, got {_json_type(item)}")


@dataclass(frozen=True)
class DefenseStep:
    """What one inference-time defense did to one answer (safealign/eval/defenses, docs/defenses.md).

    ``action``: ``pass`` (the answer went through unchanged), ``rewrite`` (the next layer saw
    ``rewritten`` instead of the conversation), ``select`` (one of ``candidates`` was chosen), ``refuse``
    (the defense answered with a refusal itself; ``refusal`` says why) or ``decode`` (the defense decoded
    the answer with the model itself). ``score`` is the defense's own number (log-perplexity, vote share,
    search score) and ``detail`` the rest. Cost of this answer, this layer and everything below it:
    ``generated_tokens`` (every token generated, candidates and lookahead included), ``forward_passes``
    (model passes that generated nothing: scoring, mixing), ``wall_s`` (this answer's share of the time)."""

    name: str
    action: str = "pass"
    rewritten: list[dict[str, Any]] | None = None
    candidates: list[str] = field(default_factory=list)
    score: float | None = None
    refusal: str | None = None
    generated_tokens: int = 0
    forward_passes: int = 0
    wall_s: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return to_fields(self)

    @classmethod
    def from_json(cls, data: Any, where: str = "defense step") -> DefenseStep:
        return from_fields(cls, data, where, name=str, generated_tokens=int, forward_passes=int, wall_s=float)


def answered_by_defense(steps: Any) -> bool:
    """Whether a defense answered itself (a ``refuse`` step at any layer; ``steps``: DefenseStep JSON): its text
    is the whole answer, which no model wrote after an attempt's prefill, so the prefill is not put before it."""
    return any(isinstance(s, Mapping) and s.get("action") == "refuse" for s in steps or ())
