"""One check for a plug-in's parameters, wherever a config names them: a loss, a training objective, a prompt
transform, an attack, judge or defense. Given the parameters' names with their defaults and type hints,
:func:`check_params` refuses an unknown name (listing the valid ones with their defaults) and a value whose type does
not fit its hint, naming the element that does not (``demos[0][1]``: YAML reads ``[Sorry, No, 1]`` as ``['Sorry',
False, 1]``, which would otherwise build the plug-in and fail, or quietly misbehave, at its first use), and a
non-finite number. Checked hints: str, int, float, bool, None, Literal, Optional/Union, list and tuple (of these;
fixed-length tuples by position) and dict; any other hint (Any, a class) passes. A whole number fits a float, true or
false fits no number. Ranges are each plug-in's own (a loss's declared ranges: safealign/losses/base.py)."""

from __future__ import annotations

import dataclasses
import inspect
import math
import numbers
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal, Union

from safealign.errors import UserError

REQUIRED = inspect.Parameter.empty  # the default of a parameter that has none

_EXPECTED = {str: "text", int: "a whole number", float: "a number", bool: "true or false"}
_PLURAL = {str: "texts", int: "whole numbers", float: "numbers", bool: "true/false values"}


def check_params(what: str, params: Mapping[str, Any], defaults: Mapping[str, Any],
                 hints: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` checked against ``defaults`` (name -> default, :data:`REQUIRED` for none) and ``hints`` (name ->
    type hint; a name without one is not type-checked); UserError starting with ``what`` (``loss 'dpo'``)."""
    unknown = [key for key in params if key not in defaults]
    if unknown:
        raise UserError(f"{what}: unknown parameter(s) {', '.join(map(str, unknown))}; valid: {listing(defaults)}")
    for key, value in params.items():
        mismatch = _mismatch(value, hints.get(key, Any), key)
        if mismatch is not None:
            raise UserError(f"{what}: {_describe(*mismatch)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{what}: {key}: expected a finite number, got {value}")
    return dict(params)


def signature_params(fn: Callable[..., Any], skip: int = 0) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(defaults, hints)`` of ``fn``'s keyword-passable parameters after the first ``skip`` (``self``, a loss's
    batch): what :func:`check_params` takes for a plug-in built by calling ``fn``."""
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    parameters = [p for p in list(inspect.signature(fn).parameters.values())[skip:] if p.kind in kinds]
    return {p.name: p.default for p in parameters}, resolved_hints(fn)


def dataclass_params(schema: type) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(defaults, hints)`` of a plug-in's Config dataclass (a default factory's value as the default)."""
    def default(f: dataclasses.Field) -> Any:
        if f.default is not dataclasses.MISSING:
            return f.default
        return f.default_factory() if f.default_factory is not dataclasses.MISSING else REQUIRED

    return {f.name: default(f) for f in dataclasses.fields(schema)}, resolved_hints(schema)


def resolved_hints(obj: Any) -> dict[str, Any]:
    """``obj``'s annotations resolved to types; none when they cannot be (a name only a type checker sees): its
    values are then passed unchecked."""
    try:
        return typing.get_type_hints(obj)
    except Exception:  # noqa: BLE001 - any failure to resolve means: do not check
        return {}


def listing(defaults: Mapping[str, Any]) -> str:
    """``beta (default 0.1), label_smoothing (default 0.0)``, in declaration order; "none" for no parameters."""
    return ", ".join(f"{k} (required)" if v is REQUIRED else f"{k} (default {v!r})" for k, v in defaults.items()) \
        or "none"


def type_name(hint: Any) -> str:
    """The hint in words as a config file spells values: ``Optional[list[str]]`` is "a list of text or null"."""
    origin, args = _origin(hint), typing.get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (list, tuple):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return f"a list of {len(args)}"
        item = args[0] if args else Any
        return f"a list of {_PLURAL.get(item) or type_name(item)}"
    if origin is dict:
        return "a mapping"
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(a) for a in args)
    if hint is type(None):
        return "null"
    if hint in _EXPECTED:
        return _EXPECTED[hint]
    return getattr(hint, "__name__", str(hint))


def _origin(hint: Any) -> Any:
    """``typing.get_origin(hint)``, and a bare ``list``, ``tuple`` or ``dict`` as its own (a list of anything)."""
    return typing.get_origin(hint) or (hint if hint in (list, tuple, dict) else None)


def _describe(path: str, expected: str, got: Any) -> str:
    if expected.startswith("a list") and isinstance(got, str):  # `files=shots.yaml` would be read a character at a time
        return f"{path}: expected {expected}, got text {got!r:.200}; write [{got!r:.200}]"
    quote = "; quote it if it is text (YAML reads unquoted true/false as booleans)" if (
        "text" in expected and isinstance(got, bool)) else ""
    return f"{path}: expected {expected}, got {got!r:.200} ({type(got).__name__}){quote}"


def _mismatch(value: Any, hint: Any, path: str) -> tuple[str, str, Any] | None:
    """``(path, what was expected, the value there)`` of the first part of ``value`` that does not fit ``hint``."""
    origin, args = _origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        found = [_mismatch(value, a, path) for a in options]
        if any(m is None for m in found):
            return None
        return found[0] if len(options) == 1 else (path, " or ".join(type_name(a) for a in options), value)
    if origin is Literal:
        return None if any(value == a and type(value) is type(a) for a in args) else (path, type_name(hint), value)
    if hint is type(None):
        return None if value is None else (path, "null", value)
    if hint in _EXPECTED:
        number = isinstance(value, numbers.Real) and not isinstance(value, bool)
        fits = {str: isinstance(value, str), bool: isinstance(value, bool), float: number,
                int: number and isinstance(value, numbers.Integral)}[hint]  # fmt: skip
        return None if fits else (path, _EXPECTED[hint], value)
    if origin is dict:
        return None if isinstance(value, dict) else (path, "a mapping", value)
    if origin not in (tuple, list):
        return None
    if not isinstance(value, (list, tuple)):
        return path, type_name(hint), value
    if origin is tuple and args and args[-1] is not Ellipsis:  # fixed length: (request, refusal) pairs
        if len(value) != len(args):
            return path, f"a list of {len(args)}", value
        element_hints = list(args)
    else:
        element_hints = [args[0] if args else Any] * len(value)
    for i, (element, element_hint) in enumerate(zip(value, element_hints)):
        mismatch = _mismatch(element, element_hint, f"{path}[{i}]")
        if mismatch is not None:
            return mismatch
    return None
