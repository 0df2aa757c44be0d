"""``direct``: the behavior as is (context, HarmBench's "---" separator, behavior) — the no-attack baseline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from safealign.eval.attacks.base import Attack, behavior_prompt
from safealign.types import Attempt, Behavior


@dataclass(frozen=True)
class DirectConfig:
    pass


class DirectAttack(Attack):
    config_class: ClassVar[type] = DirectConfig
    deterministic: ClassVar[bool] = True

    def attack(self, behavior: Behavior) -> list[Attempt]:
        return [self.user_attempt(behavior, behavior_prompt(behavior), "direct")]
