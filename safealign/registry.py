"""One small generic registry for plug-ins (losses, attacks, judges, backends, transforms).

Built-ins register lazily as ``"module:attr"`` strings so that ``import safealign`` stays light and
optional heavy dependencies are imported only when the plug-in is used.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of plug-ins of one kind (``kind`` is used in error messages)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T | str] = {}
        self._meta: dict[str, dict[str, Any]] = {}

    def register(self, name: str, **meta: Any) -> Callable[[T], T]:
        """Decorator: register ``obj`` under ``name`` with optional metadata."""

        def deco(obj: T) -> T:
            self._add(name, obj, meta)
            return obj

        return deco

    def register_lazy(self, name: str, target: str, **meta: Any) -> None:
        """Register ``"package.module:attr"``; imported on first ``get``."""
        if ":" not in target:
            raise ValueError(f"lazy {self.kind} target must be 'module:attr', got {target!r}")
        self._add(name, target, meta)

    def _add(self, name: str, obj: T | str, meta: dict[str, Any]) -> None:
        existing = self._entries.get(name)
        if existing is not None and existing is not obj and not isinstance(existing, str):
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = obj
        self._meta[name] = dict(meta)

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r}; valid names: {', '.join(self.names())}")
        entry = self._entries[name]
        if isinstance(entry, str):
            module, attr = entry.split(":", 1)
            entry = getattr(importlib.import_module(module), attr)
            self._entries[name] = entry
        return entry  # type: ignore[return-value]

    def meta(self, name: str) -> dict[str, Any]:
        self.get(name)
        return dict(self._meta[name])

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
