"""``prefill``: start the assistant turn with the affirmative target ("Sure, here is …") and let the
model continue (open-weight models; remote endpoints only where they support continuing a turn).

Judges see the prefill plus the continuation, as a user of the model would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from safealign.eval.attacks.base import Attack, behavior_prompt, require_target
from safealign.types import Attempt, Behavior


@dataclass(frozen=True)
class PrefillConfig:
    template: str = "{target}"  # e.g. "{target}:\n\nStep 1." to push further


class PrefillAttack(Attack):
    config_class: ClassVar[type] = PrefillConfig
    deterministic: ClassVar[bool] = True
    needs_target: ClassVar[bool] = True

    def attack(self, behavior: Behavior) -> list[Attempt]:
        prefill = self.config.template.replace("{target}", require_target(behavior, self.name))
        messages = ({"role": "user", "content": behavior_prompt(behavior)},)
        return [Attempt(behavior.id, self.name, messages, prefill=prefill, meta={"id": "prefill"})]
