"""Training prompts for online runs: the built-in train splits, or a JSONL file of ``{prompt, harmful}``.

Loaded before any model, so a bad file fails in seconds. The order a step draws prompts in is a pure
function of (seed, step) (:func:`step_prompts`), so a resumed run sees exactly the prompts it would have.
"""

from __future__ import annotations

import random

from safealign.errors import UserError
from safealign.online.config import PromptsConfig
from safealign.online.rollout import PromptItem


def load_training_prompts(config: PromptsConfig) -> list[PromptItem]:
    items = _from_file(config.path) if config.path else _builtin(config)
    if not items:
        raise UserError(f"{config.path or 'built-in prompts'}: no training prompts")
    return items


def _builtin(config: PromptsConfig) -> list[PromptItem]:
    from safealign.data.builtin import load_prompts

    def pick(name: str, kind: str | None, n: int) -> list:
        return load_prompts(name, split="train", kind=kind)[:n] if n else []

    chosen = (pick("harmful", None, config.harmful_train) + pick("benign", "ordinary", config.benign_train)
              + pick("benign", "borderline", config.borderline_train))
    return [PromptItem(p.id, ({"role": "user", "content": p.prompt},), p.harmful) for p in chosen]


def _from_file(path: str) -> list[PromptItem]:
    from safealign.data.messages import RowDrop, parse_bool, parse_prompt
    from safealign.io import read_jsonl

    items = []
    for row, record in enumerate(read_jsonl(path)):
        try:
            messages = parse_prompt(record.get("prompt"))
            harmful = parse_bool(record.get("harmful"), "harmful")
        except RowDrop as exc:
            raise UserError(f"{path} row {row}: {exc.field}: {exc.reason}") from None
        items.append(PromptItem(str(record.get("id", row)), messages, harmful))
    return items


def step_prompts(items: list[PromptItem], step: int, per_step: int, seed: int) -> list[PromptItem]:
    """The prompts of 0-based ``step``: a stream of per-epoch shuffles (seeded by seed and epoch)."""
    picked = []
    for position in range(step * per_step, (step + 1) * per_step):
        epoch, offset = divmod(position, len(items))
        order = list(range(len(items)))
        random.Random(f"{seed}:{epoch}").shuffle(order)
        picked.append(items[order[offset]])
    return picked
