"""Loss registry, parameter validation, input checks and weighted composition.

A loss is a pure function ``fn(x, *, <own params with defaults>) -> LossOutput`` registered with
:func:`register_loss`. The registered object is a thin wrapper that checks the input kind, shapes and
(for reference-based losses) that ``ref_*`` are present, then calls ``fn``.
"""

from __future__ import annotations

import functools
import inspect
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping, Union

import torch
from torch import Tensor

from safealign.registry import Registry
from safealign.types import LossOutput, PairLogps, UnpairedLogps

InputKind = Literal["pair", "unpaired"]
LossFn = Callable[..., LossOutput]
LOSSES: Registry[LossFn] = Registry("loss")

# Keyword parameters the composition supplies; never user-configurable and not listed as params.
RESERVED_PARAMS = ("state",)
_INPUT_TYPES = {"pair": PairLogps, "unpaired": UnpairedLogps}
_POLICY_INPUTS = {"pair": ("chosen", "rejected"), "unpaired": ("logps",)}
_REF_FIELDS = {"pair": ("ref_chosen", "ref_rejected"), "unpaired": ("ref_logps",)}


# --------------------------------------------------------------------------- registration
def register_loss(
    name: str,
    *,
    needs_reference: bool,
    paper: str,
    input: InputKind = "pair",
    state: Callable[[], Any] | None = None,
    policy_inputs: tuple[str, ...] | None = None,
) -> Callable[[LossFn], LossFn]:
    """Register a pure loss function under ``name``.

    ``state``: optional factory for a state object a :class:`ComposedLoss` keeps across calls and
    passes as ``state=`` (e.g. BCO's :class:`~safealign.losses.state.RunningMean`). Called directly,
    such a loss receives ``state=None`` and falls back to a stateless estimate.
    ``policy_inputs``: the policy log-prob fields the loss differentiates (default: both sides).
    """
    if input not in _INPUT_TYPES:
        raise ValueError(f"loss {name!r}: input must be 'pair' or 'unpaired', got {input!r}")

    def deco(fn: LossFn) -> LossFn:
        _check_signature(name, fn, has_state=state is not None)

        @functools.wraps(fn)
        def wrapper(x: PairLogps | UnpairedLogps, **params: Any) -> LossOutput:
            check_input(name, x, input, needs_reference)
            return fn(x, **params)

        LOSSES.register(
            name,
            needs_reference=needs_reference,
            paper=paper,
            input=input,
            state=state,
            policy_inputs=policy_inputs or _POLICY_INPUTS[input],
        )(wrapper)
        return wrapper

    return deco


def _check_signature(name: str, fn: LossFn, *, has_state: bool) -> None:
    params = list(inspect.signature(fn).parameters.values())
    if not params or params[0].kind not in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD):
        raise TypeError(f"loss {name!r}: first parameter must be the positional input")
    for p in params[1:]:
        if p.kind is not p.KEYWORD_ONLY or p.default is p.empty:
            raise TypeError(f"loss {name!r}: parameter {p.name!r} must be keyword-only with a default")
    if has_state != any(p.name == "state" for p in params[1:]):
        raise TypeError(f"loss {name!r}: a `state=` factory and a `state` parameter go together")


def check_input(name: str, x: Any, kind: InputKind, needs_reference: bool) -> None:
    """Raise ValueError for the wrong input type, ragged shapes or a missing reference."""
    expected = _INPUT_TYPES[kind]
    if not isinstance(x, expected):
        other = "unpaired" if kind == "pair" else "paired"
        raise ValueError(
            f"loss {name!r} takes {kind} input ({expected.__name__}); got {type(x).__name__}"
            + (f" ({other} data given to a {kind} loss)" if isinstance(x, (PairLogps, UnpairedLogps)) else "")
        )
    if needs_reference and any(getattr(x, f) is None for f in _REF_FIELDS[kind]):
        raise ValueError(
            f"loss {name!r} needs reference log-probs but {'/'.join(_REF_FIELDS[kind])} is None; "
            "supply a reference (cache or live forward) or choose a reference-free loss"
        )
    size = getattr(x, _POLICY_INPUTS[kind][0]).shape
    for f in x.__dataclass_fields__:
        v = getattr(x, f)
        if isinstance(v, Tensor) and v.dim() >= 1 and v.shape[0] != size[0]:
            raise ValueError(f"loss {name!r}: field {f!r} has batch size {v.shape[0]}, expected {size[0]}")
        if isinstance(v, Tensor) and f != "chosen_scores" and v.dim() != 1:
            raise ValueError(f"loss {name!r}: field {f!r} must have shape (B,), got {tuple(v.shape)}")


# --------------------------------------------------------------------------- lookup
@dataclass(frozen=True)
class LossInfo:
    """What ``safealign losses`` prints about one registered loss."""

    name: str
    needs_reference: bool
    input: InputKind
    paper: str
    params: dict[str, Any]
    summary: str


def get_loss(name: str) -> LossFn:
    """The registered loss function; ValueError listing the registered names if unknown."""
    return LOSSES.get(name)


def loss_names() -> list[str]:
    return LOSSES.names()


def loss_params(name: str) -> dict[str, Any]:
    """User-configurable parameters of a loss and their defaults, in signature order."""
    sig = inspect.signature(get_loss(name))
    return {p.name: p.default for p in list(sig.parameters.values())[1:] if p.name not in RESERVED_PARAMS}


def loss_info(name: str) -> LossInfo:
    fn, meta = get_loss(name), LOSSES.meta(name)
    summary = (inspect.getdoc(fn) or "").split("\n", 1)[0]
    return LossInfo(name, meta["needs_reference"], meta["input"], meta["paper"], loss_params(name), summary)


def validate_params(name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Check ``params`` against the loss signature; ValueError lists the allowed names and types."""
    allowed = loss_params(name)
    hints = typing.get_type_hints(inspect.unwrap(get_loss(name)))
    listing = ", ".join(f"{k} (default {v!r})" for k, v in allowed.items()) or "none"
    for key, value in params.items():
        if key not in allowed:
            raise ValueError(f"loss {name!r} has no parameter {key!r}; allowed: {listing}")
        if not _type_ok(value, hints.get(key, Any)):
            raise ValueError(
                f"loss {name!r} parameter {key!r} must be {_type_name(hints[key])}, "
                f"got {type(value).__name__} {value!r}"
            )
    return dict(params)


def _type_ok(value: Any, ann: Any) -> bool:
    origin = typing.get_origin(ann)
    if ann is Any:
        return True
    if origin is Literal:
        return value in typing.get_args(ann)
    if origin in (Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(ann))
    if ann is type(None):
        return value is None
    if ann is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if ann is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, ann) if isinstance(ann, type) else True


def _type_name(ann: Any) -> str:
    if typing.get_origin(ann) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(ann))
    return getattr(ann, "__name__", None) or str(ann).replace("typing.", "")


# --------------------------------------------------------------------------- composition
@dataclass(frozen=True)
class LossSpec:
    """One component of a (possibly weighted, multi-loss) objective."""

    name: str
    weight: float = 1.0
    params: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, obj: LossSpec | str | Mapping[str, Any]) -> LossSpec:
        """Accept a spec, a bare name, or a mapping ``{name, weight?, params?}`` (config form)."""
        if isinstance(obj, LossSpec):
            return obj
        if isinstance(obj, str):
            return cls(obj)
        if isinstance(obj, Mapping):
            extra = set(obj) - {"name", "weight", "params"}
            if "name" not in obj or extra:
                raise ValueError(f"loss entry needs 'name' and optional 'weight', 'params'; got keys {sorted(obj)}")
            return cls(obj["name"], obj.get("weight", 1.0), dict(obj.get("params") or {}))
        raise ValueError(f"cannot read a loss spec from {type(obj).__name__} {obj!r}")


@dataclass
class _Component:
    label: str
    fn: LossFn
    weight: float
    params: dict[str, Any]
    state: Any


class ComposedLoss:
    """Weighted sum of registered losses: ``losses = Σ_k w_k · loss_k(x)`` per example.

    With one component, metrics are the component's own; with several, each metric is prefixed
    ``<label>/`` (label = loss name, ``name#2`` for a repeat) and ``<label>/loss`` is added.
    Per-component state (e.g. BCO's running mean δ) lives here; see :meth:`state_dict`.
    """

    def __init__(self, specs: list[LossSpec]) -> None:
        if not specs:
            raise ValueError(f"no loss given; registered losses: {', '.join(loss_names())}")
        self.specs = tuple(specs)
        self.components: list[_Component] = []
        seen: dict[str, int] = {}
        for spec in specs:
            fn, meta = get_loss(spec.name), LOSSES.meta(spec.name)
            if not isinstance(spec.weight, (int, float)) or isinstance(spec.weight, bool) or not math.isfinite(spec.weight):
                raise ValueError(f"loss {spec.name!r}: weight must be a finite number, got {spec.weight!r}")
            seen[spec.name] = seen.get(spec.name, 0) + 1
            label = spec.name if seen[spec.name] == 1 else f"{spec.name}#{seen[spec.name]}"
            state = meta["state"]() if meta["state"] is not None else None
            params = validate_params(spec.name, spec.params)
            self.components.append(_Component(label, fn, float(spec.weight), params, state))
        kinds = {LOSSES.meta(s.name)["input"] for s in specs}
        if len(kinds) > 1:
            detail = ", ".join(f"{s.name} ({LOSSES.meta(s.name)['input']})" for s in specs)
            raise ValueError(f"cannot combine pair and unpaired losses in one objective: {detail}")
        self.input_kind: InputKind = kinds.pop()
        self.needs_reference = any(LOSSES.meta(s.name)["needs_reference"] for s in specs)

    @property
    def states(self) -> dict[str, Any]:
        """Live state objects by component label (e.g. to set ``RunningMean.reduce`` under DDP)."""
        return {c.label: c.state for c in self.components if c.state is not None}

    def __call__(self, x: PairLogps | UnpairedLogps) -> LossOutput:
        check_input("+".join(c.label for c in self.components), x, self.input_kind, self.needs_reference)
        total: Tensor | None = None
        metrics: dict[str, Tensor] = {}
        several = len(self.components) > 1
        for c in self.components:
            extra = {"state": c.state} if c.state is not None else {}
            out = c.fn(x, **c.params, **extra)
            total = c.weight * out.losses if total is None else total + c.weight * out.losses
            if several:
                metrics[f"{c.label}/loss"] = out.losses.detach()
                metrics.update({f"{c.label}/{k}": v for k, v in out.metrics.items()})
            else:
                metrics.update(out.metrics)
        assert total is not None
        return LossOutput(total, metrics)

    def state_dict(self) -> dict[str, Any]:
        """State to save with a checkpoint so a resumed run continues bit for bit."""
        return {label: s.state_dict() for label, s in self.states.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for label, s in self.states.items():
            if label in state:
                s.load_state_dict(state[label])

    def __repr__(self) -> str:
        parts = [f"{c.weight:g}*{c.label}({', '.join(f'{k}={v!r}' for k, v in c.params.items())})" for c in self.components]
        return f"ComposedLoss({' + '.join(parts)})"


def build_loss(specs: list[LossSpec | str | Mapping[str, Any]] | LossSpec | str) -> ComposedLoss:
    """Validate names and params now (fail before any model loads) and return the composed loss."""
    items = [specs] if isinstance(specs, (LossSpec, str)) else list(specs)
    return ComposedLoss([LossSpec.parse(s) for s in items])


# --------------------------------------------------------------------------- shared helpers
def log_ratios(x: PairLogps) -> tuple[Tensor, Tensor]:
    """(cl, rl) = (pc − rc, pr − rr), summed over response tokens. Caller checked refs exist."""
    assert x.ref_chosen is not None and x.ref_rejected is not None
    return x.chosen - x.ref_chosen, x.rejected - x.ref_rejected


def per_token(logps: Tensor, tokens: Tensor) -> Tensor:
    """Length-average a summed quantity; lengths below 1 count as 1 (empty responses)."""
    return logps / tokens.to(logps.dtype).clamp(min=1)


def chosen_nll(x: PairLogps) -> Tensor:
    """Per-token-averaged NLL of the chosen response, −pc / Lw (the SFT term of rpo/cpo/orpo)."""
    return -per_token(x.chosen, x.chosen_tokens)


def reward_metrics(chosen: Tensor, rejected: Tensor) -> dict[str, Tensor]:
    """Per-example detached rewards, margins and reward accuracy (chosen > rejected)."""
    c, r = chosen.detach(), rejected.detach()
    return {"rewards/chosen": c, "rewards/rejected": r, "rewards/margins": c - r, "rewards/accuracies": (c > r).float()}


def require(ok: bool, loss: str, message: str) -> None:
    """Parameter range check inside a loss: ValueError naming the loss."""
    if not ok:
        raise ValueError(f"loss {loss!r}: {message}")


def as_tensor(value: float | Tensor, like: Tensor) -> Tensor:
    return torch.as_tensor(value, dtype=like.dtype, device=like.device)
