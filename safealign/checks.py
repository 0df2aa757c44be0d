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


def field_defaults(schema: type, keys: Sequence[str]) -> dict[str, Any]:
    """The defaults of the dataclass ``schema``'s fields ``keys``, read off its fields (no instance is built, so a
    schema's own ``validate()`` may call this)."""
    import dataclasses

    found = {f.name: f for f in dataclasses.fields(schema)}
    return {key: found[key].default if found[key].default is not dataclasses.MISSING
            else found[key].default_factory() for key in keys}  # type: ignore[misc]


def unread(prefix: str, section: Any, defaults: dict[str, Any], why: str) -> None:
    """Settings a command never reads (it replaces them, or hands the step they configure its own inputs) are refused
    when set to anything but their defaults: otherwise a config would load as if they applied. ``defaults``: key ->
    default of the keys of ``section`` that go unread, named as ``prefix + key``; ``why`` says what is read instead."""
    changed = [f"{prefix}{key}={getattr(section, key)!r}" for key, default in defaults.items()
               if getattr(section, key) != default]
    if changed:
        leave = "it at its default" if len(changed) == 1 else "them at their defaults"
        raise UserError(f"{', '.join(changed)}: {why}; leave {leave}")
