"""Append-only ``records.jsonl``: one line per attempt, written and flushed as soon as it is judged.

A record's key is ``(behavior_id, attack, attempt_id)``; the last record for a key wins, so a retried
attempt supersedes its failed first try. Reading and appending go through :mod:`safealign.io.jsonl`:
a line cut off by a crash is skipped with a warning, and repaired before the next append.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterator

from safealign.errors import UserError
from safealign.io import append_jsonl, read_jsonl

logger = logging.getLogger(__name__)

Key = tuple[str, str, str]


def record_key(record: dict[str, Any]) -> Key:
    return record["behavior_id"], record["attack"], record["attempt_id"]


class RecordStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._records: dict[Key, dict[str, Any]] = {}
        self._n_attempts: dict[tuple[str, str], int] = {}
        self._attempt_ids: dict[tuple[str, str], set[str]] = {}
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        for index, record in enumerate(read_jsonl(self.path)):
            try:
                self._remember(record)
            except KeyError as exc:
                raise UserError(f"{self.path}: record #{index + 1} has no {exc.args[0]!r}: not an attempt record "
                                "of safealign eval; use another output_dir") from exc
        logger.info("resuming: %d records in %s", len(self._records), self.path)

    def _remember(self, record: dict[str, Any]) -> None:
        self._records[record_key(record)] = record
        pair = (record["behavior_id"], record["attack"])
        self._n_attempts[pair] = int(record["n_attempts"])
        self._attempt_ids.setdefault(pair, set()).add(record["attempt_id"])

    def append(self, records: list[dict[str, Any]]) -> None:
        append_jsonl(self.path, records)
        for record in records:
            self._remember(record)

    def is_done(self, key: Key, *, retry_errors: bool) -> bool:
        record = self._records.get(key)
        if record is None:
            return False
        return not (retry_errors and record["completion"].get("error"))

    def is_complete(self, behavior_id: str, attack: str, *, retry_errors: bool) -> bool:
        """Whether every attempt the attack produced for this behavior is recorded (and not failed)."""
        n = self._n_attempts.get((behavior_id, attack))
        if n is None:
            return False
        ids = self._attempt_ids.get((behavior_id, attack), set())
        return sum(self.is_done((behavior_id, attack, i), retry_errors=retry_errors) for i in ids) >= n

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self._records.values())

    def __len__(self) -> int:
        return len(self._records)
