"""Value-range checks for config schemas: each failure is a UserError naming the key and the valid range.

Schemas call these from ``validate()`` (run from ``__post_init__``, so a YAML file or a ``key=value``
override fails at load, before any model or data is touched). Types are OmegaConf's job; these checks
catch values of the right type that cannot work (a batch size of 0, a NaN temperature, beta = 0).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from safealign.errors import UserError


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{key} must be a number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value):
        raise UserError(f"{key} must be a finite number, got {value}")
    return float(value)


def at_least(key: str, value: Any, low: float, why: str = "") -> None:
    """``value >= low`` (and finite); ``None`` passes (an optional setting left unset)."""
    if value is not None and _number(key, value) < low:
        raise UserError(f"{key} must be >= {low:g}, got {value}" + (f" ({why})" if why else ""))


def positive(key: str, value: Any, why: str = "") -> None:
    """``value > 0`` (and finite); ``None`` passes."""
    if value is not None and _number(key, value) <= 0:
        raise UserError(f"{key} must be > 0, got {value}" + (f" ({why})" if why else ""))


def within(key: str, value: Any, low: float, high: float, *, open_low: bool = False, open_high: bool = False) -> None:
    """``low <= value <= high`` (with open ends where asked); ``None`` passes."""
    if value is None:
        return
    v = _number(key, value)
    if (v < low or (open_low and v == low)) or (v > high or (open_high and v == high)):
        interval = f"{'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
        raise UserError(f"{key} must be in {interval}, got {value}")


def one_of(key: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise UserError(f"{key} must be one of {', '.join(choices)}, got {value!r}")


def finite(key: str, value: Any) -> None:
    if value is not None:
        _number(key, value)
