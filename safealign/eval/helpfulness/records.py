"""Resumable JSONL records and rate intervals shared by the helpfulness evaluations.

The Wilson interval is the jailbreak summary's (:mod:`safealign.eval.summary`), so ASR and refusal
rates share one implementation. Records are appended (and flushed) as they are produced, so a crash
loses at most the batch in flight; a line cut off by such a crash is skipped with a warning.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable

from safealign.eval.summary import wilson_interval

logger = logging.getLogger(__name__)


def rate_ci95(k: int, n: int) -> list[float] | None:
    """The Wilson 95% interval of the jailbreak summary as a list; None (not "(0, 1)") when ``n == 0``."""
    return list(wilson_interval(k, n)) if n else None


def read_records(path: Path) -> list[dict[str, Any]]:
    """All JSON records in ``path`` (empty when absent); unparseable lines are skipped with a warning."""
    if not path.exists():
        return []
    records = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            logger.warning("%s:%d: skipping an unreadable record (interrupted write?)", path, lineno)
    return records


def append_records(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """Append records as JSON lines and flush, so they survive a crash of the caller."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        if fh.tell() and not _ends_with_newline(path):
            fh.write("\n")  # a crash left a partial line: keep it from swallowing the next record
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        fh.flush()


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


def latest_by(records: Iterable[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    """The last record per ``str(record[key])``: a retried item supersedes its earlier failed attempt."""
    return {str(r[key]): r for r in records if key in r}


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def batched(items: list[Any], size: int) -> Iterable[list[Any]]:
    size = max(1, size)
    for start in range(0, len(items), size):
        yield items[start : start + size]
