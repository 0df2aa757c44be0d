"""Training prompts for online runs: the built-in train splits, or a JSONL file of ``{prompt, harmful[, id]}``.

Loaded before any model, so a bad file fails in seconds. The order a step draws prompts in is a pure
function of (seed, step) (:func:`step_prompts`), so a resumed run sees exactly the prompts it would have.
"""

from __future__ import annotations

import functools
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
    """Every row needs ``harmful`` (true/false): it picks the reference view (E-RLHF's prefix goes on harmful
    prompts only) and which ``apply_to`` sources score the row, so a row without it would silently get plain
    RLHF's anchor and the benign rewards. Ids (default: the row number, 0-based, blank lines not counted) must be
    unique: LSC baselines are kept per id. Read strictly, as a user's file: a cut-off line is an error, not a
    shorter prompt set."""
    from safealign.data.messages import RowDrop, parse_bool, parse_prompt
    from safealign.io import read_user_jsonl

    items: list[PromptItem] = []
    seen: dict[str, str] = {}
    for row, (line, record) in enumerate(read_user_jsonl(path, "training prompts file (prompts.path)")):
        where = f"{path} row {row} (line {line})"
        try:
            messages = parse_prompt(record.get("prompt"))
            harmful = parse_bool(record.get("harmful"), "harmful")
        except RowDrop as exc:
            raise UserError(f"{where}: {exc.field}: {exc.reason}") from None
        if harmful is None:
            raise UserError(f"{where}: harmful: missing; every training prompt needs harmful: true or false "
                            f"(it decides the reference view and which apply_to rewards score it); the row has "
                            f"{', '.join(sorted(record)) or 'no fields'}")
        item_id = str(record.get("id", row))
        if item_id in seen:
            raise UserError(f"{where}: id: {item_id!r} is also the id of {seen[item_id]} (an id left out is the row "
                            "number); ids must be unique, LSC baselines are kept per id")
        seen[item_id] = f"row {row} (line {line})"
        items.append(PromptItem(item_id, messages, harmful))
    return items


def step_prompts(items: list[PromptItem], step: int, per_step: int, seed: int) -> list[PromptItem]:
    """The prompts of 0-based ``step``: a stream of per-epoch shuffles (seeded by seed and epoch)."""
    picked = []
    for position in range(step * per_step, (step + 1) * per_step):
        epoch, offset = divmod(position, len(items))
        picked.append(items[_epoch_order(seed, epoch, len(items))[offset]])
    return picked


@functools.lru_cache(maxsize=2)  # a step's positions span this epoch and at most the next (unless per_step > size)
def _epoch_order(seed: int, epoch: int, size: int) -> tuple[int, ...]:
    """One epoch's shuffle of ``range(size)``, computed once per epoch instead of once per drawn prompt (a
    100k-prompt file would otherwise be reshuffled for every prompt of every step); the same order as ever, so
    runs resume on the prompts they were trained on."""
    order = list(range(size))
    random.Random(f"{seed}:{epoch}").shuffle(order)
    return tuple(order)
