"""Input bounds: behaviors longer than ``behaviors.max_chars`` characters, or whose prompt is longer than the
model can take (``generation.max_prompt_tokens``, default: context length − ``max_new_tokens``), are
rejected, skipped or truncated per ``behaviors.too_long``, with a count in the log and the summary.

Why: one oversized behavior used to stall a whole evaluation (a 5 MB behavior: 4.6 GB RSS, no output),
and prompts past the context length ran without a warning, silently producing garbage. The character
bound is checked before the model loads; the token bound once the tokenizer is there, before any attack.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable, Sequence

from safealign.data.behaviors import CONTEXT_JOIN, behavior_prompt
from safealign.errors import UserError
from safealign.types import Behavior

logger = logging.getLogger(__name__)

POLICIES = ("reject", "skip", "truncate")


def bound_behaviors(behaviors: Sequence[Behavior], *, limit: int | None, unit: str, size: Callable[[Behavior], int],
                    policy: str, setting: str) -> tuple[list[Behavior], dict[str, int]]:  # fmt: skip
    """Apply ``policy`` to the behaviors whose ``size`` exceeds ``limit``; returns them and the counts."""
    if limit is None:
        return list(behaviors), {}
    over = {b.id: n for b in behaviors if (n := size(b)) > limit}
    if not over:
        return list(behaviors), {}
    first = next(b for b in behaviors if b.id in over)
    what = (f"{len(over)} of {len(behaviors)} behaviors are longer than {limit} {unit} ({setting}); first: "
            f"{first.id!r} ({first.source or 'no source'} row {first.row}, {over[first.id]} {unit})")  # fmt: skip
    if policy == "reject":
        raise UserError(f"{what}. Set behaviors.too_long=skip or truncate, or raise {setting}")
    if policy == "skip":
        logger.warning("%s: skipped (behaviors.too_long=skip)", what)
        return [b for b in behaviors if b.id not in over], {"skipped": len(over)}
    logger.warning("%s: truncated to fit (behaviors.too_long=truncate)", what)
    return [fit(b, limit, size) if b.id in over else b for b in behaviors], {"truncated": len(over)}


def cut(behavior: Behavior, n_chars: int) -> Behavior:
    """The behavior with its prompt (:func:`behavior_prompt`) cut to ``n_chars`` characters at most (exactly, where
    some context is kept): a long context goes first, since the request itself is what is being evaluated."""
    if behavior.context.strip():
        room = n_chars - len(behavior.behavior) - len(CONTEXT_JOIN)  # behavior_prompt joins them with it
        if room > 0:
            return dataclasses.replace(behavior, context=behavior.context[:room])
    return dataclasses.replace(behavior, context="", behavior=behavior.behavior[:n_chars])


def fit(behavior: Behavior, limit: int, size: Callable[[Behavior], int]) -> Behavior:
    """The longest cut of ``behavior`` whose ``size`` is within ``limit`` (binary search over characters)."""
    lo, hi = 0, len(behavior_prompt(behavior))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if size(cut(behavior, mid)) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return cut(behavior, lo)


def char_size(behavior: Behavior) -> int:
    return len(behavior_prompt(behavior))


def bound_by_chars(config, behaviors: Sequence[Behavior]) -> tuple[list[Behavior], dict[str, int]]:
    """``behaviors.max_chars`` per ``behaviors.too_long`` (``config``: a BehaviorsConfig); before any model."""
    return bound_behaviors(behaviors, limit=config.max_chars, unit="characters", size=char_size,
                           policy=config.too_long, setting="behaviors.max_chars")  # fmt: skip


def bound_by_tokens(config, behaviors: Sequence[Behavior], target, params) -> tuple[list[Behavior], dict[str, int]]:
    """The prompt-token bound of a local target (one with ``prompt_limit``: the hf and vllm backends, vLLM's
    context length being its engine's ``max_model_len``); remote (OpenAI-compatible) targets pass through."""
    if not hasattr(target, "prompt_limit"):
        return list(behaviors), {}
    limit, source = target.prompt_limit(params)

    def size(b: Behavior) -> int:
        return target.prompt_tokens(({"role": "user", "content": behavior_prompt(b)},), params)

    return bound_behaviors(behaviors, limit=limit, unit="prompt tokens", size=size, policy=config.too_long,
                           setting=f"generation.max_prompt_tokens, here {source}")  # fmt: skip
