"""Weighted composition of registered losses: LossSpec, ComposedLoss, build_loss."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from torch import Tensor

from safealign.errors import UserError
from safealign.losses.base import LOSSES, InputKind, LossFn, check_input, get_loss, loss_names, validate_params
from safealign.types import LossOutput, PairLogps, UnpairedLogps


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
                raise UserError(f"loss entry needs 'name' and optional 'weight', 'params'; got keys {sorted(obj)}")
            return cls(obj["name"], obj.get("weight", 1.0), dict(obj.get("params") or {}))
        raise UserError(f"cannot read a loss spec from {type(obj).__name__} {obj!r}")


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
            raise UserError(f"no loss given; registered losses: {', '.join(loss_names())}")
        self.specs = tuple(specs)
        self.components: list[_Component] = []
        seen: dict[str, int] = {}
        for spec in specs:
            fn, meta = get_loss(spec.name), LOSSES.meta(spec.name)
            if (
                not isinstance(spec.weight, (int, float))
                or isinstance(spec.weight, bool)
                or not math.isfinite(spec.weight)
            ):
                raise UserError(f"loss {spec.name!r}: weight must be a finite number, got {spec.weight!r}")
            seen[spec.name] = seen.get(spec.name, 0) + 1
            label = spec.name if seen[spec.name] == 1 else f"{spec.name}#{seen[spec.name]}"
            state = meta["state"]() if meta["state"] is not None else None
            params = validate_params(spec.name, spec.params)
            self.components.append(_Component(label, fn, float(spec.weight), params, state))
        kinds = {LOSSES.meta(s.name)["input"] for s in specs}
        if len(kinds) > 1:
            detail = ", ".join(f"{s.name} ({LOSSES.meta(s.name)['input']})" for s in specs)
            raise UserError(f"cannot combine pair and unpaired losses (or either with per-token ones) in one "
                            f"objective: {detail}")
        self.input_kind: InputKind = kinds.pop()
        metas = [LOSSES.meta(s.name) for s in specs]
        self.needs_reference = any(m["needs_reference"] for m in metas)
        self.needs_scores = any(m["needs_scores"] for m in metas)
        self.needs_cross_prompt_pairs = any(m["needs_cross_prompt_pairs"] for m in metas)
        self.needs_safety_flags = any(m["needs_safety_flags"] for m in metas)
        # KTO's mismatched (KL) sequences cost a policy and a reference forward per row: only when a component reads
        # them (a fixed kl= still builds them, so a KTO run's data and cache key do not depend on that parameter)
        self.needs_kl_partners = any(m["needs_kl_partners"] for m in metas)
        # components whose row losses depend on the other rows of the micro-batch (AOT's sort)
        self.batch_coupled = tuple(c.label for c, m in zip(self.components, metas) if m["batch_coupled"])
        if len({m["joint_logps"] for m in metas}) > 1:
            detail = ", ".join(f"{s.name} ({'joint' if m['joint_logps'] else 'response'})"
                               for s, m in zip(specs, metas))
            raise UserError(f"cannot combine losses over joint (prompt + response) log-probs with losses over response "
                            f"log-probs in one objective: {detail}; a batch is scored one way (docs/loss-inputs.md)")
        self.joint_logps: bool = metas[0]["joint_logps"]

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
        parts = [
            f"{c.weight:g}*{c.label}({', '.join(f'{k}={v!r}' for k, v in c.params.items())})" for c in self.components
        ]
        return f"ComposedLoss({' + '.join(parts)})"


def build_loss(specs: list[LossSpec | str | Mapping[str, Any]] | LossSpec | str | Mapping[str, Any]) -> ComposedLoss:
    """Validate names and params now (fail before any model loads) and return the composed loss.

    One spec (a LossSpec, a name or a ``{name, weight?, params?}`` mapping) or a list of them; a mapping is one
    spec, never iterated (its keys are not loss names)."""
    items = [specs] if isinstance(specs, (LossSpec, str, Mapping)) else list(specs)
    return ComposedLoss([LossSpec.parse(s) for s in items])
