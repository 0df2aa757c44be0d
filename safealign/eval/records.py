"""Append-only ``records.jsonl``: one line per attempt, written and flushed as soon as it is judged.

A record's key is ``(behavior_id, attack, attempt_id)``; the last record for a key wins, so a retried
attempt supersedes its failed first try. Reading and appending go through :mod:`safealign.io.jsonl`:
a line cut off by a crash is skipped with a warning, and repaired before the next append. Each line is
an :class:`~safealign.io.records.AttemptRecord`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Iterator

from safealign.io import append_jsonl, load_jsonl
from safealign.io.records import AttemptRecord

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
        self._attempt_ids: dict[tuple[str, str], set[str]] = {}
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
        self._attempt_ids.setdefault(pair, set()).add(record.attempt_id)

    def append(self, records: list[AttemptRecord]) -> None:
        append_jsonl(self.path, [record.to_json() for record in records])
        for record in records:
            self._remember(record)

    def is_done(self, key: Key, *, retry_errors: bool) -> bool:
        record = self._records.get(key)
        if record is None:
            return False
        return not (retry_errors and record.error)

    def is_complete(self, behavior_id: str, attack: str, *, retry_errors: bool) -> bool:
        """Whether every attempt the attack produced for this behavior is recorded (and not failed)."""
        n = self._n_attempts.get((behavior_id, attack))
        if n is None:
            return False
        ids = self._attempt_ids.get((behavior_id, attack), set())
        return sum(self.is_done((behavior_id, attack, i), retry_errors=retry_errors) for i in ids) >= n

    def __iter__(self) -> Iterator[AttemptRecord]:
        return iter(self._records.values())

    def __len__(self) -> int:
        return len(self._records)
