"""``human_jailbreaks``: fixed jailbreak wrappers in the style of the public collections (HarmBench's
HumanJailbreaks; docs/attacks.md).

The shipped ``human_jailbreaks.yaml`` holds 34 wrappers written by this project, each with a family tag
(persona, developer_mode, simulation, opposite, fiction, ...), in the format of ``templates.yaml``. Like
HarmBench's ``random_subset_5``, each behavior gets ``subset`` wrappers drawn with a seeded random stream
(``subset: 0`` uses all); one attempt per wrapper, id = wrapper name (so names must be unique across the
shipped file and ``files``), ``meta["family"]`` its family.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

from safealign.checks import at_least
from safealign.errors import UserError
from safealign.eval.attacks.base import Attack, AttackContext
from safealign.eval.attacks.template import JailbreakTemplate, keep_families, load_templates
from safealign.types import Attempt, Behavior

WRAPPERS_FILE = Path(__file__).with_name("human_jailbreaks.yaml")


@dataclass(frozen=True)
class HumanJailbreaksConfig:
    subset: int = 5  # wrappers per behavior, drawn per behavior (HarmBench: 5); 0 = all
    families: tuple[str, ...] = ()  # keep only these families (empty: all)
    files: tuple[str, ...] = ()  # extra wrapper files (templates.yaml format), added to the shipped ones
    builtin: bool = True
    max_queries: int = 100  # the budget: target queries per behavior; more wrappers than this are refused
    seed: int = 0

    def __post_init__(self) -> None:
        at_least("attack_params.human_jailbreaks.subset", self.subset, 0)
        at_least("attack_params.human_jailbreaks.max_queries", self.max_queries, 1)


def load_wrappers(config: HumanJailbreaksConfig) -> list[JailbreakTemplate]:
    wrappers: list[JailbreakTemplate] = []
    first: dict[str, str] = {}  # wrapper name -> where it was first defined
    for path in ([WRAPPERS_FILE] if config.builtin else []) + [Path(p) for p in config.files]:
        for i, wrapper in enumerate(load_templates(path)):
            where = f"{path}: template #{i}"
            if wrapper.name in first:  # the name is the attempt id: two wrappers would share one record
                raise UserError(f"{where}: field 'name': {wrapper.name!r} is already used by {first[wrapper.name]}; "
                                "wrapper names must be unique (rename one)")
            first[wrapper.name] = where
            wrappers.append(wrapper)
    wrappers = keep_families(wrappers, config.families, "attack_params.human_jailbreaks.families")
    if not wrappers:
        raise UserError("human_jailbreaks attack: no wrappers (builtin=false and no files)")
    per_behavior = len(wrappers) if config.subset == 0 else min(config.subset, len(wrappers))
    if per_behavior > config.max_queries:
        raise UserError(f"attack_params.human_jailbreaks: {per_behavior} wrappers per behavior is over the budget "
                        f"max_queries={config.max_queries}; set subset")
    return wrappers


class HumanJailbreaksAttack(Attack):
    config_class: ClassVar[type] = HumanJailbreaksConfig
    deterministic: ClassVar[bool] = True

    def __init__(self, config: HumanJailbreaksConfig, context: AttackContext | None = None) -> None:
        super().__init__(config, context)
        self.wrappers = load_wrappers(config)

    @classmethod
    def check(cls, config: Any, behaviors: Sequence[Behavior]) -> None:
        super().check(config, behaviors)
        load_wrappers(config)  # wrapper files read and the budget checked before the model loads

    def attack(self, behavior: Behavior) -> list[Attempt]:
        chosen = list(self.wrappers)
        if self.config.subset:
            chosen = random.Random(f"{self.config.seed}:{behavior.id}").sample(chosen, min(self.config.subset,
                                                                                           len(chosen)))
        return [self.user_attempt(behavior, w.render(behavior), w.name, family=w.family) for w in chosen]
