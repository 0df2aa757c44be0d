"""Resumable records and rate intervals shared by the helpfulness evaluations.

The Wilson interval is the jailbreak summary's (:mod:`safealign.eval.summary`), so ASR and refusal
rates share one implementation. Records are read and appended with :mod:`safealign.io.jsonl` as they
are produced, so a crash loses at most the batch in flight.
"""

from __future__ import annotations

from typing import Any, Iterable

from safealign.eval.summary import wilson_interval


def rate_ci95(k: int, n: int) -> list[float] | None:
    """The Wilson 95% interval of the jailbreak summary as a list; None (not "(0, 1)") when ``n == 0``."""
    return list(wilson_interval(k, n)) if n else None


def latest_by(records: Iterable[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    """The last record per ``str(record[key])``: a retried item supersedes its earlier failed attempt."""
    return {str(r[key]): r for r in records if key in r}


def batched(items: list[Any], size: int) -> Iterable[list[Any]]:
    size = max(1, size)
    for start in range(0, len(items), size):
        yield items[start : start + size]
