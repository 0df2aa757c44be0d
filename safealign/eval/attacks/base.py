"""The Attack base class and the shared services an attack may use (AttackContext).

Each attempt carries a stable ``meta["id"]`` (unique within one behavior and attack) so that a
re-run can tell which attempts are already recorded. Attacks that need the model (GCG: gradients;
PAIR: target replies and a judge) get it from the context, never by loading their own copy.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Sequence

from safealign.data.behaviors import behavior_prompt
from safealign.errors import UserError
from safealign.eval.backends.base import ChatModel, GenerationParams, with_seeds
from safealign.eval.registries import ATTACKS
from safealign.registry import RegisteredName
from safealign.types import Attempt, Behavior


@dataclass(frozen=True)
class AttackContext:
    """Shared services: the target ChatModel, generation settings, an early-stop judge, for white-box attacks
    the HF model and tokenizer behind the target (None for remote targets), and the run's folder and records."""

    target: ChatModel | None = None
    generation: GenerationParams = GenerationParams()
    judge: Any = None  # safealign.eval.judges.Judge
    model: Any = None
    tokenizer: Any = None
    work_dir: Any = None  # the run's output folder (pathlib.Path), for attack state such as a universal suffix
    # the run's records (safealign.eval.records.RecordStore), for an attack whose resume depends on what they hold
    # (gcg_multi: the suffix its recorded attempts were made with); None outside a run
    records: Any = None


class Attack(ABC):
    # The registry key in safealign/eval/registries.py is the attack's only name.
    name: ClassVar[str] = RegisteredName(ATTACKS)  # type: ignore[assignment]
    config_class: ClassVar[type]
    needs_target: ClassVar[bool] = False  # every behavior must carry a target string ("Sure, here is ...")
    # Each attempt ends a costly per-behavior search (pair, tap, crescendo, autodan, gcg): the pipeline answers
    # and records a behavior's attempts before the next search starts, so an interruption loses one search at
    # most; the cheap attacks' attempts are batched across behaviors instead.
    searches: ClassVar[bool] = False
    # The attempts are a pure function of the behavior and the attack's params (and files they name): no search,
    # no attacker or target model, no draws but from a stream seeded by them (best_of_n, many_shot). A resumed run
    # rebuilds them and refuses records that differ (safealign.eval.resume_check): the run fingerprint does not
    # cover how prompts are built.
    deterministic: ClassVar[bool] = False

    @classmethod
    def check(cls, config: Any, behaviors: Sequence[Behavior]) -> None:
        """Checks that need no model, run for every attack before any model loads or any attack generates,
        so a run cannot fail after hours of other attacks' work. Subclasses extend it (e.g. their files)."""
        missing = [b for b in behaviors if not b.target] if cls.needs_target else []
        if missing:
            first = missing[0]
            raise UserError(
                f"{cls.name} attack: {len(missing)} of {len(behaviors)} behaviors have no target string (first: "
                f"{first.id!r}, {first.source or 'no source'} row {first.row}); pass behaviors.targets=<targets "
                "JSON keyed by behavior id>, or drop the attack"
            )

    def __init__(self, config: Any, context: AttackContext | None = None) -> None:
        self.config = config
        self.context = context or AttackContext()

    def prepare(self, behaviors: Sequence[Behavior], pending: Sequence[Behavior] | None = None) -> None:
        """Work over the behavior set before the per-behavior loop: gcg_multi's shared suffix (from all
        ``behaviors``; a resumed run must reuse what it saved), or attacker generations batched across the
        ``pending`` behaviors (those without complete records; default: all). Called once per run."""
        return None

    @abstractmethod
    def attack(self, behavior: Behavior) -> list[Attempt]:
        """Attempts for one behavior, each with a stable ``meta["id"]``."""

    def __call__(self, behavior: Behavior) -> list[Attempt]:
        return self.attack(behavior)

    def query_keys(self, behavior: Behavior, role: str, queries: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
        """The sampling-seed keys of a search's queries to one model (``role``: "query" for the target, "attacker",
        "on_topic", "rating"): (behavior id, attack, role, the query's own key: stream and round, tree node, turn,
        technique, case)."""
        return [(behavior.id, self.name, role, *q) for q in queries]

    def search_params(self, behavior: Behavior, queries: Sequence[Sequence[Any]],
                      params: GenerationParams | None = None) -> GenerationParams:  # fmt: skip
        """The run's generation settings (or ``params``) for a search's queries to the target, with one sampling
        seed per query from (behavior, attack, the query's key: stream and round, tree node, turn, step): the streams
        and rounds of a search, and the searches of two behaviors, never share their draws, and a search run again
        (a resumed run) draws the same. Greedy settings come back as they are."""
        return with_seeds(params or self.context.generation, self.query_keys(behavior, "query", queries))

    def user_attempt(self, behavior: Behavior, content: str, attempt_id: str, **meta: Any) -> Attempt:
        """A single-user-turn attempt (the common case)."""
        messages = ({"role": "user", "content": content},)
        return Attempt(behavior.id, self.name, messages, meta={"id": attempt_id, **meta})


def with_context(behavior: Behavior, prompt: str) -> str:
    """What the target is sent for an attack's ``prompt`` (a rewrite of the request): a contextual behavior's
    context comes first, joined as :func:`behavior_prompt` joins it to the request, so every attack shows the
    target the same context the same way."""
    return behavior_prompt(replace(behavior, behavior=prompt))


def require_target(behavior: Behavior, attack: str) -> str:
    if not behavior.target:
        raise UserError(
            f"{attack} attack: behavior {behavior.id!r} ({behavior.source or 'no source'}, row {behavior.row}) "
            "has no target string; pass behaviors.targets=<targets JSON keyed by behavior id>"
        )
    return behavior.target


def early_stop_params(generation: GenerationParams, max_new_tokens: int) -> GenerationParams:
    """The settings of a search's early-stop answer (gcg, autodan): the run's generation settings (sampling,
    stop strings, prompt limit), so the check judges the kind of answer the run records, but shorter; one prompt
    per call. At the default run settings these are ``GenerationParams(max_new_tokens=..., batch_size=1)``."""
    return replace(generation, max_new_tokens=max_new_tokens, batch_size=1)


def check_attack(name: str, params: dict[str, Any] | None, behaviors: Sequence[Behavior]) -> None:
    """Parameters and :meth:`Attack.check` of one attack, before any model loads."""
    from safealign.eval.registries import ATTACKS, make_config

    cls = ATTACKS.get(name)
    cls.check(make_config(cls.config_class, params, f"attack {name!r}"), behaviors)


def build_attack(name: str, params: dict[str, Any] | None = None, context: AttackContext | None = None) -> Attack:
    from safealign.eval.registries import make_config

    cls = ATTACKS.get(name)
    return cls(make_config(cls.config_class, params, f"attack {name!r}"), context)


__all__ = ["Attack", "AttackContext", "build_attack", "check_attack", "behavior_prompt", "early_stop_params",
           "require_target", "with_context"]
