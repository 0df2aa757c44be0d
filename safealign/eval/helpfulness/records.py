"""Resumable records and rate intervals shared by the helpfulness evaluations.

The Wilson interval is the jailbreak summary's (:mod:`safealign.eval.summary`), so ASR and refusal
rates share one implementation. Records are read and appended with :mod:`safealign.io.jsonl` as they
are produced, so a crash loses at most the batch in flight. The keys their folders' fingerprints hold for a model
and its generation settings (:func:`identity_keys`, :func:`generation_settings`) are shared too.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping

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


def identity_keys(identity: Mapping[str, Any]) -> dict[str, Any]:
    """An identity's keys for a fingerprint; ``weights``/``setup`` and the further setup keys (``tokenizer``,
    ``base_setup``: safealign.models.identity.setup_keys, only where known) are compared only when both runs know them
    (safealign.io.rundir.WHEN_KNOWN: an endpoint's weights cannot be seen)."""
    from safealign.models.identity import setup_fingerprint, setup_keys

    return {"spec": identity.get("spec"), "kind": identity.get("kind"), "backend": identity.get("backend"),
            "weights": identity.get("fingerprint"), "setup": setup_fingerprint(dict(identity)),
            **setup_keys(dict(identity))}


def generation_settings(params: Any) -> dict[str, Any]:
    """A :class:`~safealign.eval.backends.base.GenerationParams`' settings for a fingerprint: all but the batch size,
    which only says how many go at once, and per-call ``seeds`` (a call's, not a setting)."""
    return {k: v for k, v in dataclasses.asdict(params).items() if k not in ("batch_size", "seeds")}
