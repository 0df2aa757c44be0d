"""A resumed evaluation's recorded prompts must be the ones the current code builds.

The run fingerprint (safealign.io.rundir) covers the settings and the data, not how an attack turns them into
prompts, so a run begun before such a change and resumed after it would silently mix prompts built both ways
(on 2026-12-07 a contextual behavior's context and request went from a blank-line join to HarmBench's
``"\\n\\n---\\n\\n"``). For the attacks whose attempts are a pure function of the behavior and the params
(``Attack.deterministic``), :func:`check_recorded_prompts` rebuilds each recorded behavior's attempts (string
work) and compares every recorded attempt's messages and prefill with the rebuilt one of the same id, before
anything is generated. A search's or an attacker model's attempts cannot be rebuilt and are not checked.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

from safealign.errors import UserError
from safealign.eval.attacks.base import build_attack
from safealign.eval.records import RecordStore
from safealign.eval.registries import ATTACKS
from safealign.io.records import AttemptRecord
from safealign.types import Attempt, Behavior

logger = logging.getLogger(__name__)

EXCERPT = 30  # characters shown either side of the first difference
KNOWN_CHANGE = ("e.g. on 2026-12-07 the separator between a contextual behavior's context and its request changed "
                'from a blank line to HarmBench\'s "\\n\\n---\\n\\n"')  # fmt: skip


def check_recorded_prompts(store: RecordStore, attacks: Mapping[str, dict[str, Any] | None],
                           behaviors: Sequence[Behavior], overwrite_flag: str) -> None:  # fmt: skip
    """UserError naming the first recorded attempt of a deterministic attack in ``attacks`` (name -> params) that
    the current code would not build as recorded, for the run's ``behaviors``; ``overwrite_flag``: how the caller
    offers to start the run over."""
    checked = 0
    for name, params in attacks.items():
        if not ATTACKS.get(name).deterministic:
            continue
        attack = build_attack(name, params)  # no model: a deterministic attack uses none
        for behavior in behaviors:
            recorded = store.recorded(behavior.id, name)
            if not recorded:
                continue
            rebuilt = {str(a.meta["id"]): a for a in attack(behavior)}
            for record in recorded:
                problem = difference(record, rebuilt)
                if problem:
                    raise UserError(
                        f"{store.path}: behavior {behavior.id!r}, attack {name!r}, attempt {record.attempt_id!r}: "
                        f"{problem}. The run's recorded prompts were built differently from how this code builds "
                        f"them ({KNOWN_CHANGE}); resuming would mix prompts built both ways in one run. Use another "
                        f"output directory, or pass {overwrite_flag} to start this run over"
                    )
            checked += len(recorded)
    if checked:
        logger.info("resuming: %d recorded attempts rebuilt and matched the records", checked)


def difference(record: AttemptRecord, rebuilt: Mapping[str, Attempt]) -> str | None:
    """How ``record`` differs from the attempt of its id in ``rebuilt`` (attempt id -> attempt); None if it does not."""
    attempt = rebuilt.get(record.attempt_id)
    if attempt is None:
        return f"this code builds no attempt of that id (it builds {', '.join(map(repr, rebuilt))})"
    old, new = list(record.messages), list(attempt.messages)
    if len(old) != len(new):
        return f"{len(old)} messages recorded, {len(new)} built now"
    for i, (was, now) in enumerate(zip(old, new)):
        if was.get("role") != now.get("role"):
            return f"message {i}: role {was.get('role')!r} recorded, {now.get('role')!r} built now"
        if was.get("content") != now.get("content"):
            return f"message {i} ({now.get('role')}) {excerpt(str(was.get('content')), str(now.get('content')))}"
        if dict(was) != dict(now):
            return f"message {i}: {dict(was)!r} recorded, {dict(now)!r} built now"
    if (record.prefill or "") != attempt.prefill:
        return f"prefill {excerpt(record.prefill or '', attempt.prefill)}"
    return None


def excerpt(was: str, now: str) -> str:
    """Where two texts first differ, with :data:`EXCERPT` characters either side from each."""
    at = next((i for i, (a, b) in enumerate(zip(was, now)) if a != b), min(len(was), len(now)))
    start = max(0, at - EXCERPT)

    def around(text: str) -> str:
        end = at + EXCERPT
        return ("..." if start else "") + repr(text[start:end]) + ("..." if end < len(text) else "")

    return f"differs at character {at}: recorded {around(was)}, built now {around(now)}"
