"""Explicit state objects for losses that need a statistic across steps (no hidden globals)."""

from __future__ import annotations

from typing import Any, Callable

from torch import Tensor


class RunningMean:
    """Count-weighted mean of every value seen so far; BCO's reward shift δ.

    ``update(values)`` folds in a batch of detached values (shape ``(N,)``). Under DDP set ``reduce``
    to a gather (e.g. ``accelerator.gather``) so every process folds in the same global batch and
    keeps the same δ. Saved and restored with the run's checkpoint via ``state_dict``.
    """

    def __init__(self, reduce: Callable[[Tensor], Tensor] | None = None) -> None:
        self.reduce = reduce
        self.total = 0.0
        self.count = 0

    def update(self, values: Tensor) -> float:
        values = values.detach().reshape(-1)
        if self.reduce is not None:
            values = self.reduce(values).reshape(-1)
        self.total += float(values.double().sum())
        self.count += values.numel()
        return self.mean

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def state_dict(self) -> dict[str, Any]:
        return {"total": self.total, "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.total, self.count = float(state["total"]), int(state["count"])

    def __repr__(self) -> str:
        return f"RunningMean(mean={self.mean:.6g}, count={self.count})"
