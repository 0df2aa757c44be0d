"""Training objectives over hidden states: the trainer's second plug-in kind (docs/objectives.md).

``OBJECTIVES`` is the registry; :func:`build_objective` checks a recipe's ``objective.params`` before any
model loads. Built-ins: ``circuit_breakers`` (representation rerouting) and ``refat`` (refusal-feature
adversarial training). Adding one is a subclass of :class:`Objective` plus ``@register_objective``.
"""

from __future__ import annotations

from safealign.train.objectives.base import (
    OBJECTIVES,
    Objective,
    ObjectiveContext,
    ObjectiveInfo,
    ObjectiveOutput,
    RowKind,
    build_objective,
    objective_info,
    objective_params,
    register_objective,
)

# Built-ins register on import (torch only).
from safealign.train.objectives import circuit_breakers, refat, cut, distill, mah_dpo  # noqa: E402,F401,I001


def objective_names() -> list[str]:
    return OBJECTIVES.names()


__all__ = [
    "OBJECTIVES",
    "Objective",
    "ObjectiveContext",
    "ObjectiveInfo",
    "ObjectiveOutput",
    "RowKind",
    "build_objective",
    "objective_info",
    "objective_names",
    "objective_params",
    "register_objective",
]
