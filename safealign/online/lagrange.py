"""Safe RLHF's Lagrange multiplier (Dai et al. 2023, arXiv 2310.12773; docs/online.md "Safe RLHF").

One update per RL step, before the policy step: ĉ = mean cost of the last ``window`` samples,
``log λ ← log λ + lr·(ĉ − d)·λ`` (one SGD step on −(ĉ − d)·λ w.r.t. log λ), then ``log λ ≤ log λ_max``.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

from torch import Tensor


class Lagrangian:
    def __init__(self, threshold: float, lambda_init: float, lr: float, lambda_max: float, window: int) -> None:
        self.threshold = threshold
        self.log_lambda = math.log(lambda_init)
        self.lr = lr
        self.log_max = math.log(lambda_max)
        self.costs: deque[float] = deque(maxlen=window)

    @property
    def value(self) -> float:
        return math.exp(self.log_lambda)

    def update(self, costs: Tensor) -> float:
        """Add this step's per-sample costs, move λ, return the new λ."""
        self.costs.extend(costs.tolist())
        mean = sum(self.costs) / len(self.costs)
        self.log_lambda = min(self.log_lambda + self.lr * (mean - self.threshold) * self.value, self.log_max)
        return self.value

    @property
    def window_mean(self) -> float:
        return sum(self.costs) / len(self.costs) if self.costs else float("nan")

    def state_dict(self) -> dict[str, Any]:
        return {"log_lambda": self.log_lambda, "costs": list(self.costs)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.log_lambda = float(state["log_lambda"])
        self.costs.clear()
        self.costs.extend(state["costs"])


def combine_advantages(reward_adv: Tensor, cost_adv: Tensor, lam: float) -> Tensor:
    """The actor's advantage ``(A_R − λ·A_C)/(1 + λ)``."""
    return (reward_adv - lam * cost_adv) / (1.0 + lam)
