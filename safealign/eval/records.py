"""Append-only ``records.jsonl``: one line per attempt, written and flushed as soon as it is judged.

A record's key is ``(behavior_id, attack, attempt_id)``; the last record for a key wins, so a retried
attempt (generated again, or judged again) supersedes its failed first try. Reading and appending go through
:mod:`safealign.io.jsonl`:
a line cut off by a crash is skipped with a warning, and repaired before the next append. Each line is
an :class:`~safealign.io.records.AttemptRecord`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Iterator, Mapping

from safealign.io import append_jsonl, load_jsonl
from safealign.io.records import AttemptRecord, answered_by_defense
from safealign.types import Attempt, Completion

logger = logging.getLogger(__name__)

Key = tuple[str, str, str]


def load_records(path: str | Path) -> list[AttemptRecord]:
    """Every attempt record in ``path`` (none when it does not exist), in file order."""
    return [AttemptRecord.from_json(row, f"{path}:{line}") for line, row in load_jsonl(path).numbered()]


def current_records(path: str | Path) -> list[AttemptRecord]:
    """The record that stands for each attempt in ``path`` (the last one written: a retried generation supersedes
    its failed try), in the order attempts were first recorded."""
    return latest_per_key(load_records(path))


def latest_per_key(records: Iterable[AttemptRecord]) -> list[AttemptRecord]:
    """The last of ``records`` for each key, in the order keys first appear (for readers that load the file
    their own way, like the report, which skips damaged lines instead of failing)."""
    latest: dict[Key, AttemptRecord] = {}
    for record in records:
        latest[record.key] = record  # a key seen before keeps its place
    return list(latest.values())


class RecordStore:
    """The attempts of one evaluation, read from and appended to ``path`` as typed records."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._records: dict[Key, AttemptRecord] = {}
        self._n_attempts: dict[tuple[str, str], int] = {}
        self._attempt_ids: dict[tuple[str, str], dict[str, None]] = {}  # ordered sets: first recorded first
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        for record in load_records(self.path):
            self._remember(record)
        logger.info("resuming: %d records in %s", len(self._records), self.path)

    def _remember(self, record: AttemptRecord) -> None:
        self._records[record.key] = record
        pair = (record.behavior_id, record.attack)
        self._n_attempts[pair] = record.n_attempts
        self._attempt_ids.setdefault(pair, {})[record.attempt_id] = None

    def append(self, records: list[AttemptRecord]) -> None:
        append_jsonl(self.path, [record.to_json() for record in records])
        for record in records:
            self._remember(record)

    def is_recorded(self, key: Key) -> bool:
        """Whether the attempt has a record, failed or not: a failed one is retried from its record
        (:meth:`to_retry`), never by running the attack again."""
        return key in self._records

    def needs_attack(self, behavior_id: str, attack: str) -> bool:
        """Whether some attempt of the attack for this behavior has no record yet, so the attack must run."""
        n = self._n_attempts.get((behavior_id, attack))
        return n is None or len(self._attempt_ids.get((behavior_id, attack), ())) < n

    def recorded(self, behavior_id: str, attack: str) -> list[AttemptRecord]:
        """The standing record of each recorded attempt of the attack for this behavior, first recorded first."""
        return [self._records[(behavior_id, attack, i)] for i in self._attempt_ids.get((behavior_id, attack), {})]

    def to_retry(self, behavior_id: str, attack: str,
                 judges: Iterable[str]) -> tuple[list[AttemptRecord], list[AttemptRecord]]:  # fmt: skip
        """The recorded attempts to retry on resume: those whose generation failed (generated again from the
        recorded conversation), then those answered but with a verdict of one of ``judges`` that failed
        (judged again, answer kept)."""
        names = list(judges)
        mine = self.recorded(behavior_id, attack)
        failed = [r for r in mine if r.error]
        unjudged = [r for r in mine if not r.error and failed_verdicts(r, names)]
        return failed, unjudged

    def __iter__(self) -> Iterator[AttemptRecord]:
        return iter(self._records.values())

    def __len__(self) -> int:
        return len(self._records)


def failed_verdicts(record: AttemptRecord, judges: Iterable[str]) -> list[str]:
    """The judges among ``judges`` whose recorded verdict is an error (endpoint down, unparseable output)."""
    return [n for n in judges if isinstance(record.verdicts.get(n), Mapping) and record.verdicts[n].get("error")]


def recorded_attempt(record: AttemptRecord) -> Attempt:
    """The attempt as it was recorded (conversation, prefill, meta): what a retried generation sends again, so
    a search attack's prompt is kept rather than searched for anew."""
    meta = {"id": record.attempt_id, **record.attempt_meta}
    return Attempt(record.behavior_id, record.attack, tuple(record.messages), record.prefill or "", meta)


def recorded_answer(record: AttemptRecord) -> Completion:
    """What the evaluation's judges were handed for a recorded answer (safealign.eval.pipeline), for every
    judging of it again (a failed verdict on resume, ``safealign judge records``): the prefill followed by the
    model's continuation (a defense's own refusal alone), with the completion's recorded meta (finish reason,
    tokens) and the prefill named in it for the judges that leave it out; a failed generation as its error and no
    text, which judges leave unscored.
    (The defense steps the live judges saw in the meta are recorded apart, in ``record.defense``.)"""
    prefilled = record.prefill and not answered_by_defense(record.defense)  # a filter's refusal is the answer alone
    meta = {**(record.completion.get("meta") or {}), **({"prefill": record.prefill} if prefilled else {})}
    return Completion(text=record.answer if record.error is None else "", error=record.error, meta=meta)
