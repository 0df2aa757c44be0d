"""The second trainer plug-in kind: an *objective* computes the training loss from the model itself.

A preference loss (``safealign.losses``) sees summed log-probs; methods that act on hidden states
(circuit breakers, ReFAT) cannot be written that way. An objective is a registered class that receives
the model, the collated batch and an :class:`ObjectiveContext` (the frozen reference, the step and the
total number of steps, the encoded rows) and returns an :class:`ObjectiveOutput` (loss and metrics).
The trainer calls whatever objective the recipe names and never branches on its name (docs/objectives.md).

An objective declares the rows it trains on as *roles*: each role is a tuple of :class:`RowKind` (a harmful
or benign prompt with a desirable or undesirable completion), the first one required, the others added when
present; ``safealign train`` checks the data supplies every required kind before any model loads, and each
batch holds one row of every role.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, ContextManager, Mapping, Sequence

from torch import Tensor, nn

from safealign.errors import UserError
from safealign.losses.base import check_keyword_params
from safealign.params import signature_params
from safealign.registry import RegisteredName, Registry

OBJECTIVES: Registry[type["Objective"]] = Registry("objective")


@dataclass(frozen=True)
class RowKind:
    """Rows of one kind: a harmful or benign prompt with a desirable (``True``) or undesirable completion.

    From preference pairs flagged ``harmful`` (the demo's pairs file): a harmful row's ``chosen`` is a
    refusal and its ``rejected`` a compliance; a benign row's ``chosen`` is the answer and its ``rejected``
    an unnecessary refusal. A harmful pair with both safety labels (PKU-SafeRLHF) is first ordered by them, its
    safe side taken as the refusal (``objectives.data.order_by_safety``). The unpaired layout states them directly
    (``label``, ``harmful``).
    """

    harmful: bool
    desirable: bool

    @property
    def what(self) -> str:
        names = {(True, False): "harmful completions", (True, True): "refusals of harmful prompts",
                 (False, True): "benign answers", (False, False): "refusals of benign prompts"}
        return names[(self.harmful, self.desirable)]

    @property
    def provided_by(self) -> str:
        """Where a data file carries these rows: the field and the layout."""
        flag = str(self.harmful).lower()
        side = "chosen" if self.desirable else "rejected"
        return (f"the '{side}' field of preference rows with harmful={flag} (the demo's pairs file, "
                f"`safealign data build-safety`), or unpaired rows (prompt, completion, label, harmful) with "
                f"label={str(self.desirable).lower()}, harmful={flag}")


HARMFUL_COMPLETION = RowKind(harmful=True, desirable=False)
REFUSAL = RowKind(harmful=True, desirable=True)
BENIGN_ANSWER = RowKind(harmful=False, desirable=True)


@dataclass(frozen=True)
class ObjectiveOutput:
    """The scalar loss to minimise and detached metrics (0-d, or one value per row); the metric names
    must be the same at every step (they are gathered across processes)."""

    loss: Tensor
    metrics: dict[str, Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class ObjectiveContext:
    """What an objective may use besides the model and the batch.

    ``reference(model)`` is a context manager yielding the frozen starting model to run under no grad:
    for LoRA the same model with its adapter disabled, otherwise a frozen copy (or ``reference.model``);
    an objective declaring ``needs_reference = False`` gets none.
    ``step`` counts optimizer steps completed before this one (0 on the first); ``total_steps`` is the
    run's planned number. ``rows`` holds every encoded row of each role (for estimates over the data set).
    """

    reference: Callable[[nn.Module], ContextManager[nn.Module]]
    step: int
    total_steps: int
    rows: Mapping[str, Sequence[Any]]
    pad_token_id: int
    seed: int = 0
    chunk_size: int = 1024


class Objective:
    """Base class of a registered objective. Parameters are keyword-only ``__init__`` arguments with
    defaults (checked by :func:`build_objective`); ``roles`` maps a role name (the batch key) to the row
    kinds that feed it (the first required); ``paper`` cites the method."""

    name = RegisteredName(OBJECTIVES)
    paper: ClassVar[str] = ""
    needs_reference: ClassVar[bool] = True  # False: no frozen copy is made (full fine-tuning saves its memory)
    # with needs_reference False: why reference.model does not apply (the recipe check refuses it with this)
    reference_role: ClassVar[str] = "it keeps no reference model"
    roles: Mapping[str, tuple[RowKind, ...]]

    def __call__(self, model: nn.Module, batch: Mapping[str, Any], ctx: ObjectiveContext) -> ObjectiveOutput:
        raise NotImplementedError


def register_objective(name: str) -> Callable[[type[Objective]], type[Objective]]:
    """Register an :class:`Objective` subclass under ``name``; its ``__init__`` parameters must be keyword-only
    with defaults (they are the recipe's ``objective.params``)."""

    def deco(cls: type[Objective]) -> type[Objective]:
        if not cls.paper:
            raise TypeError(f"objective {name!r}: set the class attribute `paper`")
        for p in list(inspect.signature(cls.__init__).parameters.values())[1:]:
            if p.kind is not p.KEYWORD_ONLY or p.default is p.empty:
                raise TypeError(f"objective {name!r}: parameter {p.name!r} must be keyword-only with a default")
        OBJECTIVES.register(name, cls)
        return cls

    return deco


def objective_params(name: str) -> dict[str, Any]:
    """Parameters of an objective and their defaults, in signature order."""
    return signature_params(OBJECTIVES.get(name).__init__, skip=1)[0]


def build_objective(name: str, params: Mapping[str, Any] | None = None) -> Objective:
    """The objective ``name`` with ``params`` checked against its signature (before any model loads)."""
    cls = OBJECTIVES.get(name)
    checked = check_keyword_params(f"objective {name!r}", cls.__init__, objective_params(name), params or {})
    return cls(**checked)


@dataclass(frozen=True)
class ObjectiveInfo:
    """What ``safealign losses`` prints about an objective."""

    name: str
    paper: str
    params: dict[str, Any]
    summary: str
    roles: dict[str, list[str]]


def objective_info(name: str) -> ObjectiveInfo:
    cls = OBJECTIVES.get(name)
    roles = {role: [kind.what for kind in kinds] for role, kinds in cls().roles.items()}
    if not roles and getattr(cls, "data_layout", ""):  # an objective with its own data layout (seed_data.py)
        roles = {"data": [cls.data_layout]}
    summary = (inspect.getdoc(cls) or "").split("\n", 1)[0]
    return ObjectiveInfo(name, cls.paper, objective_params(name), summary, roles)


def require(ok: bool, objective: str, message: str) -> None:
    """Parameter range check inside an objective: UserError naming it."""
    if not ok:
        raise UserError(f"objective {objective!r}: {message}")
