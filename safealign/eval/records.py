"""Append-only ``records.jsonl``: one line per attempt, written and flushed as soon as it is judged.

A record's key is ``(behavior_id, attack, attempt_id)``; the last record for a key wins, so a retried
attempt supersedes its failed first try. A line cut off by a crash is skipped with a warning.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Iterator

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
        with self.path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    self._remember(json.loads(line))
                except (json.JSONDecodeError, KeyError):
                    logger.warning("%s:%d: skipping an unreadable record (interrupted write?)", self.path, lineno)
        logger.info("resuming: %d records in %s", len(self._records), self.path)

    def _remember(self, record: dict[str, Any]) -> None:
        self._records[record_key(record)] = record
        pair = (record["behavior_id"], record["attack"])
        self._n_attempts[pair] = int(record["n_attempts"])
        self._attempt_ids.setdefault(pair, set()).add(record["attempt_id"])

    def append(self, records: list[dict[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            # A previous crash may have left a partial line; start on a fresh one.
            if f.tell() and not self._ends_with_newline():
                f.write("\n")
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        for record in records:
            self._remember(record)

    def _ends_with_newline(self) -> bool:
        with self.path.open("rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"

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
