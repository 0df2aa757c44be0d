"""Resumable JSONL records and the Wilson interval shared by the helpfulness evaluations.

Records are appended (and flushed) as they are produced, so a crash loses at most the batch in flight;
a truncated last line from such a crash is skipped with a warning instead of failing the re-run.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Iterable

logger = logging.getLogger(__name__)

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval for ``k`` successes in ``n`` trials (Wilson 1927); None when ``n == 0``."""
    if n <= 0:
        return None
    if not 0 <= k <= n:
        raise ValueError(f"wilson_interval: need 0 <= k <= n, got k={k}, n={n}")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


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
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        fh.flush()


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
