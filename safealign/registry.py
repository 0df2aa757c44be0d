"""One generic registry for every plug-in kind (losses, attacks, judges, backends, prompt transforms).

One mechanism: ``registry.register(name, target)``. ``target`` is the plug-in object, or a
``"package.module:attr"`` string imported on first :meth:`Registry.get` (built-ins whose module is
heavy or pulls optional dependencies register this way, so ``import safealign`` stays light). Called
with the name only, ``register`` is a decorator. Either way the registry key is the plug-in's ONLY
name: a plug-in that needs its own name (an attack stamping its attempts, a judge its verdicts)
asks the registry (:meth:`Registry.name_of`, or a :class:`RegisteredName` class attribute) instead
of spelling it a second time, so the two can never disagree.
"""

from __future__ import annotations

import importlib
from typing import Any, Generic, Iterator, TypeVar

from safealign.errors import UserError

T = TypeVar("T")


def import_callable(path: str, what: str) -> Any:
    """``package.module:function`` or ``package.module.function`` → the function; a UserError naming ``what``
    (e.g. "classifier") when the path has no module part, the module cannot be imported or the attribute is not
    callable. For callables a config file can only name as text."""
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise UserError(f"{what} {path!r}: give module:function or module.function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(f"{what} {path!r}: cannot import {module_name!r} ({exc})") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise UserError(f"{what} {path!r}: {module_name} has no function {attr!r}")
    return fn


def _target_of(obj: Any) -> str:
    """The ``"module:qualname"`` string a lazy registration of ``obj`` would use."""
    return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', '?')}"


class Registry(Generic[T]):
    """A named collection of plug-ins of one kind (``kind`` is used in error messages)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T | str] = {}
        self._meta: dict[str, dict[str, Any]] = {}

    def register(self, name: str, target: T | str | None = None, **meta: Any) -> Any:
        """Register ``target`` (an object or a lazy ``"module:attr"``) under ``name``; with no target,
        return a decorator that registers the decorated object. ``meta`` is kept for :meth:`meta`."""
        if target is None:

            def deco(obj: T) -> T:
                self._add(name, obj, meta)
                return obj

            return deco
        if isinstance(target, str) and ":" not in target:
            raise ValueError(f"lazy {self.kind} target must be 'module:attr', got {target!r}")
        self._add(name, target, meta)
        return target

    def _add(self, name: str, obj: T | str, meta: dict[str, Any]) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")
        existing = self._entries.get(name)
        same = existing is obj or (isinstance(existing, str) and existing == _target_of(obj))
        if existing is not None and not same:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = obj
        self._meta[name] = dict(meta)

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise UserError(f"unknown {self.kind} {name!r}; valid names: {', '.join(self.names())}")
        entry = self._entries[name]
        if isinstance(entry, str):
            module, attr = entry.split(":", 1)
            loaded = importlib.import_module(module)
            for part in attr.split("."):
                loaded = getattr(loaded, part)
            entry = loaded
            self._entries[name] = entry
        return entry  # type: ignore[return-value]

    def name_of(self, obj: Any) -> str:
        """The key ``obj`` is registered under (loaded or still lazy); ValueError if it is not registered."""
        target = _target_of(obj)
        for name, entry in self._entries.items():
            if entry is obj or entry == target:
                return name
        raise ValueError(f"{target} is not a registered {self.kind}; registered: {', '.join(self.names())}")

    def meta(self, name: str) -> dict[str, Any]:
        self.get(name)
        return dict(self._meta[name])

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


class RegisteredName:
    """Class attribute whose value is the key the class is registered under in a registry.

    ``name = RegisteredName(ATTACKS)`` on a base class gives every registered subclass
    ``cls.name == <its registry key>`` without the subclass writing its name. A subclass may still
    assign a plain ``name`` (test doubles that are never registered).
    """

    def __init__(self, registry: Registry[Any]) -> None:
        self.registry = registry

    def __get__(self, instance: Any, owner: type) -> str:
        return self.registry.name_of(owner)
