"""Loss registry, parameter validation, input checks and weighted composition.

A loss is a pure function ``fn(x, *, <own params with defaults>) -> LossOutput`` registered with
:func:`register_loss`. The registered object is a thin wrapper that checks the input kind, shapes and
(for reference-based losses) that ``ref_*`` are present, then calls ``fn``.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping

import torch
from torch import Tensor

from safealign.errors import UserError
from safealign.params import check_params, resolved_hints
from safealign.registry import Registry
from safealign.types import LossOutput, PairLogps, TokenLogps, UnpairedLogps

InputKind = Literal["pair", "unpaired", "token"]
LossFn = Callable[..., LossOutput]
LOSSES: Registry[LossFn] = Registry("loss")

# Keyword parameters the composition supplies; never user-configurable and not listed as params.
RESERVED_PARAMS = ("state",)
# "token": per-token log-probs of the chosen response (TokenLogps), for losses over each token
_INPUT_TYPES = {"pair": PairLogps, "unpaired": UnpairedLogps, "token": TokenLogps}
_POLICY_INPUTS = {"pair": ("chosen", "rejected"), "unpaired": ("logps",), "token": ("logps",)}
_REF_FIELDS = {"pair": ("ref_chosen", "ref_rejected"), "unpaired": ("ref_logps",), "token": ("ref_logps",)}
# KTO's KL columns feed one pooled estimate, not a value per example: under data parallelism the trainer gathers
# them from every process, so their length is not the batch's (they must match each other)
_POOLED_FIELDS = ("kl_logps", "ref_kl_logps")


# --------------------------------------------------------------------------- registration
def register_loss(
    name: str,
    *,
    needs_reference: bool,
    paper: str,
    input: InputKind = "pair",
    state: Callable[[], Any] | None = None,
    policy_inputs: tuple[str, ...] | None = None,
    needs_scores: bool = False,
    needs_cross_prompt_pairs: bool = False,
    joint_logps: bool = False,
    needs_safety_flags: bool = False,
    needs_kl_partners: bool = False,
    batch_coupled: bool = False,
    ranges: Mapping[str, Range] | None = None,
) -> Callable[[LossFn], LossFn]:
    """Register a pure loss function under ``name``.

    The inputs a loss cannot train without are declared here, and ``safealign train`` checks them against
    the data and recipe before any model loads (docs/loss-inputs.md): ``needs_reference`` (reference
    log-probs), ``needs_scores`` (``PairLogps.chosen_scores`` from a ``chosen_scores`` data column),
    ``needs_cross_prompt_pairs`` (rows whose chosen and rejected answer different prompts; losses without
    it refuse such rows), ``joint_logps`` (log-probs over prompt and response tokens, log π(x, y)),
    ``needs_safety_flags`` (``PairLogps.chosen_safe``/``rejected_safe`` from per-response safety labels),
    ``needs_kl_partners`` (an unpaired loss reading ``UnpairedLogps.kl_logps``/``ref_kl_logps``, KTO's KL point:
    the trainer builds and scores each row's mismatched sequence only for such a loss), ``batch_coupled`` (a row's
    loss depends on the other rows of its micro-batch, as AOT's sort: training refuses one row per device, where
    the loss would silently become another one).

    ``state``: optional factory for a state object a :class:`ComposedLoss` keeps across calls and
    passes as ``state=`` (e.g. BCO's :class:`~safealign.losses.state.RunningMean`). Called directly,
    such a loss receives ``state=None`` and falls back to a stateless estimate.
    ``policy_inputs``: the policy log-prob fields the loss differentiates (default: both sides).
    ``ranges``: the valid :class:`Range` of each of the loss's own parameters (``beta`` and ``tau`` have one range
    in every loss, :data:`_POSITIVE`). :func:`validate_params` checks them when a recipe is read, before any model
    loads, and the registered wrapper checks them again on each direct call: one declaration, no check in the body.
    """
    if input not in _INPUT_TYPES:
        raise ValueError(f"loss {name!r}: input must be one of {', '.join(_INPUT_TYPES)}, got {input!r}")

    def deco(fn: LossFn) -> LossFn:
        _check_signature(name, fn, has_state=state is not None)
        unknown = sorted(set(ranges or {}) - set(inspect.signature(fn).parameters))
        if unknown:
            raise TypeError(f"loss {name!r}: ranges name {', '.join(unknown)}, which the loss does not take")

        @functools.wraps(fn)
        def wrapper(x: PairLogps | UnpairedLogps, **params: Any) -> LossOutput:
            check_ranges(name, params)
            check_input(name, x, input, needs_reference)
            return fn(x, **params)

        LOSSES.register(
            name,
            needs_reference=needs_reference,
            paper=paper,
            input=input,
            state=state,
            policy_inputs=policy_inputs or _POLICY_INPUTS[input],
            needs_scores=needs_scores,
            needs_cross_prompt_pairs=needs_cross_prompt_pairs,
            joint_logps=joint_logps,
            needs_safety_flags=needs_safety_flags,
            needs_kl_partners=needs_kl_partners,
            batch_coupled=batch_coupled,
            ranges=dict(ranges or {}),
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
        given = {PairLogps: "paired", UnpairedLogps: "unpaired", TokenLogps: "per-token"}.get(type(x))
        raise ValueError(
            f"loss {name!r} takes {kind} input ({expected.__name__}); got {type(x).__name__}"
            + (f" ({given} data given to a {kind} loss)" if given else "")
        )
    if needs_reference and any(getattr(x, f) is None for f in _REF_FIELDS[kind]):
        raise ValueError(
            f"loss {name!r} needs reference log-probs but {'/'.join(_REF_FIELDS[kind])} is None; "
            "supply a reference (cache or live forward) or choose a reference-free loss"
        )
    size = getattr(x, _POLICY_INPUTS[kind][0]).shape
    for f in x.__dataclass_fields__:
        v = getattr(x, f)
        if f in _POOLED_FIELDS:  # any count of mismatched sequences, e.g. gathered over processes
            if isinstance(v, Tensor) and v.dim() != 1:
                raise ValueError(f"loss {name!r}: field {f!r} must have shape (M,), got {tuple(v.shape)}")
            continue
        if isinstance(v, Tensor) and v.dim() >= 1 and v.shape[0] != size[0]:
            raise ValueError(f"loss {name!r}: field {f!r} has batch size {v.shape[0]}, expected {size[0]}")
        if kind == "token" and isinstance(v, Tensor) and v.shape != size:
            raise ValueError(f"loss {name!r}: field {f!r} must have shape {tuple(size)} (B, L), got {tuple(v.shape)}")
        if kind != "token" and isinstance(v, Tensor) and f != "chosen_scores" and v.dim() != 1:
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
    needs: tuple[str, ...] = ()  # declared inputs beyond a pair's log-probs (docs/loss-inputs.md)


# declaration -> what the data must carry for it
_NEEDS = {"needs_scores": "chosen_scores", "needs_cross_prompt_pairs": "cross_prompt_pairs",
          "joint_logps": "joint_logps", "needs_safety_flags": "chosen_safe/rejected_safe"}


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
    needs = tuple(text for key, text in _NEEDS.items() if meta[key])
    return LossInfo(name, meta["needs_reference"], meta["input"], meta["paper"], loss_params(name), summary, needs)


def validate_params(name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Check ``params`` against the loss signature and its declared ranges; UserError naming the loss and the
    parameter (the allowed names and types, or the valid range)."""
    checked = check_params(f"loss {name!r}", params, loss_params(name), resolved_hints(inspect.unwrap(get_loss(name))))
    check_ranges(name, checked)  # the shared ranges and the loss's own, once
    return checked


def check_ranges(name: str, params: Mapping[str, Any]) -> None:
    """UserError for a parameter outside its range: the shared ones (:data:`_POSITIVE`) and those ``name`` declared
    with ``register_loss(ranges=...)``. An unset optional parameter (None) and a tensor value are not checked."""
    what, declared = f"loss {name!r}", LOSSES.meta(name)["ranges"]
    for key, value in params.items():
        _check_range(what, key, value)
        if key in declared and _is_number(value) and not declared[key].contains(value):
            why = f": {declared[key].why}" if declared[key].why else ""
            raise UserError(f"{what} parameter {key!r} must be {declared[key]}, got {value}{why}")


def check_keyword_params(what: str, fn: Callable[..., Any], allowed: Mapping[str, Any],
                         params: Mapping[str, Any]) -> dict[str, Any]:
    """Check ``params`` against ``allowed`` (name -> default) and ``fn``'s type hints (safealign/params.py), and the
    shared ranges of :data:`_POSITIVE`; UserError naming ``what`` (a loss, or a training objective:
    safealign/train/objectives)."""
    checked = check_params(what, params, allowed, resolved_hints(fn))
    for key, value in checked.items():
        _check_range(what, key, value)
    return checked


# A hyperparameter name means one thing in every loss (docs/design.md, "Losses"), so its valid range is stated once.
_POSITIVE = {
    "beta": "beta = 0 makes the loss a constant (log 2 for DPO): nothing trains; beta < 0 flips the preference",
    "tau": "tau is a scale (IPO's target margin 1/(2·tau), DiscoPOP's temperature) and divides",
}


@dataclass(frozen=True)
class Range:
    """A loss parameter's valid interval, declared once at registration: ``Range(0)`` is >= 0,
    ``Range(0, low_open=True)`` > 0, ``Range(0, 0.5, high_open=True)`` [0, 0.5). ``why``: what a value outside does."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    why: str = ""

    def contains(self, value: float) -> bool:
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_range(what: str, key: str, value: Any) -> None:
    if key in _POSITIVE and isinstance(value, (int, float)) and value <= 0:
        raise UserError(f"{what} parameter {key!r} must be > 0, got {value}: {_POSITIVE[key]}")


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
    """Parameter range check inside a loss: UserError naming the loss."""
    if not ok:
        raise UserError(f"loss {loss!r}: {message}")


def as_tensor(value: float | Tensor, like: Tensor) -> Tensor:
    return torch.as_tensor(value, dtype=like.dtype, device=like.device)
